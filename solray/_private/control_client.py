"""A connection to the control store that outlives the control store.

The control store may be killed and started again on the same address: it
keeps its tables (control_storage/), and the head node starts it again
(node.py). Nodes, drivers and workers hold this instead of a plain
Connection. When the connection drops, it dials again with backoff:

    requests made meanwhile wait for the new connection; requests in flight
    when it dropped are sent again on it (the control store answers a
    repeated request as it answered the first: registering an actor or a
    group again under the same id is a no-op)
    one-way messages made meanwhile are sent, in order, once it is back
    on each new connection, `on_connect` runs first (a node registers again
    with what it hosts; a core worker says who it is), then the channels
    subscribed to are subscribed again, then the waiting traffic goes

Nothing on the task path uses this connection, so while the control store
is away tasks and actor calls go on; what needs it (creating an actor,
get_actor, placement groups, the KV store) waits.

After RECONNECT_TIMEOUT_S without a control store (Ray's
gcs_rpc_server_reconnect_timeout_s, 60 s) it gives up: waiting requests fail
with ConnectionLost and `on_lost` runs (a node stops itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from solray._private import transport
from solray._private.protocol import Msg

logger = logging.getLogger(__name__)

RECONNECT_TIMEOUT_S = 60.0
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 2.0


class ControlClient:
    def __init__(
        self,
        address: str,
        token: bytes,
        handlers: dict | None = None,
        *,
        on_connect: Callable[[transport.Connection], Awaitable[None]] | None = None,
        on_retry: Callable[[float], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ):
        self.address = address
        self._token = token
        self._handlers = handlers or {}
        self._on_connect = on_connect  # runs on every connection but the first
        # A dial failed, `on_retry(seconds away so far)`: the head node may
        # start a new control store.
        self._on_retry = on_retry
        self._on_lost = on_lost
        self._conn: transport.Connection | None = None
        self._changed = asyncio.Event()  # set while connected, or closed for good
        self._queue: list[tuple] = []  # one-way messages made while away
        self._channels: list[str] = []
        self._reconnecting: asyncio.Task | None = None
        self.closed = False  # for good: close(), or gave up

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def connect(self, retry_for: float = 0.0) -> None:
        """The first connection; fails as transport.connect does, after
        trying again for `retry_for` seconds (a worker started while the
        control store restarts waits for it)."""
        deadline = time.monotonic() + retry_for
        delay = FIRST_DELAY_S
        while True:
            try:
                conn = await transport.connect(
                    self.address, self._token, self._handlers, on_close=self._lost
                )
                break
            except (OSError, TimeoutError, transport.ConnectionLost):
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
        self._up(conn)

    def _up(self, conn: transport.Connection) -> None:
        self._conn = conn
        queued, self._queue = self._queue, []
        for msg, body, buffers in queued:
            conn.send(msg, body, buffers)
        self._changed.set()

    def _lost(self, conn: transport.Connection) -> None:
        if conn is not self._conn:
            return  # a connection that never became ours
        self._conn = None
        self._changed.clear()
        if self.closed:
            self._changed.set()
            return
        logger.info("lost the control store at %s; reconnecting", self.address)
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        started = time.monotonic()
        deadline = started + RECONNECT_TIMEOUT_S
        delay = FIRST_DELAY_S
        while not self.closed:
            try:
                conn = await transport.connect(
                    self.address, self._token, self._handlers, on_close=self._lost, timeout=5.0
                )
            except (OSError, TimeoutError, transport.ConnectionLost):
                if time.monotonic() > deadline:
                    self._give_up()
                    return
                if self._on_retry is not None:
                    self._on_retry(time.monotonic() - started)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
                continue
            try:
                if self._on_connect is not None:
                    await self._on_connect(conn)
                if self._channels:
                    await conn.request(Msg.SUBSCRIBE, self._channels)
            except (transport.ConnectionLost, transport.RemoteError) as e:
                logger.warning("the control store at %s closed on us again: %s", self.address, e)
                conn.close()
                await asyncio.sleep(delay)
                continue
            if self.closed:
                conn.close()
                return
            logger.info("reconnected to the control store at %s", self.address)
            self._up(conn)
            return

    def _give_up(self) -> None:
        logger.error(
            "no control store at %s for %.0f s: giving up", self.address, RECONNECT_TIMEOUT_S
        )
        self.closed = True
        self._changed.set()
        if self._on_lost is not None:
            self._on_lost()

    async def _ready(self) -> transport.Connection:
        while self._conn is None:
            if self.closed:
                raise transport.ConnectionLost("the control store is gone")
            await self._changed.wait()
        return self._conn

    async def request(self, msg: int, body=None, buffers=(), *, raw: bool = False):
        """As Connection.request, but waits out (and repeats across) control
        store restarts."""
        while True:
            conn = await self._ready()
            try:
                return await conn.request(msg, body, buffers, raw=raw)
            except transport.ConnectionLost:
                if self.closed:
                    raise

    def send(self, msg: int, body=None, buffers=()) -> None:
        """A one-way message: now, or once the control store is back."""
        if self._conn is not None:
            self._conn.send(msg, body, buffers)
        elif not self.closed:
            self._queue.append((msg, body, buffers))

    async def subscribe(self, channels: list[str]) -> None:
        """Subscribe, now and on every later connection."""
        self._channels += [c for c in channels if c not in self._channels]
        await self.request(Msg.SUBSCRIBE, channels)

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._conn is not None:
            self._conn.close()
        self._changed.set()
