"""Remote functions as a Ray user sees them, on a real local cluster.

Options and their validation, multiple returns, errors raised in tasks and
how they propagate, nested tasks, resources (CPU, GPU, custom, infeasible),
the runtime context and the cluster's resource views.
"""

from __future__ import annotations

import os
import random
import time

import pytest
from conftest import wait_for_condition

import solray as ray
from solray.exceptions import GetTimeoutError, RayTaskError

# -- module-level remote functions (pickled the way a user's script would be) --


def partition(collection):
    pivot = collection.pop()
    greater, lesser = [], []
    for element in collection:
        if element > pivot:
            greater.append(element)
        else:
            lesser.append(element)
    return lesser, pivot, greater


@ray.remote
def quick_sort_distributed(collection, threshold):
    # Use a threshold to avoid over-parallelizing.
    if len(collection) <= threshold:
        return sorted(collection)
    lesser, pivot, greater = partition(collection)
    lesser = quick_sort_distributed.remote(lesser, threshold)
    greater = quick_sort_distributed.remote(greater, threshold)
    return ray.get(lesser) + [pivot] + ray.get(greater)


@ray.remote
def double(x):
    return 2 * x


class MyError(Exception):
    """A user-defined exception class, importable by workers."""


def _wait_for_file(path: str, timeout: float = 30.0) -> None:
    """Inside a task: block until the driver creates `path`."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


# -- calling remote functions, options ---------------------------------------


def test_remote_with_and_without_options(ray_start):
    @ray.remote
    def plain(x, y=10):
        return x + y

    @ray.remote(num_cpus=0.5, max_retries=0, name="named")
    def with_options(x):
        return x * 3

    @ray.remote()
    def empty_parens():
        return "ok"

    assert ray.get(plain.remote(1)) == 11
    assert ray.get(plain.remote(1, y=2)) == 3
    assert ray.get(with_options.remote(5)) == 15
    assert ray.get(empty_parens.remote()) == "ok"
    assert ray.get([double.remote(i) for i in range(10)]) == [2 * i for i in range(10)]
    # Refs as arguments are resolved to their values, also as kwargs.
    assert ray.get(plain.remote(double.remote(3), y=double.remote(4))) == 14
    assert isinstance(plain.remote(0), ray.ObjectRef)


def test_options_override(ray_start):
    @ray.remote(num_returns=2)
    def pair():
        return 1, 2

    a, b = pair.remote()
    assert ray.get([a, b]) == [1, 2]

    # .options() overrides the decorator's options for that call only.
    whole = pair.options(num_returns=1).remote()
    assert isinstance(whole, ray.ObjectRef)
    assert tuple(ray.get(whole)) == (1, 2)
    refs = pair.remote()
    assert isinstance(refs, list) and len(refs) == 2

    # Chained .options() calls accumulate.
    chained = pair.options(num_cpus=0.5).options(num_returns=1, name="chained")
    assert tuple(ray.get(chained.remote())) == (1, 2)

    @ray.remote
    def three():
        return "a", "b", "c"

    assert ray.get(three.options(num_returns=3).remote()) == ["a", "b", "c"]
    assert list(ray.get(three.remote())) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "options, error, name",
    [
        ({"not_an_option": 1}, ValueError, "not_an_option"),
        ({"resources": {"CPU": 1}}, ValueError, "resources"),
        ({"resources": {"GPU": 1}}, ValueError, "resources"),
        ({"num_returns": -1}, ValueError, "num_returns"),
        ({"num_returns": "two"}, TypeError, "num_returns"),
        ({"max_retries": -2}, ValueError, "max_retries"),
        ({"max_retries": 1.5}, TypeError, "max_retries"),
        ({"retry_exceptions": "x"}, TypeError, "retry_exceptions"),
        ({"num_cpus": -1}, ValueError, "num_cpus"),
        ({"num_cpus": "one"}, TypeError, "num_cpus"),
        ({"resources": ["Custom"]}, TypeError, "resources"),
    ],
)
def test_invalid_options(options, error, name):
    def f():
        return 1

    with pytest.raises(error, match=name):
        ray.remote(**options)(f)

    remote_f = ray.remote(f)
    with pytest.raises(error, match=name):
        remote_f.options(**options)
    # Validation needs no cluster and starts none.
    assert not ray.is_initialized()


def test_valid_options_are_accepted():
    def f():
        return 1

    ray.remote(max_retries=-1, retry_exceptions=[ValueError, KeyError], num_returns=0)(f)
    ray.remote(num_cpus=0, num_gpus=0.5, resources={"Custom": 0.5}, memory=10**6)(f)
    ray.remote(f).options(retry_exceptions=True, scheduling_strategy="SPREAD")
    assert not ray.is_initialized()


def test_remote_decorator_misuse():
    with pytest.raises(TypeError):
        ray.remote(1, 2)

    @ray.remote
    def f(x):
        return x

    with pytest.raises(TypeError, match=r"f\.remote\(\)"):
        f(1)
    assert not ray.is_initialized()


# -- return values -----------------------------------------------------------


def test_num_returns(ray_start, tmp_path):
    @ray.remote(num_returns=4)
    def four(x):
        return x, x + 1, x + 2, x + 3

    refs = four.remote(10)
    assert isinstance(refs, list) and len(refs) == 4
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    assert len(set(refs)) == 4
    assert ray.get(refs) == [10, 11, 12, 13]
    assert ray.get(refs[2]) == 12

    # A list return with num_returns=N is split too.
    @ray.remote(num_returns=2)
    def as_list():
        return [[1], {"k": "v"}]

    first, second = as_list.remote()
    assert ray.get(second) == {"k": "v"}
    assert ray.get(first) == [1]

    # num_returns=0: .remote() returns None, and the task still runs.
    marker = tmp_path / "ran"

    @ray.remote(num_returns=0)
    def side_effect(path):
        with open(path, "w") as f:
            f.write("done")

    assert side_effect.remote(str(marker)) is None
    wait_for_condition(lambda: marker.exists() and marker.read_text() == "done", timeout=30)


def test_wrong_number_of_returns_is_an_error_on_get(ray_start):
    @ray.remote(num_returns=2)
    def three_values():
        return 1, 2, 3

    @ray.remote(num_returns=2)
    def not_a_sequence():
        return 5

    a, b = three_values.remote()
    for ref in (a, b):
        with pytest.raises(RayTaskError) as info:
            ray.get(ref)
        assert "num_returns=2" in str(info.value)
        assert "3" in str(info.value)

    c, _ = not_a_sequence.remote()
    with pytest.raises(RayTaskError):
        ray.get(c)

    # The cluster is fine afterwards.
    assert ray.get(double.remote(21)) == 42


# -- errors ------------------------------------------------------------------


def test_task_exception_is_raised_by_get(ray_start):
    @ray.remote
    def failing_function_name(x):
        if x > 0:
            raise ValueError(f"bad value {x}: marker-7f3a")
        return x

    ref = failing_function_name.remote(3)
    with pytest.raises(ValueError) as info:
        ray.get(ref)
    err = info.value
    assert isinstance(err, RayTaskError)
    assert isinstance(err, ray.exceptions.RayError)
    text = str(err)
    # The remote traceback: the function's name and the line that raised.
    assert "failing_function_name" in text
    assert 'raise ValueError(f"bad value {x}: marker-7f3a")' in text
    assert "bad value 3: marker-7f3a" in text
    assert isinstance(err.cause, ValueError)
    assert str(err.cause) == "bad value 3: marker-7f3a"

    # A plain `except ValueError` catches it, as in Ray.
    try:
        ray.get(failing_function_name.remote(1))
    except ValueError as e:
        caught = e
    assert isinstance(caught, RayTaskError)

    # Getting it again raises again; a list get raises too.
    with pytest.raises(ValueError):
        ray.get(ref)
    with pytest.raises(ValueError):
        ray.get([failing_function_name.remote(0), ref])
    assert ray.get(failing_function_name.remote(0)) == 0


def test_user_defined_exception(ray_start):
    @ray.remote
    def raise_mine():
        error = MyError("my message")
        error.code = 42
        raise error

    @ray.remote
    def raise_key_error():
        return {}["missing-key"]

    with pytest.raises(MyError) as info:
        ray.get(raise_mine.remote())
    assert isinstance(info.value, RayTaskError)
    assert info.value.code == 42
    assert "my message" in str(info.value)
    assert "raise_mine" in str(info.value)

    with pytest.raises(KeyError) as info:
        ray.get(raise_key_error.remote())
    assert "missing-key" in str(info.value)

    # Exceptions defined locally (pickled by value) work too.
    class LocalError(RuntimeError):
        pass

    @ray.remote
    def raise_local():
        raise LocalError("local")

    with pytest.raises(RuntimeError) as info:
        ray.get(raise_local.remote())
    assert isinstance(info.value, RayTaskError)
    assert type(info.value.cause).__name__ == "LocalError"


def test_errors_propagate_through_dependent_tasks(ray_start):
    @ray.remote
    def f():
        raise ZeroDivisionError("original failure in f")

    @ray.remote
    def g(x):
        return x + 1

    @ray.remote
    def h(x):
        return x * 2

    f_ref = f.remote()
    g_ref = g.remote(f_ref)
    with pytest.raises(ZeroDivisionError) as info:
        ray.get(g_ref)
    assert isinstance(info.value, RayTaskError)
    assert "original failure in f" in str(info.value)

    # Through a chain, and when the failing ref is a keyword argument.
    with pytest.raises(ZeroDivisionError):
        ray.get(h.remote(g.remote(f.remote())))
    with pytest.raises(ZeroDivisionError):
        ray.get(g.remote(x=f.remote()))

    # A task that gets a failed child and does not catch it fails with the
    # child's error type.
    @ray.remote
    def parent():
        return ray.get(f.remote())

    with pytest.raises(ZeroDivisionError) as info:
        ray.get(parent.remote())
    assert "original failure in f" in str(info.value)

    # A task may catch its child's error.
    @ray.remote
    def catching_parent():
        try:
            ray.get(f.remote())
        except ZeroDivisionError as e:
            return f"caught: {e.cause}"
        return "not raised"

    assert ray.get(catching_parent.remote()) == "caught: original failure in f"


# -- nested tasks ------------------------------------------------------------


def test_nested_tasks(ray_start):
    @ray.remote
    def leaf(i):
        return i * i

    @ray.remote
    def middle(n):
        return sum(ray.get([leaf.remote(i) for i in range(n)]))

    @ray.remote
    def top():
        refs = [middle.remote(n) for n in range(1, 4)]
        # Refs passed down to a grandchild are resolved there.
        return ray.get(refs), ray.get(double.remote(refs[-1]))

    sums, doubled = ray.get(top.remote())
    assert sums == [0, 1, 5]
    assert doubled == 10


def test_many_blocked_parents_do_not_deadlock(ray_start):
    # 6 parents block in get() on 10 children each, on 2 CPUs: a blocked
    # parent must give its CPU back so the children can run.
    @ray.remote
    def child(i, j):
        return i * 100 + j

    @ray.remote
    def parent(i):
        return sum(ray.get([child.remote(i, j) for j in range(10)]))

    results = ray.get([parent.remote(i) for i in range(6)], timeout=90)
    assert results == [sum(i * 100 + j for j in range(10)) for i in range(6)]


def test_recursive_quick_sort(ray_start):
    rng = random.Random(1234)
    unsorted = [rng.randrange(100_000) for _ in range(5_000)]
    result = ray.get(quick_sort_distributed.remote(list(unsorted), 500), timeout=90)
    assert result == sorted(unsorted)
    # The module-level function still works (a second descriptor is not needed).
    assert ray.get(quick_sort_distributed.remote([3, 1, 2], 10)) == [1, 2, 3]


def test_module_level_function_in_second_session(ray_start):
    # `double` and `quick_sort_distributed` were used by earlier tests in
    # other sessions; they must work again in this fresh one.
    assert ray.get(double.remote(5)) == 10
    assert ray.get(quick_sort_distributed.remote([5, 4, 3, 2, 1], 2)) == [1, 2, 3, 4, 5]


# -- resources ---------------------------------------------------------------


@pytest.mark.parametrize("ray_start", [{"num_cpus": 2, "resources": {"Custom": 2}}], indirect=True)
def test_custom_resources_and_cluster_views(ray_start, tmp_path):
    total = ray.cluster_resources()
    assert total["CPU"] == 2
    assert total["Custom"] == 2
    wait_for_condition(lambda: ray.available_resources() == total, timeout=10)

    nodes = ray.nodes()
    assert len(nodes) == 1
    node = nodes[0]
    assert node["Alive"] is True
    assert node["Resources"]["CPU"] == 2
    assert node["Resources"]["Custom"] == 2

    @ray.remote(resources={"Custom": 1})
    def uses_custom():
        return "custom ran"

    assert ray.get(uses_custom.remote()) == "custom ran"
    assert ray.get([uses_custom.remote() for _ in range(4)]) == ["custom ran"] * 4

    # While a task holds Custom:1 and a CPU, available_resources shows it.
    signal = str(tmp_path / "release")

    @ray.remote(resources={"Custom": 1})
    def hold(path):
        _wait_for_file(path)
        return "released"

    ref = hold.remote(signal)
    wait_for_condition(
        lambda: (
            ray.available_resources().get("Custom") == 1
            and ray.available_resources().get("CPU") == 1
        ),
        timeout=30,
    )
    assert ray.cluster_resources() == total
    open(signal, "w").close()
    assert ray.get(ref) == "released"
    # Back to full once the task is done (the lease is returned after it).
    wait_for_condition(lambda: ray.available_resources() == total, timeout=30)


@pytest.mark.parametrize("ray_start", [{"num_cpus": 3, "resources": {"Extra": 1.5}}], indirect=True)
def test_cluster_is_visible_right_after_init(ray_start):
    # No waiting: init() returns only once its node is part of the cluster.
    assert ray.cluster_resources() == {
        **ray.cluster_resources(),
        "CPU": 3.0,
        "Extra": 1.5,
    }
    nodes = ray.nodes()
    assert [n["Alive"] for n in nodes] == [True]
    assert nodes[0]["NodeID"] == ray_start["node_id"]
    assert ray.available_resources()["CPU"] == 3.0


def test_runtime_context(ray_start):
    ctx = ray.get_runtime_context()
    driver_job = ctx.get_job_id()
    assert isinstance(driver_job, str) and driver_job
    assert ctx.get_task_id() is None
    node_id = ray.nodes()[0]["NodeID"]
    assert ctx.get_node_id() == node_id

    @ray.remote
    def inside():
        c = ray.get_runtime_context()
        return c.get_job_id(), c.get_task_id(), c.get_node_id()

    (job_a, task_a, node_a), (job_b, task_b, node_b) = ray.get([inside.remote(), inside.remote()])
    assert job_a == job_b == driver_job
    assert node_a == node_b == node_id
    assert isinstance(task_a, str) and task_a
    assert task_a != task_b
    # Still no task in the driver after running some.
    assert ray.get_runtime_context().get_task_id() is None
    # And GPU ids are empty outside a GPU task.
    assert ray.get_gpu_ids() == []


@pytest.mark.parametrize("ray_start", [{"num_cpus": 2}], indirect=True)
def test_tasks_needing_all_cpus_run_one_after_the_other(ray_start):
    @ray.remote(num_cpus=2)
    def whole_node():
        start = time.time()
        time.sleep(0.3)
        return start, time.time()

    intervals = sorted(ray.get([whole_node.remote() for _ in range(3)]))
    for (_, end), (next_start, _) in zip(intervals, intervals[1:], strict=False):
        assert end <= next_start, f"tasks overlapped: {intervals}"

    # One-CPU tasks on the same cluster can share it.
    @ray.remote(num_cpus=1)
    def half_node():
        return "ok"

    assert ray.get([half_node.remote() for _ in range(4)]) == ["ok"] * 4


@pytest.mark.parametrize("ray_start", [{"num_cpus": 2}], indirect=True)
def test_infeasible_task_warns_once_and_waits(ray_start, capfd):
    @ray.remote(num_cpus=3)
    def too_big():
        return "never"

    stderr = []

    def warned():
        stderr.append(capfd.readouterr().err)
        return "no node in the cluster can provide" in "".join(stderr)

    refs = [too_big.remote(), too_big.remote()]
    wait_for_condition(warned, timeout=20, message="no infeasibility warning on stderr")

    # Nothing crashed: other tasks still run, and the big one stays pending.
    assert ray.get([double.remote(i) for i in range(4)]) == [0, 2, 4, 6]
    ready, not_ready = ray.wait([refs[0]], timeout=0.5)
    assert ready == [] and not_ready == [refs[0]]
    with pytest.raises(GetTimeoutError):
        ray.get(refs[1], timeout=0.1)

    # Another request of the same shape does not warn again.
    refs.append(too_big.remote())
    assert ray.get(double.remote(1)) == 2
    ready, _ = ray.wait(refs, timeout=0.2)
    assert ready == []
    stderr.append(capfd.readouterr().err)
    text = "".join(stderr)
    assert text.count("no node in the cluster can provide") == 1, text
    assert "WARNING" in text  # through the "solray" logger init() configured


@pytest.mark.parametrize("ray_start", [{"num_cpus": 2, "num_gpus": 2}], indirect=True)
def test_gpu_tasks(ray_start, tmp_path):
    assert ray.cluster_resources()["GPU"] == 2
    assert ray.get_gpu_ids() == []

    @ray.remote(num_gpus=1)
    def gpu_task(barrier_dir, name, parties):
        ids = ray.get_gpu_ids()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if barrier_dir is not None:
            # Wait until all the tasks hold their GPU at the same time.
            open(os.path.join(barrier_dir, name), "w").close()
            deadline = time.monotonic() + 30
            while len(os.listdir(barrier_dir)) < parties:
                if time.monotonic() > deadline:
                    raise TimeoutError("the other GPU task never started")
                time.sleep(0.01)
        return ids, visible

    ids, visible = ray.get(gpu_task.remote(None, "solo", 1))
    assert len(ids) == 1
    assert visible == str(ids[0])
    assert ids[0] in (0, 1)

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    (ids_a, vis_a), (ids_b, vis_b) = ray.get(
        [gpu_task.remote(str(barrier), "a", 2), gpu_task.remote(str(barrier), "b", 2)],
        timeout=60,
    )
    assert len(ids_a) == 1 and len(ids_b) == 1
    assert ids_a != ids_b
    assert sorted(ids_a + ids_b) == [0, 1]
    assert vis_a == str(ids_a[0]) and vis_b == str(ids_b[0])

    @ray.remote(num_gpus=2)
    def two_gpus():
        return sorted(ray.get_gpu_ids()), os.environ.get("CUDA_VISIBLE_DEVICES")

    ids, visible = ray.get(two_gpus.remote())
    assert ids == [0, 1]
    assert sorted(visible.split(",")) == ["0", "1"]

    @ray.remote
    def no_gpu():
        return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    # Workers are reused: a task without GPUs must not see the ids of the GPU
    # task that ran on its worker before it.
    for ids, visible in ray.get([no_gpu.remote() for _ in range(4)]):
        assert ids == []
        assert visible == ""
    wait_for_condition(lambda: ray.available_resources().get("GPU") == 2, timeout=30)


class _ErrorWithRequiredArgs(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def test_exception_that_cannot_be_unpickled(ray_start):
    """pickle cannot rebuild an exception whose __init__ needs arguments it does
    not keep; get still raises a RayTaskError carrying the remote traceback."""

    @ray.remote
    def fail():
        raise _ErrorWithRequiredArgs("broken widget", 42)

    with pytest.raises(RayTaskError) as info:
        ray.get(fail.remote())
    assert "_ErrorWithRequiredArgs: broken widget" in str(info.value)
    assert 'raise _ErrorWithRequiredArgs("broken widget", 42)' in str(info.value)
