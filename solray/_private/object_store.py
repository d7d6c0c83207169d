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

Capacity is enforced here, spilling to disk when full (see ObjectStore).
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import logging
import mmap
import os
import shutil
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from solray._private.serialization import ALIGN
from solray.exceptions import ObjectStoreFullError, OutOfDiskError

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
    offset: int | None  # None while spilled
    size: int
    owner: str
    sealed: bool = False
    freed: bool = False
    pins: dict = field(default_factory=dict)  # client key -> count
    seal_waiters: list = field(default_factory=list)
    spill_path: str | None = None
    last_access: int = 0
    copies: set = field(default_factory=set)  # nodes that pulled a copy from here


class ObjectStore:
    """Node-side bookkeeping: allocation, pins, spilling, accounting.

    Spilling: when a new object does not fit, sealed objects nobody is reading
    (no pins) are written to files in `spill_dir`, least recently used first,
    until it fits. A pin of a spilled object reads it back first (spilling
    others if need be). Freeing a spilled object deletes its file. An object
    larger than the whole store, or one that does not fit even with every
    evictable object spilled, raises ObjectStoreFullError; a full disk while
    spilling raises OutOfDiskError. Nothing already stored is lost either way.
    """

    def __init__(self, directory: str, capacity: int, spill_dir: str):
        self.path = os.path.join(directory, "arena")
        self.capacity = capacity
        self.spill_dir = spill_dir
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, capacity)
            self._map = mmap.mmap(fd, capacity, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self._alloc = Allocator(capacity)
        self.objects: dict[bytes, StoredObject] = {}
        self._clock = 0
        self.spilled_objects = 0
        self.spilled_bytes = 0
        self.restored_objects = 0

    @property
    def used(self) -> int:
        return self._alloc.used

    def _touch(self, obj: StoredObject) -> None:
        self._clock += 1
        obj.last_access = self._clock

    def create(self, object_id: bytes, size: int, owner: str, client) -> int:
        existing = self.objects.get(object_id)
        if existing is not None and not existing.freed:
            raise ValueError(f"object {object_id.hex()} already exists in the store")
        offset = self._allocate(size, object_id)
        obj = StoredObject(offset, size, owner)
        obj.pins[client] = 1  # the creator's pin, dropped on seal
        self._touch(obj)
        self.objects[object_id] = obj
        return offset

    def _allocate(self, size: int, object_id: bytes) -> int:
        if size > self.capacity:
            raise ObjectStoreFullError(
                f"object {object_id.hex()} is {size} bytes, larger than this node's whole "
                f"object store ({self.capacity} bytes). Raise object_store_memory, or "
                "split the value."
            )
        offset = self._alloc.allocate(size)
        if offset is not None:
            return offset
        for victim_id, victim in self._spill_candidates():
            self._spill(victim_id, victim)
            offset = self._alloc.allocate(size)
            if offset is not None:
                return offset
        raise ObjectStoreFullError(
            f"the object store of this node is full: cannot store object "
            f"{object_id.hex()} of {size} bytes (capacity {self.capacity} bytes, "
            f"{self.used} in use by objects being read or written, largest free range "
            f"{self._alloc.largest_free()} bytes). Drop ObjectRefs (and arrays read "
            "from the store) you no longer need, or raise object_store_memory."
        )

    def _spill_candidates(self):
        candidates = [
            (object_id, obj)
            for object_id, obj in self.objects.items()
            if obj.sealed and not obj.freed and not obj.pins and obj.offset is not None
        ]
        candidates.sort(key=lambda item: item[1].last_access)
        return candidates

    def _spill(self, object_id: bytes, obj: StoredObject) -> None:
        os.makedirs(self.spill_dir, exist_ok=True)
        path = os.path.join(self.spill_dir, object_id.hex())
        try:
            with open(path, "wb") as f:
                f.write(memoryview(self._map)[obj.offset : obj.offset + obj.size])
        except OSError as e:
            try:
                os.unlink(path)
            except OSError:
                pass
            if e.errno == errno.ENOSPC:
                free = shutil.disk_usage(self.spill_dir).free
                raise OutOfDiskError(
                    f"the object store is full and spilling object {object_id.hex()} "
                    f"({obj.size} bytes) to {self.spill_dir} failed: the disk is full "
                    f"({free} bytes free)."
                ) from None
            raise
        self._alloc.free(obj.offset, obj.size)
        obj.offset = None
        obj.spill_path = path
        self.spilled_objects += 1
        self.spilled_bytes += obj.size

    def _restore(self, object_id: bytes, obj: StoredObject) -> None:
        obj.pins["restore"] = 1  # not a spill candidate while we make room
        try:
            offset = self._allocate(obj.size, object_id)
        finally:
            del obj.pins["restore"]
        with open(obj.spill_path, "rb") as f:
            f.readinto(memoryview(self._map)[offset : offset + obj.size])
        os.unlink(obj.spill_path)
        obj.offset = offset
        obj.spill_path = None
        self.restored_objects += 1

    def seal(self, object_id: bytes, client) -> None:
        obj = self.objects.get(object_id)
        if obj is None or obj.sealed:
            return
        obj.sealed = True
        self._touch(obj)
        self._unpin(object_id, obj, client)
        waiters, obj.seal_waiters = obj.seal_waiters, []
        for cb in waiters:
            cb(obj)

    def abort(self, object_id: bytes) -> None:
        """An object that will never be sealed (its pull failed): readers
        waiting for it are told it is not here."""
        obj = self.objects.get(object_id)
        if obj is None or obj.sealed:
            return
        waiters, obj.seal_waiters = obj.seal_waiters, []
        obj.freed = True
        obj.pins.clear()
        self._maybe_release(object_id, obj)
        for cb in waiters:
            cb(None)

    def write(self, offset: int, data) -> None:
        mv = memoryview(data).cast("B")
        self._map[offset : offset + mv.nbytes] = mv

    def read(self, object_id: bytes, start: int, length: int) -> bytes | None:
        """Bytes of a sealed object (restored first if spilled), or None."""
        obj = self.objects.get(object_id)
        if obj is None or obj.freed or not obj.sealed:
            return None
        if obj.offset is None:
            self._restore(object_id, obj)
        self._touch(obj)
        base = obj.offset + start
        return bytes(self._map[base : base + min(length, obj.size - start)])

    def pin(self, object_id: bytes, client, when_sealed: Callable[[StoredObject | None], None]):
        """Pin for `client` and call `when_sealed(obj)` once it is readable in
        memory, or `when_sealed(None)` if the object is not here. A spilled
        object is restored first (which may raise ObjectStoreFullError)."""
        obj = self.objects.get(object_id)
        if obj is None or obj.freed:
            when_sealed(None)
            return
        if obj.offset is None:
            self._restore(object_id, obj)
        obj.pins[client] = obj.pins.get(client, 0) + 1
        self._touch(obj)
        if obj.sealed:
            when_sealed(obj)
        else:
            obj.seal_waiters.append(when_sealed)

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

    def free(self, object_id: bytes) -> set:
        """The owner is done with it; returns the nodes holding copies, which
        must be told too."""
        obj = self.objects.get(object_id)
        if obj is None:
            return set()
        obj.freed = True
        self._maybe_release(object_id, obj)
        return obj.copies

    def drop_owner(self, address: str) -> None:
        """An owner died: its objects go (an object fate-shares with its owner)."""
        for object_id, obj in list(self.objects.items()):
            if obj.owner == address:
                obj.freed = True
                self._maybe_release(object_id, obj)

    def drop_client(self, client, address: str | None) -> None:
        """A client went away: its pins go, objects it was still writing are
        abandoned, and objects it owned are freed: an object fate-shares with
        its owner, and nobody else would ever free it."""
        for object_id, obj in list(self.objects.items()):
            if client in obj.pins:
                del obj.pins[client]
                if not obj.sealed:
                    obj.freed = True
            if address is not None and obj.owner == address:
                obj.freed = True
            self._maybe_release(object_id, obj)

    def _maybe_release(self, object_id: bytes, obj: StoredObject) -> None:
        if obj.freed and not obj.pins and self.objects.get(object_id) is obj:
            del self.objects[object_id]
            if obj.offset is not None:
                self._alloc.free(obj.offset, obj.size)
            if obj.spill_path is not None:
                try:
                    os.unlink(obj.spill_path)
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:
            pass
        shutil.rmtree(self.spill_dir, ignore_errors=True)

    def stats(self) -> dict:
        spilled = [o for o in self.objects.values() if o.offset is None]
        return {
            "capacity": self.capacity,
            "used": self.used,
            "num_objects": len(self.objects),
            "num_spilled": len(spilled),
            "spilled_bytes_now": sum(o.size for o in spilled),
            "spilled_objects_total": self.spilled_objects,
            "spilled_bytes_total": self.spilled_bytes,
            "restored_objects_total": self.restored_objects,
            "spill_dir": self.spill_dir,
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
