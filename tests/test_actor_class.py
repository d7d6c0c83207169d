"""Actor classes as Ray users know them: the decorated name behaves as the
class does (attributes, classmethods, staticmethods, dir), Ray's built-in
methods, `async def __init__`, graceful ends with `__ray_shutdown__` and
atexit, `@method` on decorated methods, weak handles from `get_actor`, and
the runtime context inside actors."""

from __future__ import annotations

import atexit
import functools
import os
import rlcompleter
import time

import psutil
import pytest
from conftest import wait_for_condition

import solray as ray_module
from solray.exceptions import ActorDiedError, RayTaskError

# --------------------------------------------------------------------------
# The decorated name behaves as the class.
# --------------------------------------------------------------------------


class Base:
    BASE = "base"

    def inherited(self):
        return "inherited"

    @classmethod
    def make_label(cls, x):
        return f"{cls.__name__}:{x}"

    @staticmethod
    def double(x):
        return 2 * x


@ray_module.remote
class Widget(Base):
    """A widget."""

    KIND = "widget"
    SIZES = (1, 2, 3)

    def __init__(self, n=0):
        self.n = n

    def kinds(self):
        return self.KIND, self.BASE, type(self).SIZES

    @classmethod
    def create_label(cls):
        return cls.make_label("made")


def test_class_attributes_classmethods_and_staticmethods_through_the_decorated_name(ray):
    assert Widget.KIND == "widget"
    assert Widget.SIZES == (1, 2, 3)
    assert Widget.BASE == "base"  # inherited
    assert Widget.make_label(7) == "Widget:7"  # a classmethod, bound to the class
    assert Widget.create_label() == "Widget:made"
    assert Widget.double(21) == 42  # a staticmethod
    assert Widget.__name__ == "Widget"
    assert Widget.__doc__ == "A widget."
    assert Widget.__ray_actor_class__.KIND == "widget"
    with pytest.raises(AttributeError, match="actor class 'Widget' has no attribute 'absent'"):
        Widget.absent  # noqa: B018


def test_class_attributes_and_class_level_methods_inside_the_actor(ray):
    widget = Widget.remote(5)
    assert ray.get(widget.kinds.remote()) == ("widget", "base", (1, 2, 3))
    assert ray.get(widget.inherited.remote()) == "inherited"
    # staticmethods and classmethods are actor methods too, as in Ray
    assert ray.get(widget.double.remote(4)) == 8
    assert ray.get(widget.make_label.remote("x")) == "Widget:x"
    # Calls are checked against the method's own signature (no `cls`, no `self`).
    with pytest.raises(TypeError, match="missing a required argument: 'x'"):
        widget.make_label.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        widget.double.remote(1, 2)


def test_inheriting_from_an_actor_class_is_a_type_error_as_in_ray(ray):
    with pytest.raises(TypeError, match="Inheriting from actor classes is not currently supported"):

        class Derived(Widget):  # noqa: F811
            pass

    # The undecorated class can be subclassed, and the subclass made an actor.
    @ray.remote
    class Special(Widget.__ray_actor_class__):
        KIND = "special"

    special = Special.remote()
    assert Special.BASE == "base"
    assert ray.get(special.kinds.remote()) == ("special", "base", (1, 2, 3))


def test_dir_lists_the_class_and_the_handle_methods(ray):
    names = dir(Widget)
    for name in ("KIND", "BASE", "kinds", "inherited", "make_label", "remote", "options"):
        assert name in names
    widget = Widget.remote()
    handle_names = dir(widget)
    for name in ("kinds", "inherited", "double", "make_label", "__ray_ready__", "__ray_call__"):
        assert name in handle_names
    assert "KIND" not in handle_names  # a handle offers the actor's methods
    # What the interactive interpreter's tab completion offers.
    completer = rlcompleter.Completer({"Widget": Widget, "widget": widget})

    def offers(text):
        return [m for i in range(10) if (m := completer.complete(text, i)) is not None]

    assert offers("Widget.KI") == ["Widget.KIND"]
    assert offers("Widget.make_") == ["Widget.make_label("]
    assert offers("widget.kin") == ["widget.kinds("]


# --------------------------------------------------------------------------
# Built-in methods and async __init__.
# --------------------------------------------------------------------------


@ray_module.remote
class Holder:
    def __init__(self, value):
        self.value = value


@ray_module.remote
class AsyncHolder:
    def __init__(self, value):
        self.value = value

    async def get(self):
        return self.value


def _add(actor_self, amount, *, scale=1):
    return (actor_self.value + amount) * scale


async def _async_add(actor_self, amount):
    return actor_self.value + amount


def test_ray_ready_and_ray_call(ray):
    holder = Holder.remote(10)
    assert ray.get(holder.__ray_ready__.remote()) is True
    assert ray.get(holder.__ray_call__.remote(_add, 5, scale=2)) == 30
    asynchronous = AsyncHolder.remote(1)
    assert ray.get(asynchronous.__ray_ready__.remote()) is True
    assert ray.get(asynchronous.__ray_call__.remote(_async_add, 2)) == 3
    with pytest.raises(RayTaskError, match="ZeroDivisionError"):
        ray.get(holder.__ray_call__.remote(lambda actor_self: 1 / 0))


def test_async_init_runs_on_the_actor_loop(ray):
    @ray.remote
    class Connected:
        async def __init__(self, name):
            import asyncio

            self.loop = id(asyncio.get_running_loop())
            await asyncio.sleep(0)
            self.name = name

        async def same_loop(self):
            import asyncio

            return self.name, self.loop == id(asyncio.get_running_loop())

    assert ray.get(Connected.remote("db").same_loop.remote()) == ("db", True)

    @ray.remote
    class Broken:
        async def __init__(self):
            raise ValueError("cannot connect")

        async def ping(self):
            return "pong"

    with pytest.raises(ActorDiedError, match="cannot connect"):
        ray.get(Broken.remote().ping.remote())


# --------------------------------------------------------------------------
# @method on decorated methods.
# --------------------------------------------------------------------------


def passthrough(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs)

    return wrapper


def test_method_num_returns_with_other_decorators(ray):
    @ray.remote
    class Pairs:
        @ray.method(num_returns=2)
        @passthrough
        def outer(self):
            return "a", "b"

        @passthrough
        @ray.method(num_returns=2)
        def inner(self):
            return "c", "d"

        @ray.method(num_returns=2)
        @staticmethod
        def static_pair():
            return 1, 2

        @classmethod
        @ray.method(num_returns=3)
        def class_triple(cls):
            return cls.__name__, 2, 3

    pairs = Pairs.remote()
    assert ray.get(list(pairs.outer.remote())) == ["a", "b"]
    assert ray.get(list(pairs.inner.remote())) == ["c", "d"]
    assert ray.get(list(pairs.static_pair.remote())) == [1, 2]
    assert ray.get(list(pairs.class_triple.remote())) == ["Pairs", 2, 3]


# --------------------------------------------------------------------------
# Graceful ends: __ray_shutdown__ and atexit.
# --------------------------------------------------------------------------


@ray_module.remote
class Cleaner:
    def __init__(self, directory):
        self.directory = directory
        atexit.register(self._note, "atexit")

    def _note(self, what):
        with open(os.path.join(self.directory, "order"), "a") as f:
            f.write(what + "\n")

    def __ray_shutdown__(self):
        self._note("shutdown")

    def pid(self):
        return os.getpid()

    def leave(self):
        ray_module.actor.exit_actor()


@ray_module.remote
class AsyncCleaner(Cleaner.__ray_actor_class__):
    async def pid(self):
        return os.getpid()

    async def leave(self):
        ray_module.actor.exit_actor()


def _order(directory) -> list[str]:
    try:
        with open(os.path.join(directory, "order")) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_ray_shutdown_and_atexit_run_when_the_handles_go_out_of_scope(ray, tmp_path):
    cleaner = Cleaner.remote(str(tmp_path))
    pid = ray.get(cleaner.pid.remote())
    del cleaner
    wait_for_condition(lambda: _gone(pid))
    assert _order(tmp_path) == ["shutdown", "atexit"]  # Ray's order


def test_ray_shutdown_runs_after_the_calls_before_it(ray, tmp_path):
    @ray.remote
    class Slow:
        def __init__(self, directory):
            self.directory = directory

        def work(self, path):
            from conftest import wait_for_file

            wait_for_file(path)
            with open(os.path.join(self.directory, "order"), "a") as f:
                f.write("work\n")

        def __ray_shutdown__(self):
            with open(os.path.join(self.directory, "order"), "a") as f:
                f.write("shutdown\n")

    slow = Slow.remote(str(tmp_path))
    done = slow.work.remote(str(tmp_path / "go"))
    (tmp_path / "go").touch()
    ray.get(done)
    del slow, done
    wait_for_condition(lambda: _order(tmp_path) == ["work", "shutdown"])


@pytest.mark.parametrize("actor_class", [Cleaner, AsyncCleaner], ids=["plain", "async"])
def test_terminate_and_exit_actor_run_the_hooks(ray, tmp_path, actor_class):
    for way in ("terminate", "exit_actor"):
        directory = tmp_path / way
        directory.mkdir()
        cleaner = actor_class.remote(str(directory))
        pid = ray.get(cleaner.pid.remote())
        if way == "terminate":
            cleaner.__ray_terminate__.remote()
        else:
            with pytest.raises(ActorDiedError):
                ray.get(cleaner.leave.remote())
        wait_for_condition(lambda pid=pid: _gone(pid))
        assert _order(directory) == ["shutdown", "atexit"], way
        with pytest.raises(ActorDiedError):
            ray.get(cleaner.pid.remote())


def test_an_async_ray_shutdown_is_refused_at_the_decorator(ray):
    with pytest.raises(TypeError, match="__ray_shutdown__ must be a synchronous method"):

        @ray.remote
        class AsyncShutdown:
            async def __ray_shutdown__(self):
                pass


def test_kill_runs_no_hooks(ray, tmp_path):
    cleaner = Cleaner.remote(str(tmp_path))
    pid = ray.get(cleaner.pid.remote())
    ray.kill(cleaner)
    wait_for_condition(lambda: _gone(pid))
    assert _order(tmp_path) == []  # checked after the process is gone


def test_an_exception_in_ray_shutdown_does_not_keep_the_actor(ray, tmp_path):
    @ray.remote
    class Faulty:
        def __init__(self, directory):
            self.directory = directory
            atexit.register(lambda: (tmp_path / "atexit").touch())

        def __ray_shutdown__(self):
            (tmp_path / "started").touch()
            raise RuntimeError("cleanup failed")

        def pid(self):
            return os.getpid()

    faulty = Faulty.remote(str(tmp_path))
    pid = ray.get(faulty.pid.remote())
    del faulty
    wait_for_condition(lambda: _gone(pid))
    assert (tmp_path / "started").exists() and (tmp_path / "atexit").exists()


# --------------------------------------------------------------------------
# Handles from get_actor, and the runtime context inside actors.
# --------------------------------------------------------------------------


def test_get_actor_handles_do_not_keep_the_actor_alive(ray, tmp_path):
    cleaner = Cleaner.options(name="looked-up").remote(str(tmp_path))
    pid = ray.get(cleaner.pid.remote())
    found = ray.get_actor("looked-up")
    also = Cleaner.options(name="looked-up", get_if_exists=True).remote(str(tmp_path))
    assert ray.get(found.pid.remote()) == ray.get(also.pid.remote()) == pid

    @ray.remote
    def hold(handles):
        return ray.get(handles[0].pid.remote())

    assert ray.get(hold.remote([found])) == pid  # a copy of a weak handle works
    del cleaner
    wait_for_condition(lambda: _gone(pid))
    with pytest.raises(ActorDiedError):
        ray.get(found.pid.remote())
    with pytest.raises(ValueError, match="Failed to look up actor"):
        ray.get_actor("looked-up")


def test_current_actor_is_the_actor_itself(ray):
    @ray.remote(max_concurrency=2)
    class Selfish:
        def __init__(self):
            self.calls = 0

        def me(self):
            return ray.get_runtime_context().current_actor

        def count(self):
            self.calls += 1
            return self.calls

        def call_myself(self):
            return ray.get(ray.get_runtime_context().current_actor.count.remote())

    selfish = Selfish.remote()
    me = ray.get(selfish.me.remote())
    assert me == selfish
    assert ray.get(me.count.remote()) == 1
    assert ray.get(selfish.call_myself.remote()) == 2
    with pytest.raises(RuntimeError, match="only available in an actor"):
        ray.get_runtime_context().current_actor  # noqa: B018


def test_is_canceled(ray, tmp_path):
    @ray.remote(max_concurrency=2)
    class Looper:
        def loop(self, started):
            context = ray.get_runtime_context()
            open(started, "w").close()
            deadline = time.monotonic() + 30
            while not context.is_canceled():
                if time.monotonic() > deadline:
                    return "never cancelled"
                time.sleep(0.01)
            return "saw the cancel"

        def not_cancelled(self):
            return ray.get_runtime_context().is_canceled()

    looper = Looper.remote()
    assert ray.get(looper.not_cancelled.remote()) is False
    started = tmp_path / "started"
    ref = looper.loop.remote(str(started))
    wait_for_condition(started.exists)
    ray.cancel(ref)
    assert ray.get(ref) == "saw the cancel"  # a threaded call is not interrupted

    @ray.remote
    def interrupted(started):
        open(started, "w").close()
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            return ray.get_runtime_context().is_canceled()

    started = tmp_path / "task-started"
    ref = interrupted.remote(str(started))
    wait_for_condition(started.exists)
    ray.cancel(ref)
    assert ray.get(ref) is True

    with pytest.raises(RuntimeError, match="only available in a task"):
        ray.get_runtime_context().is_canceled()

    @ray.remote
    class Async:
        async def check(self):
            return ray.get_runtime_context().is_canceled()

    with pytest.raises(RayTaskError, match="not available in async actors"):
        ray.get(Async.remote().check.remote())


def test_task_ids_inside_actor_calls(ray, tmp_path):
    @ray.remote(max_concurrency=3)
    class Threaded:
        def __init__(self):
            self.creation = ray.get_runtime_context().get_task_id()

        def creation_task(self):
            return self.creation

        def my_task_id(self, parties):
            from conftest import barrier

            barrier(tmp_path / "threaded", parties)
            return ray.get_runtime_context().get_task_id()

    @ray.remote
    class Async:
        async def my_task_id(self, parties):
            import asyncio

            from conftest import barrier

            await asyncio.get_running_loop().run_in_executor(
                None, barrier, tmp_path / "async", parties
            )
            return ray.get_runtime_context().get_task_id()

    (tmp_path / "threaded").mkdir()
    (tmp_path / "async").mkdir()
    for actor in (Threaded.remote(), Async.remote()):
        refs = [actor.my_task_id.remote(3) for _ in range(3)]  # running at once
        assert ray.get(refs) == [ref.task_id() for ref in refs]
    threaded = Threaded.remote()
    creation = ray.get(threaded.creation_task.remote())
    assert creation is not None and creation not in [r.task_id() for r in refs]


@ray_module.remote
def _child(path):
    open(path, "w").close()
    time.sleep(60)
    return "child finished"


def test_tasks_submitted_by_an_actor_call_are_its_children(ray, tmp_path):
    """The call running in an actor is the parent of the tasks it submits
    (on a pool thread, or in a coroutine among others), so a recursive
    cancel of the call reaches them."""

    @ray.remote(max_concurrency=2)
    class Threaded:
        def run(self, path):
            self.child = _child.remote(path)
            time.sleep(60)

        def child_ref(self):
            return [self.child]

    @ray.remote
    class Async:
        async def run(self, path):
            import asyncio

            self.child = _child.remote(path)
            await asyncio.sleep(60)

        async def child_ref(self):
            return [self.child]

    for actor_class in (Threaded, Async):
        actor = actor_class.remote()
        path = tmp_path / actor_class.__name__
        call = actor.run.remote(str(path))
        wait_for_condition(path.exists)
        (child,) = ray.get(actor.child_ref.remote())
        ray.cancel(call, recursive=True)
        with pytest.raises(ray.exceptions.TaskCancelledError):
            ray.get(child, timeout=30)
