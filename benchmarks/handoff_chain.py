"""The floor under a sync actor call: round trips between two Python
processes over a Unix socket pair, with and without a thread hand-off on
each side (BENCHMARKS.md, issue 14's seventh pass).

    python benchmarks/handoff_chain.py [--round-trips N]

A hand-off is what solray's chain does today: on the caller's side the user
thread queues the message for an I/O thread (woken by a pipe) and waits on
a lock that thread releases when the reply is read; on the callee's side an
I/O thread queues the request for a main thread, which queues the reply
back (and wakes the I/O thread by a pipe). No solray code runs: the figures
say what removing hand-offs could gain at most, on this machine.
"""

from __future__ import annotations

import argparse
import os
import queue
import selectors
import socket
import threading
import time

MESSAGE = b"x" * 200  # about a small call's frame


def _pipe_loop(sock: socket.socket, on_message, on_wake) -> None:
    """An I/O thread: the socket's messages go to `on_message`, a byte on
    the returned pipe to `on_wake`. Returns the pipe's write end and the
    thread, not started."""
    read_end, write_end = os.pipe()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "socket")
    selector.register(read_end, selectors.EVENT_READ, "pipe")

    def run() -> None:
        while True:
            for key, _ in selector.select():
                if key.data == "pipe":
                    os.read(read_end, 4096)
                    on_wake()
                else:
                    data = sock.recv(4096)
                    if not on_message(data):
                        return

    return write_end, threading.Thread(target=run, daemon=True)


def _serve(sock: socket.socket, handoff: bool) -> None:
    if not handoff:
        while data := sock.recv(4096):
            sock.sendall(data)
        return
    requests: queue.SimpleQueue = queue.SimpleQueue()
    replies: queue.SimpleQueue = queue.SimpleQueue()

    def send_replies() -> None:
        while not replies.empty():
            sock.sendall(replies.get())

    def take(data: bytes) -> bool:
        requests.put(data or None)
        return bool(data)

    wake, io_thread = _pipe_loop(sock, take, send_replies)
    io_thread.start()
    while (request := requests.get()) is not None:  # the "actor's main thread"
        replies.put(request)
        os.write(wake, b"1")


def _call(sock: socket.socket, handoff: bool, round_trips: int) -> float:
    start = time.perf_counter()
    if not handoff:
        for _ in range(round_trips):
            sock.sendall(MESSAGE)
            sock.recv(4096)
        return round_trips / (time.perf_counter() - start)
    outgoing: queue.SimpleQueue = queue.SimpleQueue()
    waiting: list[threading.Lock] = []

    def send() -> None:
        while not outgoing.empty():
            sock.sendall(outgoing.get())

    def replied(data: bytes) -> bool:
        waiting.pop().release()
        return True

    wake, io_thread = _pipe_loop(sock, replied, send)
    io_thread.start()
    for _ in range(round_trips):  # the "driver's user thread"
        lock = threading.Lock()
        lock.acquire()
        waiting.append(lock)
        outgoing.put(MESSAGE)
        os.write(wake, b"1")
        lock.acquire()
    return round_trips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=20_000)
    args = parser.parse_args()
    for caller, callee in [(False, False), (True, False), (False, True), (True, True)]:
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            ours.close()
            _serve(theirs, callee)
            os._exit(0)
        theirs.close()
        rate = _call(ours, caller, args.round_trips)
        ours.close()
        os.waitpid(pid, 0)
        print(
            f"hand-off at the caller {'yes' if caller else 'no ':3}  "
            f"at the callee {'yes' if callee else 'no ':3}  {rate:>9,.0f} round trips/s"
        )


if __name__ == "__main__":
    main()
