"""Every listening port of a cluster refuses peers that do not hold the token.

The ports: the control store, the node, the driver's core worker and a
worker's core worker, each on TCP and on its local twin (a Unix socket).
Each is attacked with raw sockets (garbage, wrong or replayed handshakes,
silence, pickles) and, once authenticated, with malformed frames. Every
attack must end with the server closing that one connection, nothing
unpickled, and the cluster still serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import pathlib
import pickle
import socket
import subprocess
import sys
import time

import msgpack
import psutil
import pytest
from conftest import barrier, wait_for_condition

import solray
from solray._private import context, protocol, transport
from solray._private.protocol import MAX_HEADER, PREFIX, Msg

# How long a server may take to close a connection it should refuse. Refusals
# other than the handshake timeout happen at once; this only bounds a hang.
CLOSE_DEADLINE_S = 10.0
# The handshake timeout is 10 s inside the servers; allow for a loaded machine.
SILENT_DEADLINE_S = 15.0


# -- helpers -----------------------------------------------------------------


@solray.remote
def worker_address():
    return context.core_worker.address


@solray.remote
def add(a, b):
    return a + b


def endpoints(ray_context) -> dict[str, str]:
    """name -> host:port of every server socket of the running cluster, and
    "local:" host:port of each one's local twin (a Unix socket: transport.py)."""
    result = {
        "control store": ray_context["address"],
        "node": solray.nodes()[0]["RayletSocketName"],
        "driver core worker": context.core_worker.address,
        "worker core worker": solray.get(worker_address.remote(), timeout=30),
    }
    assert len(set(result.values())) == 4, result
    result.update({f"{name}'s local twin": f"local:{a}" for name, a in list(result.items())})
    return result


def digest(token: bytes, role: bytes, nonce: bytes) -> bytes:
    return hmac.new(token, role + nonce, hashlib.sha256).digest()


def raw_connect(address: str) -> socket.socket:
    if address.startswith("local:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CLOSE_DEADLINE_S)
        sock.connect(transport.local_name(address.removeprefix("local:")))
        return sock
    host, port = transport.parse_address(address)
    sock = socket.create_connection((host, port), timeout=CLOSE_DEADLINE_S)
    return sock


# What a client sends first: its version (the server checks it before the proof).
HELLO = transport.version_block()
CHALLENGE_LEN = len(transport.MAGIC) + len(HELLO) + transport.NONCE_LEN


def read_challenge(sock: socket.socket) -> bytes:
    """Read the server's MAGIC + version + nonce; return the nonce."""
    data = read_exactly(sock, CHALLENGE_LEN)
    assert data[: -transport.NONCE_LEN] == transport.MAGIC + HELLO
    return data[-transport.NONCE_LEN :]


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"connection closed after {len(data)} of {n} bytes"
        data += chunk
    return data


def send_ignoring_close(sock: socket.socket, data: bytes) -> None:
    """Send; the server may legitimately hang up before it has read it all."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def read_until_closed(sock: socket.socket, deadline_s: float = CLOSE_DEADLINE_S) -> bytes:
    """Everything the server sends until it closes the connection. Fails if
    the connection is still open at the deadline."""
    deadline = time.monotonic() + deadline_s
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"server kept the connection open for {deadline_s}s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except TimeoutError:
            raise AssertionError(f"server kept the connection open for {deadline_s}s") from None
        if not chunk:
            return data
        data += chunk


def frame(header_obj, payload: bytes = b"", *, payload_len: int | None = None) -> bytes:
    header = msgpack.packb(header_obj, use_bin_type=True)
    n = len(payload) if payload_len is None else payload_len
    return PREFIX.pack(len(header), n) + header + payload


def raw_frame(header: bytes, payload: bytes = b"") -> bytes:
    return PREFIX.pack(len(header), len(payload)) + header + payload


class TouchOnUnpickle:
    """Unpickling this creates a file: proof that a payload was executed."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


async def connect_to(address: str, token: bytes, **kwargs) -> transport.Connection:
    """transport.connect to an endpoint: a twin through the twin, a TCP
    address over TCP (transport.connect takes this host's addresses to their
    twins: here it is shown none)."""
    if address.startswith("local:"):
        conn = await transport.connect(address.removeprefix("local:"), token, **kwargs)
        assert conn._transport.get_extra_info("socket").family == socket.AF_UNIX
        return conn
    saved, transport._local = transport._local, set()
    try:
        conn = await transport.connect(address, token, **kwargs)
    finally:
        transport._local = saved
    assert conn._transport.get_extra_info("socket").family != socket.AF_UNIX
    return conn


async def probe(address: str, token: bytes, name: str) -> None:
    """An authenticated connection to `address` gets an answer to a request
    the server understands: the server is alive and still serving."""
    conn = await connect_to(address, token, timeout=CLOSE_DEADLINE_S)
    try:
        if name.startswith("control store"):
            nodes = await asyncio.wait_for(conn.request(Msg.GET_NODES), CLOSE_DEADLINE_S)
            assert len(nodes) == 1
        elif name.startswith("node"):
            info = await asyncio.wait_for(conn.request(Msg.NODE_INFO), CLOSE_DEADLINE_S)
            assert info["address"] == address.removeprefix("local:")
        else:
            # An object nobody owns: a live core worker answers "unknown".
            reply = await asyncio.wait_for(
                conn.request(Msg.GET_OBJECT, {"id": os.urandom(28)}), CLOSE_DEADLINE_S
            )
            assert reply is None
    finally:
        # The transport closes its socket on a later loop turn: wait for it,
        # so the socket does not outlive asyncio.run's loop (leak_check counts fds).
        closed = asyncio.get_running_loop().create_future()
        conn.add_close_callback(lambda _: closed.done() or closed.set_result(None))
        conn.close()
        await asyncio.wait_for(closed, CLOSE_DEADLINE_S)


def assert_all_serving(addresses: dict[str, str], token: bytes) -> None:
    """The attacked endpoints (the same worker too) still serve, and so does
    the cluster."""
    for name, address in addresses.items():
        asyncio.run(probe(address, token, name))
    assert solray.get([add.remote(i, i) for i in range(8)], timeout=30) == [2 * i for i in range(8)]


# -- unauthenticated peers -----------------------------------------------------


def test_garbage_bytes_close_the_connection(ray_start):
    addresses = endpoints(ray_start)
    garbage = [
        os.urandom(len(HELLO) + transport.DIGEST_LEN + transport.NONCE_LEN),  # a proof's size
        os.urandom(1 << 20),  # far more than a handshake
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n" * 4,
        b"\x00" * 200,
    ]
    for name, address in addresses.items():
        for data in garbage:
            with raw_connect(address) as sock:
                send_ignoring_close(sock, data)
                received = read_until_closed(sock)
            # At most the server's challenge came back: nothing was answered.
            assert len(received) <= CHALLENGE_LEN, name
        # A few bytes and then end-of-stream: closed at once, not at the timeout.
        with raw_connect(address) as sock:
            sock.sendall(os.urandom(5))
            sock.shutdown(socket.SHUT_WR)
            read_until_closed(sock)
    assert_all_serving(addresses, context.core_worker.token)


def test_correct_handshake_by_hand_is_accepted(ray_start):
    """Positive control for the raw-socket attacks below: the handshake as
    these tests perform it does work with the real token."""
    token = context.core_worker.token
    for name, address in endpoints(ray_start).items():
        with raw_connect(address) as sock:
            nonce = read_challenge(sock)
            client_nonce = os.urandom(transport.NONCE_LEN)
            sock.sendall(HELLO + digest(token, b"client", nonce) + client_nonce)
            proof = read_exactly(sock, transport.DIGEST_LEN)
            assert proof == digest(token, b"server", client_nonce), name


def test_wrong_token_is_disconnected(ray_start):
    token = context.core_worker.token
    addresses = endpoints(ray_start)
    for name, address in addresses.items():
        wrong_proofs = {
            "wrong token": lambda nonce: digest(os.urandom(32), b"client", nonce),
            "server's role": lambda nonce: digest(token, b"server", nonce),
            "other nonce": lambda nonce: digest(token, b"client", os.urandom(32)),
            "empty token": lambda nonce: digest(b"", b"client", nonce),
        }
        for what, make_proof in wrong_proofs.items():
            with raw_connect(address) as sock:
                nonce = read_challenge(sock)
                hello = HELLO + make_proof(nonce) + os.urandom(transport.NONCE_LEN)
                send_ignoring_close(sock, hello)
                # No server proof comes back: the server revealed nothing.
                assert read_until_closed(sock) == b"", f"{name}: {what}"
    assert_all_serving(addresses, token)


def test_replayed_proof_is_disconnected(ray_start):
    """A valid proof seen on one connection does not open another."""
    token = context.core_worker.token
    for name, address in endpoints(ray_start).items():
        with raw_connect(address) as first, raw_connect(address) as second:
            first_nonce = read_challenge(first)
            second_nonce = read_challenge(second)
            assert first_nonce != second_nonce, name
            replayed = digest(token, b"client", first_nonce)
            send_ignoring_close(second, HELLO + replayed + os.urandom(transport.NONCE_LEN))
            assert read_until_closed(second) == b"", name


def test_client_rejects_server_without_token(leak_check):
    """The handshake is mutual: connect() refuses a server that sends the
    challenge but cannot prove that it holds the token."""

    async def main():
        received = bytearray()
        served = asyncio.Event()

        async def fake_server(reader, writer):
            try:
                writer.write(transport.MAGIC + HELLO + os.urandom(transport.NONCE_LEN))
                need = len(HELLO) + transport.DIGEST_LEN + transport.NONCE_LEN
                received.extend(await reader.readexactly(need))
                writer.write(os.urandom(transport.DIGEST_LEN))  # a made-up proof
                received.extend(await reader.read())  # until the client hangs up
            finally:
                writer.close()
                served.set()

        server = await asyncio.start_server(fake_server, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        try:
            with pytest.raises(transport.ConnectionLost):
                await transport.connect(f"{host}:{port}", os.urandom(32), timeout=CLOSE_DEADLINE_S)
            await asyncio.wait_for(served.wait(), CLOSE_DEADLINE_S)
        finally:
            server.close()
            await server.wait_closed()
        # The client sent its version, proof and nonce, and no frame after them.
        assert len(received) == len(HELLO) + transport.DIGEST_LEN + transport.NONCE_LEN

    asyncio.run(main())


def test_unauthenticated_pickle_is_never_unpickled(ray_start, tmp_path):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(TouchOnUnpickle(marker))
    # Positive control: this payload does create the file when unpickled.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(TouchOnUnpickle(control)))
    assert control.exists()

    # The payload as the function of a task push, the frame a worker would
    # cloudpickle.loads(); and as the value of an object.
    push_body = {"tid": b"t" * 24, "fn": b"f" * 20, "fnb": 1, "name": "x"}
    push = frame([Msg.PUSH_TASK, 1, push_body, [len(payload)]], payload)
    reply = frame([Msg.REPLY, 1, ["i", 0, 1], [len(payload)]], payload)

    def push_instead_of_proof(sock):
        read_challenge(sock)
        return push

    def push_after_wrong_proof(sock):
        nonce = read_challenge(sock)
        proof = digest(os.urandom(32), b"client", nonce)
        return HELLO + proof + os.urandom(transport.NONCE_LEN) + push

    # Each makes the bytes to send, after reading what it needs to.
    attacks = {
        "bare pickle": lambda sock: payload + b"." * 64,  # padded past a proof's length
        "push frame first": lambda sock: push,
        "reply frame first": lambda sock: reply,
        "push frame instead of the proof": push_instead_of_proof,
        "push frame after a wrong proof": push_after_wrong_proof,
    }
    addresses = endpoints(ray_start)
    for name, address in addresses.items():
        for what, make in attacks.items():
            with raw_connect(address) as sock:
                send_ignoring_close(sock, make(sock))
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # already reset by the server
                # Closed: the server has seen every byte it was ever going to.
                read_until_closed(sock)
            assert not marker.exists(), f"{name}: {what} was unpickled"
    assert_all_serving(addresses, context.core_worker.token)
    assert not marker.exists()


def test_silent_client_is_disconnected_after_handshake_timeout(ray_start):
    """The one slow test: clients that say nothing, or only part of the
    handshake, are cut off when the handshake times out. All endpoints are
    probed at once, so this costs one timeout."""
    addresses = endpoints(ray_start)
    socks = []
    try:
        for name, address in addresses.items():
            silent = raw_connect(address)
            socks.append((f"{name}: silent", silent))
            partial = raw_connect(address)
            socks.append((f"{name}: partial proof", partial))
            read_challenge(partial)
            partial.sendall(os.urandom(transport.DIGEST_LEN // 2))
        deadline = time.monotonic() + SILENT_DEADLINE_S
        for what, sock in socks:
            # Only the challenge ever arrives (already read for "partial").
            received = read_until_closed(sock, max(0.1, deadline - time.monotonic()))
            if what.endswith("silent"):
                assert received[: len(transport.MAGIC)] == transport.MAGIC, what
                assert len(received) == CHALLENGE_LEN, what
            else:
                assert received == b"", what
    finally:
        for _, sock in socks:
            sock.close()
    assert_all_serving(addresses, context.core_worker.token)


# -- authenticated peers sending malformed frames ------------------------------

MALFORMED_FRAMES = {
    "undecodable header": raw_frame(b"\xc1\xc1\xc1\xc1"),
    "truncated header": raw_frame(b"\x94\x01"),
    "header with trailing bytes": raw_frame(msgpack.packb([9999, 0, None, []]) + b"\x00"),
    "header is a map": frame({"type": Msg.GET_NODES}),
    "header is a string": frame("hello"),
    "header of 3 items": frame([Msg.GET_NODES, 1, None]),
    "header of 5 items": frame([Msg.GET_NODES, 1, None, [], 0]),
    "string message type": frame(["GET_NODES", 1, None, []]),
    "string request id": frame([Msg.GET_NODES, "1", None, []]),
    "lengths not a list": frame([Msg.GET_NODES, 1, None, 3]),
    "negative buffer length": frame([Msg.GET_NODES, 1, None, [-1]]),
    "lengths do not add up": frame([Msg.GET_NODES, 1, None, [5]], b"abc"),
    "unknown message type": frame([9999, 1, None, []]),
    "negative message type": frame([-3, 0, None, []]),
    "header too large": PREFIX.pack(MAX_HEADER + 1, 0),
}


async def send_malformed(address: str, token: bytes, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    closed = loop.create_future()

    def on_close(conn):
        if not closed.done():
            closed.set_result(None)

    conn = await connect_to(address, token, on_close=on_close, timeout=CLOSE_DEADLINE_S)
    try:
        conn._transport.write(data)
        await asyncio.wait_for(closed, CLOSE_DEADLINE_S)
    finally:
        conn.close()


def test_malformed_frame_after_auth_closes_the_connection(ray_start):
    token = context.core_worker.token
    addresses = endpoints(ray_start)
    for name, address in addresses.items():
        for what, data in MALFORMED_FRAMES.items():
            try:
                asyncio.run(send_malformed(address, token, data))
            except TimeoutError:
                raise AssertionError(f"{name} kept the connection open after {what}") from None
    assert_all_serving(addresses, token)


def test_handler_error_answers_and_keeps_the_connection(ray_start):
    """A well-formed request that makes a handler raise is answered with an
    error; the connection stays usable (it is not a protocol violation)."""
    token = context.core_worker.token

    async def main():
        conn = await transport.connect(ray_start["address"], token, timeout=CLOSE_DEADLINE_S)
        try:
            with pytest.raises(transport.RemoteError):
                await asyncio.wait_for(conn.request(Msg.KV_GET, "not a dict"), CLOSE_DEADLINE_S)
            nodes = await asyncio.wait_for(conn.request(Msg.GET_NODES), CLOSE_DEADLINE_S)
            assert len(nodes) == 1
            assert not conn.closed
        finally:
            conn.close()

    asyncio.run(main())
    assert solray.get(add.remote(1, 2), timeout=30) == 3


def test_malformed_task_push_does_not_kill_the_worker(ray_start, tmp_path):
    """A peer holding the token that pushes a task with missing fields does not
    take the worker down: the worker goes on to run real tasks."""
    token = context.core_worker.token
    address, pid = solray.get(report_worker.remote(None))

    async def push_empty():
        conn = await transport.connect(address, token, timeout=CLOSE_DEADLINE_S)
        push = conn.request(Msg.PUSH_TASK, {})
        try:
            # Requests on one connection are handled in order: once this one
            # is answered, the push was handed to the worker's task queue,
            # ahead of any task pushed to it later.
            reply = await asyncio.wait_for(
                conn.request(Msg.GET_OBJECT, {"id": os.urandom(28)}), CLOSE_DEADLINE_S
            )
            assert reply is None
        finally:
            push.cancel()
            conn.close()

    asyncio.run(push_empty())
    # Two tasks that wait for each other must run on both workers of the
    # 2-CPU node, so the one that got the malformed push runs one of them,
    # after it has dealt with the push.
    pids = solray.get([report_worker.remote(str(tmp_path)) for _ in range(2)], timeout=60)
    assert pid in {p for _, p in pids}
    assert psutil.pid_exists(pid)


@solray.remote
def report_worker(barrier_dir):
    if barrier_dir is not None:
        barrier(barrier_dir, 2, timeout=30)
    return context.core_worker.address, os.getpid()


# -- peers of another version --------------------------------------------------


def test_driver_of_another_version_is_refused_and_both_sides_say_which(leak_check, capfd):
    """A driver of another solray release joining the cluster gets Ray's
    'Version mismatch' RuntimeError naming both versions; the control store
    logs the same two versions."""
    # Started here, not by a fixture, so the control store's stderr is capfd's.
    address = solray.init(num_cpus=1)["address"]
    script = (
        "import sys, solray\n"
        "solray.__version__ = '9.9.9'  # as a driver of another release would be\n"
        "try:\n"
        "    solray.init(address=sys.argv[1])\n"
        "except RuntimeError as e:\n"
        "    print('REFUSED', type(e).__name__, e)\n"
        "else:\n"
        "    print('JOINED')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, address],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "REFUSED" in out, out
    assert "Version mismatch" in out
    assert "solray 9.9.9" in out and f"solray {solray.__version__}" in out, out
    logged = f"the peer runs solray 9.9.9 (protocol {protocol.PROTOCOL_VERSION}), this "
    logged += f"process runs solray {solray.__version__}"
    err = []
    wait_for_condition(
        lambda: err.append(capfd.readouterr().err) or logged in "".join(err),
        message=lambda: "".join(err),
    )
    solray.shutdown()


def test_peer_of_another_protocol_is_refused_before_its_proof(ray_start):
    """Every endpoint refuses a client whose protocol version differs, even
    with a valid proof: no server proof comes back."""
    token = context.core_worker.token
    for name, address in endpoints(ray_start).items():
        with raw_connect(address) as sock:
            nonce = read_challenge(sock)
            other = transport.version_block(protocol_version=1)
            hello = other + digest(token, b"client", nonce) + os.urandom(transport.NONCE_LEN)
            send_ignoring_close(sock, hello)
            assert read_until_closed(sock) == b"", name
    assert_all_serving(endpoints(ray_start), token)
