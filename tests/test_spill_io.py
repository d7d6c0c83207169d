"""The object store's spilling, one interleaving at a time.

Spills and restores copy bytes in I/O threads while the node's event loop
goes on serving requests, so an object can be freed, pinned or read while its
bytes are on the way to or from disk. The tests in test_spill_memory.py drive
that through a real cluster, where such races happen by chance; here each one
is made to happen: a store (a real arena file, real spill files, real
threads) runs on an event loop of the test's own, and the test acts at the
moment a copy is in flight (an object's state says so, and a copy cannot
finish until the loop runs its completion: see `until`).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from solray._private.object_store import (
    IN_MEMORY,
    RESTORING,
    SPILLED,
    SPILLING,
    ObjectStore,
)
from solray._private.spill import SpillDirectory
from solray.exceptions import ObjectStoreFullError

MiB = 2**20
SIZE = 8 * MiB  # a multiple of the alignment: 8 objects fill the store exactly
CAPACITY = 8 * SIZE


def oid(n: int) -> bytes:
    return n.to_bytes(28, "big")


def content(n: int, size: int = SIZE) -> bytes:
    """Distinct per object, and different at every offset of a 256-byte step."""
    return (n.to_bytes(8, "big") + bytes(range(248))) * (size // 256)


def run(tmp_path, scenario):
    """Run `scenario(store, spill_dir)` on a fresh store; close it after."""
    arena_dir = tmp_path / "arena"
    arena_dir.mkdir()
    base = tmp_path / "spill"

    async def main():
        directory = SpillDirectory(str(base), "session_test", "node")
        store = ObjectStore(str(arena_dir), CAPACITY, [directory], io_threads=2)
        try:
            await scenario(store, directory)
        finally:
            await store.close()
            os.unlink(store.path)  # the arena (a node removes its shm directory)
        assert not os.path.exists(directory.path)

    asyncio.run(asyncio.wait_for(main(), 60))


async def put(store: ObjectStore, n: int, size: int = SIZE) -> None:
    offset = await store.create(oid(n), size, "owner", "writer")
    store.write(offset, content(n, size))
    store.seal(oid(n), "writer")


async def fill(store: ObjectStore) -> None:
    """Objects 0..7: the store is full; 0 is the least recently used."""
    for n in range(8):
        await put(store, n)
    assert store.used == CAPACITY


async def until(predicate, what: str) -> None:
    """Let the loop run, one step at a time, until `predicate()` holds.

    Why this catches a copy in flight: the store marks an object SPILLING or
    RESTORING in the same step that creates the task doing the copy, so the
    test, resuming after every step, sees the mark before that task has even
    started its thread."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def read_all(store: ObjectStore, n: int, size: int = SIZE) -> bytes | None:
    return await store.read(oid(n), 0, size)


def state(store: ObjectStore, n: int) -> str | None:
    obj = store.objects.get(oid(n))
    return obj.state if obj is not None else None


def files(directory: SpillDirectory) -> list[str]:
    return sorted(os.listdir(directory.path)) if os.path.isdir(directory.path) else []


def test_an_object_freed_while_it_is_spilled_is_released_after(tmp_path):
    async def scenario(store, directory):
        await fill(store)
        create = asyncio.ensure_future(store.create(oid(100), SIZE, "owner", "writer"))
        await until(lambda: state(store, 0) == SPILLING, "object 0 spilling")
        store.free(oid(0))
        # Its range is still being copied: not given back yet.
        assert oid(0) in store.objects and store.used == CAPACITY
        await create
        assert oid(0) not in store.objects
        assert files(directory) == []  # the finished copy was deleted
        assert store.used == CAPACITY  # 1..7 and the new object
        for n in range(1, 8):
            assert await read_all(store, n) == content(n)

    run(tmp_path, scenario)


def test_an_object_pinned_while_it_is_spilled_stays_in_memory(tmp_path):
    async def scenario(store, directory):
        await fill(store)
        create = asyncio.ensure_future(store.create(oid(100), SIZE, "owner", "writer"))
        await until(lambda: state(store, 0) == SPILLING, "object 0 spilling")
        obj = await store.pin(oid(0), "reader")  # served at once, from memory
        assert obj is not None and obj.offset is not None
        assert bytes(store._map[obj.offset : obj.offset + SIZE]) == content(0)
        await create
        # The reader won: object 0 stays in memory (its finished copy is
        # kept: it can leave later without a write), object 1 went instead.
        assert state(store, 0) == IN_MEMORY
        assert state(store, 1) == SPILLED
        assert files(directory) == sorted([oid(0).hex(), oid(1).hex()])
        assert bytes(store._map[obj.offset : obj.offset + SIZE]) == content(0)
        store.unpin(oid(0), "reader")
        # Room for one more: object 0 (least recently used, and on disk
        # already) leaves memory at once; nothing else is written.
        await put(store, 101)
        assert state(store, 0) == SPILLED and store.spilled_objects == 2
        assert await read_all(store, 0) == content(0)

    run(tmp_path, scenario)


def test_readers_of_an_object_being_restored_share_the_restore(tmp_path):
    async def scenario(store, directory):
        await fill(store)
        await put(store, 100)  # spills object 0
        assert state(store, 0) == SPILLED
        store.free(oid(100))
        first = asyncio.ensure_future(store.pin(oid(0), "reader 1"))
        await until(lambda: state(store, 0) == RESTORING, "object 0 restoring")
        second = asyncio.ensure_future(store.pin(oid(0), "reader 2"))
        third = asyncio.ensure_future(read_all(store, 0))
        a, b, data = await asyncio.gather(first, second, third)
        assert a is b and a.offset is not None
        assert data == content(0)
        assert store.restored_objects == 1
        assert files(directory) == [oid(0).hex()]  # kept until object 0 is freed
        assert a.pins == {"reader 1": 1, "reader 2": 1}

    run(tmp_path, scenario)


def test_a_restored_object_leaves_memory_again_without_a_write(tmp_path):
    """A restored object keeps its spill file until it is freed: when room
    is needed again, it leaves memory at once (before any object that would
    have to be written, even a less recently used one), is read back from
    the same file, and its file goes when it is freed."""

    async def scenario(store, directory):
        await fill(store)
        await put(store, 100)  # spills object 0
        store.free(oid(100))
        assert await read_all(store, 0) == content(0)  # restored, in 100's room
        assert state(store, 0) == IN_MEMORY and files(directory) == [oid(0).hex()]
        written = store.spilled_objects
        await put(store, 101)  # object 1 is older, but 0 needs no write
        assert state(store, 0) == SPILLED and state(store, 1) == IN_MEMORY
        assert store.spilled_objects == written and files(directory) == [oid(0).hex()]
        assert await read_all(store, 0) == content(0)  # from the same file
        assert store.restored_objects == 2
        assert state(store, 1) == SPILLED  # written to make that room
        store.free(oid(0))
        assert oid(0) not in store.objects and files(directory) == [oid(1).hex()]
        for n in range(1, 8):
            assert await read_all(store, n) == content(n)

    run(tmp_path, scenario)


def test_an_object_freed_while_it_is_restored_is_released(tmp_path):
    async def scenario(store, directory):
        await fill(store)
        await put(store, 100)  # spills object 0
        store.free(oid(100))
        used = store.used
        reading = asyncio.ensure_future(read_all(store, 0))
        await until(lambda: state(store, 0) == RESTORING, "object 0 restoring")
        store.free(oid(0))
        assert await reading is None  # freed: not served
        assert oid(0) not in store.objects
        assert files(directory) == []
        assert store.used == used  # the range it was restored into is free again

    run(tmp_path, scenario)


def test_creates_waiting_for_room_are_served_in_arrival_order(tmp_path):
    async def scenario(store, directory):
        await fill(store)
        done = []
        first = asyncio.ensure_future(store.create(oid(100), 2 * SIZE, "owner", "writer"))
        first.add_done_callback(lambda _: done.append("first"))
        await until(lambda: state(store, 0) == SPILLING, "spills started")
        # Room appears before the first create has its spills back; a later,
        # smaller create must not take it.
        store.free(oid(7))
        second = asyncio.ensure_future(store.create(oid(101), SIZE, "owner", "writer"))
        second.add_done_callback(lambda _: done.append("second"))
        await asyncio.gather(first, second)
        assert done == ["first", "second"]
        assert store.used == CAPACITY
        assert store.spilled_objects == 2

    run(tmp_path, scenario)


def test_a_create_that_cannot_fit_fails_and_loses_nothing(tmp_path):
    async def scenario(store, directory):
        await fill(store)
        for n in range(8):
            assert await store.pin(oid(n), "reader") is not None  # nothing may spill
        with pytest.raises(ObjectStoreFullError, match="being read or written"):
            await store.create(oid(100), SIZE, "owner", "writer")
        assert files(directory) == []
        for n in range(8):
            assert await read_all(store, n) == content(n)

    run(tmp_path, scenario)


def test_closing_with_spills_in_flight_removes_what_they_wrote(tmp_path):
    mine = tmp_path / "spill" / "mine.txt"

    async def scenario(store, directory):
        mine.parent.mkdir()
        mine.write_text("the user's own file")
        await fill(store)
        create = asyncio.ensure_future(store.create(oid(100), 6 * SIZE, "owner", "writer"))
        await until(lambda: state(store, 0) == SPILLING, "spills started")
        await store.close()
        with pytest.raises(ObjectStoreFullError, match="stopping"):
            await create

    run(tmp_path, scenario)
    assert mine.read_text() == "the user's own file"
    assert os.listdir(mine.parent) == ["mine.txt"]
