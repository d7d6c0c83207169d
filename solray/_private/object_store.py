"""The node's shared-memory object store.

Design. One arena file per node under the session's /dev/shm directory, sized
to the store capacity but sparse: pages exist only once written. The node owns
the allocator; clients (drivers and workers on the node) map the whole arena
once and read and write objects in place:

    writer:  STORE_CREATE(id, size) -> offset; write; STORE_SEAL(id)
    reader:  STORE_PIN(id) -> offset, size; view; STORE_UNPIN(id) when done

Why an arena and not a file per object: on this machine kind, writing into
fresh tmpfs pages runs at about 1-2 GB/s (page faults), into pages already
mapped and touched at about 14 GB/s. Freed ranges keep their pages, so the
next object of similar size is written at memory speed.

The rule that keeps zero-copy reads safe: a range is reused only once its
object is freed by its owner AND no reader holds a pin. A reader's pin lives
as long as the values built on the mapped memory: the client wraps the range
in a ctypes array and unpins from a weakref finalizer of that array, which
numpy arrays made from it keep alive. A client that disconnects loses its pins.

Capacity is enforced here; a create that does not fit raises
ObjectStoreFullError (spilling to disk comes with the memory issue).
"""

from __future__ import annotations

import bisect
import ctypes
import logging
import mmap
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from solray._private.serialization import ALIGN
from solray.exceptions import ObjectStoreFullError

logger = logging.getLogger(__name__)


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class Allocator:
    """First-fit over a sorted free list, coalescing neighbours on free."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._starts: list[int] = [0]
        self._sizes: dict[int, int] = {0: capacity}
        self.used = 0

    def allocate(self, size: int) -> int | None:
        size = _align(max(size, 1))
        for start in self._starts:
            free = self._sizes[start]
            if free >= size:
                i = bisect.bisect_left(self._starts, start)
                del self._starts[i]
                del self._sizes[start]
                if free > size:
                    self._starts.insert(i, start + size)
                    self._sizes[start + size] = free - size
                self.used += size
                return start
        return None

    def free(self, start: int, size: int) -> None:
        size = _align(max(size, 1))
        self.used -= size
        i = bisect.bisect_left(self._starts, start)
        # Merge with the following free range.
        if i < len(self._starts) and self._starts[i] == start + size:
            size += self._sizes.pop(self._starts[i])
            del self._starts[i]
        # Merge with the preceding free range.
        if i > 0:
            prev = self._starts[i - 1]
            if prev + self._sizes[prev] == start:
                self._sizes[prev] += size
                return
        self._starts.insert(i, start)
        self._sizes[start] = size

    def largest_free(self) -> int:
        return max(self._sizes.values(), default=0)


@dataclass
class StoredObject:
    offset: int
    size: int
    owner: str
    sealed: bool = False
    freed: bool = False
    pins: dict = field(default_factory=dict)  # client key -> count
    seal_waiters: list = field(default_factory=list)


class ObjectStore:
    """Node-side bookkeeping: allocation, pins, accounting."""

    def __init__(self, directory: str, capacity: int):
        self.path = os.path.join(directory, "arena")
        self.capacity = capacity
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, capacity)
        finally:
            os.close(fd)
        self._alloc = Allocator(capacity)
        self.objects: dict[bytes, StoredObject] = {}

    @property
    def used(self) -> int:
        return self._alloc.used

    def create(self, object_id: bytes, size: int, owner: str, client) -> int:
        existing = self.objects.get(object_id)
        if existing is not None and not existing.freed:
            raise ValueError(f"object {object_id.hex()} already exists in the store")
        offset = self._alloc.allocate(size)
        if offset is None:
            raise ObjectStoreFullError(
                f"the object store of this node is full: cannot store an object of "
                f"{size} bytes (capacity {self.capacity} bytes, {self.used} in use, "
                f"largest free range {self._alloc.largest_free()} bytes). Free objects by "
                f"dropping their ObjectRefs, or raise object_store_memory."
            )
        obj = StoredObject(offset, size, owner)
        obj.pins[client] = 1  # the creator's pin, dropped on seal
        self.objects[object_id] = obj
        return offset

    def seal(self, object_id: bytes, client) -> None:
        obj = self.objects.get(object_id)
        if obj is None or obj.sealed:
            return
        obj.sealed = True
        self._unpin(object_id, obj, client)
        waiters, obj.seal_waiters = obj.seal_waiters, []
        for cb in waiters:
            cb()

    def pin(self, object_id: bytes, client, when_sealed: Callable[[StoredObject | None], None]):
        """Pin for `client` and call `when_sealed(obj)` once it is readable,
        or `when_sealed(None)` if the object is not here."""
        obj = self.objects.get(object_id)
        if obj is None or obj.freed:
            when_sealed(None)
            return
        obj.pins[client] = obj.pins.get(client, 0) + 1
        if obj.sealed:
            when_sealed(obj)
        else:
            obj.seal_waiters.append(lambda: when_sealed(obj))

    def unpin(self, object_id: bytes, client) -> None:
        obj = self.objects.get(object_id)
        if obj is not None:
            self._unpin(object_id, obj, client)

    def _unpin(self, object_id: bytes, obj: StoredObject, client) -> None:
        n = obj.pins.get(client, 0)
        if n <= 1:
            obj.pins.pop(client, None)
        else:
            obj.pins[client] = n - 1
        self._maybe_release(object_id, obj)

    def free(self, object_id: bytes) -> None:
        obj = self.objects.get(object_id)
        if obj is not None:
            obj.freed = True
            self._maybe_release(object_id, obj)

    def drop_client(self, client) -> None:
        """A client went away: its pins go, and objects it was still writing
        are abandoned."""
        for object_id, obj in list(self.objects.items()):
            if client in obj.pins:
                del obj.pins[client]
                if not obj.sealed:
                    obj.freed = True
                self._maybe_release(object_id, obj)

    def _maybe_release(self, object_id: bytes, obj: StoredObject) -> None:
        if obj.freed and not obj.pins and self.objects.get(object_id) is obj:
            del self.objects[object_id]
            self._alloc.free(obj.offset, obj.size)

    def stats(self) -> dict:
        return {
            "capacity": self.capacity,
            "used": self.used,
            "num_objects": len(self.objects),
        }


class ArenaMapping:
    """A client's view of its node's arena."""

    def __init__(self, path: str, capacity: int):
        fd = os.open(path, os.O_RDWR)
        try:
            self._mmap = mmap.mmap(fd, capacity, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Unmap, unless values built on the mapping are still alive (then the
        mapping goes when they do)."""
        try:
            self._mmap.close()
        except BufferError:
            pass

    def writable(self, offset: int, size: int) -> memoryview:
        return memoryview(self._mmap)[offset : offset + size]

    def pinned_view(self, offset: int, size: int, on_release: Callable[[], None]) -> memoryview:
        """A read-only view; `on_release` runs once nothing built on it lives."""
        holder = (ctypes.c_char * size).from_buffer(self._mmap, offset)
        weakref.finalize(holder, on_release)
        return memoryview(holder).cast("B").toreadonly()
