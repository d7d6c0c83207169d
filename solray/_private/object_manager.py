"""A node's object manager: the handlers of its shared-memory store
(object_store.py) and the transfer of objects between nodes.

Transfer. A reader's node pulls a remote object (STORE_PULL, or an item of
STORE_READ_MANY): it allocates space, receives the object in up to
PULL_STREAMS stripes at once, seals, and answers every reader waiting for
it, so each object is fetched once per node. The source remembers which
nodes copied it and forwards the owner's free to them.

Other holders serve too (a broadcast). The node an object was made on (its
origin, the one the owner's entry names) is its directory: a node that has
pulled a whole copy says so (STORE_HOLDING), and a pulling node first asks
the origin who holds one (STORE_HOLDERS). While the origin is sending the
object to others, the stripes come from the holders, spread over them;
otherwise from the origin. Every stripe falls back on the other sources in
turn when its own fails (a holder died or let its copy go), so a pull goes
on while any whole copy is left, and fails (the object is aborted: readers
find it lost) only when none is.

Why the bytes bypass the RPC layer: framed messages are parsed from a
bytearray and sliced into bytes (two copies in Python, on both sides), which
held transfers to well under 1 GB/s. A stripe instead has a connection of its
own, authenticated as any other and then taken out of asyncio's transport
(`Connection.detach`): the source pins the object and sends the range with
sendfile from its arena file; the receiver reads with recv_into a view of its
arena. Only the kernel copies. The bulk of each stripe moves in a thread of
the loop's default pool (see _in_thread). A stripe that ends early (the source died)
fails the pull, which aborts the object: readers then find it lost, never
short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket

from solray._private import protocol, transport
from solray._private.ids import OBJECT_ID_LEN
from solray._private.object_store import ids_of
from solray._private.protocol import Msg
from solray.exceptions import ObjectStoreFullError, OutOfDiskError

logger = logging.getLogger("solray.node")

GC_WAIT_S = 2.0
PULL_STREAMS = 4  # connections a pull receives stripes over at once
STRIPE_MIN = 8 * 1024 * 1024  # smaller objects come over fewer connections
SOCKET_BUFFER = 4 * 1024 * 1024  # fewer, larger recv_into calls
SENDING, GONE = 1, 0  # the sender's first byte: the bytes follow, or it has none


class ObjectManager:
    def __init__(self, node):
        self.node = node
        self.store = node.store
        self._peers = transport.ConnectionCache(node.token)  # other nodes, by address
        self._pulls: dict[bytes, asyncio.Task] = {}  # objects being pulled here
        self._sending: dict[bytes, int] = {}  # object -> stripes being sent from here now
        self.handlers = {
            Msg.STORE_CREATE: self.store_create,
            Msg.STORE_SEAL: self.store_seal,
            Msg.STORE_PIN: self.store_pin,
            Msg.STORE_UNPIN: self.store_unpin,
            Msg.STORE_FREE: self.store_free,
            Msg.STORE_STATS: self.store_stats,
            Msg.LIST_OBJECTS: self.list_objects,
            Msg.STORE_PULL: self.store_pull,
            Msg.SEND_OBJECT: self.send_object,
            Msg.STORE_READ_MANY: self.store_read_many,
            Msg.STORE_HOLDERS: self.store_holders,
            Msg.STORE_HOLDING: self.store_holding,
        }
        self.store.collect_garbage = self.collect_garbage

    async def collect_garbage(self) -> None:
        """Ray's global GC, on this node: every driver and worker here runs
        gc.collect() and sends the frees that follows before it answers (on
        the same connection, so they are applied by the time it has). Waits
        at most GC_WAIT_S for the slow ones."""
        node = self.node
        conns = [*node.clients, *(w.conn for w in node.pool.workers.values() if w.conn)]
        answers = [conn.request(Msg.COLLECT_GARBAGE) for conn in conns if not conn.closed]
        if answers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*answers, return_exceptions=True), GC_WAIT_S)

    # Creating and pinning may have to wait (for spills to make room, for a
    # restore, for the writer's seal): then they go on as a task of their own.

    def store_create(self, conn, rid, body, bufs) -> None:
        try:
            offset = self.store.create_now(body["id"], body["size"], body["owner"], conn)
        except (ObjectStoreFullError, ValueError) as e:
            conn.reply(rid, {"error": type(e).__name__, "message": str(e)})
            return
        if offset is None:
            self.node.background(self._store_create(conn, rid, body))
        else:
            conn.reply(rid, {"offset": offset})

    async def _store_create(self, conn, rid, body) -> None:
        try:
            offset = await self.store.create(body["id"], body["size"], body["owner"], conn)
        except (ObjectStoreFullError, OutOfDiskError, ValueError) as e:
            conn.reply(rid, {"error": type(e).__name__, "message": str(e)})
            return
        conn.reply(rid, {"offset": offset})

    def store_seal(self, conn, rid, body, bufs) -> None:
        self.store.seal(body["id"], conn)
        conn.reply(rid, True)

    def store_pin(self, conn, rid, body, bufs) -> None:
        object_id = body["id"]
        if self.store.readable_now(object_id):
            conn.reply(rid, _pin_answer(self.store.pin_now(object_id, conn)))
        else:
            self.node.background(self._reply_with(conn, rid, self._pin(conn, object_id)))

    async def _pin(self, conn, object_id: bytes) -> dict | None:
        """Pin for `conn` once the object is readable: its place, None if it
        is not here, or the error that kept it from being read."""
        try:
            return _pin_answer(await self.store.pin(object_id, conn))
        except (ObjectStoreFullError, OutOfDiskError) as e:
            return {"error": type(e).__name__, "message": str(e)}

    @staticmethod
    async def _reply_with(conn, rid, answer) -> None:
        conn.reply(rid, await answer)

    def store_read_many(self, conn, rid, body, bufs) -> None:
        """Pin many objects for one reader, in one round trip: `pin`, ids to
        pin (as one string, OBJECT_ID_LEN bytes each), then `items`, each a
        STORE_PIN body or a STORE_PULL body (it names the node it is `from`)
        for an object to copy here first. The answer, once all are known,
        is flat (a thousand small maps cost more than the pins): two values
        per object, in that order: its offset and size; None and None if it
        is not here; None and {"error", "message"} if it could not be read."""
        pins, items = body["pin"], body["items"]
        answers, waiting = self.store.pin_many_now(
            [pins[i : i + OBJECT_ID_LEN] for i in range(0, len(pins), OBJECT_ID_LEN)], conn
        )
        waits = [(i, self._pin(conn, object_id)) for i, object_id in waiting]
        for i, item in enumerate(items, len(answers) // 2):
            answers += (None, None)
            if "from" in item:
                waits.append((i, self._pull_and_pin(conn, item["id"], item)))
            else:
                waits.append((i, self._pin(conn, item["id"])))
        if not waits:
            conn.reply(rid, answers)
            return

        async def rest() -> None:
            done = await asyncio.gather(*(answer for _, answer in waits))
            for (i, _), answer in zip(waits, done, strict=True):
                if answer is None:
                    continue
                if "error" in answer:
                    answers[2 * i + 1] = answer
                else:
                    answers[2 * i], answers[2 * i + 1] = answer["offset"], answer["size"]
            conn.reply(rid, answers)

        self.node.background(rest())

    def store_unpin(self, conn, rid, body, bufs) -> None:
        self.store.unpin_many(ids_of(body), conn)

    def store_free(self, conn, rid, body, bufs) -> None:
        forward: dict[str, list[bytes]] = {}
        for object_id in body["ids"]:
            for node in self.store.free(object_id):
                forward.setdefault(node, []).append(object_id)
        for node, object_ids in forward.items():
            self.node.background(self._send_to_node(node, Msg.STORE_FREE, {"ids": object_ids}))
        conn.reply(rid, True)

    # -- object transfer between nodes ---------------------------------------

    async def _send_to_node(self, address: str, msg: Msg, body) -> None:
        try:
            (await self._peers.get(address)).send(msg, body)
        except (OSError, TimeoutError, transport.ConnectionLost):
            pass  # that node is gone, and its copies with it

    def store_pull(self, conn, rid, body, bufs) -> None:
        """Make an object that lives on another node readable here, then pin it
        for the asker. Each object is pulled once however many ask for it."""
        answer = self._pull_and_pin(conn, body["id"], body)
        self.node.background(self._reply_with(conn, rid, answer))

    async def _pull_and_pin(self, conn, object_id: bytes, body: dict) -> dict | None:
        existing = self.store.objects.get(object_id)
        if (existing is None or existing.freed) and object_id not in self._pulls:
            self._pulls[object_id] = self.node.background(self._pull(object_id, body))
        pull = self._pulls.get(object_id)
        if pull is not None:
            try:
                await asyncio.shield(pull)
            except (ObjectStoreFullError, OutOfDiskError) as e:
                return {"error": type(e).__name__, "message": str(e)}
        return await self._pin(conn, object_id)

    async def _pull(self, object_id: bytes, body: dict) -> None:
        """Copy an object from `body["from"]` into the store here. Raises if
        there is no room for it; any other failure leaves it absent."""
        size, source = body["size"], body["from"]
        try:
            offset = await self.store.create(object_id, size, body["owner"], "pull")
            await self._fetch_into(object_id, source, offset, size)
        except ValueError:
            pass  # here already: a put or another pull made it meanwhile
        finally:
            self._pulls.pop(object_id, None)

    async def _fetch_into(self, object_id: bytes, origin: str, offset: int, size: int) -> None:
        """Receive the object's bytes straight into its place in our arena,
        in stripes over PULL_STREAMS connections at once, from the origin or
        the other holders (`_sources`); seal it, or abort it if a stripe
        fails from every source (the others are stopped first, so nothing
        writes into the range once it is released)."""
        try:
            sources = await self._sources(object_id, origin)
            async with asyncio.TaskGroup() as streams:
                for i, (start, length) in enumerate(_stripes(size)):
                    # Stripe i starts at source i (round robin), then tries the rest.
                    k = i % len(sources)
                    streams.create_task(
                        self._receive_any(
                            object_id, sources[k:] + sources[:k], offset + start, start, length
                        )
                    )
            self.store.seal(object_id, "pull")
        except Exception as e:  # no source could send it (they died, or freed it)
            logger.info("pull of %s from %s failed: %s", object_id.hex(), origin, e)
            self.store.abort(object_id)
            return
        # The origin may send later pullers here, and forwards the free here.
        holding = {"id": object_id, "node": self.node.address}
        self.node.background(self._send_to_node(origin, Msg.STORE_HOLDING, holding))

    async def _sources(self, object_id: bytes, origin: str) -> list[str]:
        """Where to pull from, in order: the holders of whole copies first
        while the origin is busy sending it (then the stripes are spread
        over the holders only), else the origin alone; every other source
        after those, as fallbacks."""
        try:
            conn = await self._peers.get(origin)
            answer = await conn.request(Msg.STORE_HOLDERS, {"id": object_id})
        except (OSError, TimeoutError, transport.ConnectionLost, transport.RemoteError):
            return [origin]  # the origin's own failure decides, in _receive
        me = self.node.address
        holders = [h for h in answer["holders"] if h not in (me, origin)]
        if not holders:
            return [origin]
        # Pullers that ask at once start at different holders.
        turn = random.randrange(len(holders))
        holders = holders[turn:] + holders[:turn]
        if answer["busy"]:
            return [*holders, origin]
        return [origin, *holders]

    async def _receive_any(
        self, object_id: bytes, sources: list[str], offset: int, start: int, length: int
    ) -> None:
        """One stripe from the first of `sources` that sends it whole; each
        attempt rewrites the whole range."""
        for i, source in enumerate(sources):
            try:
                await self._receive(object_id, source, offset, start, length)
                return
            except (OSError, LookupError, TimeoutError, transport.ConnectionLost) as e:
                if i == len(sources) - 1:
                    raise
                logger.info(
                    "stripe of %s from %s failed (%s): trying %s",
                    object_id.hex(),
                    source,
                    e,
                    sources[i + 1],
                )

    def store_holders(self, conn, rid, body, bufs) -> None:
        """A node about to pull an object made here: who else holds a whole
        copy, and whether this node is sending it now."""
        object_id = body["id"]
        obj = self.store.objects.get(object_id)
        if obj is None or obj.freed:
            holders = []
        else:
            if obj.holders:  # forget those that left (one not in the view yet stays)
                obj.holders -= {
                    n["address"] for n in self.node.view.nodes.values() if not n["alive"]
                }
            holders = sorted(obj.holders)
        conn.reply(rid, {"holders": holders, "busy": self._sending.get(object_id, 0)})

    def store_holding(self, conn, rid, body, bufs) -> None:
        """A node holds a whole copy of an object made here now."""
        obj = self.store.objects.get(body["id"])
        if obj is not None and not obj.freed:
            obj.copies.add(body["node"])  # it gets the free, whoever it pulled from
            obj.holders.add(body["node"])

    async def _receive(
        self, object_id: bytes, source: str, offset: int, start: int, length: int
    ) -> None:
        """One stripe: a connection of its own to the source, taken out of
        the RPC layer once authenticated, asks for the bytes (SEND_OBJECT)
        and reads them with recv_into the arena: no copy in Python."""
        loop = asyncio.get_running_loop()
        conn = await transport.connect(source, self.node.token)
        sock = conn.detach()
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            request = {"id": object_id, "start": start, "length": length, "node": self.node.address}
            await loop.sock_sendall(sock, b"".join(protocol.encode(Msg.SEND_OBJECT, 0, request)))
            status = bytearray(1)
            await _receive_exactly(loop, sock, memoryview(status))
            if status[0] != SENDING:
                raise LookupError("the object is gone from its node")
            with self.store.writable(offset, length) as view:
                await _in_thread(sock, _receive_all, sock, view)
        finally:
            sock.close()

    def send_object(self, conn, rid, body, bufs) -> None:
        """A node pulling a copy asks for a stripe of an object here: the
        connection leaves the RPC layer and carries the bytes, sent from
        the arena file by sendfile (restored first if spilled)."""
        sock = conn.detach()
        self.node.background(self._send_object(sock, body))

    async def _send_object(self, sock: socket.socket, body: dict) -> None:
        loop = asyncio.get_running_loop()
        object_id, start, length = body["id"], body["start"], body["length"]
        reader = object()  # the pin's holder: the range stays put while it is sent
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            try:
                obj = await self.store.pin(object_id, reader)
            except (ObjectStoreFullError, OutOfDiskError):
                obj = None
            if obj is None or start < 0 or length < 0 or start + length > obj.size:
                await loop.sock_sendall(sock, bytes([GONE]))
                return
            self._sending[object_id] = self._sending.get(object_id, 0) + 1
            try:
                obj.copies.add(body["node"])
                await loop.sock_sendall(sock, bytes([SENDING]))
                with open(self.store.path, "rb") as arena:
                    where = obj.offset + start
                    await _in_thread(sock, _send_all, sock, arena.fileno(), where, length)
            finally:
                self.store.unpin(object_id, reader)
                left = self._sending.pop(object_id) - 1
                if left:
                    self._sending[object_id] = left
        except OSError as e:  # the pulling node went away
            logger.info("sending %s failed: %s", object_id.hex(), e)
        finally:
            sock.close()

    def store_stats(self, conn, rid, body, bufs) -> None:
        conn.reply(rid, self.store.stats())

    def list_objects(self, conn, rid, body, bufs) -> None:
        """Every object known to the drivers and workers on this node, with
        where the store keeps it now (shared memory, or spilled)."""
        self.node.background(self._list_objects(conn, rid))

    async def _list_objects(self, conn, rid) -> None:
        clients = [c for c in self.node.clients if not c.closed]
        replies = await asyncio.gather(
            *(asyncio.wait_for(c.request(Msg.OBJECT_REPORT), 5) for c in clients),
            return_exceptions=True,
        )
        rows = []
        for reply in replies:
            if isinstance(reply, list):
                rows.extend(reply)
        for row in rows:
            if row["location"] == "shared_memory" and self.store.is_spilled(
                bytes.fromhex(row["object_id"])
            ):
                row["location"] = "spilled"
        conn.reply(rid, rows)


def _pin_answer(obj) -> dict | None:
    """A STORE_PIN answer: where the pinned object is, or None if it is not here."""
    return None if obj is None else {"offset": obj.offset, "size": obj.size}


def _stripes(size: int) -> list[tuple[int, int]]:
    """(start, length) of each stripe of an object of `size` bytes."""
    count = max(1, min(PULL_STREAMS, size // STRIPE_MIN))
    step = max(1, -(-size // count))
    return [(start, min(step, size - start)) for start in range(0, size, step)]


async def _receive_exactly(loop, sock: socket.socket, view: memoryview) -> None:
    """Fill `view` from the socket; a sender that stops early raises."""
    while view.nbytes:
        n = await loop.sock_recv_into(sock, view)
        if n == 0:
            raise ConnectionError("the sending node closed the connection mid-transfer")
        view = view[n:]


# The bulk of a stripe moves in a thread, in blocking calls that wait for the
# whole range (one recv_into with MSG_WAITALL, one sendfile, unless a signal
# or the peer cuts them short): per chunk the loop would cost a wake-up and a
# call in Python, which on two shared cores held transfers at half the
# kernel's speed. The thread touches only the socket and the stripe's range.


async def _in_thread(sock: socket.socket, fn, *args) -> None:
    """Run a blocking transfer on `sock` in a thread. If the caller is
    cancelled (a sibling stripe failed, the node stops), the socket is shut
    down so the thread returns, and it is waited for: nothing touches the
    range after this returns."""
    sock.setblocking(True)
    moving = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        await asyncio.shield(moving)
    except asyncio.CancelledError:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        await asyncio.wait([moving])
        if not moving.cancelled():
            moving.exception()  # retrieved: the cancellation is what goes on
        raise


def _receive_all(sock: socket.socket, view: memoryview) -> None:
    while view.nbytes:
        n = sock.recv_into(view, view.nbytes, socket.MSG_WAITALL)
        if n == 0:
            raise ConnectionError("the sending node closed the connection mid-transfer")
        view = view[n:]


def _send_all(sock: socket.socket, fd: int, offset: int, length: int) -> None:
    while length:
        sent = os.sendfile(sock.fileno(), fd, offset, length)
        if sent == 0:
            raise ConnectionError("the receiving node closed the connection mid-transfer")
        offset += sent
        length -= sent
