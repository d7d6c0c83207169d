"""Cancellation and retries after crashes, on a real local cluster: what a
Ray user sees.

`ray.cancel` on queued, running, forced, recursive, finished, async-actor and
streaming tasks (seed 004); tasks whose worker dies (SIGKILL, os._exit, a
segfault) retried up to `max_retries`; application errors retried only as
`retry_exceptions` allows. (The put()-ref anti-pattern of seed 000 is in
test_advice.py.)

Tasks record what happened to them as files in tmp_path (attempts, pids,
markers written on KeyboardInterrupt or CancelledError); the test polls for
those files, never sleeps.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import pathlib
import signal
import time
import uuid

import psutil
import pytest
from conftest import wait_for_condition, wait_for_file

import solray as ray
from solray.exceptions import RayTaskError, TaskCancelledError, WorkerCrashedError

GET_TIMEOUT_S = 60


class MyError(Exception):
    """An application error a task may be retried for."""


class OtherError(Exception):
    """An application error outside the retry list."""


# -- helpers used inside tasks ---------------------------------------------------


def record_attempt(directory) -> int:
    """Mark one attempt in `directory`; return how many there have been."""
    path = pathlib.Path(directory)
    (path / f"attempt-{os.getpid()}-{uuid.uuid4().hex}").touch()
    return len(list(path.glob("attempt-*")))


def write_atomically(path, text: str) -> None:
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + f".{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def block(seconds: float = 300) -> None:
    """Sleep in short steps (a cancelled task must be interruptible)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


@ray.remote
def square(x):
    return x * x


# -- helpers used by the tests -----------------------------------------------------


def attempts(directory: pathlib.Path) -> int:
    return len(list(directory.glob("attempt-*")))


def read_pid(path: pathlib.Path) -> int:
    wait_for_condition(path.exists, timeout=30, message=f"{path} was never written")
    return int(path.read_text())


def process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def sigkill(pid: int) -> None:
    proc = psutil.Process(pid)
    # A worker runs worker_main, or was forked from its node's worker_zygote.
    cmdline = " ".join(proc.cmdline())
    assert "solray._private.worker_main" in cmdline or "solray._private.worker_zygote" in cmdline
    os.kill(pid, signal.SIGKILL)


def assert_cluster_serves(num_cpus: int) -> None:
    """New tasks run, and every CPU is free again."""
    assert ray.get([square.remote(i) for i in range(4)], timeout=GET_TIMEOUT_S) == [0, 1, 4, 9]
    wait_for_condition(
        lambda: ray.available_resources().get("CPU") == num_cpus,
        timeout=20,
        message="CPUs were not given back",
    )


# -- cancel ----------------------------------------------------------------------


def test_seed_cancel_blocking_operation(ray_start):
    # Seed 004, "Cancelling Tasks".
    @ray.remote
    def blocking_operation():
        time.sleep(10e6)

    obj_ref = blocking_operation.remote()
    ray.cancel(obj_ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(obj_ref, timeout=GET_TIMEOUT_S)
    assert_cluster_serves(2)


@pytest.mark.parametrize("ray_start", [{"num_cpus": 1}], indirect=True)
def test_cancel_queued_task(ray_start, tmp_path):
    """With the only CPU taken, the second task waits in the queue; cancelled
    there, it fails at once and never runs."""
    started, release, ran = tmp_path / "started", tmp_path / "release", tmp_path / "ran"

    @ray.remote
    def occupy(started, release):
        pathlib.Path(started).touch()
        wait_for_file(release, timeout=60.0)
        return "done"

    @ray.remote
    def queued(ran):
        pathlib.Path(ran).touch()
        return "ran"

    blocker = occupy.remote(str(started), str(release))
    wait_for_condition(started.exists, message="the first task never started")
    ref = queued.remote(str(ran))
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=GET_TIMEOUT_S)
    release.touch()
    assert ray.get(blocker, timeout=GET_TIMEOUT_S) == "done"
    assert_cluster_serves(1)
    assert not ran.exists()


def test_cancel_task_waiting_for_its_arguments(ray_start, tmp_path):
    """A task whose argument is not ready yet fails at once when cancelled,
    not once the argument arrives, and never runs."""
    release, ran = tmp_path / "release", tmp_path / "ran"

    @ray.remote
    def upstream(release):
        wait_for_file(release, timeout=60.0)
        return 5

    @ray.remote
    def dependent(x, ran):
        pathlib.Path(ran).touch()
        return x

    up = upstream.remote(str(release))
    ref = dependent.remote(up, str(ran))
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=GET_TIMEOUT_S)
    release.touch()
    assert ray.get(up, timeout=GET_TIMEOUT_S) == 5
    assert_cluster_serves(2)
    # Its argument is still usable by others. This task is queued behind
    # where the cancelled one would have been, once its argument was ready.
    assert ray.get(dependent.remote(up, str(tmp_path / "ran2")), timeout=GET_TIMEOUT_S) == 5
    assert not ran.exists()


def answered(ref) -> bool:
    """Whether `ref` (or a generator's next item) is ready, without waiting."""
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)


def assert_answered_at_once(cancelled: list, running: list) -> None:
    """Each cancelled call is answered while the calls ahead of it still run
    (they are blocked until the test releases them): its cancel did not wait
    for its turn."""
    wait_for_condition(
        lambda: all(answered(ref) for ref in cancelled),
        timeout=30,
        message="a call cancelled while queued was not answered at once",
    )
    assert not any(answered(ref) for ref in running)


@ray.remote
class Recorder:
    """An actor whose `slow` call holds its thread until a file appears, and
    which records the calls it ran."""

    def __init__(self):
        self.calls = []

    def slow(self, started, release):
        pathlib.Path(started).touch()
        wait_for_file(release, timeout=60.0)
        self.calls.append("slow")
        return "slow"

    def record(self, name):
        self.calls.append(name)
        return name

    def history(self):
        return self.calls


def cancel_a_queued_call(ray, actor, started, release) -> None:
    """With `slow` running on `actor`, a queued `record` call cancelled is
    answered at once and never runs; the call after it runs in order."""
    first = actor.slow.remote(str(started), str(release))
    wait_for_condition(started.exists, message="the first call never started")
    cancelled = actor.record.remote("cancelled")
    after = actor.record.remote("after")
    ray.cancel(cancelled)
    assert_answered_at_once([cancelled], [first, after])
    with pytest.raises(TaskCancelledError):
        ray.get(cancelled, timeout=GET_TIMEOUT_S)
    release.touch()
    assert ray.get(first, timeout=GET_TIMEOUT_S) == "slow"
    assert ray.get(after, timeout=GET_TIMEOUT_S) == "after"
    assert ray.get(actor.history.remote(), timeout=GET_TIMEOUT_S) == ["slow", "after"]


def test_cancel_queued_actor_call(ray_start, tmp_path):
    """A call waiting behind a running call of a (one at a time) actor is
    cancelled before it starts: the caller gets TaskCancelledError at once,
    the call never runs, and the calls around it are unaffected."""
    started, release = tmp_path / "started", tmp_path / "release"

    actor = Recorder.remote()
    cancel_a_queued_call(ray, actor, started, release)


def test_cancel_queued_actor_calls_of_every_return_kind(ray_start, tmp_path):
    """Queued calls with several return values, or streaming a generator,
    are answered at once too: every return value (or the stream's first
    item) raises TaskCancelledError."""
    started, release = tmp_path / "started", tmp_path / "release"

    @ray.remote
    class Actor:
        def __init__(self):
            self.calls = []

        def slow(self, started, release):
            pathlib.Path(started).touch()
            wait_for_file(release, timeout=60.0)
            self.calls.append("slow")

        @ray.method(num_returns=2)
        def pair(self):
            self.calls.append("pair")
            return 1, 2

        def items(self):
            self.calls.append("items")
            yield 1

        def history(self):
            return self.calls

    actor = Actor.remote()
    first = actor.slow.remote(str(started), str(release))
    wait_for_condition(started.exists, message="the first call never started")
    pair = actor.pair.remote()
    gen = actor.items.remote()
    for ref in (pair[0], gen):
        ray.cancel(ref)
    assert_answered_at_once([*pair, gen], [first])
    for ref in pair:
        with pytest.raises(TaskCancelledError):
            ray.get(ref, timeout=GET_TIMEOUT_S)
    with pytest.raises(TaskCancelledError):
        next(gen)
    with pytest.raises(StopIteration):
        next(gen)
    release.touch()
    assert ray.get(first, timeout=GET_TIMEOUT_S) is None
    assert ray.get(actor.history.remote(), timeout=GET_TIMEOUT_S) == ["slow"]


def test_cancel_queued_call_of_threaded_actor(ray_start, tmp_path):
    """With both threads of a max_concurrency=2 actor busy, a cancelled call
    is answered at once and never runs; the call behind it runs once a
    thread is free."""
    release = tmp_path / "release"

    actor = Recorder.options(max_concurrency=2).remote()
    slow = [actor.slow.remote(str(tmp_path / f"started-{i}"), str(release)) for i in range(2)]
    for i in range(2):
        wait_for_condition(
            (tmp_path / f"started-{i}").exists, message=f"slow call {i} never started"
        )
    cancelled = actor.record.remote("cancelled")
    after = actor.record.remote("after")
    ray.cancel(cancelled)
    assert_answered_at_once([cancelled], [*slow, after])
    with pytest.raises(TaskCancelledError):
        ray.get(cancelled, timeout=GET_TIMEOUT_S)
    release.touch()
    assert ray.get(slow, timeout=GET_TIMEOUT_S) == ["slow", "slow"]
    assert ray.get(after, timeout=GET_TIMEOUT_S) == "after"
    history = ray.get(actor.history.remote(), timeout=GET_TIMEOUT_S)
    assert sorted(history) == ["after", "slow", "slow"]


async def wait_for_file_async(path, timeout: float = 60.0) -> None:
    """wait_for_file for an async actor: its event loop keeps running."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        await asyncio.sleep(0.01)


def test_cancel_queued_call_of_async_actor(ray_start, tmp_path):
    """An async actor running one call at a time (max_concurrency=1): a call
    waiting for its turn is answered at once when cancelled and never runs."""
    started, release = tmp_path / "started", tmp_path / "release"

    @ray.remote(max_concurrency=1)
    class AsyncActor:
        def __init__(self):
            self.calls = []

        async def slow(self, started, release):
            pathlib.Path(started).touch()
            await wait_for_file_async(release)
            self.calls.append("slow")
            return "slow"

        async def record(self, name):
            self.calls.append(name)
            return name

        async def history(self):
            return self.calls

    actor = AsyncActor.remote()
    cancel_a_queued_call(ray, actor, started, release)


def test_cancel_running_task_raises_keyboard_interrupt(ray_start, tmp_path):
    started, interrupted = tmp_path / "started", tmp_path / "interrupted"

    @ray.remote
    def task(started, interrupted):
        pathlib.Path(started).touch()
        try:
            block()
        except KeyboardInterrupt:
            pathlib.Path(interrupted).touch()
            raise
        return "finished"

    ref = task.remote(str(started), str(interrupted))
    wait_for_condition(started.exists, message="the task never started")
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=GET_TIMEOUT_S)
    assert interrupted.exists()
    assert_cluster_serves(2)


@pytest.mark.parametrize("ray_start", [{"num_cpus": 1}], indirect=True)
def test_cancel_running_task_that_swallows_the_interrupt(ray_start, tmp_path):
    """A task may catch KeyboardInterrupt and return: as in Ray (and as with
    asyncio's CancelledError), the value it returns is its result; cancel only
    interrupts. Its worker (the only one with a CPU) then runs the next tasks
    undisturbed."""
    pid_file = tmp_path / "pid"

    @ray.remote
    def stubborn(pid_file):
        try:  # the interrupt can only come once the pid is written
            write_atomically(pid_file, str(os.getpid()))
            block()
        except KeyboardInterrupt:
            return "swallowed"
        return "finished"

    @ray.remote
    def getpid():
        return os.getpid()

    ref = stubborn.remote(str(pid_file))
    pid = read_pid(pid_file)
    ray.cancel(ref)
    assert ray.get(ref, timeout=GET_TIMEOUT_S) == "swallowed"
    assert_cluster_serves(1)
    assert ray.get(getpid.remote(), timeout=GET_TIMEOUT_S) == pid


def _open_gate(path: str) -> str:
    if not os.path.exists(path):
        raise RuntimeError("the gate is closed")
    return path


class Gate:
    """Unpickles only once its file exists: a function capturing one cannot
    be loaded by a worker until then."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return _open_gate, (self.path,)


@pytest.mark.parametrize("ray_start", [{"num_cpus": 1}], indirect=True)
def test_function_that_failed_to_load_loads_on_its_next_call(ray_start, tmp_path):
    """The owner sends a function's bytes with its first call to a worker
    only. When that first call never ran the function (its unpickling raised
    here; a cancel before the start is the same path), the worker still has
    the bytes for the next call."""
    gate = Gate(str(tmp_path / "gate"))

    @ray.remote
    def gated():
        assert gate is not None
        return os.getpid()

    with pytest.raises(RayTaskError, match="the gate is closed") as failed:
        ray.get(gated.remote(), timeout=GET_TIMEOUT_S)
    (tmp_path / "gate").touch()
    # The one worker with a CPU, which already got the bytes, runs it now.
    assert ray.get(gated.remote(), timeout=GET_TIMEOUT_S) == failed.value.pid


def test_cancel_interrupts_a_sleeping_task_every_time(ray_start):
    """The interrupt goes to the worker's main thread itself: sent to the
    process, it could land on another thread and leave the sleep running
    (examples/tasks.py hung that way about one run in eight)."""

    @ray.remote
    def sleeper():
        time.sleep(10e6)

    for _ in range(20):
        ref = sleeper.remote()
        ray.cancel(ref)
        with pytest.raises(TaskCancelledError):
            ray.get(ref, timeout=GET_TIMEOUT_S)


def test_force_cancel_kills_the_worker(ray_start, tmp_path):
    pid_file = tmp_path / "pid"

    @ray.remote
    def task(pid_file):
        write_atomically(pid_file, str(os.getpid()))
        try:
            block()
        except KeyboardInterrupt:  # force does not interrupt: it kills
            block()
        return "finished"

    ref = task.remote(str(pid_file))
    pid = read_pid(pid_file)
    ray.cancel(ref, force=True)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=GET_TIMEOUT_S)
    wait_for_condition(lambda: process_gone(pid), message="the worker was not killed")
    assert_cluster_serves(2)


@pytest.mark.parametrize("ray_start", [{"num_cpus": 4}], indirect=True)
@pytest.mark.parametrize("recursive", [True, False])
def test_cancel_recursive(ray_start, tmp_path, recursive):
    """The parent waits on two children. recursive=True cancels them too;
    recursive=False leaves them running to completion."""
    release = tmp_path / "release"

    @ray.remote
    def child(i, directory, release):
        directory = pathlib.Path(directory)
        write_atomically(directory / f"child-{i}-pid", str(os.getpid()))
        try:
            wait_for_file(release, timeout=60.0)
        except KeyboardInterrupt:
            (directory / f"child-{i}-cancelled").touch()
            raise
        (directory / f"child-{i}-done").touch()
        return i

    @ray.remote
    def parent(directory, release):
        children = [child.remote(i, directory, release) for i in range(2)]
        return sum(ray.get(children))

    ref = parent.remote(str(tmp_path), str(release))
    for i in range(2):
        read_pid(tmp_path / f"child-{i}-pid")
    ray.cancel(ref, recursive=recursive)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=GET_TIMEOUT_S)
    if recursive:
        for i in range(2):
            wait_for_condition(
                (tmp_path / f"child-{i}-cancelled").exists,
                message=f"child {i} was not cancelled",
            )
        release.touch()
        assert_cluster_serves(4)
        assert not list(tmp_path.glob("child-*-done"))
    else:
        assert not list(tmp_path.glob("child-*-cancelled"))
        release.touch()
        for i in range(2):
            wait_for_condition(
                (tmp_path / f"child-{i}-done").exists, message=f"child {i} did not complete"
            )
        assert not list(tmp_path.glob("child-*-cancelled"))
        assert_cluster_serves(4)


@pytest.mark.parametrize("force", [False, True])
def test_cancelled_task_is_not_retried(ray_start, tmp_path, force):
    @ray.remote(max_retries=3, retry_exceptions=True)
    def task(directory):
        record_attempt(directory)
        write_atomically(pathlib.Path(directory) / "pid", str(os.getpid()))
        block()
        return "finished"

    ref = task.remote(str(tmp_path))
    pid = read_pid(tmp_path / "pid")
    ray.cancel(ref, force=force)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=GET_TIMEOUT_S)
    if force:
        wait_for_condition(lambda: process_gone(pid), message="the worker was not killed")
    assert_cluster_serves(2)
    assert attempts(tmp_path) == 1


def test_cancel_finished_task_does_nothing(ray_start):
    ref = square.remote(7)
    assert ray.get(ref, timeout=GET_TIMEOUT_S) == 49
    ray.cancel(ref)
    ray.cancel(ref, force=True)
    assert ray.get(ref, timeout=GET_TIMEOUT_S) == 49
    assert_cluster_serves(2)


def test_cancel_rejects_other_types(ray_start):
    with pytest.raises(TypeError, match="got str"):
        ray.cancel("not a ref")


def test_cancel_async_actor_method(ray_start, tmp_path):
    started, cancelled = tmp_path / "started", tmp_path / "cancelled"

    @ray.remote
    class AsyncActor:
        async def long_call(self, started, cancelled):
            pathlib.Path(started).touch()
            try:
                await asyncio.sleep(300)
            except asyncio.CancelledError:
                pathlib.Path(cancelled).touch()
                raise
            return "finished"

        async def ping(self):
            return "pong"

    actor = AsyncActor.remote()
    ref = actor.long_call.remote(str(started), str(cancelled))
    wait_for_condition(started.exists, message="the call never started")
    with pytest.raises(ValueError, match="force=True is not supported for actor tasks"):
        ray.cancel(ref, force=True)
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=GET_TIMEOUT_S)
    assert cancelled.exists()
    # The actor lives on and serves other calls.
    assert ray.get(actor.ping.remote(), timeout=GET_TIMEOUT_S) == "pong"
    assert_cluster_serves(2)


def test_force_cancel_of_actor_task_is_rejected(ray_start):
    @ray.remote
    class Actor:
        def value(self):
            return 1

    actor = Actor.remote()
    ref = actor.value.remote()
    with pytest.raises(ValueError, match="force=True"):
        ray.cancel(ref, force=True)
    assert ray.get(ref, timeout=GET_TIMEOUT_S) == 1


@pytest.mark.parametrize("ray_start", [{"num_cpus": 1}], indirect=True)
def test_cancel_streaming_generator(ray_start, tmp_path):
    counter = tmp_path / "yielded"

    @ray.remote
    def endless(path):
        i = 0
        while True:
            i += 1
            write_atomically(path, str(i))
            yield i
            time.sleep(0.01)

    gen = endless.remote(str(counter))
    assert ray.get(next(gen), timeout=GET_TIMEOUT_S) == 1
    ray.cancel(gen)
    # It may still hand out items produced before the cancel arrived; then it
    # ends with TaskCancelledError (or stops).
    ended = False
    for _ in range(100_000):
        try:
            ray.get(next(gen), timeout=GET_TIMEOUT_S)
        except StopIteration:
            ended = True
            break
        except TaskCancelledError:
            ended = True
            break
    assert ended
    produced = int(counter.read_text())
    # The only CPU is free again, so the producer is no longer running...
    assert_cluster_serves(1)
    # ...and it produced nothing more.
    assert int(counter.read_text()) == produced
    with pytest.raises(StopIteration):
        next(gen)


def test_cancel_streaming_generator_paused_by_backpressure(ray_start, tmp_path):
    """A producer waiting for its consumer (backpressure) is cancelled too."""
    counter = tmp_path / "yielded"

    @ray.remote
    def producer(path):
        for i in range(100):
            write_atomically(path, str(i + 1))
            yield i

    gen = producer.options(_generator_backpressure_num_objects=1).remote(str(counter))
    wait_for_condition(counter.exists, message="the producer never started")
    ray.cancel(gen)
    received = []
    with pytest.raises(TaskCancelledError):
        for ref in gen:
            received.append(ray.get(ref, timeout=GET_TIMEOUT_S))
    assert received == list(range(len(received)))
    assert len(received) < 100
    assert_cluster_serves(2)


# -- retries after crashes -------------------------------------------------------


def crash(how: str) -> None:
    if how == "os_exit":
        os._exit(1)
    if how == "segfault":
        ctypes.string_at(0)
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["sigkill", "os_exit", "segfault"])
def test_crashing_task_is_retried_then_raises_worker_crashed(ray_start, tmp_path, how):
    """Default max_retries=3: four attempts, then WorkerCrashedError."""

    @ray.remote
    def crashing(directory, how):
        n = record_attempt(directory)
        if how == "sigkill":
            write_atomically(pathlib.Path(directory) / f"pid-{n}", str(os.getpid()))
            block()
        crash(how)

    ref = crashing.remote(str(tmp_path), how)
    if how == "sigkill":
        for n in range(1, 5):
            sigkill(read_pid(tmp_path / f"pid-{n}"))
    with pytest.raises(WorkerCrashedError) as info:
        ray.get(ref, timeout=GET_TIMEOUT_S)
    assert "crashing" in str(info.value)
    assert_cluster_serves(2)
    assert attempts(tmp_path) == 4  # after later tasks ran: no fifth attempt


def test_infinite_retries_until_success(ray_start, tmp_path):
    @ray.remote(max_retries=-1)
    def flaky(directory):
        n = record_attempt(directory)
        if n <= 3:
            crash("os_exit" if n % 2 else "segfault")
        return n

    assert ray.get(flaky.remote(str(tmp_path)), timeout=GET_TIMEOUT_S) == 4
    assert_cluster_serves(2)
    assert attempts(tmp_path) == 4


def test_retry_exceptions_list_stops_at_an_unlisted_error(ray_start, tmp_path):
    """Retried while the error is listed; an unlisted error ends the task,
    though retries are left."""

    @ray.remote(max_retries=5, retry_exceptions=[MyError])
    def task(directory):
        n = record_attempt(directory)
        raise (MyError if n <= 2 else OtherError)(f"attempt {n}")

    with pytest.raises(OtherError, match="attempt 3") as info:
        ray.get(task.remote(str(tmp_path)), timeout=GET_TIMEOUT_S)
    assert isinstance(info.value, RayTaskError)
    assert attempts(tmp_path) == 3


@pytest.mark.parametrize(
    "retry_exceptions, expect_attempts",
    [(False, 1), ([OtherError], 1), ([MyError], 3), (True, 3)],
    ids=["false", "non-matching-list", "matching-list", "true"],
)
def test_application_error_retries_with_a_crash_in_between(
    ray_start, tmp_path, retry_exceptions, expect_attempts
):
    """Crashes are retried whatever retry_exceptions says; application errors
    only when it allows. Attempt 1 crashes, attempt 2 raises MyError, attempt
    3 succeeds."""

    @ray.remote(max_retries=3, retry_exceptions=retry_exceptions)
    def task(directory):
        n = record_attempt(directory)
        if n == 1:
            crash("os_exit")
        if n == 2:
            raise MyError(f"attempt {n}")
        return n

    ref = task.remote(str(tmp_path))
    if expect_attempts == 3:
        assert ray.get(ref, timeout=GET_TIMEOUT_S) == 3
    else:
        with pytest.raises(MyError, match="attempt 2"):
            ray.get(ref, timeout=GET_TIMEOUT_S)
    assert attempts(tmp_path) == max(expect_attempts, 2)


def test_sigkill_during_a_retried_task(ray_start, tmp_path):
    """Attempt 1 raises (retried for the exception), attempt 2 is SIGKILLed
    by the test (retried for the crash), attempt 3 returns its number."""

    @ray.remote(max_retries=3, retry_exceptions=True)
    def task(directory):
        n = record_attempt(directory)
        if n == 1:
            raise MyError("first attempt fails")
        if n == 2:
            write_atomically(pathlib.Path(directory) / "pid", str(os.getpid()))
            block()
        return n

    ref = task.remote(str(tmp_path))
    sigkill(read_pid(tmp_path / "pid"))
    assert ray.get(ref, timeout=GET_TIMEOUT_S) == 3
    assert_cluster_serves(2)
    assert attempts(tmp_path) == 3


def test_sigkill_uses_up_the_retries_left_after_exceptions(ray_start, tmp_path):
    """Application errors and crashes draw on the same max_retries: after one
    retried exception and one crash, max_retries=2 is spent."""

    @ray.remote(max_retries=2, retry_exceptions=True)
    def task(directory):
        n = record_attempt(directory)
        if n == 1:
            raise MyError("first attempt fails")
        write_atomically(pathlib.Path(directory) / f"pid-{n}", str(os.getpid()))
        block()

    ref = task.remote(str(tmp_path))
    for n in (2, 3):
        sigkill(read_pid(tmp_path / f"pid-{n}"))
    with pytest.raises(WorkerCrashedError):
        ray.get(ref, timeout=GET_TIMEOUT_S)
    assert attempts(tmp_path) == 3
