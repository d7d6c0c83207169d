"""The core worker's event loop: asyncio's selector loop with less Python per
turn, which a thread that waits on it may run itself.

Less Python. A sync call turns the loops at both ends twice, so the loop's
own work per iteration (select, the ready events, the timers) is a good part
of a short call's cost: `Loop._turn` is BaseEventLoop._run_once with its
helpers inlined, and `TurnCounter.select` is EpollSelector's with less per
event. The selector counts its `select` calls, so frames sent in one turn
can be flushed together (transport.Connection.send).

Lending. A thread about to block until the loop delivers something (a user
thread in `get`, waiting for a reply; a worker's main thread waiting for
its next call) runs the loop while it waits (`wait_running`): the reply is
read, stored and handed over on the thread that wants it. Woken by the I/O
thread instead, each such wait cost a thread hand-off, and on a machine
whose idle CPUs halt, a hand-off (a wake-up of a halted CPU, and a thread
that runs with cold caches) cost as much as the rest of a short call.

Polling. A lender whose loop's last wait was short polls epoll without
blocking for up to its window (`SPIN_S`: SOLRAY_WAIT_SPIN_US, 200 us by
default) before it blocks (`_poll`). On a machine whose idle vCPUs halt,
as this project's test machines' do, a wake-up through the host costs
60-70 us, and a sync call has two; a thread that polls is not halted, so
the reply or call it waits for is read as it lands. What it costs is a CPU
kept busy for up to the window per wait, and only while waits stay short
(a sync call loop, a worker fed call after call) and polling catches most
of them (`_Polling`). Each poll releases the GIL, so
the process's other threads still run. With fewer than two CPUs to run on
the default is not to poll (the poller would keep the thread it waits for
off the only CPU).

The rules that keep one owner for the loop's state:

- One thread runs the loop's callbacks at a time: each turn holds
  `_turn_lock`, released only while the thread waits in epoll. The loop's
  state belongs to whoever holds it, which is "the loop" (`in_turn`).
- At most one thread lends itself at a time (`_lent`); others wait as
  before. While one does, the I/O thread does not start another wait in
  epoll (`_stand_by`): it waits for the lender to leave.
- Both may still be in epoll at once (the I/O thread was there first).
  epoll wakes its most recent waiter first, the lender, and the loop's
  file descriptors are one-shot (`TurnCounter.rearm` after the turn's
  callbacks ran), so the same bytes never wake both: level-triggered, epoll
  would wake the next waiter too, for bytes the first is about to read.
  What the I/O thread gets while a thread lends itself (it came before
  the lender was in epoll: a reply that beat its caller to its wait, or
  one that came between a polling lender's polls) it arms again
  untouched, for the lender.
- What wakes a lender from another thread (its Wake set, memory_store.py)
  also writes the loop's wake-up byte. An I/O thread that ran a turn while
  a thread lends (it was in epoll first, and took an event) writes the
  byte before it stands by: its turn may have left callbacks ready, or
  taken the lender's byte.
- A lender that leaves with callbacks ready, a timer due before the I/O
  thread's own wait ends, or the loop stopping, wakes the I/O thread.
- SIGINT. Callbacks now run on the main thread too, where Python raises
  KeyboardInterrupt at any bytecode: a reply half-recorded would hang
  later calls. A main thread lending itself defers the SIGINT handler to
  its wait in epoll or the end of the turn (`_SigintDeferred`), unless the
  process's handler is safe anywhere (`defer_sigint`: a worker's is).
- Closing waits for a lender to leave (`close`); a lender leaves once the
  loop is stopping.

Elsewhere than Linux the selector is the default one, without one-shot
registrations, and nobody lends: `wait_running` waits as before.
"""

from __future__ import annotations

import _signal
import asyncio
import heapq
import math
import os
import select
import selectors
import signal
import threading
import time
from asyncio import base_events
from collections.abc import Callable
from selectors import EVENT_READ, EVENT_WRITE

_monotonic = time.monotonic
_get_ident = threading.get_ident
_get_running_loop = asyncio.events._get_running_loop
_set_running_loop = asyncio.events._set_running_loop


def _cpus() -> float:
    """The CPUs this process may run on: its affinity, capped by its cgroup's
    quota (cgroup v2's cpu.max)."""
    cpus = float(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else 1.0
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return cpus


def _spin_setting() -> float:
    """SOLRAY_WAIT_SPIN_US, in seconds; by default 200 us, or none with less
    than two CPUs to run on (the thread polling would keep the one it waits
    for off the only CPU)."""
    value = os.environ.get("SOLRAY_WAIT_SPIN_US", "").strip()
    if not value:
        return 200e-6 if _cpus() >= 2 else 0.0
    try:
        spin_us = int(value)
    except ValueError:
        spin_us = -1
    if spin_us < 0:
        raise ValueError(
            f"SOLRAY_WAIT_SPIN_US must be a whole number of microseconds (0: off), got {value!r}"
        )
    return spin_us * 1e-6


# How long a lender polls before it blocks (see the header).
SPIN_S = _spin_setting()


class _Polling:
    """Whether a loop's next lender polls before it blocks, from how its
    recent waits went (the lender's, under `_lent`). Polling pays only if
    what the thread waits for lands within the window:

    - A wait longer than five windows turns it off until a shorter one. (A
      wait that blocked includes its wake-up, 60-100 us on an idle host,
      so one polling would have caught measures well over the window;
      five times over, it is another kind of wait: a task that takes a
      while.)
    - Of the waits that polled, most must have been caught by it (an
      average over about the last eight). Below half, one wait in eight
      still polls, to see whether that changed. A sync call loop catches
      about 80%; a task worker fed by four busy clients on two CPUs caught
      40%, and the rest of its polling only took CPU from those clients
      (12% fewer tasks per second)."""

    __slots__ = ("window", "short", "caught", "skipped", "polls", "hit")

    def __init__(self, window: float):
        self.window = window
        self.short = window > 0  # the last wait was short
        self.caught = 1.0  # the share of polling waits that polling caught
        self.skipped = 0  # waits that did not poll since one did
        self.polls = False  # this wait polls
        self.hit = False  # and polling caught what it waited for (Loop._poll)

    def next_window(self) -> float:
        """How long the wait that starts now polls (0: it blocks at once)."""
        self.hit = False
        if not self.short:
            self.polls = False
        elif self.caught >= 0.5:
            self.polls = True
        elif self.skipped < 7:
            self.skipped += 1
            self.polls = False
        else:
            self.skipped = 0
            self.polls = True
        return self.window if self.polls else 0.0

    def record(self, waited: float) -> None:
        """The wait that started at the last `next_window` lasted `waited`."""
        self.short = self.window > 0 and waited <= self.window * 5
        if self.polls:
            self.caught += ((1.0 if self.hit else 0.0) - self.caught) * 0.125


class TurnCounter(selectors.DefaultSelector):
    """A selector that counts its loop's iterations: the loop calls `select`
    once per iteration, so frames sent with the same `turn` belong to one
    iteration (Connection.send)."""

    turn = 0
    lendable = False

    def __init__(self, oneshot: bool = False):
        super().__init__()
        self.fired: list[int] = []

    def rearm(self) -> None:
        pass

    def select(self, timeout=None):
        self.turn += 1
        return super().select(timeout)


if selectors.DefaultSelector is getattr(selectors, "EpollSelector", None):
    _NOT_IN, _NOT_OUT = ~select.EPOLLIN, ~select.EPOLLOUT
    _ONESHOT = select.EPOLLONESHOT

    class TurnCounter(selectors.EpollSelector):  # noqa: F811 (Linux's)
        """The same, with EpollSelector's `select` in less Python per event,
        and for a loop that lends itself, one-shot registrations and the
        turn lock released while it waits (see the header)."""

        turn = 0
        lendable = True

        def __init__(self, oneshot: bool = False):
            super().__init__()
            self.turn_lock: threading.Lock | None = None  # set by a Loop that lends
            self.fired: list[int] = []  # fds reported since the last rearm
            self._oneshot = oneshot
            if oneshot:  # what register() and modify() ask of epoll
                self._EVENT_READ = select.EPOLLIN | _ONESHOT
                self._EVENT_WRITE = select.EPOLLOUT | _ONESHOT

        def rearm(self) -> None:
            """Under the turn lock, once the turn's callbacks have run: the
            fds reported this turn wait for their events again."""
            keys = self._fd_to_key
            modify = self._selector.modify
            for fd in self.fired:
                key = keys.get(fd)
                if key is not None:
                    events = key.events  # what register() and modify() asked
                    try:
                        modify(
                            fd,
                            (EVENT_READ & events and self._EVENT_READ)
                            | (EVENT_WRITE & events and self._EVENT_WRITE),
                        )
                    except OSError:  # closed by its callback, not unregistered yet
                        pass
            self.fired.clear()

        def select(self, timeout=None):
            self.turn += 1
            if timeout is None:
                timeout = -1
            elif timeout <= 0:
                timeout = 0
            else:  # epoll_wait counts milliseconds: wait at least `timeout`
                timeout = math.ceil(timeout * 1e3) * 1e-3
            keys = self._fd_to_key
            turn_lock = self.turn_lock
            if turn_lock is not None:
                turn_lock.release()  # another thread may run a turn meanwhile
            try:
                fd_events = self._selector.poll(timeout, len(keys) or 1)
            except InterruptedError:
                return []
            finally:
                if turn_lock is not None:
                    turn_lock.acquire()
            if self._oneshot:
                self.fired += [fd for fd, _ in fd_events]
            ready = []
            for fd, event in fd_events:
                key = keys.get(fd)
                if key is not None:
                    mask = (event & _NOT_IN and EVENT_WRITE) | (event & _NOT_OUT and EVENT_READ)
                    ready.append((key, mask & key.events))
            return ready


POLL = TurnCounter.select.__code__  # a lender's wait in epoll (interrupts.py too)


class Loop(asyncio.SelectorEventLoop):
    def __init__(self, lendable: bool = False, spin_s: float | None = None):
        self._lendable = lendable and TurnCounter.lendable
        selector = TurnCounter(oneshot=self._lendable)
        super().__init__(selector)
        self.solray_turns = selector  # Connection.send reads the turn count
        # Called once the turn's callbacks have run, before the next select
        # (memory_store.py wakes user threads there). Appended to in place.
        self.turn_end: list[Callable[[], None]] = []
        self.turn_thread: int | None = None  # the thread running this turn's callbacks
        # Whether a SIGINT handler must wait for a safe point on a main
        # thread that lends itself (see the header); a worker's need not.
        self.defer_sigint = True
        self._turn_lock = threading.Lock()
        self._lent = threading.Lock()  # held by the thread that lends itself
        self._io_deadline = math.inf  # when the I/O thread's wait in epoll ends
        # Whether and how long a lender polls before it blocks (see the
        # header): the lender's, under `_lent`.
        self._polling = _Polling(SPIN_S if spin_s is None else spin_s)
        if self._lendable:
            selector.turn_lock = self._turn_lock

    def in_turn(self) -> bool:
        """Whether this thread is running the loop's callbacks now: the I/O
        thread, or a thread that lends itself, inside a turn."""
        return self.turn_thread == _get_ident()

    # -- the I/O thread ------------------------------------------------------

    def _run_once(self) -> None:
        if self._lent.locked():
            self._stand_by()
        with self._turn_lock:
            try:
                self._turn(None)
            finally:
                self.turn_thread = None

    def _stand_by(self) -> None:
        """A thread lends itself: wait until none does, outside epoll. The
        turn this thread just ran may have left callbacks ready, timers, or
        the lender's Wake set (and taken the byte that said so) while the
        lender waits in epoll: wake it to look. A thread that lends itself
        again before this one is back (this thread's wake-up is slow on an
        idle CPU) is waited for too: in epoll after it, this thread would
        be the one epoll wakes."""
        self._write_to_self()
        lent = self._lent
        while lent.locked():
            lent.acquire()
            lent.release()

    def close(self) -> None:
        if self._lent.locked():
            self._write_to_self()
        with self._lent:  # a lender leaves once it sees the loop stopped
            super().close()

    # -- a thread that waits on the loop -------------------------------------

    def wait_running(self, wake, timeout: float) -> bool:
        """Block until `wake` (memory_store.Wake) is set, or for `timeout`
        seconds, running the loop meanwhile unless another thread lends
        itself already. True once set."""
        if not self._lendable or self._debug or not self._lent.acquire(False):
            return wake.wait(timeout)
        if self._stopping or self._thread_id is None or self._closed:
            self._lent.release()
            return wake.wait(timeout)
        start = _monotonic()
        deadline = start + timeout
        polling = self._polling
        window = polling.next_window()
        spin_until = start + window if window else 0.0
        wake.poller, wake.poller_ident = self, _get_ident()
        sigint = None
        if self.defer_sigint and threading.current_thread() is threading.main_thread():
            sigint = _SigintDeferred.install(self)
        try:
            while not wake.is_set():
                left = deadline - _monotonic()
                if left <= 0 or self._stopping or self._thread_id is None:
                    break
                with self._turn_lock:
                    running = _get_running_loop()
                    _set_running_loop(self)
                    try:
                        self._turn(left, wake, spin_until)
                    finally:
                        _set_running_loop(running)
                        self.turn_thread = None
                if sigint is not None:
                    sigint.deliver()
            polling.record(_monotonic() - start)
            return wake.is_set()
        finally:
            wake.poller = None
            scheduled = self._scheduled
            self._lent.release()
            if (
                self._ready
                or self._stopping
                or (scheduled and scheduled[0]._when + 1e-3 < self._io_deadline)
            ):
                self._write_to_self()
            if sigint is not None:
                sigint.uninstall()

    # -- one turn --------------------------------------------------------------

    def _turn(self, cap: float | None, wake=None, spin_until: float = 0.0) -> None:
        """One iteration, under the turn lock; a lender's waits in epoll
        last at most `cap` seconds, and none once its `wake` is set; until
        `spin_until` (monotonic) it polls without blocking."""
        # BaseEventLoop._run_once (base_events.py): the same steps in the
        # same order, with _process_events (selector_events.py) and time()
        # (time.monotonic, which this class does not change) inlined.
        if self._debug:  # asyncio's own, which times each callback
            self.turn_thread = _get_ident()
            super()._run_once()
            self._end_turn()
            self._selector.rearm()
            return
        scheduled = self._scheduled
        if scheduled:
            count = len(scheduled)
            if (
                count > base_events._MIN_SCHEDULED_TIMER_HANDLES
                and self._timer_cancelled_count / count
                > base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION
            ):
                kept = []
                for handle in scheduled:
                    if handle._cancelled:
                        handle._scheduled = False
                    else:
                        kept.append(handle)
                heapq.heapify(kept)
                self._scheduled = scheduled = kept
                self._timer_cancelled_count = 0
            else:
                while scheduled and scheduled[0]._cancelled:
                    self._timer_cancelled_count -= 1
                    heapq.heappop(scheduled)._scheduled = False
        ready = self._ready
        if cap is not None and ready:
            # A lender about to wait runs what is ready first (and the turn's
            # end), then waits in epoll in the same turn: the order of a turn
            # whose select found nothing and the next, without that select.
            # (A sync call's reply may come back in tens of microseconds;
            # until the lender waits in epoll, the I/O thread is the one
            # epoll wakes.)
            self.turn_thread = _get_ident()
            for _ in range(len(ready)):
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()
            if self.turn_end:  # (which may set what the lender waits for)
                self._end_turn()
            if wake.is_set():
                return
        if ready or self._stopping:
            timeout = 0
        elif scheduled:
            timeout = min(
                max(0, scheduled[0]._when - _monotonic()), base_events.MAXIMUM_SELECT_TIMEOUT
            )
        else:
            timeout = None
        if cap is None:
            if self._lent.locked():
                # A thread lends itself: stand by (`_run_once`), not wait in
                # epoll after it (epoll would wake this thread first). Checked
                # under the turn lock, which a lender takes before its wait.
                return
            self._io_deadline = math.inf if timeout is None else _monotonic() + timeout
        elif timeout is None or timeout > cap:
            timeout = cap
        if spin_until and timeout != 0:
            events = self._poll(timeout, wake, spin_until)
        else:
            events = self._selector.select(timeout)
        if cap is None and events and self._lent.locked():
            # The I/O thread was in epoll first, and a thread that lends
            # itself was not in epoll yet when these came (a reply that
            # beat its caller to its wait): leave them to that thread.
            self._selector.rearm()
            return
        # (Another thread may have run turns while this one waited in epoll.)
        self.turn_thread = _get_ident()
        scheduled = self._scheduled
        for key, mask in events:
            reader, writer = key.data
            if mask & EVENT_READ and reader is not None:
                if reader._cancelled:
                    self._remove_reader(key.fileobj)
                else:
                    ready.append(reader)
            if mask & EVENT_WRITE and writer is not None:
                if writer._cancelled:
                    self._remove_writer(key.fileobj)
                else:
                    ready.append(writer)
        if scheduled:
            end_time = _monotonic() + self._clock_resolution
            while scheduled and scheduled[0]._when < end_time:
                handle = heapq.heappop(scheduled)
                handle._scheduled = False
                ready.append(handle)
        # What is ready now, not what these callbacks make ready.
        for _ in range(len(ready)):
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()
        if self.turn_end:
            self._end_turn()
        if self._selector.fired:
            self._selector.rearm()

    def _poll(self, timeout: float | None, wake, spin_until: float) -> list:
        """A lender's wait in epoll: without blocking until `spin_until`,
        then blocking for what is left of `timeout`."""
        select = self._selector.select
        now = _monotonic()
        if timeout is not None:
            end = now + timeout
            spin_until = min(spin_until, end)
        while now < spin_until:
            events = select(0)
            if events or wake.is_set():
                self._polling.hit = True
                return events
            now = _monotonic()
        return select(None if timeout is None else max(0.0, end - now))

    def _end_turn(self) -> None:
        turn_end = self.turn_end
        while turn_end:  # (what these calls add runs now too, not after a select)
            calls = turn_end.copy()
            turn_end.clear()
            for fn in calls:
                fn()

    def _read_from_self(self) -> None:
        # Other threads wake the loop with a byte per burst of posts
        # (loop_inbox.py), so one read takes what is there; asyncio's read
        # until EAGAIN cost a second system call per wake-up. Bytes beyond
        # this read leave the socket readable for the next iteration.
        try:
            data = self._ssock.recv(4096)
        except (InterruptedError, BlockingIOError):
            return
        if data:
            self._process_self_data(data)  # signal numbers, on Unix


class _SigintDeferred:
    """The main thread's SIGINT handler while it lends itself: the process's
    handler runs at once if the thread waits in epoll (nothing is
    half-done), else at the end of the turn (`deliver`) or when the thread
    stops lending (`uninstall`). A deferred one writes the loop's wake-up
    byte, so that a wait in epoll later in the turn (after callbacks, after
    polling) ends at once rather than when something arrives."""

    __slots__ = ("handler", "pending", "loop")

    # _signal, not signal: signal's wrappers convert handlers to and from
    # enums, ten times the cost of the swap itself (once per blocking get).

    @classmethod
    def install(cls, loop: Loop) -> _SigintDeferred | None:
        handler = _signal.getsignal(signal.SIGINT)
        if not callable(handler):  # SIG_DFL, SIG_IGN: no Python code runs
            return None
        deferred = cls()
        deferred.handler = handler
        deferred.pending = None
        deferred.loop = loop
        _signal.signal(signal.SIGINT, deferred.on_sigint)
        return deferred

    def on_sigint(self, signum: int, frame) -> None:
        if frame is not None and frame.f_code is POLL:
            self.handler(signum, frame)
        else:
            self.pending = (signum, frame)
            self.loop._write_to_self()

    def deliver(self) -> None:
        pending = self.pending
        if pending is not None:
            self.pending = None
            self.handler(*pending)

    def uninstall(self) -> None:
        _signal.signal(signal.SIGINT, self.handler)
        self.deliver()


def new_loop(lendable: bool = False, spin_s: float | None = None) -> Loop:
    """An event loop with less Python per turn, whose connections send a
    round trip's lone frame without scheduling an end-of-iteration flush
    (Connection.send). `lendable`: threads that wait on it may run it
    (`Loop.wait_running`), polling first for up to `spin_s` seconds while
    waits are short (default: SOLRAY_WAIT_SPIN_US's)."""
    return Loop(lendable, spin_s)
