"""Local twins: processes of one host talk over Unix sockets, safely.

Every RPC port also listens on a Unix socket named for its TCP address
(transport.py, "Local twins"); a client whose peer is on its own host
connects there. The names are abstract, so anyone may bind one first: a
name held by another user's process must never receive a byte, and the
cluster must go on over TCP. Another user is simulated as root: a process
started with uid 65534 (nobody).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

import pytest
from conftest import wait_for_condition

import solray
from solray._private import context, transport
from solray._private.protocol import Msg

OTHER_UID = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="simulating another user needs root")
TIMEOUT_S = 30.0


def family(conn: transport.Connection) -> socket.AddressFamily:
    return conn._transport.get_extra_info("socket").family


@solray.remote
class Echo:
    def echo(self, value):
        return value

    def node_family(self) -> int:
        return family(context.core_worker.node)


def test_processes_of_one_host_talk_over_unix_sockets(ray_start):
    """The driver's connections to its node and to an actor, and the
    actor's to its node, are Unix sockets; values cross them intact."""
    actor = Echo.remote()
    payload = os.urandom(1 << 20)
    assert solray.get(actor.echo.remote(payload), timeout=TIMEOUT_S) == payload
    cw = context.core_worker
    assert family(cw.node) == socket.AF_UNIX
    actor_conns = [q.conn for q in cw.actor_submitter.queues.values() if q.conn is not None]
    assert [family(conn) for conn in actor_conns] == [socket.AF_UNIX]
    assert solray.get(actor.node_family.remote(), timeout=TIMEOUT_S) == socket.AF_UNIX


def squat(name: str) -> tuple[int, object]:
    """Fork a process that becomes another user, binds `name` and reports
    on a pipe each connection it accepts and the bytes it got on it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the squatter: no exec, so no interpreter the other user must read
        try:
            os.close(read_end)
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
            report = os.fdopen(write_end, "w", buffering=1)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(name)
            sock.listen(8)
            report.write("ready\n")
            while True:
                conn, _ = sock.accept()
                report.write("accepted\n")
                received = 0
                while data := conn.recv(65536):
                    received += len(data)
                report.write(f"received {received}\n")
        finally:
            os._exit(0)
    os.close(write_end)
    return pid, os.fdopen(read_end)


@as_root
def test_a_local_name_held_by_another_user_gets_nothing(leak_check, caplog):
    """Another user binds the local name of a port before its server does.
    The server serves on TCP alone and says so; a client checks who is
    behind the name before it sends a byte, sends nothing there, and
    connects over TCP."""
    token = os.urandom(32)
    sock = transport.bind_socket("127.0.0.1", 0)
    address = transport.socket_address(sock)
    squatter, report = squat(transport.local_name(address))
    try:
        assert report.readline().strip() == "ready"

        async def scenario():
            served = []
            server = await transport.serve(
                sock, token, {Msg.GET_NODES: lambda conn, rid, body, bufs: conn.reply(rid, "tcp")}
            )
            try:
                conn = await transport.connect(address, token, timeout=TIMEOUT_S)
                served.append(family(conn))
                served.append(await asyncio.wait_for(conn.request(Msg.GET_NODES), TIMEOUT_S))
                closed = asyncio.get_running_loop().create_future()
                conn.add_close_callback(lambda _: closed.done() or closed.set_result(None))
                conn.close()
                await asyncio.wait_for(closed, TIMEOUT_S)
            finally:
                server.close()
                await server.wait_closed()
            return served

        with caplog.at_level(logging.WARNING, logger="solray._private.transport"):
            served = asyncio.run(scenario())
        assert served == [socket.AF_INET, "tcp"]
        assert f"another process holds the local socket name of {address}" in caplog.text
        assert f"held by a process of user {OTHER_UID}" in caplog.text
        # The squatter saw the client's connection and its end, and not one byte.
        assert report.readline().strip() == "accepted"
        assert report.readline().strip() == "received 0"
    finally:
        os.kill(squatter, signal.SIGKILL)
        os.waitpid(squatter, 0)
        report.close()
        sock.close()


def test_a_twin_goes_with_its_process(ray_start):
    """A name is released with its socket: once an actor's process is
    killed, nothing listens under its name (no file is left to clean up),
    and the cluster serves on."""
    actor = Echo.remote()
    solray.get(actor.echo.remote(1), timeout=TIMEOUT_S)
    cw = context.core_worker
    (queue,) = cw.actor_submitter.queues.values()
    name = transport.local_name(queue.address)

    def listening() -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(name)
            except (ConnectionRefusedError, FileNotFoundError):
                return False
            return True

    assert listening()
    solray.kill(actor)
    wait_for_condition(lambda: not listening(), message=f"{queue.address}'s name still listens")
    again = Echo.remote()
    assert solray.get(again.echo.remote("still serving"), timeout=TIMEOUT_S) == "still serving"
