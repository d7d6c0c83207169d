"""Actors on a real local cluster: what a Ray user sees.

Creation and options, ordered calls, handles passed around, threaded, async and
concurrency-group actors, named actors and namespaces, lifetimes, `kill`,
`exit_actor`, restarts after a crash, the runtime context, worker output, and
the seed documents' actor examples. `import solray as ray` stands in for
`import ray`. Calls coordinate through barriers, events and marker files, never
through timing.
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import random
import re
import signal
import threading

import numpy as np
import psutil
import pytest
from conftest import DriverOutput, wait_for_condition, wait_for_file

import solray as ray
from solray.exceptions import (
    ActorDiedError,
    PendingCallsLimitExceeded,
    RayActorError,
    RayError,
    RayTaskError,
)
from solray.util.state import list_actors


class MyError(Exception):
    """A user exception raised inside actor methods."""


def _process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_until_a_later_release_ended_its_actor() -> None:
    """Releases sent before this one have been acted on when it returns: the
    driver releases actors in order, and here waits until a fresh actor it
    released after them is gone. A check that an earlier release did NOT end
    an actor is only meaningful after this."""
    later = Counter.remote()
    pid = ray.get(later.pid.remote())
    del later
    wait_for_condition(lambda: _process_gone(pid), message="a released actor kept running")


@ray.remote
class Counter:
    def __init__(self, start: int = 0):
        self.value = start

    def incr(self, by: int = 1) -> int:
        self.value += by
        return self.value

    def get(self) -> int:
        return self.value

    def pid(self) -> int:
        return os.getpid()


# --------------------------------------------------------------------------
# Creation, handles, methods.
# --------------------------------------------------------------------------


def test_remote_returns_handle_before_constructor_finishes(ray_start, tmp_path):
    go = tmp_path / "go"

    @ray.remote
    class Slow:
        def __init__(self, path):
            wait_for_file(path)
            self.ready = True

        def is_ready(self):
            return self.ready

    handle = Slow.remote(str(go))  # returns at once, while __init__ waits for `go`
    assert isinstance(handle, ray.actor.ActorHandle)
    ref = handle.is_ready.remote()
    ready, not_ready = ray.wait([ref], timeout=0)
    assert ready == [] and not_ready == [ref]
    go.touch()
    assert ray.get(ref) is True


def test_constructor_arguments_follow_top_level_and_nested_convention(ray_start):
    @ray.remote
    class Holder:
        def __init__(self, by_value, by_reference, *, keyword):
            self.by_value = by_value
            self.by_reference = by_reference
            self.keyword = keyword

        def describe(self):
            [inner] = self.by_reference
            return (
                self.by_value,
                isinstance(inner, ray.ObjectRef),
                ray.get(inner),
                self.keyword,
            )

        def method_args(self, by_value, by_reference):
            return by_value, isinstance(by_reference[0], ray.ObjectRef), ray.get(by_reference[0])

    obj = ray.put(41)
    nested = ray.put("nested")
    handle = Holder.remote(obj, [nested], keyword=ray.put("kw"))
    assert ray.get(handle.describe.remote()) == (41, True, "nested", "kw")
    # The same convention applies to method calls.
    assert ray.get(handle.method_args.remote(obj, [nested])) == (41, True, "nested")


def test_direct_calls_and_unknown_methods_raise(ray_start):
    with pytest.raises(TypeError, match=r"Counter\.remote\(\)"):
        Counter()
    handle = Counter.remote()
    with pytest.raises(TypeError, match=r"incr\.remote\(\)"):
        handle.incr()
    with pytest.raises(AttributeError, match="no_such_method"):
        handle.no_such_method.remote()
    assert ray.get(handle.incr.remote()) == 1


def test_constructor_exception_fails_calls(ray_start):
    @ray.remote
    class Broken:
        def __init__(self):
            raise MyError("constructor failed")

        def f(self):
            return 1

    handle = Broken.remote()
    with pytest.raises(RayActorError, match="constructor failed"):
        ray.get(handle.f.remote())


@pytest.mark.parametrize(
    "ray_start", [{"num_cpus": 2, "num_gpus": 1, "resources": {"custom": 2}}], indirect=True
)
def test_class_options(ray_start):
    @ray.remote
    class Info:
        def gpus(self):
            return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

        def ping(self):
            return "pong"

    gpu_actor = Info.options(num_gpus=1).remote()
    assert ray.get(gpu_actor.gpus.remote()) == ([0], "0")
    assert ray.get(Info.remote().gpus.remote()) == ([], "")

    custom = Info.options(num_cpus=1, resources={"custom": 2}).remote()
    assert ray.get(custom.ping.remote()) == "pong"
    wait_for_condition(lambda: ray.available_resources().get("custom", 0) == 0)
    wait_for_condition(lambda: ray.available_resources().get("GPU", 0) == 0)

    named = Info.options(
        name="opts",
        namespace="elsewhere",
        max_restarts=2,
        max_task_retries=1,
        max_concurrency=3,
    ).remote()
    assert ray.get(ray.get_actor("opts", namespace="elsewhere").ping.remote()) == "pong"

    grouped = Info.options(concurrency_groups={"io": 2, "compute": 1}).remote()
    assert ray.get(grouped.ping.remote()) == "pong"

    # Options given at decoration time work too, and .options() chains.
    Decorated = ray.remote(num_cpus=0, max_restarts=1)(_Plain)
    assert ray.get(Decorated.options(name="chained").options(max_concurrency=2).remote().f.remote())
    ray.kill(named)


class _Plain:
    def f(self):
        return True


@pytest.mark.parametrize(
    ("options", "error", "option_name"),
    [
        ({"num_cpus": "one"}, TypeError, "num_cpus"),
        ({"num_cpus": -1}, ValueError, "num_cpus"),
        ({"num_gpus": 1.5}, ValueError, "num_gpus"),
        ({"resources": {"CPU": 1}}, ValueError, "num_cpus"),
        ({"resources": ["custom"]}, TypeError, "resources"),
        ({"name": 7}, TypeError, "name"),
        ({"name": ""}, TypeError, "name"),
        ({"namespace": 7}, TypeError, "namespace"),
        ({"lifetime": "forever"}, ValueError, "lifetime"),
        ({"max_restarts": -2}, ValueError, "max_restarts"),
        ({"max_restarts": "1"}, ValueError, "max_restarts"),
        ({"max_task_retries": 1.5}, ValueError, "max_task_retries"),
        ({"max_pending_calls": -2}, ValueError, "max_pending_calls"),
        ({"max_pending_calls": 1.5}, ValueError, "max_pending_calls"),
        ({"get_if_exists": True}, ValueError, "get_if_exists"),
        ({"allow_out_of_order_execution": 1}, TypeError, "allow_out_of_order_execution"),
        ({"runtime_env": {"pips": ["x"]}}, ValueError, "unknown runtime_env field 'pips'"),
        ({"enable_task_events": "no"}, TypeError, "enable_task_events"),
        ({"_metadata": 1}, TypeError, "_metadata"),
        ({"label_selector": {"zone": 1}}, TypeError, "label_selector"),
        ({"accelerator_type": 3}, TypeError, "accelerator_type"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency"),
        ({"concurrency_groups": {"io": 0}}, ValueError, "concurrency_groups"),
        ({"concurrency_groups": ["io"]}, ValueError, "concurrency_groups"),
        ({"no_such_option": 1}, ValueError, "no_such_option"),
        ({"num_returns": 2}, ValueError, "num_returns"),
    ],
)
def test_invalid_class_options(options, error, option_name):
    # Validation happens before anything reaches a cluster.
    with pytest.raises(error, match=option_name):
        ray.remote(_Plain).options(**options)
    with pytest.raises(error, match=option_name):
        ray.remote(**options)(_Plain)


def test_invalid_method_options():
    with pytest.raises(ValueError, match="bogus"):

        @ray.method(bogus=1)
        def f(self):
            pass

    with pytest.raises(TypeError, match="num_returns"):

        @ray.method(num_returns="two")
        def g(self):
            pass

    with pytest.raises(ValueError, match="num_returns"):
        ray.method(num_returns=-1)(lambda self: None)
    with pytest.raises(TypeError, match="retry_exceptions"):
        ray.method(retry_exceptions="yes")(lambda self: None)
    with pytest.raises(ValueError, match="max_task_retries"):
        ray.method(max_task_retries=-2)(lambda self: None)
    with pytest.raises(ValueError, match="_generator_backpressure_num_objects"):
        ray.method(_generator_backpressure_num_objects=0)(lambda self: None)


def test_invalid_method_call_options(ray_start):
    handle = Counter.remote()
    with pytest.raises(ValueError, match="bogus"):
        handle.incr.options(bogus=1)
    with pytest.raises(ValueError, match="num_returns"):
        handle.incr.options(num_returns=-1)
    with pytest.raises(TypeError, match="retry_exceptions"):
        handle.incr.options(retry_exceptions=[3])
    assert ray.get(handle.incr.remote()) == 1


def test_default_actor_holds_no_cpu_while_running(ray_start):
    """Without num_cpus an actor needs a CPU to be placed but holds none after,
    so more actors than CPUs can live side by side and tasks still run."""
    counters = [Counter.remote(i) for i in range(3)]
    assert ray.get([c.get.remote() for c in counters]) == [0, 1, 2]

    @ray.remote(num_cpus=2)
    def needs_both_cpus():
        return "ran"

    assert ray.get(needs_both_cpus.remote(), timeout=30) == "ran"


def test_actor_with_cpus_waits_for_free_resources(ray_start):
    first = Counter.options(num_cpus=1).remote(1)
    second = Counter.options(num_cpus=1).remote(2)
    assert ray.get([first.get.remote(), second.get.remote()]) == [1, 2]
    third = Counter.options(num_cpus=1).remote(3)
    ref = third.get.remote()
    # An actor created after it, needing no CPU, starts and answers: the
    # third one's placement has been decided by then, and it must wait.
    fourth = Counter.options(num_cpus=0).remote(4)
    assert ray.get(fourth.get.remote(), timeout=30) == 4
    assert ray.wait([ref], timeout=0)[0] == []  # both CPUs are held
    ray.kill(first)
    assert ray.get(ref, timeout=30) == 3


def test_actors_created_in_tasks_and_actors(ray_start):
    @ray.remote
    def make_counter(start):
        return Counter.remote(start)

    counter = ray.get(make_counter.remote(5))
    assert ray.get(counter.incr.remote()) == 6

    @ray.remote
    class Parent:
        def __init__(self):
            self.child = Counter.remote(100)

        def incr_child(self):
            return ray.get(self.child.incr.remote())

        def get_child(self):
            return self.child

    parent = Parent.remote()
    assert ray.get(parent.incr_child.remote()) == 101
    child = ray.get(parent.get_child.remote())
    assert ray.get(child.incr.remote()) == 102


def test_handle_equality_and_repr(ray_start):
    counter = Counter.remote()
    other = Counter.remote()
    assert counter == counter and counter != other
    assert len({counter, other, counter}) == 2
    assert "Counter" in repr(counter)
    assert isinstance(counter, ray.actor.ActorHandle)


# --------------------------------------------------------------------------
# Calls: order, handles as values, return values, errors.
# --------------------------------------------------------------------------


@ray.remote
class Log:
    """Keeps what it is given, in arrival order."""

    def __init__(self):
        self.items = []

    def append(self, item):
        self.items.append(item)

    def read(self):
        return self.items


@ray.remote
def slow_value(path):
    wait_for_file(path)
    return "slow"


def test_calls_run_in_submission_order(ray_start):
    log = Log.remote()
    for i in range(200):
        log.append.remote(i)
    assert ray.get(log.read.remote()) == list(range(200))


def test_order_kept_when_an_earlier_argument_is_not_ready(ray_start, tmp_path):
    """A call whose argument is still being computed holds back later calls."""
    go = tmp_path / "go"

    log = Log.remote()
    log.append.remote(slow_value.remote(str(go)))
    log.append.remote("fast")
    read = log.read.remote()
    go.touch()
    assert ray.get(read) == ["slow", "fast"]

    # allow_out_of_order_execution: a call runs once its arguments are ready.
    go.unlink()
    unordered = Log.options(allow_out_of_order_execution=True).remote()
    first = unordered.append.remote(slow_value.remote(str(go)))
    unordered.append.remote("fast")
    assert ray.get(unordered.read.remote(), timeout=60) == ["fast"]
    go.touch()
    ray.get(first)
    assert ray.get(unordered.read.remote()) == ["fast", "slow"]


def test_order_kept_behind_a_waiting_call_to_a_located_actor(ray_start, tmp_path):
    """Once the actor is located, a call with nothing to wait for is sent by
    the caller's own thread; it must still not pass a call before it that
    waits for its argument, nor one still on its way to the loop."""
    go = tmp_path / "go"

    log = Log.remote()
    assert ray.get(log.read.remote()) == []  # located: calls may go from this thread
    log.append.remote("first")
    log.append.remote(slow_value.remote(str(go)))
    for i in range(50):
        log.append.remote(i)
    read = log.read.remote()
    go.touch()
    assert ray.get(read) == ["first", "slow", *range(50)]


def test_handles_passed_to_tasks_actors_and_put_objects(ray_start):
    counter = Counter.remote()

    @ray.remote
    def incr_from_task(handle, by):
        return ray.get(handle.incr.remote(by))

    @ray.remote
    class Caller:
        def __init__(self, handle):
            self.handle = handle

        def incr(self, by):
            return ray.get(self.handle.incr.remote(by))

    assert ray.get(incr_from_task.remote(counter, 1)) == 1
    caller = Caller.remote(counter)
    assert ray.get(caller.incr.remote(10)) == 11

    boxed = ray.put({"counter": counter})
    assert ray.get(incr_from_task.remote(ray.get(boxed)["counter"], 100)) == 111

    @ray.remote
    def incr_from_box(box):
        return ray.get(box["counter"].incr.remote(1000))

    assert ray.get(incr_from_box.remote(boxed)) == 1111
    assert ray.get(counter.get.remote()) == 1111


def test_methods_returning_refs_and_large_arrays(ray_start):
    @ray.remote
    class Store:
        def make_ref(self, value):
            return ray.put(value)

        def make_array(self, n):
            return np.arange(n, dtype=np.int64)

        def total(self, array):
            return int(array.sum())

    store = Store.remote()
    inner = ray.get(store.make_ref.remote("in the store"))
    assert isinstance(inner, ray.ObjectRef)
    assert ray.get(inner) == "in the store"

    n = 100_000  # 800 KB, well over the inline limit
    array = ray.get(store.make_array.remote(n))
    assert array.nbytes > 100 * 1024
    assert np.array_equal(array, np.arange(n))
    assert ray.get(store.total.remote(array)) == n * (n - 1) // 2
    assert ray.get(store.total.remote(store.make_array.remote(n))) == n * (n - 1) // 2


def test_multiple_returns(ray_start):
    @ray.remote
    class Pair:
        @ray.method(num_returns=2)
        def split(self, x):
            return x, x * 2

        def as_tuple(self, x):
            return x, x * 3

        @ray.method(num_returns=0)
        def nothing(self):
            return None

    pair = Pair.remote()
    a, b = pair.split.remote(5)
    assert ray.get([a, b]) == [5, 10]
    assert ray.get(pair.as_tuple.remote(2)) == (2, 6)
    c, d = pair.as_tuple.options(num_returns=2).remote(2)
    assert ray.get(c) == 2 and ray.get(d) == 6
    assert pair.nothing.remote() is None
    single = pair.split.options(num_returns=1).remote(1)
    assert ray.get(single) == (1, 2)


def test_method_exception_fails_only_that_call(ray_start):
    @ray.remote
    class Flaky:
        def __init__(self):
            self.calls = 0

        def work(self, fail):
            self.calls += 1
            if fail:
                raise MyError(f"failed on call {self.calls}")
            return self.calls

    flaky = Flaky.remote()
    assert ray.get(flaky.work.remote(False)) == 1
    bad = flaky.work.remote(True)
    good = flaky.work.remote(False)
    with pytest.raises(MyError, match="failed on call 2") as info:
        ray.get(bad)
    assert isinstance(info.value, RayTaskError)
    assert ray.get(good) == 3  # state kept, later calls served

    # An actor's error passed as an argument fails the call it is passed to.
    with pytest.raises(MyError):
        ray.get(flaky.work.remote(bad))
    assert ray.get(flaky.work.remote(False)) == 4


@ray.remote(max_task_retries=2)
class FailsTwice:
    """Each method raises on its first two calls per key, then returns the
    number of calls made with that key."""

    def __init__(self):
        self.calls: dict[str, int] = {}

    def _count(self, key: str, error: type = MyError) -> int:
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] <= 2:
            raise error(f"call {self.calls[key]} with {key}")
        return self.calls[key]

    @ray.method(retry_exceptions=True)
    def retried(self, key):
        return self._count(key)

    def plain(self, key):
        return self._count(key)

    @ray.method(retry_exceptions=[KeyError])
    def key_errors_only(self, key, error_name):
        return self._count(key, {"KeyError": KeyError, "MyError": MyError}[error_name])

    @ray.method(retry_exceptions=True, max_task_retries=1)
    def one_retry(self, key):
        return self._count(key)

    def count(self, key):
        return self.calls.get(key, 0)


def test_retry_exceptions_of_actor_methods(ray_start):
    actor = FailsTwice.remote()
    # @method(retry_exceptions=True) within the actor's max_task_retries=2.
    assert ray.get(actor.retried.remote("a")) == 3
    # Without retry_exceptions an exception is the call's result at once...
    with pytest.raises(MyError, match="call 1 with b"):
        ray.get(actor.plain.remote("b"))
    # ... unless the call's .options() allow it.
    assert ray.get(actor.plain.options(retry_exceptions=True).remote("c")) == 3
    with pytest.raises(MyError, match="call 1 with d"):
        ray.get(actor.retried.options(retry_exceptions=False).remote("d"))
    # A list retries only those exception classes.
    assert ray.get(actor.key_errors_only.remote("e", "KeyError")) == 3
    with pytest.raises(MyError, match="call 1 with f"):
        ray.get(actor.key_errors_only.remote("f", "MyError"))
    # Retries stop at max_task_retries (the method's, then the call's).
    with pytest.raises(MyError, match="call 2 with g"):
        ray.get(actor.one_retry.remote("g"))
    assert ray.get(actor.one_retry.options(max_task_retries=2).remote("h")) == 3
    assert ray.get([actor.count.remote(k) for k in "bdfg"]) == [1, 1, 1, 2]

    # An actor whose max_task_retries is 0 (the default) never retries.
    no_retries = FailsTwice.options(max_task_retries=0).remote()
    with pytest.raises(MyError, match="call 1 with a"):
        ray.get(no_retries.retried.remote("a"))
    # Handles passed to another process keep the methods' retry settings.

    @ray.remote
    def call_through(handle):
        return ray.get(handle.key_errors_only.remote("i", "KeyError"))

    assert ray.get(call_through.remote(actor)) == 3


def test_max_pending_calls(ray_start, tmp_path):
    assert issubclass(PendingCallsLimitExceeded, RayError)
    gate = str(tmp_path / "gate")

    @ray.remote(max_pending_calls=2)
    class Gated:
        def wait(self, path):
            wait_for_file(path)
            return "done"

    actor = Gated.remote()
    held = [actor.wait.remote(gate), actor.wait.remote(gate)]
    with pytest.raises(PendingCallsLimitExceeded, match="max_pending_calls=2"):
        actor.wait.remote(gate)
    open(gate, "w").close()
    assert ray.get(held) == ["done", "done"]
    # Finished calls no longer count.
    assert ray.get([actor.wait.remote(gate), actor.wait.remote(gate)]) == ["done", "done"]
    # Calls that fail count out too: an actor killed with calls pending.
    os.remove(gate)
    held = [actor.wait.remote(gate), actor.wait.remote(gate)]
    ray.kill(actor)
    for ref in held:
        with pytest.raises(RayActorError):
            ray.get(ref)
    with pytest.raises(RayActorError):
        ray.get(actor.wait.remote(gate))
    unlimited = Gated.options(max_pending_calls=-1).remote()
    many = [unlimited.wait.remote(gate) for _ in range(20)]
    open(gate, "w").close()
    assert ray.get(many) == ["done"] * 20


def test_handle_kept_alive_by_other_holders(ray_start):
    """The creator dropping its handle does not end an actor that another
    actor still holds a handle to."""

    @ray.remote
    class Holder:
        def __init__(self, handle):
            self.handle = handle

        def incr(self):
            return ray.get(self.handle.incr.remote())

    counter = Counter.remote()
    pid = ray.get(counter.pid.remote())
    holder = Holder.remote(counter)
    assert ray.get(holder.incr.remote()) == 1
    del counter
    _wait_until_a_later_release_ended_its_actor()
    assert ray.get(holder.incr.remote()) == 2
    assert not _process_gone(pid)


def test_calls_from_many_callers(ray_start):
    counter = Counter.remote()

    @ray.remote
    def incr_many(handle, n):
        return [ray.get(handle.incr.remote()) for _ in range(n)]

    results = ray.get([incr_many.remote(counter, 25) for _ in range(4)])
    assert ray.get(counter.get.remote()) == 100
    # Every call saw a distinct value, and each caller's calls ran in its order.
    assert sorted(v for r in results for v in r) == list(range(1, 101))
    assert all(r == sorted(r) for r in results)


def test_inherited_methods(ray_start):
    class Base:
        def __init__(self, x):
            self.x = x

        def base_method(self):
            return f"base {self.x}"

        def overridden(self):
            return "base"

    @ray.remote
    class Derived(Base):
        def overridden(self):
            return "derived " + super().overridden()

    derived = Derived.remote(3)
    assert ray.get(derived.base_method.remote()) == "base 3"
    assert ray.get(derived.overridden.remote()) == "derived base"


def test_keyword_arguments_and_defaults(ray_start):
    @ray.remote
    class Formatter:
        def __init__(self, prefix="<", *, suffix=">"):
            self.prefix, self.suffix = prefix, suffix

        def fmt(self, value, *extra, sep=" ", **more):
            parts = [str(value), *map(str, extra), *(f"{k}={v}" for k, v in sorted(more.items()))]
            return self.prefix + sep.join(parts) + self.suffix

    formatter = Formatter.remote(suffix="]")
    assert ray.get(formatter.fmt.remote(1, 2, sep=",", b=ray.put(3), a=1)) == "<1,2,a=1,b=3]"


# --------------------------------------------------------------------------
# Concurrency: threaded actors, async actors, concurrency groups.
# --------------------------------------------------------------------------


def test_threaded_actor_runs_calls_concurrently(ray_start):
    @ray.remote(max_concurrency=4)
    class Meeting:
        def __init__(self):
            self.barrier = threading.Barrier(4, timeout=30)

        def meet(self, i):
            self.barrier.wait()  # only returns once 4 calls are in it at once
            return i, threading.current_thread().name

    meeting = Meeting.remote()
    results = ray.get([meeting.meet.remote(i) for i in range(4)])
    assert [i for i, _ in results] == [0, 1, 2, 3]
    assert len({thread for _, thread in results}) == 4


def test_async_actor(ray_start):
    n = 5

    @ray.remote
    class AsyncActor:
        def __init__(self):
            self.event = asyncio.Event()
            self.arrived = 0

        async def wait_for_all(self, i):
            self.arrived += 1
            if self.arrived == n:
                self.event.set()
            await self.event.wait()
            return i

        async def await_ref(self, refs):
            return await refs[0]

        def sync_method(self):
            return "sync", threading.current_thread().name

        async def fail(self):
            await asyncio.sleep(0)
            raise MyError("async failure")

    actor = AsyncActor.remote()
    # Each call waits until the last one arrives: they must all run at once.
    assert ray.get([actor.wait_for_all.remote(i) for i in range(n)]) == list(range(n))

    @ray.remote
    def produce():
        return "produced"

    assert ray.get(actor.await_ref.remote([produce.remote()])) == "produced"
    kind, _thread = ray.get(actor.sync_method.remote())
    assert kind == "sync"
    with pytest.raises(MyError, match="async failure"):
        ray.get(actor.fail.remote())
    assert ray.get(actor.wait_for_all.remote(n)) == n  # still serving


def test_async_actor_max_concurrency_bounds_calls(ray_start):
    @ray.remote(max_concurrency=2, concurrency_groups={"control": 1})
    class Bounded:
        def __init__(self):
            self.release = asyncio.Event()
            self.running = 0
            self.most = 0

        async def work(self):
            self.running += 1
            self.most = max(self.most, self.running)
            await self.release.wait()
            self.running -= 1
            return self.most

        @ray.method(concurrency_group="control")
        async def running_now(self):
            return self.running

        @ray.method(concurrency_group="control")
        async def open(self):
            self.release.set()

    bounded = Bounded.remote()
    refs = [bounded.work.remote() for _ in range(4)]
    # Two calls are running (and waiting) before any is let go: the release
    # cannot come first and make the bound look kept by calls never overlapping.
    wait_for_condition(lambda: ray.get(bounded.running_now.remote()) >= 2)
    assert ray.get(bounded.running_now.remote()) == 2
    bounded.open.remote()
    assert max(ray.get(refs)) == 2


def test_concurrency_groups_threaded(ray_start):
    @ray.remote(concurrency_groups={"io": 2, "compute": 1})
    class Grouped:
        def __init__(self):
            self.io_barrier = threading.Barrier(2, timeout=30)
            self.release_compute = threading.Event()
            self.compute_started = 0

        @ray.method(concurrency_group="io")
        def io(self, i):
            self.io_barrier.wait()  # two io calls at once
            return i

        @ray.method(concurrency_group="compute")
        def compute(self):
            self.compute_started += 1
            if not self.release_compute.wait(timeout=30):
                raise TimeoutError("never released")
            return "computed"

        def status(self):  # the default group
            return self.compute_started

        def release(self):
            self.release_compute.set()

    grouped = Grouped.remote()
    first = grouped.compute.remote()
    second = grouped.compute.remote()
    wait_for_condition(lambda: ray.get(grouped.status.remote()) == 1)
    # The compute group is busy, yet two io calls run side by side.
    assert ray.get([grouped.io.remote(0), grouped.io.remote(1)]) == [0, 1]
    # The second compute call still waits behind the first (group size 1).
    assert ray.get(grouped.status.remote()) == 1
    assert ray.wait([first, second], timeout=0)[0] == []
    # A call can pick its group with .options().
    assert ray.get(grouped.status.options(concurrency_group="io").remote()) == 1
    grouped.release.remote()
    assert ray.get([first, second]) == ["computed", "computed"]
    assert ray.get(grouped.status.remote()) == 2


def test_concurrency_groups_async(ray_start):
    @ray.remote(concurrency_groups={"io": 2, "compute": 1})
    class Grouped:
        def __init__(self):
            self.io_arrived = 0
            self.io_all_here = asyncio.Event()
            self.release_compute = asyncio.Event()
            self.compute_started = 0

        @ray.method(concurrency_group="io")
        async def io(self, i):
            self.io_arrived += 1
            if self.io_arrived == 2:
                self.io_all_here.set()
            await self.io_all_here.wait()
            return i

        @ray.method(concurrency_group="compute")
        async def compute(self):
            self.compute_started += 1
            await self.release_compute.wait()
            return "computed"

        async def status(self):
            return self.compute_started

        async def release(self):
            self.release_compute.set()

    grouped = Grouped.remote()
    first = grouped.compute.remote()
    second = grouped.compute.remote()
    wait_for_condition(lambda: ray.get(grouped.status.remote()) == 1)
    assert ray.get([grouped.io.remote(0), grouped.io.remote(1)]) == [0, 1]
    assert ray.get(grouped.status.remote()) == 1
    grouped.release.remote()
    assert ray.get([first, second]) == ["computed", "computed"]
    assert ray.get(grouped.status.remote()) == 2


# --------------------------------------------------------------------------
# Named actors and namespaces.
# --------------------------------------------------------------------------


def test_named_actor(ray_start):
    counter = Counter.options(name="counter").remote()
    assert ray.get(counter.incr.remote()) == 1
    found = ray.get_actor("counter")
    assert found == counter
    assert ray.get(found.incr.remote()) == 2

    @ray.remote
    def incr_by_name():
        return ray.get(ray.get_actor("counter").incr.remote())

    assert ray.get(incr_by_name.remote()) == 3

    with pytest.raises(ValueError, match="absent"):
        ray.get_actor("absent")
    with pytest.raises(ValueError, match="already taken"):
        Counter.options(name="counter").remote()

    same = Counter.options(name="counter", get_if_exists=True).remote()
    assert same == counter
    assert ray.get(same.get.remote()) == 3
    fresh = Counter.options(name="other", get_if_exists=True).remote(7)
    assert ray.get(fresh.get.remote()) == 7


@pytest.mark.parametrize("ray_start", [{"num_cpus": 2, "namespace": "a"}], indirect=True)
def test_namespaces(ray_start):
    assert ray.get_runtime_context().namespace == "a"
    in_a = Counter.options(name="shared").remote(1)
    in_b = Counter.options(name="shared", namespace="b").remote(2)
    assert ray.get(ray.get_actor("shared").get.remote()) == 1
    assert ray.get(ray.get_actor("shared", namespace="a").get.remote()) == 1
    assert ray.get(ray.get_actor("shared", namespace="b").get.remote()) == 2
    with pytest.raises(ValueError):
        ray.get_actor("shared", namespace="c")

    @ray.remote
    def lookup(namespace):
        return ray.get(ray.get_actor("shared", namespace=namespace).get.remote())

    # Tasks run in their job's namespace.
    assert ray.get([lookup.remote(None), lookup.remote("b")]) == [1, 2]
    del in_a, in_b


def test_name_is_free_again_after_kill(ray_start):
    first = Counter.options(name="reused").remote(1)
    assert ray.get(first.get.remote()) == 1
    ray.kill(first)
    with pytest.raises(ValueError):
        ray.get_actor("reused")
    second = Counter.options(name="reused").remote(2)
    assert ray.get(ray.get_actor("reused").get.remote()) == 2
    assert second != first


# --------------------------------------------------------------------------
# Lifetimes.
# --------------------------------------------------------------------------


def test_actor_ends_when_its_handles_are_gone(ray_start):
    counter = Counter.remote()
    pid = ray.get(counter.pid.remote())
    copy = pickle.loads(pickle.dumps(counter))  # a second handle object
    assert copy is not counter and copy == counter
    del counter
    _wait_until_a_later_release_ended_its_actor()
    assert ray.get(copy.incr.remote()) == 1  # one handle is still left
    assert not _process_gone(pid)
    del copy
    wait_for_condition(lambda: _process_gone(pid), message="actor process still running")


def test_pending_calls_finish_after_handle_is_dropped(ray_start, tmp_path):
    assert ray.get(Counter.remote(41).incr.remote()) == 42

    @ray.remote
    class Slow:
        def work(self, i, go):
            wait_for_file(go)
            return i

        def pid(self):
            return os.getpid()

    go = tmp_path / "go"
    slow = Slow.remote()
    pid = ray.get(slow.pid.remote())
    refs = [slow.work.remote(i, str(go)) for i in range(5)]
    del slow
    go.touch()  # the calls could not finish before the handle was dropped
    assert ray.get(refs) == list(range(5))
    wait_for_condition(lambda: _process_gone(pid))


def test_call_waiting_for_its_argument_finishes_after_handle_is_dropped(ray_start, tmp_path):
    go = tmp_path / "go"

    @ray.remote
    def slow_value(path):
        wait_for_file(path)
        return 20

    ref = Counter.remote(1).incr.remote(slow_value.remote(str(go)))
    go.touch()
    assert ray.get(ref) == 21


def test_actor_ends_when_handle_dropped_during_constructor(ray_start, tmp_path):
    started, go = tmp_path / "started", tmp_path / "go"

    @ray.remote
    class SlowStart:
        def __init__(self, started_path, go_path):
            with open(started_path, "w") as f:
                f.write(str(os.getpid()))
            wait_for_file(go_path)

        def f(self):
            return 1

    actor = SlowStart.remote(str(started), str(go))
    wait_for_condition(lambda: started.exists() and started.read_text())
    pid = int(started.read_text())
    del actor
    go.touch()
    wait_for_condition(lambda: _process_gone(pid), message="actor process still running")


def test_actor_fate_shares_with_its_owner(ray_start):
    """An actor created by another actor dies with its creator (its owner),
    unless it is detached."""

    @ray.remote
    class Parent:
        def make(self, detached):
            options = {"lifetime": "detached", "name": "orphan"} if detached else {}
            return Counter.options(**options).remote()

        def pid(self):
            return os.getpid()

    parent = Parent.remote()
    owned = ray.get(parent.make.remote(False))
    detached = ray.get(parent.make.remote(True))
    assert ray.get([owned.incr.remote(), detached.incr.remote()]) == [1, 1]

    os.kill(ray.get(parent.pid.remote()), signal.SIGKILL)
    wait_for_condition(
        lambda: _raises(ActorDiedError, lambda: ray.get(owned.incr.remote())), timeout=30
    )
    assert ray.get(detached.incr.remote()) == 2
    assert ray.get(ray.get_actor("orphan").incr.remote()) == 3
    ray.kill(detached)


def test_detached_actor_outlives_its_handle(ray_start):
    detached = Counter.options(name="keeper", lifetime="detached").remote(5)
    pid = ray.get(detached.pid.remote())
    del detached
    _wait_until_a_later_release_ended_its_actor()

    found = ray.get_actor("keeper")
    assert ray.get(found.pid.remote()) == pid
    assert ray.get(found.incr.remote()) == 6
    ray.kill(found)
    wait_for_condition(lambda: _process_gone(pid))


# --------------------------------------------------------------------------
# kill and exit_actor.
# --------------------------------------------------------------------------


def test_kill(ray_start):
    counter = Counter.remote()
    pid = ray.get(counter.pid.remote())
    ray.kill(counter)
    with pytest.raises(ActorDiedError) as info:
        ray.get(counter.incr.remote())
    assert isinstance(info.value, RayActorError)
    wait_for_condition(lambda: _process_gone(pid))
    with pytest.raises(ValueError, match="only supports actors; got str"):
        ray.kill("not an actor")


@pytest.mark.parametrize("max_task_retries", [0, 2])
def test_kill_fails_calls_in_flight(ray_start, tmp_path, max_task_retries):
    started = tmp_path / "started"

    @ray.remote(max_task_retries=max_task_retries)
    class Blocker:
        def block(self, started_path):
            open(started_path, "w").close()
            threading.Event().wait()

    blocker = Blocker.remote()
    in_flight = blocker.block.remote(str(started))
    queued = blocker.block.remote(str(started))
    wait_for_condition(started.exists)
    ray.kill(blocker)
    with pytest.raises(ActorDiedError):
        ray.get(in_flight, timeout=30)
    with pytest.raises(ActorDiedError):
        ray.get(queued, timeout=30)


def test_kill_with_restart(ray_start):
    counter = Counter.options(max_restarts=2).remote(3)
    assert ray.get(counter.incr.remote()) == 4
    pid = ray.get(counter.pid.remote())
    ray.kill(counter, no_restart=False)
    new_pid = _restarted_pid(counter, pid)
    assert ray.get(counter.get.remote()) == 3
    # With no_restart (the default) it stays dead, though a restart is left.
    ray.kill(counter)
    with pytest.raises(ActorDiedError):
        ray.get(counter.get.remote())
    wait_for_condition(lambda: _process_gone(new_pid))
    (row,) = list_actors(filters=[("actor_id", "=", counter._actor_id.hex())], detail=True)
    assert row["state"] == "DEAD" and row["num_restarts"] == 1, row
    with pytest.raises(ActorDiedError):
        ray.get(counter.get.remote())


def test_kill_in_flight_call_of_restartable_actor(ray_start, tmp_path):
    started = tmp_path / "started"

    @ray.remote(max_restarts=2, max_task_retries=2)
    class Blocker:
        def block(self, started_path):
            open(started_path, "w").close()
            threading.Event().wait()

    blocker = Blocker.remote()
    ref = blocker.block.remote(str(started))
    wait_for_condition(started.exists)
    ray.kill(blocker)
    with pytest.raises(ActorDiedError):
        ray.get(ref, timeout=30)


def test_kill_while_constructor_runs(ray_start, tmp_path):
    started = tmp_path / "started"

    @ray.remote
    class SlowStart:
        def __init__(self, started_path):
            open(started_path, "w").close()
            threading.Event().wait()

        def f(self):
            return 1

    actor = SlowStart.remote(str(started))
    ref = actor.f.remote()
    wait_for_condition(started.exists)
    ray.kill(actor)
    with pytest.raises(ActorDiedError):
        ray.get(ref, timeout=30)


def test_exit_actor(ray_start):
    @ray.remote(max_restarts=1)
    class Quitter:
        def pid(self):
            return os.getpid()

        def quit(self):
            ray.actor.exit_actor()

    quitter = Quitter.remote()
    pid = ray.get(quitter.pid.remote())
    with pytest.raises(ActorDiedError):
        ray.get(quitter.quit.remote())
    wait_for_condition(lambda: _process_gone(pid))
    with pytest.raises(ActorDiedError):
        ray.get(quitter.pid.remote())  # not restarted despite max_restarts=1

    @ray.remote
    def not_an_actor():
        ray.actor.exit_actor()

    with pytest.raises(TypeError, match="non-actor"):
        ray.get(not_an_actor.remote())


def test_exit_actor_fails_queued_calls(ray_start, tmp_path):
    go = tmp_path / "go"

    @ray.remote
    class Quitter:
        def quit_when(self, path):
            wait_for_file(path)
            ray.actor.exit_actor()

        def f(self):
            return 1

    quitter = Quitter.remote()
    assert ray.get(quitter.f.remote()) == 1
    quit_ref = quitter.quit_when.remote(str(go))
    queued = [quitter.f.remote() for _ in range(3)]
    go.touch()
    with pytest.raises(ActorDiedError):
        ray.get(quit_ref)
    for ref in queued:
        with pytest.raises(ActorDiedError):
            ray.get(ref, timeout=30)


@pytest.mark.parametrize("kind", ["async", "threaded"])
def test_exit_actor_in_async_and_threaded_actors(ray_start, kind):
    if kind == "async":

        @ray.remote
        class Quitter:
            async def pid(self):
                return os.getpid()

            async def quit(self):
                ray.actor.exit_actor()

    else:

        @ray.remote(max_concurrency=2)
        class Quitter:
            def pid(self):
                return os.getpid()

            def quit(self):
                ray.actor.exit_actor()

    quitter = Quitter.remote()
    pid = ray.get(quitter.pid.remote())
    with pytest.raises(ActorDiedError):
        ray.get(quitter.quit.remote(), timeout=30)
    wait_for_condition(lambda: _process_gone(pid))
    with pytest.raises(ActorDiedError):
        ray.get(quitter.pid.remote(), timeout=30)


# --------------------------------------------------------------------------
# Restarts.
# --------------------------------------------------------------------------


def _restarted_pid(handle, old_pid: int) -> int:
    """Waits until calls reach a new process of the actor; returns its pid."""
    pids = []
    wait_for_condition(
        lambda: pids.append(ray.get(handle.pid.remote())) or pids[-1] != old_pid,
        timeout=30,
        message="the actor was not restarted",
    )
    return pids[-1]


def test_restart_after_sigkill(ray_start):
    counter = Counter.options(max_restarts=1, name="phoenix").remote(10)
    assert ray.get(counter.incr.remote()) == 11
    pid = ray.get(counter.pid.remote())
    os.kill(pid, signal.SIGKILL)
    new_pid = _restarted_pid(counter, pid)
    assert new_pid != pid
    assert ray.get_actor("phoenix") == counter  # the name stays through a restart
    assert ray.get(counter.get.remote()) == 10  # the constructor ran again
    assert ray.get(counter.incr.remote()) == 11

    os.kill(new_pid, signal.SIGKILL)  # out of restarts now
    wait_for_condition(
        lambda: _raises(ActorDiedError, lambda: ray.get(counter.get.remote())), timeout=30
    )
    with pytest.raises(ActorDiedError):
        ray.get(counter.incr.remote())
    with pytest.raises(ValueError):
        ray.get_actor("phoenix")  # a dead actor's name is free


def _raises(error, fn) -> bool:
    try:
        fn()
    except error:
        return True
    return False


def test_restart_reuses_constructor_arguments(ray_start):
    """A restart runs the constructor with the same arguments, even large ones
    and refs the driver dropped since."""

    @ray.remote(max_restarts=1)
    class Big:
        def __init__(self, array, small):
            self.total = int(array.sum()) + small

        def total_value(self):
            return self.total

        def pid(self):
            return os.getpid()

    array = ray.put(np.ones(200_000, dtype=np.int64))
    big = Big.remote(array, ray.put(5))
    del array
    assert ray.get(big.total_value.remote()) == 200_005
    pid = ray.get(big.pid.remote())
    os.kill(pid, signal.SIGKILL)
    _restarted_pid(big, pid)
    assert ray.get(big.total_value.remote()) == 200_005


def test_restart_after_exit_in_method(ray_start):
    @ray.remote(max_restarts=1)
    class Crasher:
        def __init__(self):
            self.calls = 0

        def call(self):
            self.calls += 1
            return self.calls

        def crash(self):
            os._exit(1)

        def pid(self):
            return os.getpid()

    crasher = Crasher.remote()
    assert ray.get(crasher.call.remote()) == 1
    pid = ray.get(crasher.pid.remote())
    with pytest.raises(ActorDiedError):
        ray.get(crasher.crash.remote())
    _restarted_pid(crasher, pid)
    assert ray.get(crasher.call.remote()) == 1
    with pytest.raises(ActorDiedError):
        ray.get(crasher.crash.remote())
    with pytest.raises(ActorDiedError):
        ray.get(crasher.call.remote())


@pytest.mark.parametrize(
    ("where", "retries"),
    [("class", 1), ("class", 0), ("method", 1), ("call", 1), ("call", 0)],
)
def test_call_in_flight_during_crash(ray_start, tmp_path, where, retries):
    """A call running when the actor's process dies is run again after the
    restart if max_task_retries (of the class, the method or the call) allows;
    otherwise it fails with ActorDiedError."""
    marker = tmp_path / "first-attempt"

    def block_first_time(self, path):
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(str(os.getpid()))
            threading.Event().wait()  # blocks until the process is killed
        return "done", os.getpid(), self.incarnation

    class Worker:
        def __init__(self):
            self.incarnation = ray.get_runtime_context().was_current_actor_reconstructed

        def pid(self):
            return os.getpid()

    if where == "method":
        Worker.block_first_time = ray.method(max_task_retries=retries)(block_first_time)
    else:
        Worker.block_first_time = block_first_time
    class_retries = retries if where == "class" else 1 - retries
    worker = ray.remote(max_restarts=1, max_task_retries=class_retries)(Worker).remote()
    if where == "call":
        method = worker.block_first_time.options(max_task_retries=retries)
    else:
        method = worker.block_first_time
    ref = method.remote(str(marker))
    wait_for_condition(lambda: marker.exists() and marker.read_text())
    pid = int(marker.read_text())
    os.kill(pid, signal.SIGKILL)
    if retries:
        result, new_pid, reconstructed = ray.get(ref, timeout=30)
        assert result == "done" and new_pid != pid and reconstructed is True
    else:
        with pytest.raises(ActorDiedError):
            ray.get(ref, timeout=30)
        # The actor itself still restarts.
        assert _restarted_pid(worker, pid) != pid


def test_retried_calls_keep_their_order(ray_start, tmp_path):
    marker = tmp_path / "first-attempt"

    @ray.remote(max_restarts=1, max_task_retries=-1)
    class Log:
        def __init__(self):
            self.items = []

        def block_first_time(self, path):
            self.items.append("blocker")
            if not os.path.exists(path):
                with open(path, "w") as f:
                    f.write(str(os.getpid()))
                threading.Event().wait()  # blocks until the process is killed

        def append(self, item):
            self.items.append(item)

        def read(self):
            return self.items

    log = Log.remote()
    log.append.remote("before")
    log.block_first_time.remote(str(marker))
    for i in range(5):
        log.append.remote(i)  # queued behind the blocked call
    wait_for_condition(lambda: marker.exists() and marker.read_text())
    os.kill(int(marker.read_text()), signal.SIGKILL)
    # The restarted actor starts empty; the calls that had not finished run
    # again, in their order.
    assert ray.get(log.read.remote(), timeout=30) == ["blocker", 0, 1, 2, 3, 4]


def test_infinite_restarts(ray_start):
    counter = Counter.options(max_restarts=-1).remote(0)
    pid = ray.get(counter.pid.remote())
    pids = {pid}
    for _ in range(3):
        assert ray.get(counter.incr.remote()) == 1
        os.kill(pid, signal.SIGKILL)
        pid = _restarted_pid(counter, pid)
        pids.add(pid)
    assert len(pids) == 4
    assert ray.get(counter.incr.remote()) == 1


# --------------------------------------------------------------------------
# Runtime context and worker output.
# --------------------------------------------------------------------------


def test_runtime_context_in_actor(ray_start):
    @ray.remote(max_restarts=1)
    class Context:
        def actor_id(self):
            return ray.get_runtime_context().get_actor_id()

        def reconstructed(self):
            return ray.get_runtime_context().was_current_actor_reconstructed

        def pid(self):
            return os.getpid()

    @ray.remote
    def task_actor_id():
        return ray.get_runtime_context().get_actor_id()

    actor = Context.remote()
    assert ray.get(actor.actor_id.remote()) == actor._ray_actor_id == actor._actor_id.hex()
    assert ray.get(task_actor_id.remote()) is None
    assert ray.get_runtime_context().get_actor_id() is None
    assert ray.get(actor.reconstructed.remote()) is False

    pid = ray.get(actor.pid.remote())
    os.kill(pid, signal.SIGKILL)
    _restarted_pid(actor, pid)
    assert ray.get(actor.reconstructed.remote()) is True
    assert ray.get(actor.actor_id.remote()) == actor._actor_id.hex()


def test_actor_output_reaches_driver(ray_start, capfd):
    output = DriverOutput(capfd)

    @ray.remote
    class Greeter:
        def greet(self, name):
            print(f"hello {name}")
            return os.getpid()

    @ray.remote
    class AsyncGreeter:
        async def greet(self, name):
            print(f"hello {name}")
            return os.getpid()

    @ray.remote(max_concurrency=2)
    class ThreadedGreeter:
        def greet(self, name):
            print(f"hello {name}")
            return os.getpid()

    greeter = Greeter.remote()
    pid = ray.get(greeter.greet.remote("actor"))
    output.wait_for_lines(rf"\(Greeter pid={pid}\) hello actor")
    pid = ray.get(AsyncGreeter.remote().greet.remote("async"))
    output.wait_for_lines(rf"\(AsyncGreeter pid={pid}\) hello async")
    pid = ray.get(ThreadedGreeter.remote().greet.remote("threaded"))
    output.wait_for_lines(rf"\(ThreadedGreeter pid={pid}\) hello threaded")


# --------------------------------------------------------------------------
# Seed 000: returning ray.put() ObjectRefs, actor versions.
# --------------------------------------------------------------------------


def test_seed_actor_single_return_value(ray_start):
    # Same thing applies for actor tasks as well.
    @ray.remote
    class Actor:
        def task_with_single_return_value_bad(self):
            single_return_value = np.zeros(9 * 1024 * 1024)
            return ray.put(single_return_value)

        def task_with_single_return_value_good(self):
            return np.zeros(9 * 1024 * 1024)

    actor = Actor.remote()
    assert np.array_equal(
        ray.get(ray.get(actor.task_with_single_return_value_bad.remote())),
        ray.get(actor.task_with_single_return_value_good.remote()),
    )


def test_seed_actor_static_multiple_returns(ray_start):
    @ray.remote
    class Actor:
        @ray.method(num_returns=1)
        def task_with_static_multiple_returns_bad1(self):
            return_value_1_ref = ray.put(1)
            return_value_2_ref = ray.put(2)
            return (return_value_1_ref, return_value_2_ref)

        @ray.method(num_returns=2)
        def task_with_static_multiple_returns_bad2(self):
            return_value_1_ref = ray.put(1)
            return_value_2_ref = ray.put(2)
            return (return_value_1_ref, return_value_2_ref)

        @ray.method(num_returns=2)
        def task_with_static_multiple_returns_good(self):
            # This is faster and more fault tolerant.
            return_value_1 = 1
            return_value_2 = 2
            return (return_value_1, return_value_2)

    actor = Actor.remote()
    assert (
        ray.get(ray.get(actor.task_with_static_multiple_returns_bad1.remote())[0])
        == ray.get(ray.get(actor.task_with_static_multiple_returns_bad2.remote()[0]))
        == ray.get(actor.task_with_static_multiple_returns_good.remote()[0])
    )


# --------------------------------------------------------------------------
# Seed 004: Monte Carlo estimation of pi with a progress actor.
# --------------------------------------------------------------------------


def test_seed_monte_carlo_pi(ray_start, capfd):
    output = DriverOutput(capfd)

    # Define a Ray actor that tracks progress
    @ray.remote
    class ProgressActor:
        def __init__(self, total_num_samples: int):
            self.total_num_samples = total_num_samples
            self.num_samples_completed_per_task = {}

        def report_progress(self, task_id: int, num_samples_completed: int) -> None:
            self.num_samples_completed_per_task[task_id] = num_samples_completed

        def get_progress(self) -> float:
            return sum(self.num_samples_completed_per_task.values()) / self.total_num_samples

    # Define a Ray task that does the sampling
    @ray.remote
    def sampling_task(num_samples: int, task_id: int, progress_actor: ray.actor.ActorHandle) -> int:
        num_inside = 0
        for i in range(num_samples):
            x, y = random.uniform(-1, 1), random.uniform(-1, 1)
            if math.hypot(x, y) <= 1:
                num_inside += 1
            # Report progress every 10 thousand samples (the docs: every million).
            if (i + 1) % 10_000 == 0:
                progress_actor.report_progress.remote(task_id, i + 1)
        # Report the final progress.
        progress_actor.report_progress.remote(task_id, num_samples)
        return num_inside

    # Configuration (the docs use 10_000_000 samples per task)
    NUM_SAMPLING_TASKS = 10
    NUM_SAMPLES_PER_TASK = 50_000
    TOTAL_NUM_SAMPLES = NUM_SAMPLING_TASKS * NUM_SAMPLES_PER_TASK

    # Create the progress actor
    progress_actor = ProgressActor.remote(TOTAL_NUM_SAMPLES)

    # Create and execute all sampling tasks in parallel
    results = [
        sampling_task.remote(NUM_SAMPLES_PER_TASK, i, progress_actor)
        for i in range(NUM_SAMPLING_TASKS)
    ]

    # Query progress periodically (the docs sleep a second between queries).
    def query_progress() -> bool:
        progress = ray.get(progress_actor.get_progress.remote())
        print(f"Progress: {int(progress * 100)}%")
        return progress == 1

    wait_for_condition(query_progress, timeout=60, interval=0.1)

    # Get all the sampling tasks results and calculate π
    total_num_inside = sum(ray.get(results))
    pi = (total_num_inside * 4) / TOTAL_NUM_SAMPLES
    print(f"Estimated value of π is: {pi}")

    lines = output.wait_for_lines(r"Progress: \d+%")
    assert lines[-1] == "Progress: 100%"
    percents = [int(re.fullmatch(r"Progress: (\d+)%", line).group(1)) for line in lines]
    assert percents == sorted(percents)
    [estimate] = output.wait_for_lines(r"Estimated value of π is: [\d.]+")
    assert abs(float(estimate.rsplit(" ", 1)[1]) - math.pi) < 0.1
    assert abs(pi - math.pi) < 0.1
