"""Remote functions as a Ray user sees them, on a real local cluster.

Options and their validation, multiple returns, errors raised in tasks and
how they propagate, nested tasks, resources (CPU, GPU, custom, infeasible),
the runtime context and the cluster's resource views.
"""

from __future__ import annotations

import os
import random
import time

import psutil
import pytest
from conftest import DriverOutput, barrier, logged, solray_log, wait_for_condition, wait_for_file

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
        ({"max_calls": -1}, ValueError, "max_calls"),
        ({"max_calls": 1.5}, ValueError, "max_calls"),
        ({"label_selector": "zone=a"}, TypeError, "label_selector"),
        ({"label_selector": {"zone": 3}}, TypeError, "label_selector"),
        ({"label_selector": {"bad key!": "a"}}, ValueError, "label_selector"),
        ({"label_selector": {"zone": "in(a,)"}}, ValueError, "label_selector"),
        ({"accelerator_type": ""}, TypeError, "accelerator_type"),
        ({"runtime_env": {"env_vars": {"A": 1}}}, TypeError, "env_vars"),
        ({"runtime_env": {"conda": "env"}}, NotImplementedError, "conda"),
        ({"enable_task_events": 1}, TypeError, "enable_task_events"),
        ({"_metadata": "x"}, TypeError, "_metadata"),
        ({"_generator_backpressure_num_objects": 0}, ValueError, "backpressure"),
        ({"scheduling_strategy": "PACK"}, ValueError, "scheduling_strategy"),
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
    ray.remote(runtime_env={}, enable_task_events=False, _metadata={"k": "v"})(f)
    ray.remote(runtime_env=None, label_selector={"zone": "!in(a,b)"}, accelerator_type="A100")(f)
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
    # The remote traceback: the user's file, the line that raised and its
    # source text, whatever cloudpickle does to code objects' file names.
    raise_line = failing_function_name._function.__code__.co_firstlineno + 3  # @remote, def, if
    assert f'File "{__file__}", line {raise_line}, in failing_function_name' in text
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
        wait_for_file(path)
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
def test_tasks_needing_all_cpus_run_one_after_the_other(ray_start, tmp_path):
    @ray.remote(num_cpus=2)
    def whole_node():
        # A window in which another task would overlap if it could run
        # (the monotonic clock is the machine's: comparable across workers).
        start = time.monotonic()
        time.sleep(0.3)
        return start, time.monotonic()

    intervals = sorted(ray.get([whole_node.remote() for _ in range(3)]))
    for (_, end), (next_start, _) in zip(intervals, intervals[1:], strict=False):
        assert end <= next_start, f"tasks overlapped: {intervals}"

    # One-CPU tasks on the same cluster share it: two of them run at once
    # (each waits until the other has started).
    @ray.remote(num_cpus=1)
    def half_node(directory):
        barrier(directory, 2)
        return "ok"

    assert ray.get([half_node.remote(str(tmp_path)) for _ in range(4)], timeout=90) == ["ok"] * 4


@pytest.mark.parametrize("ray_start", [{"num_cpus": 2}], indirect=True)
def test_infeasible_task_warns_once_and_waits(ray_start, capfd):
    @ray.remote(num_cpus=3)
    def too_big():
        return "never"

    with solray_log() as records:
        refs = [too_big.remote(), too_big.remote()]
        wait_for_condition(
            lambda: logged(records, "no node in the cluster can provide"),
            timeout=20,
            message="no infeasibility warning",
        )

        # Nothing crashed: other tasks still run, and the big one stays pending.
        assert ray.get([double.remote(i) for i in range(4)]) == [0, 2, 4, 6]
        ready, not_ready = ray.wait([refs[0]], timeout=0.5)
        assert ready == [] and not_ready == [refs[0]]
        with pytest.raises(GetTimeoutError):
            ray.get(refs[1], timeout=0.1)

        # Another request of the same shape does not warn again. One of a new
        # shape, made after it, does: once that warning is printed, the node has
        # answered the earlier request too (the node answers lease requests in
        # order, on the driver's one connection to it).
        refs.append(too_big.remote())
        refs.append(too_big.options(num_cpus=4).remote())
        wait_for_condition(
            lambda: logged(records, "'CPU': 4"),
            timeout=20,
            message="no infeasibility warning for the second shape",
        )
        ready, _ = ray.wait(refs, timeout=0)
        assert ready == []
    lines = [line for line in capfd.readouterr().err.splitlines() if "can provide" in line]
    assert len(lines) == 2, lines
    assert "'CPU': 3" in lines[0] and "'CPU': 4" in lines[1]
    # Through the "solray" logger init() configured, once each.
    assert all("WARNING" in line for line in lines), lines


@pytest.mark.parametrize(
    "ray_start", [{"num_cpus": 2, "resources": {"accelerator_type:A100": 1}}], indirect=True
)
def test_accelerator_type(ray_start, capfd):
    @ray.remote(accelerator_type="A100")
    def on_a100():
        return "ran"

    @ray.remote(accelerator_type="A100", num_cpus=0)
    class OnA100:
        def ping(self):
            return "pong"

    # Many fit at once: each asks for a sliver (0.001) of the node's one unit.
    assert ray.get([on_a100.remote() for _ in range(4)]) == ["ran"] * 4
    actors = [OnA100.remote() for _ in range(2)]
    assert ray.get([a.ping.remote() for a in actors]) == ["pong", "pong"]
    wait_for_condition(
        lambda: 0.9975 < ray.available_resources().get("accelerator_type:A100", 0) < 0.9985,
        message=lambda: f"available: {ray.available_resources()}",
    )  # the two actors hold 0.001 each

    # No node has an H100: the task is infeasible like any missing resource.
    with solray_log() as records:
        stuck = on_a100.options(accelerator_type="H100").remote()
        wait_for_condition(
            lambda: logged(records, "accelerator_type:H100"),
            message="no infeasibility warning naming accelerator_type:H100",
        )
    assert "accelerator_type:H100" in capfd.readouterr().err
    ready, _ = ray.wait([stuck], timeout=0.2)
    assert ready == []
    with pytest.raises(TypeError, match="accelerator_type"):
        on_a100.options(accelerator_type=7)


@pytest.mark.parametrize("ray_start", [{"num_cpus": 1, "labels": {"zone": "a"}}], indirect=True)
def test_node_labels_of_a_local_cluster(ray_start):
    @ray.remote(label_selector={"zone": "a"})
    def labels():
        return ray.get_runtime_context().get_node_labels()

    node_id = ray.get_runtime_context().get_node_id()
    expected = {"zone": "a", "ray.io/node-id": node_id}
    assert ray.get(labels.remote()) == expected
    assert ray.get_runtime_context().get_node_labels() == expected
    assert ray.nodes()[0]["Labels"] == expected
    ready, _ = ray.wait([labels.options(label_selector={"zone": "b"}).remote()], timeout=0.5)
    assert ready == []


def test_init_rejects_bad_labels(leak_check):
    with pytest.raises(ValueError, match="label key"):
        ray.init(labels={"a b": "c"})
    with pytest.raises(TypeError, match="labels"):
        ray.init(labels=["zone=a"])
    assert not ray.is_initialized()


@pytest.mark.parametrize("ray_start", [{"num_cpus": 2, "num_gpus": 2}], indirect=True)
def test_gpu_tasks(ray_start, tmp_path):
    assert ray.cluster_resources()["GPU"] == 2
    assert ray.get_gpu_ids() == []

    # max_calls=0: GPU functions default to one call per worker (as in Ray);
    # here workers must be reused, to show the GPU ids do not leak to the next task.
    @ray.remote(num_gpus=1, max_calls=0)
    def gpu_task(barrier_dir, parties):
        ids = ray.get_gpu_ids()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if barrier_dir is not None:
            # Wait until all the tasks hold their GPU at the same time.
            barrier(barrier_dir, parties, timeout=30)
        return ids, visible, os.getpid()

    ids, visible, pid = ray.get(gpu_task.remote(None, 1))
    gpu_workers = {pid}
    assert len(ids) == 1
    assert visible == str(ids[0])
    assert ids[0] in (0, 1)

    barrier_dir = tmp_path / "barrier"
    barrier_dir.mkdir()
    (ids_a, vis_a, pid_a), (ids_b, vis_b, pid_b) = ray.get(
        [gpu_task.remote(str(barrier_dir), 2), gpu_task.remote(str(barrier_dir), 2)],
        timeout=60,
    )
    gpu_workers |= {pid_a, pid_b}
    assert len(ids_a) == 1 and len(ids_b) == 1
    assert ids_a != ids_b
    assert sorted(ids_a + ids_b) == [0, 1]
    assert vis_a == str(ids_a[0]) and vis_b == str(ids_b[0])

    @ray.remote(num_gpus=2, max_calls=0)
    def two_gpus():
        return sorted(ray.get_gpu_ids()), os.environ.get("CUDA_VISIBLE_DEVICES"), os.getpid()

    ids, visible, pid = ray.get(two_gpus.remote())
    assert ids == [0, 1]
    assert sorted(visible.split(",")) == ["0", "1"]
    gpu_workers.add(pid)

    @ray.remote
    def no_gpu():
        return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"), os.getpid()

    # A task without GPUs sees none, and (as in Ray) never runs on a worker
    # that held GPUs before.
    results = ray.get([no_gpu.remote() for _ in range(8)])
    assert not {pid for _, _, pid in results} & gpu_workers
    assert [(ids, visible) for ids, visible, _ in results] == [([], "")] * len(results)
    wait_for_condition(lambda: ray.available_resources().get("GPU") == 2, timeout=30)


def test_task_names(ray_start, capfd):
    @ray.remote
    def name_and_output():
        print("hello")
        return ray.get_runtime_context().get_task_name()

    @ray.remote
    class Named:
        def name(self):
            return ray.get_runtime_context().get_task_name()

    assert ray.get_runtime_context().get_task_name() is None  # the driver
    assert ray.get(name_and_output.remote()) == "name_and_output"
    assert ray.get(name_and_output.options(name="custom").remote()) == "custom"
    DriverOutput(capfd).wait_for_lines(r"\(custom pid=\d+\) hello")  # its output says so too
    actor = Named.remote()
    assert ray.get(actor.name.remote()) == "Named.name"
    assert ray.get(actor.name.options(name="call").remote()) == "call"


@pytest.mark.parametrize("ray_start", [{"num_cpus": 4}], indirect=True)
def test_placement_group_capture_child_tasks(ray_start):
    from solray.util.placement_group import get_current_placement_group, placement_group
    from solray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as InGroup

    def group_id():
        group = get_current_placement_group()
        return None if group is None else group.id

    @ray.remote(num_cpus=1)
    def child():
        return group_id()

    @ray.remote(num_cpus=1)
    def parent(opt_out):
        strategy = InGroup(placement_group=None) if opt_out else None
        return group_id(), ray.get(child.options(scheduling_strategy=strategy).remote())

    @ray.remote(num_cpus=0)
    class Member:
        def ids(self):
            return group_id(), ray.get(child.remote())

    assert group_id() is None  # drivers belong to no group
    pg = placement_group([{"CPU": 2}])
    assert pg.wait(timeout_seconds=30)
    capture, plain = InGroup(pg, placement_group_capture_child_tasks=True), InGroup(pg)
    assert ray.get(parent.options(scheduling_strategy=capture).remote(False)) == (pg.id, pg.id)
    assert ray.get(parent.options(scheduling_strategy=plain).remote(False)) == (pg.id, None)
    assert ray.get(parent.options(scheduling_strategy=capture).remote(True)) == (pg.id, None)
    member = Member.options(scheduling_strategy=capture).remote()
    assert ray.get(member.ids.remote()) == (pg.id, pg.id)
    for index in (2, -2):
        with pytest.raises(ValueError, match="placement_group_bundle_index"):
            child.options(scheduling_strategy=InGroup(pg, placement_group_bundle_index=index))


def _exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("ray_start", [{"num_cpus": 1, "num_gpus": 1}], indirect=True)
def test_max_calls_retires_the_worker(ray_start):
    @ray.remote(max_calls=2, max_retries=0)
    def twice(i):
        return os.getpid(), i

    (first, _), (second, _) = ray.get([twice.remote(0), twice.remote(1)])
    assert first == second  # one worker (1 CPU), two calls, then it exits
    wait_for_condition(lambda: _exited(first), message="the worker outlived max_calls=2")
    # The next call gets a fresh worker; with max_retries=0 a call on a worker
    # seen as crashed would fail, so none was lost or counted as a crash.
    results = ray.get([twice.remote(i) for i in range(2, 8)], timeout=60)
    assert [i for _, i in results] == list(range(2, 8))
    pids = [pid for pid, _ in results]
    assert first not in pids
    assert [pids.count(pid) for pid in dict.fromkeys(pids)] == [2, 2, 2]

    # A retiring worker stays while it owns an object someone references: the
    # value it put is still readable after a later retiring worker has gone.
    @ray.remote(max_calls=1)
    def make():
        return os.getpid(), [ray.put("kept")]

    @ray.remote(max_calls=1)
    def plain():
        return os.getpid()

    owner, [inner] = ray.get(make.remote())
    other = ray.get(plain.remote())
    wait_for_condition(lambda: _exited(other), message="a retiring worker never exited")
    assert not _exited(owner)
    assert ray.get(inner, timeout=30) == "kept"
    del inner
    wait_for_condition(lambda: _exited(owner), message="the owner of a freed object stayed")

    # Ray's default for GPU functions is max_calls=1: a fresh worker per call.
    @ray.remote(num_gpus=1)
    def gpu_pid():
        return os.getpid()

    a = ray.get(gpu_pid.remote())
    b = ray.get(gpu_pid.remote())
    assert a != b
    wait_for_condition(lambda: _exited(a) and _exited(b))
    with pytest.raises(ValueError, match="max_calls"):
        plain.options(max_calls=3)
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 1, timeout=30)


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


@ray.remote
def pid_of_task():
    return os.getpid()


@ray.remote(num_gpus=1, max_calls=0)
def pid_of_gpu_task():
    return os.getpid()


@pytest.mark.parametrize("ray_start", [{"num_cpus": 2, "num_gpus": 1}], indirect=True)
def test_a_worker_that_held_a_gpu_never_runs_a_task_without_gpus(ray_start):
    """As in Ray: a library may keep GPU memory or a CUDA context in a worker
    that ran a GPU task, so CPU-only tasks never get that worker."""
    gpu_pid = ray.get(pid_of_gpu_task.remote())
    # That worker is now the most recently used idle one, the first a task would get.
    cpu_pids = [ray.get(pid_of_task.remote()) for _ in range(4)]
    assert gpu_pid not in cpu_pids
    # A GPU task may still use it.
    assert ray.get(pid_of_gpu_task.remote()) == gpu_pid


@pytest.mark.parametrize("ray_start", [{"num_cpus": 1}], indirect=True)
def test_an_actor_created_behind_a_burst_of_tasks_does_not_wait_for_the_burst(ray_start):
    # The owner gives its leases back between tasks once they are held a
    # while (Ray's lease timeout), so the node can serve the actor's request,
    # which came after the burst's (examples/monte_carlo_pi.py's progress
    # actor answers while its sampling tasks run).
    @ray.remote
    def work(i: int) -> int:
        time.sleep(0.05)
        return i

    @ray.remote
    class Probe:
        def ping(self) -> str:
            return "pong"

    refs = [work.remote(i) for i in range(200)]  # about 10 s on the one CPU
    wait_for_condition(lambda: ray.wait(refs, timeout=0)[0], timeout=60)
    probe = Probe.remote()
    assert ray.get(probe.ping.remote(), timeout=60) == "pong"
    finished, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    assert len(finished) < len(refs), "the actor answered only once the burst was done"
    assert ray.get(refs, timeout=120) == list(range(200))
