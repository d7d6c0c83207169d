"""A thread that waits on the core worker's loop runs it meanwhile
(event_loop.Loop.wait_running): real threads, a real loop thread in epoll,
real sockets and a real SIGINT."""

from __future__ import annotations

import signal
import socket
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
    """A lendable loop run by its own I/O thread, as a core worker's is."""

    def __init__(self):
        self.loop = event_loop.new_loop(lendable=True)
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


def test_a_waiting_thread_reads_what_it_waits_for_itself(running, pair):
    """The bytes a thread waits for are read and handled on that thread,
    and the I/O thread, asleep in epoll, is not woken for them."""
    loop = running.loop
    ours, peer = pair
    handled_on: list[str] = []
    wake = Wake()

    def readable() -> None:
        handled_on.append(threading.current_thread().name)
        ours.recv(100)
        wake.set()

    running.on_loop(loop.add_reader, ours, readable)
    wait_for_condition(lambda: running.in_epoll(running.thread), timeout=DEADLINE_S)
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
