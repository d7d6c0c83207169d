"""How other threads hand work to a core worker's I/O loop.

The loop owns the core worker's state (core_worker.py lists it); any other
thread reaches that state only through the loop's Inbox:

    post(fn, *args)       run fn(*args) on the loop soon, in posting order. A
                          burst of posts costs one loop wake-up.
    post_with_next(fn, *args)
                          the same, in the same order, but it runs with the
                          post() the caller makes right after it.
    post_quiet(fn, *args) the same, in the same order, with no wake-up: it
                          runs before the loop handles anything that wakes
                          it next. For the record of a request the caller
                          sent itself (Connection.send_now): the loop needs
                          it only once the reply arrives, which wakes it.
    post_lazy(fn, *args)  the same, in the same order, but with no wake-up of
                          its own: it runs with the next post, or within
                          LAZY_S. For what happens all the time and waits for
                          nobody: waking the loop thread (which must then take
                          the GIL) would cost more than the work.
    post_record(fn, *args)
                          post_lazy(), for the loop's record of something the
                          calling thread already did on the wire itself (a
                          reply it sent): idle() does not wait for it, as
                          nothing written after it has to follow it.
    drop(object_id)       an ObjectRef instance is gone: `apply_drops` gets
                          its id on the loop, lazily, in a batch (refs die by
                          the thousand).
    submit(coro)          post a coroutine; returns a future of its result.
    call(coro), run(fn)   post, then wait for the result, running the loop
                          meanwhile if the thread may (Loop.wait_running).

Order. Everything posted runs in posting order, and a batch of drops is
applied only after everything posted before those drops: a thread that
calls an actor and then drops its handle must not have the actor released
first, and a put that records the refs inside its value does so before its
ref can be freed. (A drop applied later than that is harmless: a count is
too high for a moment, never too low.)

All of these may be called from `__del__` and weakref finalizers, on any
thread, the loop's included, at any point (inside a lock, during interpreter
shutdown): they append to a deque and check a flag; they take no lock and
never block. A flag read that races with the loop clearing it costs at most
one spare wake-up: the loop clears a flag before it drains, so an item
queued before the clear is drained, and one queued after sees the flag
clear and wakes the loop itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import operator
import time
from collections import deque
from collections.abc import Callable
from functools import partial

from solray._private.event_loop import Loop
from solray._private.memory_store import Wake

logger = logging.getLogger(__name__)

# How long a post_lazy() or drop() may wait for the loop to run it.
LAZY_S = 0.01

_is_record = operator.itemgetter(2)  # of a posted (fn, args, is a record)


class Inbox:
    def __init__(
        self,
        loop: Loop,
        apply_drops: Callable[[list[bytes]], None],
    ):
        self._loop = loop
        self._apply_drops = apply_drops
        self._posted: deque = deque()  # (fn, args, is a record: post_record)
        self._dropped: deque[bytes] = deque()  # ids of ObjectRef instances gone
        self._wake_pending = False
        self._lazy_armed = False
        self._draining = False  # the loop is running what was posted
        # What call_soon_threadsafe(self._drain) does, without making a
        # Handle (and copying the poster's context) per wake-up: the drain's
        # one Handle goes on the loop's ready queue (a deque: appending is
        # thread-safe), then a byte wakes the loop. At most one is queued
        # (_wake_pending), and the loop's own context runs what is posted.
        self._drain_handle = asyncio.Handle(self._drain, (), loop, contextvars.Context())
        self._ready: deque = loop._ready

    def post(self, fn, *args) -> None:
        """Any thread: run fn(*args) on the loop thread, soon, in posting order."""
        self._posted.append((fn, args, False))
        if not self._wake_pending:
            self._wake_pending = True
            # On a closed loop both are harmless: close() emptied the queue
            # and the wake-up socket is gone (_write_to_self checks).
            self._ready.append(self._drain_handle)
            self._loop._write_to_self()

    def post_with_next(self, fn, *args) -> None:
        """Any thread about to post() anyway: run fn(*args) on the loop with
        that post, before it, with no wake-up of its own. (A wake-up of its
        own often let the loop take the first of the two alone, and the
        second woke it again.)"""
        self._posted.append((fn, args, False))

    def post_quiet(self, fn, *args) -> None:
        """Any thread: post(), to run before whatever next wakes the loop.
        The drain goes on the ready queue without a byte to wake the loop,
        and without marking a wake-up pending: a post() after this one
        wakes the loop as usual."""
        self._posted.append((fn, args, False))
        self._ready.append(self._drain_handle)

    def post_lazy(self, fn, *args) -> None:
        """Any thread: post(), without a wake-up of its own."""
        self._posted.append((fn, args, False))
        if not self._lazy_armed:
            self._arm_lazy()

    def post_record(self, fn, *args) -> None:
        """Any thread: post_lazy() a record that idle() does not count."""
        self._posted.append((fn, args, True))
        if not self._lazy_armed:
            self._arm_lazy()

    def drop(self, object_id: bytes) -> None:
        """Any thread, from __del__: an ObjectRef instance is gone."""
        self._dropped.append(object_id)
        if not self._lazy_armed:
            self._arm_lazy()

    def call(self, coro, timeout: float | None = None):
        """User thread: run a coroutine on the loop, after everything posted
        before it, and wait for its result (TimeoutError after `timeout`).
        The thread runs the loop while it waits, if it may (a request's
        reply is then read on the thread that wants it: one thread hand-off
        less each way, as for a get)."""
        done = self.submit(coro)
        wake = Wake()
        done.add_done_callback(partial(_set_wake, wake))
        deadline = None if timeout is None else time.monotonic() + timeout
        wait_running = self._loop.wait_running
        while True:
            # Wake up now and then so Ctrl-C reaches the driver promptly.
            step = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            if wait_running(wake, step) or (deadline is not None and time.monotonic() >= deadline):
                return done.result(0)

    def submit(self, coro) -> concurrent.futures.Future:
        """Any thread: run a coroutine on the loop, after everything posted
        before it; its outcome settles the future returned."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        self.post(self._start, coro, done)
        return done

    def run(self, fn, *args):
        """User thread: call() for a plain function. On the loop itself (in
        its turn, on whichever thread runs it), a plain call."""
        if self._loop.in_turn():
            return fn(*args)

        async def run():
            return fn(*args)

        return self.call(run())

    # -- the loop's side ---------------------------------------------------

    def _arm_lazy(self) -> None:
        self._lazy_armed = True
        try:
            self._loop.call_soon_threadsafe(self._loop.call_later, LAZY_S, self._lazy_due)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _lazy_due(self) -> None:
        if self._posted or self._dropped:
            # While refs keep dying, keep ticking from here: re-arming from
            # another thread costs a wake-up (and a GIL hand-over) more.
            self._drain()
            self._loop.call_later(LAZY_S, self._lazy_due)
            return
        self._lazy_armed = False
        if self._posted or self._dropped:  # queued as we disarmed, by a thread that saw us armed
            self._arm_lazy()

    def apply_now(self) -> None:
        """Loop thread: run what is posted and apply the drops queued so far
        now, not at the next wake-up (a garbage collection's frees)."""
        self._drain()

    def idle(self) -> bool:
        """Any thread: whether everything posted so far has run (not
        merely been taken off the queue), records (post_record) aside."""
        if self._draining:
            return False
        posted = self._posted
        # tuple() copies the deque in C, holding the GIL: no append can
        # interleave with the scan (which runs in C too).
        return not posted or all(map(_is_record, tuple(posted)))

    def _drain(self) -> None:
        self._wake_pending = False
        posted, dropped = self._posted, self._dropped
        draining, self._draining = self._draining, True  # (apply_now may nest)
        try:
            self._drain_all(posted, dropped)
        finally:
            self._draining = draining

    def _drain_all(self, posted: deque, dropped: deque) -> None:
        while posted or dropped:
            drops = len(dropped)  # applied after all that is posted by now
            while posted:
                fn, args, _ = posted.popleft()
                try:
                    fn(*args)
                except Exception:
                    logger.exception("error in %s", getattr(fn, "__name__", fn))
            if drops:
                try:
                    self._apply_drops([dropped.popleft() for _ in range(drops)])
                except Exception:
                    logger.exception("error while dropping refs")

    def _start(self, coro, done: concurrent.futures.Future) -> None:
        try:
            task = self._loop.create_task(coro)
        except BaseException as e:  # the loop is closing
            coro.close()
            done.set_exception(e)
            return
        task.add_done_callback(partial(_settle, done))


def _set_wake(wake: Wake, done: concurrent.futures.Future) -> None:
    wake.set()


def _settle(done: concurrent.futures.Future, task: asyncio.Task) -> None:
    """Pass a loop task's outcome to a user thread's future."""
    if task.cancelled():
        done.set_exception(concurrent.futures.CancelledError())
    elif task.exception() is not None:
        done.set_exception(task.exception())
    else:
        done.set_result(task.result())
