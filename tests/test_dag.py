"""Ray's DAG API: `.bind()`, InputNode, MultiOutputNode, `execute()`, on a
real local cluster. The examples follow Ray's DAG documentation."""

from __future__ import annotations

import os

import pytest

from solray.dag import ClassNode, DAGInputData, InputNode, MultiOutputNode


def remote_functions(ray):
    @ray.remote
    def double(x):
        return x * 2

    @ray.remote
    def plus_one(x):
        return x + 1

    @ray.remote
    def add(x, y):
        return x + y

    return double, plus_one, add


def test_function_dag_runs_again_for_each_input(ray):
    double, plus_one, add = remote_functions(ray)
    with InputNode() as inp:
        dag = add.bind(double.bind(inp), plus_one.bind(inp))
    first, second = dag.execute(2), dag.execute(3)
    assert isinstance(first, ray.ObjectRef)
    assert ray.get([first, second]) == [7, 10]


def test_input_is_read_by_index_attribute_and_key(ray):
    _, _, add = remote_functions(ray)
    with InputNode() as inp:
        by_position_and_keyword = add.bind(inp[0], inp.x)
        by_key = add.bind(inp["m1"], inp["m2"])
        by_attribute = add.bind(inp.m1, inp.m2)
        whole = add.bind(inp, 1)

    class Data:
        m1, m2 = 3, 4

    assert ray.get(by_position_and_keyword.execute(1, x=2)) == 3
    assert ray.get(by_key.execute({"m1": 5, "m2": 6})) == 11
    assert ray.get(by_attribute.execute(Data())) == 7
    assert ray.get(add.bind(inp[0], inp[1]).execute([2, 3])) == 5
    assert ray.get(whole.execute(41)) == 42
    data = DAGInputData(1, 2, y=3)
    assert (data[1], data["y"]) == (2, 3)


def test_multi_output_node_returns_a_ref_per_output(ray):
    double, plus_one, _ = remote_functions(ray)
    with InputNode() as inp:
        dag = MultiOutputNode([double.bind(inp), plus_one.bind(inp)])
    refs = dag.execute(5)
    assert isinstance(refs, list) and len(refs) == 2
    assert ray.get(refs) == [10, 6]


def test_nodes_nested_in_arguments_and_shared_nodes_run_once(ray, tmp_path):
    @ray.remote
    def record(x):
        with open(tmp_path / "calls", "a") as f:
            f.write(f"{x}\n")
        return x

    @ray.remote
    def total(values, extra):
        # Nested in a value, a node's result arrives as a ref (as any nested
        # ref does); at the top level, as its value.
        return sum(ray.get(values[:2])) + values[2] + ray.get(extra["e"])

    with InputNode() as inp:
        shared = record.bind(inp)
        dag = total.bind([shared, shared, 1], {"e": shared})
    assert ray.get(dag.execute(10)) == 10 + 10 + 1 + 10
    assert (tmp_path / "calls").read_text() == "10\n"  # one task for the shared node


def test_options_and_num_returns_through_bind(ray):
    @ray.remote
    def pair(x):
        return x, -x

    @ray.remote
    def where():
        return os.getpid()

    with InputNode() as inp:
        dag = pair.options(num_returns=2).bind(inp)
    refs = dag.execute(4)
    assert ray.get(refs) == [4, -4]
    assert isinstance(ray.get(where.options(num_cpus=0.5).bind().execute()), int)


@pytest.fixture
def counter_class(ray):
    @ray.remote
    class Counter:
        def __init__(self, start):
            self.value = start

        def inc(self, x):
            self.value += x
            return self.value

        def get(self):
            return self.value

        def pid(self):
            return os.getpid()

    return Counter


def test_actors_from_bind_are_created_once_and_reused(ray, counter_class):
    _, _, add = remote_functions(ray)
    a1 = counter_class.bind(10)
    assert ray.get(a1.get.bind().execute()) == 10
    a2 = counter_class.bind(10)
    a1.inc.bind(2)
    a1.inc.bind(4)  # bound in this order, run in this order, though unused by the root
    a2.inc.bind(6)
    dag = add.bind(a1.get.bind(), a2.get.bind())
    assert ray.get(dag.execute()) == 32  # Ray's documented example
    # The same actors again: their state carries over, one process each.
    assert ray.get(dag.execute()) == (16 + 6) + (16 + 6)
    handle = a1.execute()
    assert handle is a1.execute()
    assert ray.get(handle.get.remote()) == 22
    pid = ray.get(a1.pid.bind().execute())
    assert ray.get(a1.pid.bind().execute()) == pid


def test_methods_of_a_live_actor_bind_too(ray, counter_class):
    counter = counter_class.remote(0)
    with InputNode() as inp:
        dag = counter.inc.bind(inp)
        with_options = counter.inc.options(name="named_inc").bind(inp)
    assert ray.get([dag.execute(1), dag.execute(2), with_options.execute(3)]) == [1, 3, 6]
    options_node = counter_class.options(num_cpus=0).bind(100)
    assert isinstance(options_node, ClassNode)
    assert ray.get(options_node.inc.bind(1).execute()) == 101


def test_dag_errors_name_the_mistake(ray, counter_class):
    double, _, _ = remote_functions(ray)
    node = double.bind(1)
    with pytest.raises(AttributeError, match=r"use \.execute\(\)"):
        node.remote()
    with pytest.raises(AttributeError, match="bind"):
        node.bind(2)
    with pytest.raises(TypeError, match="no InputNode"):
        node.execute(5)
    with pytest.raises(AttributeError, match="has no method 'nope'"):
        getattr(counter_class.bind(0), "nope")  # noqa: B009
    with InputNode() as inp:
        with pytest.raises(ValueError, match="constructor"):
            counter_class.bind(double.bind(inp))
    with pytest.raises(ValueError, match="takes no arguments"):
        InputNode(1)
    with pytest.raises(ValueError, match="at most one InputNode"):
        with InputNode() as one, InputNode() as two:
            MultiOutputNode([double.bind(one), double.bind(two)]).execute(1)

    @ray.remote
    def fails(x):
        raise KeyError(x)

    with InputNode() as inp:
        dag = double.bind(fails.bind(inp))
    with pytest.raises(KeyError):
        ray.get(dag.execute("lost"))
