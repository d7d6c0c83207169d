"""The core worker's loop (event_loop.new_loop: asyncio's iteration with less
Python per turn), its inbox (loop_inbox.py: how other threads hand it work)
and the wake-up a blocking get waits on (memory_store.Wake), each on a real
loop thread with real threads posting to it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from conftest import wait_for_condition

from solray._private import event_loop
from solray._private.loop_inbox import Inbox
from solray._private.memory_store import MemoryStore, Wake, error_entry

DEADLINE_S = 10


@pytest.fixture
def loop_thread():
    loop = event_loop.new_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    yield loop, thread
    loop.call_soon_threadsafe(loop.stop)
    thread.join(DEADLINE_S)
    loop.close()


def inbox_on(loop, thread) -> Inbox:
    return Inbox(loop, lambda ids: None)


def test_posts_run_on_the_loop_in_posting_order_across_threads(loop_thread):
    loop, thread = loop_thread
    inbox = inbox_on(loop, thread)
    ran: list = []
    done = threading.Event()
    per_thread = 2000

    def record(who, i):
        assert threading.current_thread() is thread
        ran.append((who, i))
        if len(ran) == 4 * per_thread:
            done.set()

    def poster(who):
        for i in range(per_thread):
            if i % 2:
                inbox.post(record, who, i)
            else:  # runs with the post that follows, before it
                inbox.post_with_next(record, who, i)

    posters = [threading.Thread(target=poster, args=(w,)) for w in range(4)]
    for p in posters:
        p.start()
    for p in posters:
        p.join(DEADLINE_S)
    assert done.wait(DEADLINE_S), f"{len(ran)} of {4 * per_thread} posts ran"
    for who in range(4):
        assert [i for w, i in ran if w == who] == list(range(per_thread))


def test_a_post_runs_before_a_callback_the_same_thread_hands_over_after_it(loop_thread):
    """The inbox's wake-up is a callback on the loop's ready queue, so what a
    thread posts and what it then hands over with call_soon_threadsafe (or
    run_coroutine_threadsafe) run in that order."""
    loop, thread = loop_thread
    inbox = inbox_on(loop, thread)
    for _ in range(200):
        order: list = []
        done = threading.Event()
        inbox.post(order.append, "posted")
        loop.call_soon_threadsafe(order.append, "handed over")
        loop.call_soon_threadsafe(done.set)
        assert done.wait(DEADLINE_S)
        assert order == ["posted", "handed over"]


def test_call_returns_what_the_coroutine_returns_raises_what_it_raises_or_times_out(
    loop_thread,
):
    """A user thread's call() runs the coroutine on the loop (the calling
    thread may run the loop itself while it waits) and hands back its
    outcome; a timeout leaves the loop serving later calls."""
    loop, thread = loop_thread
    inbox = inbox_on(loop, thread)
    reader, writer = socket.socketpair()

    async def reply_from_the_socket():
        # What a request does: wait for bytes another party writes.
        threading.Timer(0.05, writer.send, (b"pong",)).start()
        return await loop.sock_recv(reader, 4)

    async def fails():
        raise ValueError("inside the loop")

    async def never():
        await asyncio.Event().wait()

    try:
        reader.setblocking(False)
        assert inbox.call(reply_from_the_socket(), timeout=DEADLINE_S) == b"pong"
        with pytest.raises(ValueError, match="inside the loop"):
            inbox.call(fails(), timeout=DEADLINE_S)
        with pytest.raises(TimeoutError):
            inbox.call(never(), timeout=0.2)
        assert inbox.call(reply_from_the_socket(), timeout=DEADLINE_S) == b"pong"
    finally:
        reader.close()
        writer.close()


def test_idle_waits_for_posts_and_lazy_posts_but_not_for_records(loop_thread):
    """A thread that sends a reply itself asks idle() first: whatever it
    posted before must have run, except the records of what it already did
    on the wire (post_record), which ran lazily before they were records
    and made every other reply wait for the loop."""
    loop, thread = loop_thread
    inbox = inbox_on(loop, thread)
    gate, started = threading.Event(), threading.Event()
    ran: list = []

    def block():
        started.set()
        gate.wait(DEADLINE_S)

    assert inbox.idle()
    inbox.post_record(ran.append, "record")
    assert inbox.idle()  # only a record is queued

    inbox.post_lazy(ran.append, "lazy")
    assert not inbox.idle()  # a lazy post still counts
    wait_for_condition(inbox.idle, DEADLINE_S, 0.001)
    assert ran == ["record", "lazy"]  # in posting order, within LAZY_S

    inbox.post(block)
    inbox.post_record(ran.append, "record 2")
    assert started.wait(DEADLINE_S)
    assert not inbox.idle()  # `block` is off the queue but has not returned
    gate.set()
    wait_for_condition(inbox.idle, DEADLINE_S, 0.001)
    assert ran[-1] == "record 2"


def test_the_loop_runs_timers_in_time_order_and_skips_cancelled_ones(loop_thread):
    loop, _ = loop_thread
    fired: list = []
    done = threading.Event()

    def schedule():
        now = loop.time()
        for delay in (0.03, 0.01, 0.02):
            loop.call_at(now + delay, fired.append, delay)
        for _ in range(300):  # enough cancelled timers to make the loop sweep them
            loop.call_at(now + 0.015, fired.append, "cancelled").cancel()
        loop.call_at(now + 0.05, done.set)

    loop.call_soon_threadsafe(schedule)
    assert done.wait(DEADLINE_S)
    assert fired == [0.01, 0.02, 0.03]


def test_the_loop_reads_and_writes_sockets(loop_thread):
    loop, _ = loop_thread
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    got = bytearray()
    done = threading.Event()

    def readable():
        got.extend(ours.recv(4096))
        if len(got) >= 3:
            loop.remove_reader(ours.fileno())
            done.set()

    loop.call_soon_threadsafe(loop.add_reader, ours.fileno(), readable)
    try:
        theirs.sendall(b"a")
        theirs.sendall(b"bc")
        assert done.wait(DEADLINE_S)
        assert bytes(got) == b"abc"
    finally:
        ours.close()
        theirs.close()


def test_wake_times_out_until_set_then_stays_set():
    wake = Wake()
    started = time.monotonic()
    assert wake.wait(0.05) is False
    assert time.monotonic() - started >= 0.04
    threading.Thread(target=wake.set).start()
    assert wake.wait(DEADLINE_S) is True
    wake.set()  # again: an on_error waiter is set once per error
    assert wake.wait(0) is True
    assert wake.wait() is True


@pytest.mark.parametrize("debug", [False, True], ids=["fast loop", "asyncio debug"])
def test_a_value_the_loop_stores_wakes_its_waiter_when_the_turn_ends(debug):
    """A get blocked on a value the loop stores is woken once the loop's
    turn is over (the turn's other results stored first), in asyncio's
    debug iteration too; once the loop has stopped, at once."""
    loop = event_loop.new_loop()
    loop.set_debug(debug)
    store = MemoryStore()
    seen: list = []

    def run() -> None:
        store.wake_at_turn_end(loop)
        try:
            loop.run_forever()
        finally:
            store.wake_at_turn_end(None)
        # The loop's thread after its last turn (a core worker's shutdown):
        # no turn will end, so this wakes its waiter at once.
        store.put(b"c", error_entry(ValueError("c")))

    waiter = store.wait([b"a", b"b"], 1)
    late = store.wait([b"c"], 1)

    def one_turn() -> None:
        store.put(b"a", error_entry(ValueError("a")))
        seen.append(waiter.event.wait(0))  # not yet: the turn goes on
        store.put(b"b", error_entry(ValueError("b")))

    thread = threading.Thread(target=run, name="test-loop", daemon=True)
    thread.start()
    try:
        loop.call_soon_threadsafe(one_turn)
        assert waiter.event.wait(DEADLINE_S)
        assert seen == [False]
        assert not late.event.wait(0)
        loop.call_soon_threadsafe(loop.stop)
        assert late.event.wait(DEADLINE_S)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(DEADLINE_S)
        loop.close()
