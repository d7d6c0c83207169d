"""A thread that waits on the core worker's loop runs it meanwhile
(event_loop.Loop.wait_running), polling first while its waits are short:
real threads, a real loop thread in epoll, real sockets and a real SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import wait_for_condition

from solray._private import event_loop
from solray._private.memory_store import Wake

DEADLINE_S = 10
LONG_S = 60  # a wait that would outlast the test's deadline if nothing woke it

pytestmark = pytest.mark.skipif(
    not event_loop.TurnCounter.lendable, reason="lending needs epoll (Linux)"
)


def _syscall(thread: threading.Thread) -> str:
    """The system call `thread` is blocked in, by number ('running' if none)."""
    with open(f"/proc/self/task/{thread.native_id}/syscall") as f:
        return f.read().split()[0]


class _Running:
    """A lendable loop run by its own I/O thread, as a core worker's is.
    Its lenders block in epoll at once unless `spin_s` says otherwise."""

    def __init__(self, spin_s: float = 0.0):
        self.loop = event_loop.new_loop(lendable=True, spin_s=spin_s)
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-io", daemon=True)
        self.thread.start()
        wait_for_condition(lambda: self.loop.is_running(), timeout=DEADLINE_S)
        # The I/O thread idles in epoll: what a thread in epoll shows.
        self.epoll = None

        def idle_in_epoll() -> bool:
            self.epoll = _syscall(self.thread)
            return self.epoll.isdigit()

        wait_for_condition(idle_in_epoll, timeout=DEADLINE_S)

    def in_epoll(self, thread: threading.Thread) -> bool:
        return thread.is_alive() and _syscall(thread) == self.epoll

    def on_loop(self, fn, *args) -> None:
        done = threading.Event()
        self.loop.call_soon_threadsafe(lambda: (fn(*args), done.set()))
        assert done.wait(DEADLINE_S)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive()
        self.loop.close()


@pytest.fixture
def running():
    r = _Running()
    yield r
    if r.thread.is_alive():
        r.stop()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _lender(loop, wake: Wake, timeout: float, out: dict) -> threading.Thread:
    def run() -> None:
        out["woken"] = loop.wait_running(wake, timeout)

    thread = threading.Thread(target=run, name="test-lender", daemon=True)
    thread.start()
    return thread


def _read_and_wake(running: _Running, ours: socket.socket, wake: Wake) -> list[str]:
    """A reader on `ours` that takes what comes and sets `wake`, registered
    with the I/O thread back in epoll; the names of the threads it ran on."""
    handled_on: list[str] = []

    def readable() -> None:
        handled_on.append(threading.current_thread().name)
        ours.recv(100)
        wake.set()

    running.on_loop(running.loop.add_reader, ours, readable)
    wait_for_condition(lambda: running.in_epoll(running.thread), timeout=DEADLINE_S)
    return handled_on


def test_a_waiting_thread_reads_what_it_waits_for_itself(running, pair):
    """The bytes a thread waits for are read and handled on that thread,
    and the I/O thread, asleep in epoll, is not woken for them."""
    loop = running.loop
    ours, peer = pair
    wake = Wake()
    handled_on = _read_and_wake(running, ours, wake)
    out: dict = {}
    lender = _lender(loop, wake, LONG_S, out)
    wait_for_condition(lambda: running.in_epoll(lender), timeout=DEADLINE_S)
    turns = loop.solray_turns.turn
    peer.send(b"reply")
    lender.join(DEADLINE_S)
    assert out == {"woken": True}
    assert handled_on == ["test-lender"]
    assert loop.solray_turns.turn == turns  # no thread began another wait in epoll
    assert running.in_epoll(running.thread)
    # Lent and given back: the I/O thread serves the next bytes.
    peer.send(b"more")
    wait_for_condition(lambda: len(handled_on) == 2, timeout=DEADLINE_S)
    assert handled_on[1] == "test-io"


def test_a_wake_set_elsewhere_reaches_a_lender_in_epoll(running):
    """A lender sits in epoll, not on its Wake: a set from another thread
    must still end its wait (or it would wait out its timeout)."""
    wake = Wake()
    out: dict = {}
    lender = _lender(running.loop, wake, LONG_S, out)
    wait_for_condition(lambda: running.in_epoll(lender), timeout=DEADLINE_S)
    threading.Thread(target=wake.set).start()
    lender.join(DEADLINE_S)
    assert out == {"woken": True}


def test_callbacks_posted_while_a_thread_lends_run_on_it_in_order(running):
    """Work posted to the loop while a thread lends itself runs on that
    thread, in posting order, and a post after it leaves runs on the I/O
    thread."""
    loop = running.loop
    wake = Wake()
    ran: list = []
    out: dict = {}
    lender = _lender(loop, wake, LONG_S, out)
    wait_for_condition(lambda: running.in_epoll(lender), timeout=DEADLINE_S)
    for i in range(100):
        loop.call_soon_threadsafe(lambda i=i: ran.append((i, threading.current_thread().name)))
    loop.call_soon_threadsafe(wake.set)
    lender.join(DEADLINE_S)
    assert out == {"woken": True}
    assert [i for i, _ in ran] == list(range(100))
    assert {name for _, name in ran} <= {"test-lender", "test-io"}
    loop.call_soon_threadsafe(lambda: ran.append((100, threading.current_thread().name)))
    wait_for_condition(lambda: len(ran) == 101, timeout=DEADLINE_S)
    assert ran[-1] == (100, "test-io")


def test_a_timer_a_lender_schedules_fires_after_it_leaves(running):
    """A timer set in a lender's turn is due before the I/O thread's own
    wait in epoll ends (it has none): the lender wakes it as it leaves."""
    loop = running.loop
    fired: list[str] = []
    wake = Wake()

    def schedule() -> None:
        loop.call_later(0.05, lambda: fired.append(threading.current_thread().name))
        wake.set()

    out: dict = {}
    lender = _lender(loop, wake, LONG_S, out)
    wait_for_condition(lambda: running.in_epoll(lender), timeout=DEADLINE_S)
    loop.call_soon_threadsafe(schedule)
    lender.join(DEADLINE_S)
    assert out == {"woken": True}
    wait_for_condition(lambda: fired, timeout=DEADLINE_S)
    assert fired == ["test-io"]


def test_a_reader_that_leaves_bytes_is_called_again(running, pair):
    """One-shot registrations are armed again after each turn: bytes a
    reader leaves in the socket are reported again."""
    ours, peer = pair
    got = bytearray()

    def one_byte() -> None:
        got.extend(ours.recv(1))

    running.on_loop(running.loop.add_reader, ours, one_byte)
    peer.send(bytes(range(100)))
    wait_for_condition(lambda: len(got) == 100, timeout=DEADLINE_S)
    assert bytes(got) == bytes(range(100))


def test_one_lender_at_a_time_others_wait_on_their_wake(running):
    """A second waiter while one lends waits on its Wake as before."""
    loop = running.loop
    first, second = Wake(), Wake()
    out1: dict = {}
    out2: dict = {}
    lender = _lender(loop, first, LONG_S, out1)
    wait_for_condition(lambda: running.in_epoll(lender), timeout=DEADLINE_S)
    other = _lender(loop, second, LONG_S, out2)
    # It blocks on its Wake's lock (a futex), not in epoll.
    wait_for_condition(
        lambda: other.is_alive() and _syscall(other) not in ("running", running.epoll),
        timeout=DEADLINE_S,
    )
    loop.call_soon_threadsafe(second.set)
    other.join(DEADLINE_S)
    assert out2 == {"woken": True}
    assert lender.is_alive()
    first.set()
    lender.join(DEADLINE_S)
    assert out1 == {"woken": True}


def test_stopping_and_closing_the_loop_ends_a_lenders_wait(running):
    """Shutdown with a thread lending itself: the loop stops, closes, and
    the lender's wait ends (unset) without waiting out its timeout."""
    wake = Wake()
    out: dict = {}
    lender = _lender(running.loop, wake, LONG_S, out)
    wait_for_condition(lambda: running.in_epoll(lender), timeout=DEADLINE_S)
    running.stop()
    lender.join(DEADLINE_S)
    assert not lender.is_alive()
    assert out == {"woken": False}
    assert running.loop.is_closed()


class _Interrupted(Exception):
    pass


def test_sigint_waits_for_the_end_of_a_lenders_callback(running):
    """The main thread lends itself; a SIGINT that arrives while it runs a
    callback is handled once the callback is done, not inside it."""
    assert threading.current_thread() is threading.main_thread()
    loop = running.loop
    steps: list[str] = []
    wake = Wake()

    def interrupt(signum, frame):
        raise _Interrupted

    main = threading.current_thread()

    def callback() -> None:
        steps.append(threading.current_thread().name)
        signal.pthread_kill(main.ident, signal.SIGINT)
        for _ in range(1000):  # bytecodes, where Python checks for signals
            pass
        steps.append("end")

    def post_once_main_lends() -> None:
        wait_for_condition(lambda: running.in_epoll(main), timeout=DEADLINE_S)
        loop.call_soon_threadsafe(callback)

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        threading.Thread(target=post_once_main_lends, daemon=True).start()
        with pytest.raises(_Interrupted):
            loop.wait_running(wake, LONG_S)
        assert signal.getsignal(signal.SIGINT) is interrupt
    finally:
        signal.signal(signal.SIGINT, previous)
    assert steps == [main.name, "end"]
    # The loop goes on: the I/O thread serves it again.
    running.on_loop(steps.append, "after")
    assert steps[-1] == "after"


def test_sigint_deferred_in_a_turn_ends_the_wait_in_epoll_after_it(running):
    """A SIGINT deferred while the lender runs what was ready before its
    wait in epoll (the same turn) is not left waiting for something to
    arrive: the wait ends at once and the handler runs."""
    loop = running.loop
    main = threading.current_thread()
    wake = Wake()

    def interrupt(signum, frame):
        raise _Interrupted

    def then_interrupt() -> None:  # ready when the lender's next turn starts
        signal.pthread_kill(main.ident, signal.SIGINT)
        for _ in range(1000):  # bytecodes, where Python checks for signals
            pass

    def post_once_main_lends() -> None:
        wait_for_condition(lambda: running.in_epoll(main), timeout=DEADLINE_S)
        loop.call_soon_threadsafe(loop.call_soon, then_interrupt)

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        threading.Thread(target=post_once_main_lends, daemon=True).start()
        with pytest.raises(_Interrupted):  # (else it waits LONG_S and returns False)
            loop.wait_running(wake, LONG_S)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigint_in_epoll_interrupts_a_lender_at_once(running):
    """A SIGINT while the main thread waits in epoll is raised there."""
    wake = Wake()

    def interrupt(signum, frame):
        raise _Interrupted

    main = threading.current_thread()

    def send_sigint() -> None:
        wait_for_condition(lambda: running.in_epoll(main), timeout=DEADLINE_S)
        signal.pthread_kill(main.ident, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        threading.Thread(target=send_sigint, daemon=True).start()
        with pytest.raises(_Interrupted):  # (else it waits LONG_S and returns False)
            running.loop.wait_running(wake, LONG_S)
    finally:
        signal.signal(signal.SIGINT, previous)


# -- polling before blocking ---------------------------------------------------


def test_a_lender_polls_and_reads_what_lands_while_it_polls(pair):
    """With time left to poll, a lender does not block in epoll: it polls
    (each poll is a select, counted by the selector), and what lands
    meanwhile is read and handled on it, whichever thread epoll woke."""
    running = _Running(spin_s=LONG_S)
    try:
        loop = running.loop
        ours, peer = pair
        wake = Wake()
        handled_on = _read_and_wake(running, ours, wake)
        polls = loop.solray_turns.turn
        out: dict = {}
        lender = _lender(loop, wake, LONG_S, out)
        wait_for_condition(lambda: loop.solray_turns.turn > polls + 100, timeout=DEADLINE_S)
        peer.send(b"reply")
        lender.join(DEADLINE_S)
        assert out == {"woken": True}
        assert handled_on == ["test-lender"]
        # (The I/O thread, blocked in epoll while the lender polled, may be
        # the waiter the kernel woke: it leaves the bytes to the lender, and
        # goes back to epoll once the lender leaves.)
        wait_for_condition(lambda: running.in_epoll(running.thread), timeout=DEADLINE_S)
    finally:
        running.stop()


def test_after_a_long_wait_a_lender_blocks_at_once_and_after_a_short_one_polls():
    """Polling pays only while waits are short: a wait that outlasts five
    polling windows makes the next one block at once; a short one (its
    Wake already set) brings polling back."""
    spin_s = 0.005
    running = _Running(spin_s=spin_s)
    try:
        loop = running.loop
        turns = loop.solray_turns
        assert loop.wait_running(Wake(), 10 * spin_s) is False  # long, and nothing came

        wake = Wake()
        out: dict = {}
        before = turns.turn
        lender = _lender(loop, wake, LONG_S, out)
        wait_for_condition(lambda: running.in_epoll(lender), timeout=DEADLINE_S)
        wake.set()
        lender.join(DEADLINE_S)
        assert out == {"woken": True}
        # One select, blocking (two more at most for the Wake's byte, if
        # the I/O thread took it first); polling 5 ms would be hundreds.
        assert turns.turn - before <= 3

        done = Wake()
        done.set()
        assert loop.wait_running(done, LONG_S) is True  # a short wait
        before = turns.turn
        assert loop.wait_running(Wake(), spin_s) is False  # polls, then times out
        assert turns.turn > before + 1
    finally:
        running.stop()


def test_a_lender_stops_polling_when_polling_seldom_catches_anything():
    """Waits a little longer than the window (none caught by polling)
    turn polling off after a few; one wait in eight still polls, to see."""
    spin_s = 0.02
    running = _Running(spin_s=spin_s)
    try:
        loop = running.loop
        turns = loop.solray_turns

        def selects_in_a_wait() -> int:
            before = turns.turn
            assert loop.wait_running(Wake(), 2 * spin_s) is False
            return turns.turn - before

        polled = [selects_in_a_wait() for _ in range(6)]  # polls, then blocks
        assert min(polled) > 2
        blocked = [selects_in_a_wait() for _ in range(7)]
        assert max(blocked) <= 2  # one select (and one if a wake-up byte came)
        assert selects_in_a_wait() > 2  # the eighth looks again
    finally:
        running.stop()


_POLLS = textwrap.dedent(
    """
    import os, sys, threading
    if len(sys.argv) > 1:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from solray._private import event_loop
    from solray._private.memory_store import Wake
    loop = event_loop.new_loop(lendable=True)
    threading.Thread(target=loop.run_forever, daemon=True).start()
    while loop.solray_turns.turn < 1:  # the I/O thread is in epoll
        pass
    before = loop.solray_turns.turn
    loop.wait_running(Wake(), 0.2)
    print(loop.solray_turns.turn - before, event_loop.SPIN_S)
    """
)


def _polls(spin_us: str | None, *args: str) -> subprocess.CompletedProcess:
    """Selects a lender makes in a 0.2 s wait that nothing ends, and its
    polling window, in a fresh process with SOLRAY_WAIT_SPIN_US=`spin_us`
    (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "SOLRAY_WAIT_SPIN_US"}
    if spin_us is not None:
        env["SOLRAY_WAIT_SPIN_US"] = spin_us
    return subprocess.run(
        [sys.executable, "-c", _POLLS, *args], env=env, capture_output=True, text=True, timeout=60
    )


def _selects(polls: subprocess.CompletedProcess) -> int:
    assert polls.returncode == 0, polls.stderr
    return int(polls.stdout.split()[0])


def test_solray_wait_spin_us_sets_the_polling_window():
    """SOLRAY_WAIT_SPIN_US: 0 turns polling off (one select, blocking);
    a window polls throughout it."""
    assert _selects(_polls("0")) <= 2  # the lender's; the I/O thread's if it left a timer
    assert _selects(_polls("100000")) > 10


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_on_one_cpu_a_lender_does_not_poll_unless_told_to():
    """With one CPU to run on, polling would only keep the thread it waits
    for off that CPU: off by default, and on only if asked for."""
    default = _polls(None, "one-cpu")
    assert _selects(default) <= 2
    assert float(default.stdout.split()[1]) == 0
    assert _selects(_polls("100000", "one-cpu")) > 10
    two = _polls(None)  # with two, 200 us by default
    assert float(two.stdout.split()[1]) == pytest.approx(200e-6)


@pytest.mark.parametrize("value", ["fast", "-5", "1.5"])
def test_a_bad_solray_wait_spin_us_is_refused_by_name(value):
    bad = _polls(value)
    assert bad.returncode != 0
    assert "SOLRAY_WAIT_SPIN_US" in bad.stderr and repr(value) in bad.stderr
