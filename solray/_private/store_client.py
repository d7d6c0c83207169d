"""A core worker's side of its node's shared-memory object store.

The node owns the arena (allocation, pins, spilling: object_store.py). A
client maps the whole arena once and writes and reads objects in place:

    create  STORE_CREATE(id, size) -> offset; write the value there; STORE_SEAL
    read    STORE_PIN (or STORE_PULL, for an object another node holds: the
            node copies it here first) -> offset; view it in place; one
            STORE_UNPIN once nothing built on the view lives any more;
            STORE_READ_MANY pins (or pulls) many in one round trip
    free    STORE_FREE to the node holding an object (which frees the copies
            other nodes pulled)

Why a module of its own: every message about store memory leaves from here,
so the batching of unpins and frees (objects die and views are dropped by
the thousand: one message per node per loop turn, not one per object) is in
one place, and shutdown flushes it.

Threads: creates and reads are requests made on user threads, which block
for the node's answer. The batches are the loop's. A pin's release (a
weakref callback, on whatever thread the last view dies) only appends the id
to `_released`, a deque any thread may append to and only the loop empties,
and posts a flush if none is posted yet: a get of thousands of stored values
releases them by the thousand, and one post per release cost more than the
release itself. The mapping is made once, under its lock, by whichever
thread needs it first.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque

from solray import exceptions
from solray._private import transport
from solray._private.memory_store import Inline, InStore
from solray._private.object_store import ArenaMapping
from solray._private.protocol import Msg
from solray._private.serialization import SerializedObject

# Values up to this size travel inline with task replies and stay in the
# owner's memory; larger ones go to the node's shared-memory store.
INLINE_MAX = 100 * 1024


class Lost(Exception):
    """No node has this object any more."""


class StoreClient:
    def __init__(self, core_worker):
        self.cw = core_worker
        self._arena: ArenaMapping | None = None  # mapped once, under _arena_lock
        self._arena_lock = threading.Lock()
        self._frees: dict[str, list[bytes]] = {}  # loop: node -> ids to free there
        self._unpins: list[bytes] = []  # loop: ids to unpin at our node
        # The pins held by views in this process (any thread adds or
        # discards: single set operations, atomic under the GIL), and the ids
        # of those released since the last flush (see Threads, above).
        self._pins: set[_Pin] = set()
        self._released: deque[bytes] = deque()
        self._flush_posted = False
        self._release_callback = self._release  # (one bound method, not one per pin)

    def store_value(
        self,
        object_id: bytes,
        obj: SerializedObject,
        owner: str | None = None,
        always_store: bool = False,
    ):
        """User thread: where a new value lives, as its entry: inline if small
        (unless `always_store`), else written to the node's store, recorded
        as `owner`'s (ours by default)."""
        if obj.inline_size() <= INLINE_MAX and not always_store:
            return Inline(obj)
        cw = self.cw
        size = obj.store_size()
        reply = cw.request(
            "node", Msg.STORE_CREATE, {"id": object_id, "size": size, "owner": owner or cw.address}
        )
        if "error" in reply:
            raise getattr(exceptions, reply["error"], exceptions.ObjectStoreFullError)(
                reply["message"]
            )
        view = self.arena().writable(reply["offset"], size)
        try:
            obj.write_to(view)
        finally:
            view.release()
        cw.post(cw.node.send, Msg.STORE_SEAL, {"id": object_id})
        return InStore(cw.node_address, size, obj.is_error)

    def arena(self) -> ArenaMapping:
        """Any thread: the node's arena, mapped on first use."""
        if self._arena is None:
            with self._arena_lock:
                if self._arena is None:
                    info = self.cw.node_info
                    self._arena = ArenaMapping(info["arena_path"], info["store_capacity"])
        return self._arena

    def read(self, object_id: bytes, entry: InStore, owner: str):
        """User thread: pin the object in this node's store (pulled from the
        node that has it, if another) and return its holder: a read-only
        numpy array of its bytes, for `serialization.stored_array` or
        `stored_object`; the pin lasts as long as the holder. Raises Lost if
        no copy is left where `entry` says."""
        cw = self.cw
        if entry.node == cw.node_address:
            reply = cw.request("node", Msg.STORE_PIN, {"id": object_id})
        else:
            reply = cw.request("node", Msg.STORE_PULL, pull_body(object_id, entry, owner))
        return self._pinned(object_id, reply)

    def read_many(self, wanted: dict[bytes, tuple[InStore, str]]) -> dict:
        """User thread: `read` of many objects ({id: (entry, owner)}) in one
        round trip to our node, which pins them all (pulling those other
        nodes hold). Returns {id: holder, or the exception its `read` would
        raise}. (Holders, not values: a holder costs no garbage-collected
        object but its pin, so a thousand wait to be read for little.)"""
        items = [
            {"id": object_id}
            if entry.node == self.cw.node_address
            else pull_body(object_id, entry, owner)
            for object_id, (entry, owner) in wanted.items()
        ]
        replies = self.cw.request("node", Msg.STORE_READ_MANY, {"items": items})
        read: dict = {}
        for object_id, reply in zip(wanted, replies, strict=True):
            try:
                read[object_id] = self._pinned(object_id, reply)
            except (Lost, exceptions.RayError) as e:
                read[object_id] = e
        return read

    def _pinned(self, object_id: bytes, reply: dict | None):
        """The holder of the range a STORE_PIN answer places; unpinned once
        it dies, which is when the last thing built on it does."""
        if reply is None:
            raise Lost(object_id)
        if "error" in reply:
            raise getattr(exceptions, reply["error"], exceptions.ObjectStoreFullError)(
                reply["message"]
            )
        holder = self.arena().pinned(reply["offset"], reply["size"])
        pin = _Pin(holder, self._release_callback)
        pin.object_id = object_id
        self._pins.add(pin)
        return holder

    async def prefetch(self, object_id: bytes, entry: InStore, owner: str) -> None:
        """Loop thread: have our node copy the object into its store (each
        object is pulled once per node, however many ask), then let go of
        the pin the pull gives us: nothing reads it yet. A pull that fails
        (the object is lost, or no room here) is for a later read to find."""
        try:
            reply = await self.cw.node.request(Msg.STORE_PULL, pull_body(object_id, entry, owner))
        except transport.ConnectionLost:
            return
        if reply is not None and "offset" in reply:
            self._unpin(object_id)

    def _release(self, pin: _Pin) -> None:
        """Any thread (the pin's weakref callback): nothing built on a
        pinned range lives any more."""
        self._pins.discard(pin)
        if self.cw.shutting_down:
            return
        self._released.append(pin.object_id)
        if not self._flush_posted:
            self._flush_posted = True
            self.cw.post_lazy(self.flush)

    def _unpin(self, object_id: bytes) -> None:
        self._unpins.append(object_id)
        if len(self._unpins) == 1:
            self.cw.post(self.flush)

    def free(self, object_id: bytes, node: str) -> None:
        """Loop thread: free an object in the store of the node holding it."""
        batch = self._frees.setdefault(node, [])
        batch.append(object_id)
        if len(batch) == 1:
            self.cw.post(self.flush)

    def flush(self) -> None:
        """Loop thread: send the batched unpins and frees."""
        cw = self.cw
        if cw.node is None or cw.node.closed:
            return
        self._flush_posted = False  # before taking them: a release after this posts again
        released = self._released
        if released:
            self._unpins.extend([released.popleft() for _ in range(len(released))])
        if self._unpins:
            unpins, self._unpins = self._unpins, []
            cw.node.send(Msg.STORE_UNPIN, {"ids": unpins})
        frees, self._frees = self._frees, {}
        for node, object_ids in frees.items():
            if node == cw.node_address:
                cw.node.send(Msg.STORE_FREE, {"ids": object_ids})
            else:
                cw.loop.create_task(self._free_at(node, object_ids))

    async def _free_at(self, node: str, object_ids: list[bytes]) -> None:
        try:
            (await self.cw.peer(node)).send(Msg.STORE_FREE, {"ids": object_ids})
        except (OSError, TimeoutError, transport.ConnectionLost):
            pass  # that node is gone, and what it held with it

    def close(self) -> None:
        """At shutdown: unmap the arena. Values still built on the mapping
        keep it (and its fd) until they die; nothing else may."""
        if self._arena is not None:
            self._arena.close()
            self._arena = None


class _Pin(weakref.ref):
    """A weakref to a pinned range's holder (`ArenaMapping.pinned`), naming
    the object to unpin when it dies. Hashed by identity: numpy arrays, its
    referents, are unhashable."""

    __slots__ = ("object_id",)
    __hash__ = object.__hash__


def pull_body(object_id: bytes, entry: InStore, owner: str) -> dict:
    """STORE_PULL: copy the object here from the node holding it, and pin it
    (the copy is the owner's: it goes when the owner does)."""
    return {"id": object_id, "from": entry.node, "size": entry.size, "owner": owner}
