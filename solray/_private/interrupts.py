"""Cancelling a running task: KeyboardInterrupt in the worker's main thread,
raised where the runtime can take it.

`ray.cancel()` of a task that runs on a worker's main thread interrupts it
as Ray does: the call gets KeyboardInterrupt (which it may catch), and a
sleep or a blocking wait in it is broken off. The I/O loop learns of the
cancel; SIGINT, sent to the main thread itself, is what breaks a blocking
system call there (sent to the process, the kernel may hand it to another
thread, and a main thread asleep in `time.sleep` then never wakes).

The rule kept here: the interrupt is raised only at an *interrupt point*:
while user code runs (a frame of the runtime that calls the task's function
or steps its generator is the innermost runtime frame, and something it
called is running), or while the runtime blocks on the task's behalf in one
of a few waits (`get`, a request to the loop, backpressure). Anywhere else in
the runtime, an exception at an arbitrary bytecode could leave its state
half-changed: a posted message without its wake-up, a stream item sent but
not counted. There the signal is declined, and the loop sends it again
every RESIGNAL_S until it lands or the task ends. A task is interrupted
once by signal: a signal that arrives after an explicit check (`check`, at
the start of a task and in backpressure) raised, or after an earlier signal
did, is ignored, so it never lands in the handling of the first.

The loop thread writes `cancelled`; the main thread writes `interrupted`
and `running_main`; each only reads the others' (set membership and one
attribute read are atomic under the GIL).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from types import CodeType, FrameType

from solray._private import event_loop
from solray._private.memory_store import Wake

RESIGNAL_S = 0.02
_WAKE_WAIT = Wake.wait.__code__
_WAIT_RUNNING = event_loop.Loop.wait_running.__code__

# Frames of files here are the runtime's; any other frame is user code (or
# a library or the standard library running for one of the two).
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class Interrupts:
    def __init__(self) -> None:
        self.cancelled: set[bytes] = set()  # tasks the owner cancelled
        self.interrupted: set[bytes] = set()  # cancelled tasks already interrupted
        self.running_main: bytes | None = None  # the task on the main thread
        self._points: frozenset[CodeType] = frozenset()

    def add_points(self, *functions: Callable) -> None:
        """Runtime functions whose callees may be interrupted (see header)."""
        self._points |= {f.__code__ for f in functions}

    # -- the task's thread ---------------------------------------------------

    def check(self, task_id: bytes) -> None:
        """At a point of the runtime's choosing: raise KeyboardInterrupt if
        the task is cancelled (again, if it swallowed the first one: a
        stream waiting for a consumer that left must not wait forever)."""
        if task_id in self.cancelled:
            self.interrupted.add(task_id)
            raise KeyboardInterrupt

    def done(self, task_id: bytes) -> None:
        self.cancelled.discard(task_id)
        self.interrupted.discard(task_id)

    def on_sigint(self, signum: int, frame: FrameType | None) -> None:
        """The SIGINT handler of a worker: only the cancelled task on the
        main thread is interrupted, only at an interrupt point, only once.
        A signal that comes after the task ended must not hit the next one."""
        running = self.running_main
        if running is not None and running not in self.interrupted and self._at_point(frame):
            self.check(running)

    def _at_point(self, frame: FrameType | None) -> bool:
        called = None
        while frame is not None and not frame.f_code.co_filename.startswith(_RUNTIME_DIR):
            called, frame = frame, frame.f_back
        if frame is None:
            return False
        if called is None and frame.f_code is _WAKE_WAIT:
            # The runtime's own stand-in for threading.Event.wait: nothing
            # in it to leave half-done, as in Event.wait, called from a point.
            called, frame = frame, frame.f_back
        elif called is None and frame.f_code is event_loop.POLL:
            # Waiting in epoll while it runs the loop (Loop.wait_running):
            # no callback is running, nothing half-done, as in Wake.wait.
            while frame is not None and frame.f_code is not _WAIT_RUNNING:
                frame = frame.f_back
            if frame is None:
                return False
            called, frame = frame, frame.f_back
        return frame is not None and called is not None and frame.f_code in self._points

    # -- the loop thread -----------------------------------------------------

    def interrupt_main(self, task_id: bytes, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel the task running on the main thread (already in
        `cancelled`): signal it until the interrupt lands or it ends."""
        if self.running_main != task_id or task_id in self.interrupted:
            return
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        loop.call_later(RESIGNAL_S, self.interrupt_main, task_id, loop)
