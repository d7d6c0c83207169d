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
from solray._private import serialization, transport
from solray._private.ids import OBJECT_ID_LEN
from solray._private.memory_store import Inline, InStore
from solray._private.object_store import ArenaMapping, ids_body
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
            raise _error(reply)
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

    def read(self, object_id: bytes, entry: InStore, owner: str) -> memoryview | object:
        """User thread: pin the object in this node's store (pulled from the
        node that has it, if another) and view it in place (`_view`). Raises
        Lost if no copy is left where `entry` says."""
        cw = self.cw
        if entry.node == cw.node_address:
            reply = cw.request("node", Msg.STORE_PIN, {"id": object_id})
        else:
            reply = cw.request("node", Msg.STORE_PULL, pull_body(object_id, entry, owner))
        if reply is None:
            raise Lost(object_id)
        if "error" in reply:
            raise _error(reply)
        return self._view(self.arena(), object_id, reply["offset"], reply["size"])

    def read_many(self, items: list[tuple[bytes, InStore, str]]) -> dict:
        """User thread: `read` of many objects ((id, entry, owner) items) in
        one round trip to our node, which pins them all (pulling those other
        nodes hold). Returns {id: its view, or the exception its `read`
        would raise}."""
        here = self.cw.node_address
        pins: list[bytes] = []  # ids to pin here (as one string: ids_body)
        others: list[bytes] = []  # ids to pull here (or pin, of an unusual length)
        other_items: list[dict] = []
        for object_id, entry, owner in items:
            if entry.node != here:
                others.append(object_id)
                other_items.append(pull_body(object_id, entry, owner))
            elif len(object_id) == OBJECT_ID_LEN:
                pins.append(object_id)
            else:
                others.append(object_id)
                other_items.append({"id": object_id})
        # Two values per id, pins first: offset and size (store_read_many).
        answers = iter(
            self.cw.request(
                "node", Msg.STORE_READ_MANY, {"pin": b"".join(pins), "items": other_items}
            )
        )
        arena = self.arena()
        read: dict = {}
        for object_id, offset, size in zip(pins + others, answers, answers, strict=True):
            if offset is not None:
                read[object_id] = self._view(arena, object_id, offset, size)
            elif size is None:
                read[object_id] = Lost(object_id)
            else:
                read[object_id] = _error(size)
        return read

    def _view(
        self, arena: ArenaMapping, object_id: bytes, offset: int, size: int
    ) -> memoryview | object:
        """The object pinned at `offset`, in place: a plain numpy array is
        made there at once (serialization.stored_array), anything else is a
        memoryview of its bytes (for SerializedObject.read_from). Its pin
        follows one holder, which everything built on the range refers to
        (numpy arrays as their base, memoryviews through their buffer): the
        array itself, of which the caller gets a view, or an array of the
        bytes (ArenaMapping.pinned). So it is unpinned when the last of
        them dies."""
        array = serialization.stored_array(arena.readonly, offset, size)
        holder = arena.pinned(offset, size) if array is None else array
        pin = _Pin(holder, self._release_callback)
        pin.object_id = object_id
        self._pins.add(pin)
        # The view's base is the holder (as `arr.base` pins the value in Ray).
        return memoryview(holder) if array is None else array.view()

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
            cw.node.send(Msg.STORE_UNPIN, ids_body(unpins))
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
    """A weakref to a pinned range's holder (`StoreClient._view`), naming
    the object to unpin when it dies. Hashed by identity: numpy arrays, its
    referents, are unhashable."""

    __slots__ = ("object_id",)
    __hash__ = object.__hash__


def _error(reply: dict) -> Exception:
    """The exception a node's {"error", "message"} answer names."""
    return getattr(exceptions, reply["error"], exceptions.ObjectStoreFullError)(reply["message"])


def pull_body(object_id: bytes, entry: InStore, owner: str) -> dict:
    """STORE_PULL: copy the object here from the node holding it, and pin it
    (the copy is the owner's: it goes when the owner does)."""
    return {"id": object_id, "from": entry.node, "size": entry.size, "owner": owner}
