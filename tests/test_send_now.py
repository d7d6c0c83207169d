"""Connection.send_now: a thread other than the loop's writes its frame to
the socket itself. Real sockets, a real loop thread: the frames a peer reads
must be whole and in the order they were sent, however the socket's buffer
splits them between the thread and the loop."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from solray._private import event_loop, transport
from solray._private.protocol import Msg

DEADLINE_S = 30
PIECE = 512 * 1024  # several of these fill a socket's buffer


@pytest.fixture
def pair():
    """A server and a client connection on one real loop thread, over TCP;
    what the server reads, in order, as (sequence number, payload)."""
    loop = event_loop.new_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    token = os.urandom(32)
    received: list = []
    arrived = threading.Condition()
    served: list = []

    def on_item(conn, rid, body, buffers):
        with arrived:
            received.append((body["n"], b"".join(bytes(b) for b in buffers)))
            arrived.notify_all()
        if rid:
            conn.reply(rid, body["n"])

    async def start():
        sock = transport.bind_socket("127.0.0.1", 0)
        server = await transport.serve(
            sock, token, {Msg.GENERATOR_ITEM: on_item}, on_ready=served.append, twin=False
        )
        client = await transport.connect(transport.socket_address(sock), token)
        while not served:
            await asyncio.sleep(0.01)
        return server, client

    server, client = asyncio.run_coroutine_threadsafe(start(), loop).result(DEADLINE_S)

    def wait_for(count: int) -> list:
        with arrived:
            assert arrived.wait_for(lambda: len(received) >= count, DEADLINE_S), received
            return list(received)

    yield loop, client, served[0], wait_for

    async def stop():
        client.close()
        server.close()
        await server.wait_closed()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(DEADLINE_S)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(DEADLINE_S)
    loop.close()


def payload(n: int) -> bytes:
    return bytes([n % 251]) * PIECE


def on_loop(loop, fn, *args):
    return asyncio.run_coroutine_threadsafe(_call(fn, *args), loop).result(DEADLINE_S)


async def _call(fn, *args):
    return fn(*args)


def test_frames_stay_whole_and_in_order_when_the_socket_is_full(pair):
    """The peer stops reading: the thread's frame goes out in part, the rest
    waits in the connection, and until it is written the thread may not
    write (send_now says False) and the loop's frames queue behind it."""
    loop, client, server_side, wait_for = pair
    on_loop(loop, server_side._transport.pause_reading)
    sent_by_thread = []
    n = 0
    # Fill the socket from this thread until a frame does not fit whole.
    while client.send_now(Msg.GENERATOR_ITEM, {"n": n}, [payload(n)]):
        sent_by_thread.append(n)
        n += 1
        if client._out:  # part of this frame waits for the loop
            break
        assert n < 200, "the socket never filled"
    assert client._out, "no frame was split"
    # Now something is queued: the thread must leave the next frame to the loop.
    assert not client.send_now(Msg.GENERATOR_ITEM, {"n": n}, [payload(n)])
    on_loop(loop, client.send, Msg.GENERATOR_ITEM, {"n": n}, [payload(n)])
    on_loop(loop, server_side._transport.resume_reading)
    got = wait_for(n + 1)
    assert [i for i, _ in got] == list(range(n + 1))
    assert all(data == payload(i) for i, data in got)


def test_a_request_sent_from_a_thread_gets_its_reply(pair):
    loop, client, _, wait_for = pair
    replies = []
    answered = threading.Event()

    def answer(reply, error):
        replies.append((threading.current_thread() is threading.main_thread(), reply, error))
        answered.set()

    assert client.send_now(Msg.GENERATOR_ITEM, {"n": 7}, [b"x"], answer=answer)
    assert answered.wait(DEADLINE_S)
    # Answered on the loop's thread, with the server's reply body.
    assert replies == [(False, (7, []), None)]


def test_nothing_is_sent_or_registered_on_a_closed_connection(pair):
    loop, client, _, _ = pair
    closed = threading.Event()
    on_loop(loop, client.add_close_callback, lambda conn: closed.set())
    on_loop(loop, client.close)
    assert closed.wait(DEADLINE_S)
    assert not client.send_now(Msg.GENERATOR_ITEM, {"n": 0}, [], answer=lambda r, e: None)
    assert client._pending == {}
