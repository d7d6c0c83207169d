"""Authenticated connections and RPC over asyncio.

Rule kept here: nothing a peer sends is decoded before it has proven that it
holds the cluster token. The handshake is a mutual HMAC challenge-response:

    server -> client   MAGIC + VERSION + server nonce (32 bytes)
    client -> server   VERSION + HMAC(token, "client" + server nonce) + client nonce
    server -> client   HMAC(token, "server" + client nonce)

VERSION is the protocol version and solray's version (fixed size): processes
of different versions would misread each other's messages, so a peer of
another version is refused before anything else, and both sides say which
versions met (the client raises VersionMismatchError, the server logs it).
MAGIC and VERSION's layout never change, so any two versions can tell.

Only after that are frames (protocol.py) parsed; before it, the only thing
the server does with incoming bytes is count them and compare a digest. A
wrong digest or version, a slow handshake, or any malformed frame later on
closes that connection and nothing else: the process keeps serving its other
peers.

With TLS on (tls.py), every TCP connection is mutual TLS first, and this
handshake runs inside it: a peer needs the cluster's certificate and token.
A plain-TCP peer, or one whose certificate another CA signed, fails the TLS
handshake and never reaches this code.

An authenticated connection may be handed to another process
(`Connection.detach` here, `adopt` there on the inherited socket): the ray://
client server authenticates each client, then its proxy driver serves it.
The handshake is not repeated: the socket comes from the parent that ran it.
Object transfer between nodes detaches too, in the same process: the
authenticated socket then carries raw object bytes (object_manager.py).
A TLS session cannot leave this process's TLS layer (its keys live here), so
under TLS `detach` returns one end of a Unix socket pair instead, whose
plaintext this process relays to and from the session: for another process
(that holds the other end) or for a transfer here, which then pays for the
relay.

A Connection is an asyncio Protocol (faster than streams). Outgoing frames are
queued and flushed once per event-loop iteration, so a burst of messages costs
one system call. Requests get futures; replies resolve them. Incoming requests
are dispatched to `handlers[msg_type](conn, request_id, body, buffers)`, which
answer with `conn.reply(...)` now or later.

Writing from another thread (`send_now`). The loop owns a connection, but a
thread whose frame is the only thing to send (a caller's actor call, a
worker's reply) may write it to the socket itself: waking the loop to write
it cost a sync actor call a thread hand-off on each side (actor_submitter.py,
executor.py). The rule kept: frames never interleave
and go out in the order they were written or queued. Every write to the
transport (the loop's too) happens under `_write_lock`, and a thread writes
only when nothing is queued anywhere (not in `_out`, not in the transport's
buffer); what the socket does not take goes to the front of `_out`, for the
loop to flush. Request ids come from an itertools.count, which threads may
share, and the pending-reply table changes under the same lock as `closed`,
so a request is never registered on a connection already failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import os
import socket
import struct
import threading
from asyncio import selector_events
from collections.abc import Callable
from typing import Any

import solray
from solray._private import protocol, tls
from solray._private.event_loop import TurnCounter
from solray._private.protocol import MAX_HEADER, MAX_PAYLOAD, PREFIX, Msg, ProtocolError

logger = logging.getLogger(__name__)

MAGIC = b"SOLRAY02"
_VERSION = struct.Struct("<H16s")  # protocol version, solray version
NONCE_LEN = 32
DIGEST_LEN = 32
HANDSHAKE_TIMEOUT_S = 10.0  # the TLS handshake too, each
TLS_SHUTDOWN_TIMEOUT_S = 5.0  # a closing TLS connection waits this long for close_notify


def version_block(protocol_version: int | None = None, solray_version: str | None = None):
    """This process's VERSION (or one with the given versions)."""
    return _VERSION.pack(
        protocol.PROTOCOL_VERSION if protocol_version is None else protocol_version,
        (solray.__version__ if solray_version is None else solray_version).encode()[:16],
    )


def _describe(block: bytes) -> str:
    number, name = _VERSION.unpack(block)
    return f"solray {name.rstrip(bytes(1)).decode(errors='replace')} (protocol {number})"


class VersionMismatchError(RuntimeError):
    """The peer runs another solray version (or wire protocol)."""


Handler = Callable[["Connection", int, Any, list], None]


class ConnectionLost(ConnectionError):
    """The peer went away before answering."""


class RemoteError(Exception):
    """The peer's handler raised while serving our request."""


def _digest(token: bytes, role: bytes, nonce: bytes) -> bytes:
    return hmac.new(token, role + nonce, hashlib.sha256).digest()


class Connection(asyncio.Protocol):
    def __init__(
        self,
        token: bytes,
        handlers: dict[int, Handler],
        *,
        server_side: bool,
        on_ready: Callable[[Connection], None] | None = None,
        on_close: Callable[[Connection], None] | None = None,
        authenticated: bool = False,
    ):
        self._token = token
        self.handlers = handlers
        self._server_side = server_side
        self._on_ready = on_ready
        self._close_callbacks: list[Callable[[Connection], None]] = []
        if on_close is not None:
            self._close_callbacks.append(on_close)
        self._buf = bytearray()
        self._authenticated = authenticated  # True only for adopt()
        self._nonce = os.urandom(NONCE_LEN)
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future | _Answer] = {}
        self._rids = itertools.count(1)
        # What `_write_lock` guards: `_out`, `_flush_scheduled`, `closed`,
        # the pending table's swap, and every write to the transport.
        self._write_lock = threading.Lock()
        self._out: list = []
        self._flush_scheduled = False
        self._turns: TurnCounter | None = None  # the loop's, if it counts turns
        self._sock: socket.socket | None = None  # what send_now writes to, if it may
        self._sent_turn = -1  # the turn whose first frame went out at once
        self.closed = False
        self._lost = False
        self.ready: asyncio.Future | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        # Free for the owner of the connection to tag who the peer is.
        self.peer: dict[str, Any] = {}

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport) -> None:
        self._transport = transport
        if isinstance(transport, selector_events._SelectorSocketTransport):  # not TLS
            self._sock = transport._sock
        self.loop = asyncio.get_running_loop()
        self._turns = getattr(self.loop, "solray_turns", None)
        self.ready = self.loop.create_future()
        if self._authenticated:  # handed over after the handshake (adopt)
            self.ready.set_result(self)
            return
        self._handshake_timer = self.loop.call_later(HANDSHAKE_TIMEOUT_S, self._handshake_expired)
        if self._server_side:
            transport.write(MAGIC + version_block() + self._nonce)

    def data_received(self, data: bytes) -> None:
        if self.closed:  # a TLS close still waiting for the peer's close_notify
            return
        self._buf += data
        try:
            if not self._authenticated:
                self._handshake_step()
                if not self._authenticated:
                    return
            self._parse_frames()
        except ProtocolError as e:
            peer = self._transport.get_extra_info("peername") if self._transport else None
            logger.warning("closing connection from %s: %s", peer, e)
            self.close()

    def connection_lost(self, exc) -> None:
        if self._lost:  # a TLS connection that close() already ended here
            return
        self._lost = True
        with self._write_lock:
            self.closed = True
            pending, self._pending = self._pending, {}
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        if self.ready is not None and not self.ready.done():
            hint = f" ({exc})" if exc is not None else ""
            if not self._server_side and "server_nonce" not in self.peer:
                # Closed before the greeting: say what is likely wrong.
                hint += (
                    " before the server greeted this process (the server refused this "
                    f"host's certificate? {tls.CERT_ENV} must be signed by the cluster's CA)"
                    if self._tls()
                    else " before the server greeted this process (if the cluster uses TLS, "
                    "set SOLRAY_USE_TLS=1 and the RAY_TLS_* variables)"
                )
            self.ready.set_exception(
                ConnectionLost(f"connection closed during authentication{hint}")
            )
            self.ready.exception()  # mark retrieved: the caller may be gone
        for fut in pending.values():
            if type(fut) is _Answer:  # a turn later, as a future's callback would be:
                # other messages read in this turn (a node's word on why this
                # peer died) come first
                lost = ConnectionLost("connection closed before the reply")
                self.loop.call_soon(fut.give, None, lost)
            elif not fut.done():
                fut.set_exception(ConnectionLost("connection closed before the reply"))
        for cb in self._close_callbacks:
            try:
                cb(self)
            except Exception:
                logger.exception("error in connection close callback")

    # -- handshake ---------------------------------------------------------

    def _handshake_step(self) -> None:
        buf = self._buf
        ours = version_block()
        if self._server_side:
            need = _VERSION.size + DIGEST_LEN + NONCE_LEN
            if len(buf) < need:
                return
            theirs = bytes(buf[: _VERSION.size])
            proof = bytes(buf[_VERSION.size : _VERSION.size + DIGEST_LEN])
            client_nonce = bytes(buf[_VERSION.size + DIGEST_LEN : need])
            del buf[:need]
            if theirs != ours:
                raise ProtocolError(
                    f"version mismatch: the peer runs {_describe(theirs)}, this process "
                    f"runs {_describe(ours)}; refused"
                )
            if not hmac.compare_digest(proof, _digest(self._token, b"client", self._nonce)):
                raise ProtocolError("authentication failed: wrong cluster token")
            self._transport.write(_digest(self._token, b"server", client_nonce))
            self._finish_handshake()
        else:
            if "server_nonce" not in self.peer:
                need = len(MAGIC) + _VERSION.size + NONCE_LEN
                if len(buf) < need:
                    return
                if bytes(buf[: len(MAGIC)]) != MAGIC:
                    raise ProtocolError("peer is not a solray endpoint")
                theirs = bytes(buf[len(MAGIC) : len(MAGIC) + _VERSION.size])
                server_nonce = bytes(buf[len(MAGIC) + _VERSION.size : need])
                del buf[:need]
                if theirs != ours:
                    self._refuse_server(theirs, ours)
                    return
                self.peer["server_nonce"] = server_nonce
                self._transport.write(
                    ours + _digest(self._token, b"client", server_nonce) + self._nonce
                )
            if len(buf) < DIGEST_LEN:
                return
            proof = bytes(buf[:DIGEST_LEN])
            del buf[:DIGEST_LEN]
            if not hmac.compare_digest(proof, _digest(self._token, b"server", self._nonce)):
                raise ProtocolError("authentication failed: server does not hold the token")
            del self.peer["server_nonce"]
            self._finish_handshake()

    def _refuse_server(self, theirs: bytes, ours: bytes) -> None:
        """Client side: the server runs another version. Tell it ours (no
        proof: the server checks the version first and logs the mismatch),
        and fail the connection with both versions named."""
        peer = self._transport.get_extra_info("peername")
        address = f"{peer[0]}:{peer[1]}" if peer else "the peer"
        self._transport.write(ours + bytes(DIGEST_LEN + NONCE_LEN))
        self.ready.set_exception(
            VersionMismatchError(
                f"Version mismatch: {address} runs {_describe(theirs)}, this process runs "
                f"{_describe(ours)}. Every driver and worker of a cluster must run the "
                "solray version the cluster was started with."
            )
        )
        self.ready.exception()  # mark retrieved: connect() raises it
        self.close()

    def _finish_handshake(self) -> None:
        self._authenticated = True
        self._handshake_timer.cancel()
        self._handshake_timer = None
        if not self.ready.done():
            self.ready.set_result(self)
        if self._on_ready is not None:
            self._on_ready(self)

    def _handshake_expired(self) -> None:
        if not self._authenticated:
            logger.warning("closing connection: authentication timed out")
            self.close()

    # -- frames ------------------------------------------------------------

    def _parse_frames(self) -> None:
        buf = self._buf
        while len(buf) >= PREFIX.size:
            header_len, payload_len = PREFIX.unpack_from(buf, 0)
            if header_len > MAX_HEADER or payload_len > MAX_PAYLOAD:
                raise ProtocolError(f"frame too large ({header_len}, {payload_len})")
            end = PREFIX.size + header_len + payload_len
            if len(buf) < end:
                return
            buffers = []
            with memoryview(buf) as view:
                pos = PREFIX.size + header_len
                msg_type, rid, body, lengths = protocol.decode_header(view[PREFIX.size : pos])
                if lengths or payload_len:
                    if sum(lengths) != payload_len:
                        raise ProtocolError("buffer lengths do not add up to the payload")
                    for n in lengths:
                        buffers.append(bytes(view[pos : pos + n]))
                        pos += n
            del buf[:end]
            self._dispatch(msg_type, rid, body, buffers)
            if self.closed:
                return

    def _dispatch(self, msg_type: int, rid: int, body, buffers: list) -> None:
        if msg_type == Msg.REPLY or msg_type == Msg.ERROR_REPLY:
            fut = self._pending.pop(rid, None)
            if type(fut) is _Answer:
                if msg_type == Msg.ERROR_REPLY:
                    fut.give(None, RemoteError(body))
                else:
                    fut.give((body, buffers), None)
                return
            if fut is None or fut.done():
                return
            if msg_type == Msg.ERROR_REPLY:
                fut.set_exception(RemoteError(body))
            elif fut.solray_raw:
                fut.set_result((body, buffers))
            else:
                fut.set_result(body)
            return
        handler = self.handlers.get(msg_type)
        if handler is None:
            raise ProtocolError(f"unknown message type {msg_type}")
        try:
            handler(self, rid, body, buffers)
        except ProtocolError:
            raise
        except Exception as e:
            logger.exception("handler for %s failed", msg_type)
            if rid:
                self.send(Msg.ERROR_REPLY, f"{type(e).__name__}: {e}", rid=rid)

    # -- sending -----------------------------------------------------------

    def send(self, msg_type: int, body=None, buffers=(), *, rid: int = 0) -> None:
        """Write one frame. The first of a loop iteration goes out at once;
        those that follow it are queued and written together at the end of
        the iteration. (A round trip sends one frame per iteration: waiting
        for the iteration's end cost it a loop turn on each side. A burst,
        a thousand pushes from one drain of the inbox, still costs two
        writes.) On a loop that counts its turns (`new_loop`) a lone frame
        schedules nothing: the end-of-iteration callback, scheduled only
        for a second frame, would cost each round trip one more loop turn
        on each side."""
        if self.closed:
            return
        frame = protocol.encode(msg_type, rid, body, buffers)
        with self._write_lock:
            if self._flush_scheduled:  # after the frames already queued
                self._out.extend(frame)
                return
            turns = self._turns
            if turns is not None and turns.turn != self._sent_turn:
                self._sent_turn = turns.turn
                self._transport.writelines(frame)
                return
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
            if turns is None:  # a loop without a count: the first frame of each burst at once
                self._transport.writelines(frame)
                return
            self._out.extend(frame)

    def send_now(
        self,
        msg_type: int,
        body,
        buffers=(),
        *,
        rid: int = 0,
        answer: Callable | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> bool:
        """Any thread but the loop's: send a frame from this thread, if
        nothing is waiting to be written before it. With `answer`, a
        request (answered as in `request_then`); else a message, or a reply
        to request `rid`. `on_commit()` runs once the frame is sure to go,
        before it is written: what the reply's handler needs must be on its
        way to the loop by then (this thread may wait for the GIL after its
        write while the loop reads the reply). False (nothing sent, nothing
        registered, `on_commit` not run) when the loop must send it
        instead: something is queued, the connection is closing, or it is
        TLS (whose session only the loop may write)."""
        sock = self._sock
        if sock is None:
            return False
        if answer is not None:
            rid = next(self._rids)
        frame = protocol.encode(msg_type, rid, body, buffers)
        with self._write_lock:
            transport = self._transport
            if (
                self.closed
                or self._flush_scheduled
                or transport.is_closing()
                or transport.get_write_buffer_size()
            ):
                return False
            if answer is not None:
                self._pending[rid] = _Answer(answer)
            if on_commit is not None:
                on_commit()
            try:
                sent = sock.sendmsg(frame)
            except OSError:  # full, or broken: the loop's write finds out which
                sent = 0
            size = sum(memoryview(piece).nbytes for piece in frame)
            if sent < size:  # the rest first, before anything the loop sends
                self._out.append(b"".join(frame)[sent:])
                self._flush_scheduled = True
                self.loop.call_soon_threadsafe(self._flush)
        return True

    def _flush(self) -> None:
        with self._write_lock:
            self._flush_scheduled = False
            out, self._out = self._out, []
            if out and not self.closed:
                self._transport.writelines(out)

    def reply(self, rid: int, body=None, buffers=()) -> None:
        if rid:
            self.send(Msg.REPLY, body, buffers, rid=rid)

    def reply_error(self, rid: int, message: str) -> None:
        if rid:
            self.send(Msg.ERROR_REPLY, message, rid=rid)

    def request(self, msg_type: int, body=None, buffers=(), *, raw: bool = False) -> asyncio.Future:
        """Send a request; the future resolves to the reply body, or to
        (body, buffers) when `raw` is set."""
        fut = self.loop.create_future()
        fut.solray_raw = raw
        if self.closed:
            fut.set_exception(ConnectionLost("connection is closed"))
            return fut
        rid = next(self._rids)
        self._pending[rid] = fut
        self.send(msg_type, body, buffers, rid=rid)
        return fut

    def request_then(self, msg_type: int, body, buffers, answer: Callable) -> None:
        """Send a request; `answer((body, buffers), None)` runs as soon as the
        reply is parsed, or `answer(None, error)` (RemoteError; ConnectionLost
        a turn after the connection closed, as a future's callback would).
        For the hot paths: a future's callbacks run one loop turn later."""
        if self.closed:  # answered on the next turn, as a reply would be: never
            # inside the caller (which may be about to send the next request)
            lost = ConnectionLost("connection is closed")
            self.loop.call_soon(_Answer(answer).give, None, lost)
            return
        rid = next(self._rids)
        self._pending[rid] = _Answer(answer)
        self.send(msg_type, body, buffers, rid=rid)

    def add_close_callback(self, cb: Callable[[Connection], None]) -> None:
        if self.closed:
            cb(self)
        else:
            self._close_callbacks.append(cb)

    def _tls(self) -> bool:
        return self._transport is not None and (
            self._transport.get_extra_info("ssl_object") is not None
        )

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._flush()
            self._transport.close()
            if self._tls():
                # A TLS close waits for the peer's close_notify before the
                # transport reports the loss; this end is done now, as a plain
                # one is on the next iteration (pending requests fail, close
                # callbacks run): callers rely on that, a shutdown most.
                self.loop.call_soon(self.connection_lost, None)

    def detach(self) -> socket.socket:
        """Take this authenticated connection out of the RPC layer: stop
        reading, and return a duplicate of the socket for the caller to use
        (or pass to another process, which serves it with `adopt`) and
        close (under TLS: one end of a socket pair, relayed to the TLS
        session, which stays here). This Connection closes, the connection
        itself stays open. Only where no byte can be left unparsed in this
        one's buffer: the peer sends nothing more until the new user of the
        socket is there (no frame at all, or only the one whose handler
        detaches)."""
        with self._write_lock:
            self._sock = None  # no thread writes to it from now on
        self._transport.pause_reading()
        if self._tls():
            return self._relay()
        sock = self._transport.get_extra_info("socket")
        handed = socket.fromfd(sock.fileno(), sock.family, sock.type)
        self._transport.close()  # closes our fd only: no FIN while `handed` lives
        return handed

    def _relay(self) -> socket.socket:
        tls_transport = self._transport
        ours, handed = socket.socketpair()
        from_tls = _Relay(None)  # its peer is set once the socket pair is served
        tls_transport.set_protocol(from_tls)

        async def start() -> None:
            try:
                pipe, _ = await self.loop.connect_accepted_socket(
                    lambda: _Relay(tls_transport), sock=ours
                )
            except OSError:
                ours.close()
                tls_transport.close()
                return
            from_tls.peer = pipe
            if tls_transport.is_closing():
                pipe.close()
            else:
                tls_transport.resume_reading()

        task = self.loop.create_task(start())
        _relays.add(task)
        task.add_done_callback(_relays.discard)
        self.connection_lost(None)  # this Connection is done; the transport is the relay's
        return handed


_relays: set[asyncio.Task] = set()  # relays being set up (the loop keeps weak refs)


class _Relay(asyncio.Protocol):
    """Bytes from the transport it is the protocol of, to `peer`. Two of
    them join a TLS session and a Unix socket. A full peer pauses reading
    here; either end closing closes both."""

    def __init__(self, peer: asyncio.Transport | None):
        self.peer = peer

    def data_received(self, data: bytes) -> None:
        self.peer.write(data)

    def eof_received(self) -> None:
        self.peer.close()

    def connection_lost(self, exc) -> None:
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:  # our transport is full: stop what fills it
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        self.peer.resume_reading()


# -- addresses, servers and clients -----------------------------------------


class _Answer:
    """A request's reply handler (`Connection.request_then`)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable):
        self.fn = fn

    def give(self, reply: tuple | None, error: BaseException | None) -> None:
        try:
            self.fn(reply, error)
        except Exception:  # never into the frame parser
            logger.exception("error in the reply handler %s", self.fn)


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket; bound before the process that serves it starts,
    so a parent can hand it to a child and know the address at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def socket_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


class Listener:
    """What `serve` returns: the server on the TCP address and, beside it,
    its local twin (see "Local twins" below), closed together."""

    def __init__(self, servers: list[asyncio.AbstractServer]):
        self._servers = servers

    def close(self) -> None:
        for server in self._servers:
            server.close()

    async def wait_closed(self) -> None:
        for server in self._servers:
            await server.wait_closed()


async def serve(
    sock: socket.socket,
    token: bytes,
    handlers: dict[int, Handler],
    on_ready: Callable[[Connection], None] | None = None,
    on_close: Callable[[Connection], None] | None = None,
    twin: socket.socket | None | bool = True,
) -> Listener:
    """Serve `sock` and its local twin: `twin` is one `bind_local_twin`
    made earlier, or True to make it now."""
    loop = asyncio.get_running_loop()
    context = tls.server_context()

    def factory() -> Connection:
        return Connection(token, handlers, server_side=True, on_ready=on_ready, on_close=on_close)

    servers = [
        await loop.create_server(
            factory,
            sock=sock,
            ssl=context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if context else None,
            ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_S if context else None,
        )
    ]
    if twin is True:
        twin = bind_local_twin(sock)
    if twin:
        servers.append(await loop.create_unix_server(factory, sock=twin))
    return Listener(servers)


async def adopt(
    sock: socket.socket,
    token: bytes,
    handlers: dict[int, Handler],
    on_close: Callable[[Connection], None] | None = None,
) -> Connection:
    """Serve a connection that another process authenticated and handed over
    (`Connection.detach`, passed as an inherited fd): it proved the token
    there, so it is not asked again."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.connect_accepted_socket(
        lambda: Connection(
            token, handlers, server_side=True, on_close=on_close, authenticated=True
        ),
        sock=sock,
    )
    return conn


async def connect(
    address: str,
    token: bytes,
    handlers: dict[int, Handler] | None = None,
    on_close: Callable[[Connection], None] | None = None,
    timeout: float = 30.0,
) -> Connection:
    loop = asyncio.get_running_loop()
    host, port = parse_address(address)
    context = tls.client_context()

    def factory() -> Connection:
        return Connection(token, handlers or {}, server_side=False, on_close=on_close)

    twin = None
    if context is None and host in _local_hosts():
        twin = await asyncio.wait_for(_connect_local_twin(address), timeout)
    if twin is not None:
        _, conn = await loop.create_unix_connection(factory, sock=twin)
    else:
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                factory,
                host,
                port,
                ssl=context,
                server_hostname=host if context else None,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if context else None,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_S if context else None,
            ),
            timeout,
        )
    try:
        await asyncio.wait_for(conn.ready, timeout)
    except BaseException:
        # Timed out or cancelled mid-handshake: do not leak the connection.
        # (If the loop is already closed, the coroutine is being collected
        # after shutdown and the transport cannot close itself: shut the
        # socket down so the peer sees the end now; asyncio's socket wrapper
        # has no close(), and the fd is released when the transport is
        # collected.)
        if loop.is_closed():
            sock = conn._transport.get_extra_info("socket") if conn._transport else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        else:
            conn.close()
        raise
    return conn


# -- local twins -------------------------------------------------------------
# A server on a TCP address also listens on a Unix socket named for that
# address, and a client whose peer's address is one of this host's own
# connects there instead: a round trip over loopback TCP costs about 20 us
# more than over a Unix socket on this machine kind, on every call between
# two processes of one host (BENCHMARKS.md, "Issue 14, fifth pass").
#
# The names are in Linux's abstract namespace: they vanish with their
# socket, so a SIGKILLed process leaves no file behind, and like addresses
# they belong to a network namespace, so namespaces still act as separate
# hosts. What guards a name is not a permission but the rule kept here: a
# client sends nothing to a twin before it has checked that the process
# behind it runs as its own user (SO_PEERCRED), and takes TCP otherwise; a
# server whose name another process holds serves on TCP alone. Then the
# same handshake runs as on TCP. Under TLS there are no twins: every
# connection is TLS, as its settings promise.

_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_local: set[str] | None = None


def local_name(address: str) -> str:
    """The abstract Unix socket name of the twin of a TCP `address`."""
    return "\0solray:" + address


def _local_hosts() -> set[str]:
    """This host's addresses, looked up once per process (an address added
    later is reached over TCP, as before)."""
    global _local
    if _local is None:
        from solray._private import host  # psutil: imported where first needed

        _local = host.local_addresses()
    return _local


def bind_local_twin(tcp: socket.socket) -> socket.socket | None:
    """The listening twin of a listening TCP socket; None under TLS, or
    when another process holds its name. Bound as early as the TCP socket
    is served, or earlier: a connection that comes before its server
    serves waits in the backlog, as on TCP."""
    if tls.server_context() is not None or tcp.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    address = socket_address(tcp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(local_name(address))
        sock.listen(1024)
    except OSError as e:
        sock.close()
        logger.warning(
            "another process holds the local socket name of %s (%s): this host's peers "
            "reach it over TCP",
            address,
            e,
        )
        return None
    return sock


async def _connect_local_twin(address: str) -> socket.socket | None:
    """A connected socket to `address`'s twin, if one listens and its
    process runs as this user; None otherwise (then TCP)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, local_name(address))
        _, uid, _ = _CREDENTIALS.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
        )
    except OSError:  # none listens (a peer under TLS, or whose name was taken)
        sock.close()
        return None
    except BaseException:
        sock.close()
        raise
    if uid != os.getuid():
        sock.close()
        logger.warning(
            "the local socket name of %s is held by a process of user %d, not this one's: "
            "connecting over TCP",
            address,
            uid,
        )
        return None
    return sock


class ConnectionCache:
    """One authenticated connection per address, made on first use and made
    again if it closed. Concurrent callers share the connection being made;
    a failed attempt is forgotten, so the next caller tries afresh."""

    def __init__(
        self, token: bytes, handlers: dict[int, Handler] | None = None, timeout: float = 10.0
    ):
        self._token = token
        self._handlers = handlers or {}
        self._timeout = timeout
        self._conns: dict[str, asyncio.Task] = {}

    async def get(self, address: str) -> Connection:
        task = self._conns.get(address)
        if task is None or (task.done() and (task.exception() or task.result().closed)):

            def forget(conn, address=address):
                if self._conns.get(address) is task:
                    del self._conns[address]

            task = asyncio.get_running_loop().create_task(
                connect(
                    address, self._token, self._handlers, on_close=forget, timeout=self._timeout
                )
            )
            self._conns[address] = task
        try:
            return await task
        except BaseException:
            if self._conns.get(address) is task:
                del self._conns[address]
            raise

    async def close(self) -> None:
        """Close every connection, and cancel those still being made (so their
        sockets do not outlive the loop: connect() closes what it opened)."""
        connecting = []
        for task in self._conns.values():
            if not task.done():
                task.cancel()
                connecting.append(task)
            elif not task.exception():
                task.result().close()
        if connecting:
            await asyncio.wait(connecting, timeout=1)
        self._conns.clear()
