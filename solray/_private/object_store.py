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
as long as the values built on the mapped memory: the client makes one numpy
array on the range (the value itself, for a plain array; else an array of its
bytes, `ArenaMapping.pinned`) and unpins from a weakref callback on it, which
whatever is built on the range keeps alive (StoreClient._view). A client that
disconnects loses its pins.

Capacity is enforced here, spilling to disk when full (see ObjectStore).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import logging
import mmap
import os
import pickle
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from solray._private.ids import OBJECT_ID_LEN
from solray._private.serialization import ALIGN
from solray._private.spill import DEFAULT_BUFFER_SIZE, SpillDirectory
from solray.exceptions import ObjectStoreFullError, OutOfDiskError

logger = logging.getLogger(__name__)

GLOBAL_GC_MIN_INTERVAL_S = 30.0  # Ray's global_gc_min_interval_s


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


# Where an object's bytes are. An object with I/O in flight (SPILLING,
# RESTORING) keeps its arena range until that I/O has ended.
IN_MEMORY = "in memory"
SPILLING = "spilling"  # in memory, and being copied to a file
SPILLED = "spilled"  # only in its file
RESTORING = "restoring"  # being copied from its file into a range of its own


@dataclass
class StoredObject:
    offset: int | None  # its arena range; None while SPILLED
    size: int
    owner: str
    writer: object  # the client writing it, until sealed
    sealed: bool = False
    freed: bool = False  # its owner is done with it (or it is lost)
    released: bool = False  # its range and file are given back
    pins: dict = field(default_factory=dict)  # client key -> count
    seal_waiters: list = field(default_factory=list)  # futures: True sealed, False aborted
    state: str = IN_MEMORY
    io: asyncio.Future | None = None  # the spill or restore in flight
    spill_file: tuple | None = None  # (SpillDirectory, name): its copy on disk, once spilled
    last_access: int = 0
    copies: set = field(default_factory=set)  # nodes that pulled a copy from here
    holders: set = field(default_factory=set)  # of those, the ones whose copy is whole


class _Gone(Exception):
    """The object left the store (freed, or its spill file is unreadable)
    while a reader waited for it."""


class ObjectStore:
    """Node-side bookkeeping: allocation, pins, spilling, accounting.

    Spilling: when a new object does not fit, sealed objects nobody is reading
    (no pins) are written to files, least recently used first, until it fits.
    A pin of a spilled object reads it back first (spilling others if need
    be). The file stays until the object is freed (as Ray keeps a spilled
    copy): a restored object that must leave memory again leaves at once,
    without a write, and such objects leave first. Freeing an object deletes
    its file. An object larger than the
    whole store, or one that does not fit even with every evictable object
    spilled, raises ObjectStoreFullError; a full disk while spilling raises
    OutOfDiskError. Nothing already stored is lost either way.

    Who owns what. The node's event loop owns every table here: the
    allocator, the objects, their states and pins. The copies between the
    arena and spill files run in a few I/O threads, so a node spilling
    gigabytes still answers requests and heartbeats. A thread touches only
    the arena range of the one object it copies and that object's file. The
    rule that makes this safe: while an object has I/O in flight (`io` is
    set), the loop never frees or reuses its range (`_maybe_release` leaves
    it to the I/O's end), never spills it again and never restores it twice
    (a second reader awaits the same restore). When the I/O ends, its result
    is applied on the loop:

    - a spill: if the object was freed meanwhile, the file is deleted and
      the object released; if it was pinned (a reader came), it stays in
      memory, its file kept; otherwise its range is freed and it is SPILLED;
    - a restore: the range was allocated before the copy began (making room
      may spill others); readers wait for the copy to end.

    Creates that do not fit wait in arrival order: one at a time makes room
    by starting spills and waiting for them, while later creates queue
    behind it rather than take the room it is making.
    """

    def __init__(
        self,
        directory: str,
        capacity: int,
        spill_dirs: list[SpillDirectory],
        io_threads: int = 2,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
    ):
        self.path = os.path.join(directory, "arena")
        self.capacity = capacity
        self.spill_dirs = spill_dirs
        self.buffer_size = buffer_size
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
        self._io_pool = ThreadPoolExecutor(io_threads, thread_name_prefix="solray-spill")
        self._io: set[asyncio.Task] = set()  # spills and restores in flight
        self._spills: dict[asyncio.Task, int] = {}  # in flight -> bytes it frees
        self._next_dir = 0
        self._room = asyncio.Lock()  # held by the create that is making room
        # Ray's automatic global GC: before spilling, the node asks its
        # processes to collect garbage (set by the object manager), so objects
        # held only by reference cycles are freed rather than spilled; at most
        # once per GLOBAL_GC_MIN_INTERVAL_S.
        self.collect_garbage: Callable[[], Awaitable[None]] | None = None
        self._last_gc = -GLOBAL_GC_MIN_INTERVAL_S
        self._waiting_for_room = 0
        self._closing = False

    @property
    def used(self) -> int:
        return self._alloc.used

    def _touch(self, obj: StoredObject) -> None:
        self._clock += 1
        obj.last_access = self._clock

    # -- creating --------------------------------------------------------------

    # Creating and pinning have a fast path the node answers at once (room is
    # free; the object is sealed and in memory) and a slow path that waits.

    def create_now(self, object_id: bytes, size: int, owner: str, client) -> int | None:
        """Create if there is room now: the offset, or None if room must be
        made first (then `await create(...)`)."""
        self._check_new(object_id, size)
        offset = None if self._waiting_for_room else self._alloc.allocate(size)
        if offset is not None:
            self._add(object_id, offset, size, owner, client)
        return offset

    async def create(self, object_id: bytes, size: int, owner: str, client) -> int:
        self._check_new(object_id, size)
        offset = await self._allocate(size, object_id)
        self._add(object_id, offset, size, owner, client)
        return offset

    def _check_new(self, object_id: bytes, size: int) -> None:
        existing = self.objects.get(object_id)
        if existing is not None and not existing.freed:
            raise ValueError(f"object {object_id.hex()} already exists in the store")
        if size > self.capacity:
            raise ObjectStoreFullError(
                f"object {object_id.hex()} is {size} bytes, larger than this node's whole "
                f"object store ({self.capacity} bytes). Raise object_store_memory, or "
                "split the value."
            )

    def _add(self, object_id: bytes, offset: int, size: int, owner: str, client) -> None:
        obj = StoredObject(offset, size, owner, writer=client)
        obj.pins[client] = 1  # the writer's pin, dropped on seal
        self._touch(obj)
        self.objects[object_id] = obj

    async def _allocate(self, size: int, object_id: bytes) -> int:
        if not self._waiting_for_room:
            offset = self._alloc.allocate(size)
            if offset is not None:
                return offset
        self._waiting_for_room += 1
        try:
            async with self._room:
                return await self._make_room(size, object_id)
        finally:
            self._waiting_for_room -= 1

    async def _make_room(self, size: int, object_id: bytes) -> int:
        """Spill least recently used objects until `size` fits."""
        failure = None
        while True:
            if self._closing:
                raise ObjectStoreFullError("the node is stopping")
            offset = self._alloc.allocate(size)
            if offset is not None:
                return offset
            if failure is not None:
                raise failure
            now = time.monotonic()
            if (
                self.collect_garbage is not None
                and not self._spills
                and now - self._last_gc >= GLOBAL_GC_MIN_INTERVAL_S
            ):
                self._last_gc = now
                await self.collect_garbage()
                continue
            candidates = self._spill_candidates()
            # Objects whose spill file is still whole (restored ones) leave
            # memory first: at once, with nothing to write.
            for _, victim in candidates:
                if victim.spill_file is not None:
                    self._drop_copy(victim)
                    offset = self._alloc.allocate(size)
                    if offset is not None:
                        return offset
            # Spill enough to cover the size (counting spills in flight), and
            # at least one more if the free space is there but fragmented.
            coming = sum(self._spills.values())
            for victim_id, victim in candidates:
                if victim.state != IN_MEMORY:
                    continue  # its copy was dropped above
                if self._spills and self.capacity - self.used + coming >= size:
                    break
                self._start_spill(victim_id, victim)
                coming += victim.size
            if not self._spills:
                raise ObjectStoreFullError(
                    f"the object store of this node is full: cannot store object "
                    f"{object_id.hex()} of {size} bytes (capacity {self.capacity} bytes, "
                    f"{self.used} in use by objects being read or written, largest free "
                    f"range {self._alloc.largest_free()} bytes). Drop ObjectRefs (and "
                    "arrays read from the store) you no longer need, or raise "
                    "object_store_memory."
                )
            done, _ = await asyncio.wait(set(self._spills), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.result() is not None:
                    failure = task.result()

    def _spill_candidates(self) -> list[tuple[bytes, StoredObject]]:
        candidates = [
            (object_id, obj)
            for object_id, obj in self.objects.items()
            if obj.sealed and not obj.freed and not obj.pins and obj.state == IN_MEMORY
        ]
        candidates.sort(key=lambda item: item[1].last_access)
        return candidates

    # -- spilling and restoring (the copies run in I/O threads) ---------------

    def _start_spill(self, object_id: bytes, obj: StoredObject) -> None:
        directory = self.spill_dirs[self._next_dir % len(self.spill_dirs)]
        self._next_dir += 1
        obj.state = SPILLING
        task = self._start_io(obj, self._spill(object_id, obj, directory))
        self._spills[task] = obj.size
        task.add_done_callback(lambda task: self._spills.pop(task, None))

    def _start_io(self, obj: StoredObject, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        obj.io = task
        self._io.add(task)
        task.add_done_callback(self._io.discard)
        return task

    async def _run_io(self, fn, *args):
        if self._closing:
            raise ObjectStoreFullError("the node is stopping")
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn, *args)

    async def _spill(self, object_id: bytes, obj: StoredObject, directory: SpillDirectory):
        """Copy an object to a file, then free its range. Returns the error
        that stopped it (for the create waiting for room), or None."""
        data = memoryview(self._map)[obj.offset : obj.offset + obj.size]
        name = error = None
        try:
            directory.open()
            name = await self._run_io(directory.write, object_id.hex(), data, self.buffer_size)
        except (OSError, ObjectStoreFullError) as e:
            error = self._spill_error(object_id, obj, directory, e)
        finally:
            data.release()
            obj.io = None
            obj.state = IN_MEMORY
        if name is not None:
            directory.files.add(name)
            if obj.freed or self._closing:
                directory.remove(name)  # not wanted any more
            else:
                obj.spill_file = (directory, name)
                self.spilled_objects += 1
                self.spilled_bytes += obj.size
                if not obj.pins:  # (one read meanwhile keeps it in memory too)
                    self._drop_copy(obj)
        self._maybe_release(object_id, obj)
        return error

    def _drop_copy(self, obj: StoredObject) -> None:
        """Let go of the memory of an object whose spill file is whole."""
        self._alloc.free(obj.offset, obj.size)
        obj.offset = None
        obj.state = SPILLED

    def _spill_error(self, object_id: bytes, obj: StoredObject, directory, error: Exception):
        if isinstance(error, ObjectStoreFullError):
            return error
        where = directory.base
        if error.errno == errno.ENOSPC:
            return OutOfDiskError(
                f"the object store is full and spilling object {object_id.hex()} "
                f"({obj.size} bytes) to {where} failed: the disk is full "
                f"({directory.free_bytes()} bytes free)."
            )
        logger.error("spilling object %s to %s failed: %s", object_id.hex(), where, error)
        return ObjectStoreFullError(
            f"the object store is full and spilling object {object_id.hex()} "
            f"({obj.size} bytes) to {where} failed: {error}"
        )

    async def _in_memory(self, object_id: bytes, obj: StoredObject) -> None:
        """Return once the object's bytes are in its arena range (restoring
        it if spilled); raise _Gone if it left the store meanwhile."""
        while obj.state in (SPILLED, RESTORING):
            if obj.released:
                raise _Gone
            if obj.io is None:
                obj.state = RESTORING
                self._start_io(obj, self._restore(object_id, obj))
            await asyncio.shield(obj.io)
        if obj.released:
            raise _Gone

    async def _restore(self, object_id: bytes, obj: StoredObject) -> None:
        try:
            offset = await self._allocate(obj.size, object_id)
            directory, name = obj.spill_file
            data = memoryview(self._map)[offset : offset + obj.size]
            try:
                await self._run_io(directory.read, name, data, self.buffer_size)
            except BaseException as e:
                self._alloc.free(offset, obj.size)
                if not isinstance(e, OSError):
                    raise
                logger.error(
                    "restoring object %s from %s failed: %s; the object is lost",
                    object_id.hex(),
                    directory.path,
                    e,
                )
                obj.freed = True
                raise _Gone from None
            finally:
                data.release()
            # The file stays until the object is freed: should the object
            # have to leave memory again, it leaves without a write (Ray
            # keeps a spilled copy so too).
            obj.offset = offset
            obj.state = IN_MEMORY
            self.restored_objects += 1
        finally:
            if obj.state == RESTORING:
                obj.state = SPILLED
            obj.io = None
            self._maybe_release(object_id, obj)

    # -- reading ----------------------------------------------------------------

    def readable_now(self, object_id: bytes) -> bool:
        """Whether `pin_now` can answer (sealed and in memory, or not here)."""
        obj = self.objects.get(object_id)
        return obj is None or obj.freed or (obj.sealed and obj.state in (IN_MEMORY, SPILLING))

    def pin_now(self, object_id: bytes, client) -> StoredObject | None:
        """`pin` of an object that is `readable_now`."""
        obj = self.objects.get(object_id)
        if obj is None or obj.freed:
            return None
        obj.pins[client] = obj.pins.get(client, 0) + 1
        self._touch(obj)
        return obj

    def pin_many_now(self, object_ids: list[bytes], client) -> tuple[list, list]:
        """`pin_now` of many objects, those that are `readable_now`:
        ([offset, size, ...] two values per object, None and None where it
        is not here or not pinned yet), and [(index, id)] of the ones not
        readable now (to `pin`). One loop, not three calls per object: a
        get of a thousand stored values pins them so."""
        objects = self.objects
        answers: list = []
        waiting: list = []
        clock = self._clock
        for i, object_id in enumerate(object_ids):
            obj = objects.get(object_id)
            if obj is None or obj.freed:
                answers += (None, None)
            elif obj.sealed and obj.state in (IN_MEMORY, SPILLING):
                pins = obj.pins
                pins[client] = pins.get(client, 0) + 1
                clock += 1
                obj.last_access = clock
                answers += (obj.offset, obj.size)
            else:
                answers += (None, None)
                waiting.append((i, object_id))
        self._clock = clock
        return answers, waiting

    async def pin(self, object_id: bytes, client) -> StoredObject | None:
        """Pin for `client` and return the object once it is sealed and in
        memory (restored first if spilled, which may raise
        ObjectStoreFullError), or None if it is not here."""
        obj = self.pin_now(object_id, client)
        if obj is None:
            return None
        try:
            await self._in_memory(object_id, obj)
            if not obj.sealed:
                sealed = asyncio.get_running_loop().create_future()
                obj.seal_waiters.append(sealed)
                if not await sealed:
                    return None  # abandoned by its writer
        except _Gone:
            self._unpin(object_id, obj, client)
            return None
        except BaseException:
            self._unpin(object_id, obj, client)
            raise
        return obj

    async def read(self, object_id: bytes, start: int, length: int) -> bytes | None:
        """Bytes of a sealed object (restored first if spilled), or None."""
        obj = self.objects.get(object_id)
        if obj is None or obj.freed or not obj.sealed:
            return None
        try:
            await self._in_memory(object_id, obj)
        except _Gone:
            return None
        if obj.freed:
            return None
        self._touch(obj)
        base = obj.offset + start
        return bytes(self._map[base : base + min(length, obj.size - start)])

    # -- the object's life --------------------------------------------------------

    def seal(self, object_id: bytes, client) -> None:
        obj = self.objects.get(object_id)
        if obj is None or obj.sealed:
            return
        obj.sealed = True
        obj.writer = None
        self._touch(obj)
        self._unpin(object_id, obj, client)
        waiters, obj.seal_waiters = obj.seal_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(True)

    def abort(self, object_id: bytes) -> None:
        """An object that will never be sealed (its pull failed): readers
        waiting for it are told it is not here."""
        obj = self.objects.get(object_id)
        if obj is not None and not obj.sealed:
            self._abandon(object_id, obj)

    def _abandon(self, object_id: bytes, obj: StoredObject) -> None:
        waiters, obj.seal_waiters = obj.seal_waiters, []
        obj.freed = True
        obj.pins.clear()
        self._maybe_release(object_id, obj)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(False)

    @contextlib.contextmanager
    def writable(self, offset: int, length: int):
        """A view of part of the arena to receive bytes into; released on exit
        (so the arena can be unmapped at close)."""
        with memoryview(self._map) as whole, whole[offset : offset + length] as view:
            yield view

    def write(self, offset: int, data) -> None:
        mv = memoryview(data).cast("B")
        self._map[offset : offset + mv.nbytes] = mv

    def unpin(self, object_id: bytes, client) -> None:
        obj = self.objects.get(object_id)
        if obj is not None:
            self._unpin(object_id, obj, client)

    def unpin_many(self, object_ids: list[bytes], client) -> None:
        """`unpin` of each (one loop: a reader lets go of thousands at once)."""
        objects = self.objects
        for object_id in object_ids:
            obj = objects.get(object_id)
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
            if obj.writer is client and not obj.sealed:
                self._abandon(object_id, obj)
                continue
            obj.pins.pop(client, None)
            if address is not None and obj.owner == address:
                obj.freed = True
            self._maybe_release(object_id, obj)

    def _maybe_release(self, object_id: bytes, obj: StoredObject) -> None:
        """Give back a freed object's range and file once nobody reads it and
        no I/O uses them (the I/O's end calls this again)."""
        if not obj.freed or obj.pins or obj.io is not None or obj.released:
            return
        obj.released = True
        if self.objects.get(object_id) is obj:  # (a new object may have its id by now)
            del self.objects[object_id]
        if obj.offset is not None:
            self._alloc.free(obj.offset, obj.size)
            obj.offset = None
        if obj.spill_file is not None:
            directory, name = obj.spill_file
            directory.remove(name)
            obj.spill_file = None

    async def close(self) -> None:
        """Stop: let copies already running end (queued ones are dropped),
        then delete every spill file this node made."""
        self._closing = True
        self._io_pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.gather(*self._io, return_exceptions=True)
        self._io_pool.shutdown(wait=True)
        for directory in self.spill_dirs:
            directory.close()
        try:
            self._map.close()
        except BufferError:
            pass

    def stats(self) -> dict:
        spilled = [o for o in self.objects.values() if o.state in (SPILLED, RESTORING)]
        return {
            "capacity": self.capacity,
            "used": self.used,
            "num_objects": len(self.objects),
            "num_spilled": len(spilled),
            "spilled_bytes_now": sum(o.size for o in spilled),
            "spilled_objects_total": self.spilled_objects,
            "spilled_bytes_total": self.spilled_bytes,
            "restored_objects_total": self.restored_objects,
            "spill_dirs": [d.path for d in self.spill_dirs],
        }

    def is_spilled(self, object_id: bytes) -> bool:
        obj = self.objects.get(object_id)
        return obj is not None and obj.state in (SPILLED, RESTORING)


def ids_body(object_ids: list[bytes]) -> dict:
    """A message body naming many objects: ids of the usual length as one
    string, others in a list (msgpack packs a list of a thousand ids at
    several times the cost, and a get of many stored values sends a
    thousand pins and unpins). `ids_of` reads it back."""
    if all(len(object_id) == OBJECT_ID_LEN for object_id in object_ids):
        return {"joined": b"".join(object_ids)}
    return {"ids": object_ids}


def ids_of(body: dict) -> list[bytes]:
    """The ids an `ids_body` names."""
    joined = body.get("joined")
    if joined is None:
        return body["ids"]
    return [joined[i : i + OBJECT_ID_LEN] for i in range(0, len(joined), OBJECT_ID_LEN)]


class ArenaMapping:
    """A client's view of its node's arena."""

    def __init__(self, path: str, capacity: int):
        fd = os.open(path, os.O_RDWR)
        try:
            self._mmap: mmap.mmap | None = mmap.mmap(fd, capacity, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        # The arena, read-only, for numpy to build arrays on. Not a
        # memoryview: numpy takes a memoryview's underlying object (the
        # writable mmap) as an array's base, and would then let a user set
        # the array's WRITEABLE flag and write into the store.
        self.readonly: pickle.PickleBuffer | None = pickle.PickleBuffer(
            memoryview(self._mmap).toreadonly()
        )
        # numpy is imported here, when a process first uses its node's
        # store, not by every process (the node's own never needs it).
        import numpy as np

        self._ndarray = np.ndarray
        self._byte = np.dtype(np.uint8)

    def close(self) -> None:
        """Let go of the mapping: it is unmapped now, or when the last value
        built on it dies (each holds it through `readonly`). Never released
        by force: numpy arrays on it hold a reference, not a buffer export,
        so a forced release would leave them on unmapped memory."""
        self._mmap = self.readonly = None

    def writable(self, offset: int, size: int) -> memoryview:
        return memoryview(self._mmap)[offset : offset + size]

    def pinned(self, offset: int, size: int):
        """The range as a read-only numpy array of bytes: what a read's pin
        follows for an object that is not a plain array (a plain array's pin
        follows the array itself). Everything built on the range refers to it
        (numpy arrays as their `base`, memoryviews through their buffer), so
        it dies with the last of them; it costs a fifth of a ctypes array's
        `from_buffer`, and the garbage collector does not track it."""
        return self._ndarray((size,), self._byte, self.readonly, offset)
