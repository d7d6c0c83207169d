"""Memory beyond reference counting, on a real local cluster: spilling a full
object store to disk and reading it back, a put larger than the store,
objects of an owner that died, the memory monitor killing tasks (never
actors) when the node runs low, and what the state API and `solray memory`
show about objects.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from conftest import mapped_file, store_file, wait_for_condition, wait_for_file

import solray as ray
from solray._private import context
from solray._private.protocol import Msg
from solray.exceptions import (
    ObjectLostError,
    ObjectStoreFullError,
    OutOfMemoryError,
    OwnerDiedError,
)
from solray.util.state import list_objects

MiB = 2**20
GiB = 2**30
STORE = 100 * MiB
GET_TIMEOUT_S = 30  # a hang fails the test instead of blocking it
SMALL_STORE = {"num_cpus": 2, "object_store_memory": STORE}


def store_stats() -> dict:
    return context.core_worker.request("node", Msg.STORE_STATS, None)


def listed(ref) -> list[dict]:
    return list_objects(filters=[("object_id", "=", ref.hex())], limit=10_000)


def location(ref) -> str | None:
    rows = [row for row in listed(ref) if row["is_owner"]]
    return rows[0]["location"] if rows else None


def array(i: int, n_bytes: int) -> np.ndarray:
    """Distinct contents per i: a ramp offset by i, so a mixed-up object or a
    torn read shows."""
    return np.arange(n_bytes // 8, dtype=np.int64) + i * 1_000_003


def check(i: int, value: np.ndarray, n_bytes: int) -> None:
    assert value.shape == (n_bytes // 8,), (i, value.shape)
    assert value[0] == i * 1_000_003 and value[-1] == i * 1_000_003 + n_bytes // 8 - 1, i
    assert int(value[::4096].sum()) == int(array(i, n_bytes)[::4096].sum()), i


def spill_files(stats: dict) -> list[str]:
    """The files in this node's spill subdirectory."""
    (directory,) = stats["spill_dirs"]
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def wait_for_empty_store(timeout: float = 30) -> None:
    gc.collect()
    wait_for_condition(
        lambda: store_stats()["num_objects"] == 0 and store_stats()["used"] == 0,
        timeout=timeout,
        message=lambda: f"the store is not empty: {store_stats()}",
    )


# -- spilling --------------------------------------------------------------------


@pytest.mark.parametrize("ray_start", [SMALL_STORE], indirect=True)
def test_three_times_the_store_spills_and_reads_back(ray_start):
    n_bytes, count = 10 * MiB, 30  # 300 MiB into a 100 MiB store
    refs = [ray.put(array(i, n_bytes)) for i in range(count)]
    stats = store_stats()
    assert stats["num_objects"] == count
    assert stats["used"] <= STORE
    assert stats["num_spilled"] >= count - STORE // n_bytes
    assert stats["spilled_bytes_now"] >= (count - STORE // n_bytes) * n_bytes

    # The state API and the spill directory agree on what is spilled.
    locations = {ref.hex(): location(ref) for ref in refs}
    spilled = {h for h, where in locations.items() if where == "spilled"}
    assert len(spilled) == stats["num_spilled"]
    assert set(locations.values()) == {"spilled", "shared_memory"}
    assert set(spill_files(stats)) == spilled
    assert all(os.path.getsize(os.path.join(stats["spill_dirs"][0], h)) >= n_bytes for h in spilled)

    # Every object reads back right, spilled or not; each read copies out so
    # nothing stays pinned (a pinned object cannot make room).
    for i in range(count):
        value = ray.get(refs[i], timeout=GET_TIMEOUT_S)
        check(i, value, n_bytes)
        del value
    assert store_stats()["restored_objects_total"] > 0

    # As task arguments, top level and nested.
    @ray.remote
    def first_and_last(value):
        if isinstance(value, list):
            value = ray.get(value[0], timeout=GET_TIMEOUT_S)
        return int(value[0]), int(value[-1])

    picks = [0, 7, 15, 29, 3]
    got = ray.get([first_and_last.remote(refs[i]) for i in picks], timeout=GET_TIMEOUT_S)
    got += ray.get([first_and_last.remote([refs[i]]) for i in picks], timeout=GET_TIMEOUT_S)
    expected = [(i * 1_000_003, i * 1_000_003 + n_bytes // 8 - 1) for i in picks]
    assert got == expected * 2

    # Once freed, a spilled object's file goes too.
    stats = store_stats()
    assert stats["num_spilled"] > 0
    spilled_now = spill_files(stats)
    assert spilled_now
    del refs
    wait_for_empty_store()
    assert spill_files(stats) == []
    assert store_stats()["spilled_bytes_now"] == 0


class _Cycle:
    """Holds a ref in a reference cycle: only the garbage collector frees it."""

    def __init__(self, ref):
        self.ref = ref
        self.me = self


@pytest.mark.parametrize("ray_start", [SMALL_STORE], indirect=True)
def test_objects_held_only_by_reference_cycles_are_collected_before_spilling(ray_start):
    """Ray's automatic global GC: when the store is full, the node asks its
    processes to collect garbage before it spills; objects only cycles held
    are freed instead of spilled, in the driver and in workers."""

    @ray.remote
    def put_in_a_cycle(i, n_bytes):
        _Cycle(ray.put(array(i, n_bytes)))  # the worker owns it; only a cycle holds it
        return i

    n_bytes = 30 * MiB
    gc.disable()  # only the node's request may collect them
    try:
        ray.get([put_in_a_cycle.remote(i, n_bytes) for i in range(2)], timeout=GET_TIMEOUT_S)
        _Cycle(ray.put(array(2, n_bytes)))  # 90 MiB of cycles in a 100 MiB store
        assert store_stats()["num_objects"] == 3
        # The store is full of garbage: this put must make room.
        kept = ray.put(array(3, n_bytes))
        check(3, ray.get(kept, timeout=GET_TIMEOUT_S), n_bytes)
    finally:
        gc.enable()
    stats = store_stats()
    assert stats["spilled_objects_total"] == 0, stats  # collected, not spilled
    assert stats["num_objects"] == 1, stats
    # The next fill within Ray's minimum interval spills as before.
    more = [ray.put(array(4 + i, n_bytes)) for i in range(3)]
    assert store_stats()["spilled_objects_total"] > 0
    del more, kept
    wait_for_empty_store()


@pytest.mark.parametrize("ray_start", [SMALL_STORE], indirect=True)
def test_dropping_spilled_objects_deletes_their_files(ray_start):
    n_bytes = 20 * MiB
    refs = {i: ray.put(array(i, n_bytes)) for i in range(8)}
    stats = store_stats()
    files = set(spill_files(stats))
    spilled = {i for i, ref in refs.items() if ref.hex() in files}
    assert spilled and len(spilled) < len(refs)
    assert files == {refs[i].hex() for i in spilled}
    # Drop only the spilled ones: exactly their files go.
    for i in spilled:
        del refs[i]
    gc.collect()
    wait_for_condition(
        lambda: not spill_files(stats),
        message=lambda: f"spill files left: {spill_files(stats)}",
    )
    for i in refs:
        check(i, ray.get(refs[i], timeout=GET_TIMEOUT_S), n_bytes)
    del refs
    wait_for_empty_store()
    assert spill_files(stats) == []


@pytest.mark.parametrize("ray_start", [SMALL_STORE], indirect=True)
def test_task_returns_and_arguments_spill(ray_start):
    """Tasks fill the store with their returns (2x its size); the caller
    reads them back, and passes them on to other tasks."""
    n_bytes, count = 10 * MiB, 20

    @ray.remote
    def produce(i):
        return array(i, n_bytes)

    @ray.remote
    def digest(value, i):
        check(i, value, n_bytes)
        return i

    refs = [produce.remote(i) for i in range(count)]
    assert len(ray.wait(refs, num_returns=count, timeout=GET_TIMEOUT_S * 2)[0]) == count
    assert store_stats()["num_spilled"] > 0
    assert ray.get([digest.remote(refs[i], i) for i in range(count)], timeout=60) == list(
        range(count)
    )
    for i in reversed(range(count)):
        check(i, ray.get(refs[i], timeout=GET_TIMEOUT_S), n_bytes)
    del refs
    wait_for_empty_store()


@pytest.mark.parametrize("ray_start", [SMALL_STORE], indirect=True)
def test_objects_being_read_are_not_spilled(ray_start):
    """Values read from the store are views of it: while they live their
    objects stay in memory, so a put that needs their room fails, with a
    message saying why, and succeeds once they are gone."""
    n_bytes = 20 * MiB
    refs = [ray.put(array(i, n_bytes)) for i in range(4)]
    views = [ray.get(ref, timeout=GET_TIMEOUT_S) for ref in refs]
    assert {mapped_file(view) for view in views} == {store_file()}
    with pytest.raises(ObjectStoreFullError) as info:
        ray.put(array(9, 30 * MiB))
    assert "being read" in str(info.value)
    for i, view in enumerate(views):
        check(i, view, n_bytes)
    del views, view
    gc.collect()
    extra = ray.put(array(9, 30 * MiB))
    check(9, ray.get(extra, timeout=GET_TIMEOUT_S), 30 * MiB)
    assert store_stats()["num_spilled"] >= 1
    for i in range(len(refs)):
        check(i, ray.get(refs[i], timeout=GET_TIMEOUT_S), n_bytes)
    del refs, extra
    wait_for_empty_store()


def own_subdirectory(base, info) -> str:
    """Where a node spills inside a user-named directory: its own
    subdirectory, per session and per node."""
    name = f"solray_spill_{os.path.basename(info['session_dir'])}_{info['node_id']}"
    return os.path.join(base, name)


def plant_user_files(directory) -> dict[str, bytes]:
    """Files of the user's own in a spill directory, which solray must leave
    alone; returns them (relative path -> content)."""
    (directory / "notes").mkdir(parents=True)
    files = {"results.csv": b"a,b\n1,2\n", "notes/todo.txt": b"keep me"}
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return files


def user_files(directory) -> dict[str, bytes]:
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, directory)] = open(path, "rb").read()
    return found


def spelling_init_kwargs(spelling: str, directories: list) -> dict:
    if spelling == "init argument":
        return {"object_spilling_directory": str(directories[0])}
    if spelling == "object_spilling_directory":
        return {"_system_config": {"object_spilling_directory": str(directories[0])}}
    # Ray's documented example: several directories, and a buffer size.
    config = {
        "type": "filesystem",
        "params": {"directory_path": [str(d) for d in directories], "buffer_size": 1_000_000},
    }
    return {"_system_config": {"object_spilling_config": json.dumps(config)}}


@pytest.mark.parametrize(
    "spelling", ["object_spilling_directory", "object_spilling_config", "init argument"]
)
def test_spilling_to_a_user_named_directory(leak_check, tmp_path, spelling):
    """Each spelling Ray has for the spill directory. Spill files go into a
    private subdirectory of this node's own (0700, files 0600); the user's own
    files there are left alone; shutdown removes exactly what solray made,
    including files of objects still spilled at that moment."""
    bases = [tmp_path / "spill-a", tmp_path / "spill-b"]
    if spelling != "object_spilling_config":
        bases = bases[:1]
    mine = plant_user_files(bases[0])
    info = ray.init(num_cpus=1, object_store_memory=STORE, **spelling_init_kwargs(spelling, bases))
    try:
        subdirectories = [own_subdirectory(base, info) for base in bases]
        assert store_stats()["spill_dirs"] == subdirectories
        n_bytes = 25 * MiB
        refs = [ray.put(array(i, n_bytes)) for i in range(10)]
        stats = store_stats()
        assert stats["num_spilled"] >= 6
        spilled = {name for d in subdirectories for name in os.listdir(d)}
        assert len(spilled) == stats["num_spilled"]
        assert spilled <= {ref.hex() for ref in refs}
        for directory in subdirectories:
            assert os.listdir(directory), f"nothing spilled to {directory}"
            st = os.lstat(directory)
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
            assert st.st_uid == os.geteuid()
            for name in os.listdir(directory):
                st = os.lstat(os.path.join(directory, name))
                assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
                assert st.st_uid == os.geteuid()
        # Nothing was written beside the subdirectories.
        assert sorted(os.listdir(bases[0])) == sorted(
            ["results.csv", "notes", os.path.basename(subdirectories[0])]
        )
        for i in range(len(refs)):
            check(i, ray.get(refs[i], timeout=GET_TIMEOUT_S), n_bytes)
        assert store_stats()["num_spilled"] >= 6  # reading back spilled others
    finally:
        ray.shutdown()
    # Shut down with objects still spilled: their files and the
    # subdirectories are gone, the user's files are as they were.
    for directory in subdirectories:
        assert not os.path.exists(directory)
    assert user_files(bases[0]) == mine
    for base in bases[1:]:
        assert os.listdir(base) == []


@pytest.mark.parametrize(
    "system_config, complaint",
    [
        (
            {
                "object_spilling_config": json.dumps(
                    {"type": "smart_open", "params": {"uri": "s3://bucket/spill"}}
                )
            },
            "'smart_open' is not supported",
        ),
        (
            {"object_spilling_config": json.dumps({"type": "filesystem", "params": {}})},
            "directory_path",
        ),
        (
            {
                "object_spilling_config": json.dumps(
                    {"type": "filesystem", "params": {"directory_path": "/tmp", "mode": "x"}}
                )
            },
            "['mode'] are not supported",
        ),
        (
            {
                "object_spilling_config": json.dumps(
                    {"type": "filesystem", "params": {"directory_path": "/tmp", "buffer_size": 0}}
                )
            },
            "buffer_size must be a positive int",
        ),
        ({"object_spilling_config": "{not json"}, "not a JSON object"),
        (
            {
                "object_spilling_directory": "/tmp/a",
                "object_spilling_config": json.dumps(
                    {"type": "filesystem", "params": {"directory_path": "/tmp/b"}}
                ),
            },
            "not both",
        ),
        ({"max_io_workers": 0}, "_system_config['max_io_workers'] must be an integer >= 1"),
    ],
)
def test_spilling_options_that_cannot_work_are_refused(leak_check, system_config, complaint):
    with pytest.raises(ValueError) as info:
        ray.init(num_cpus=1, _system_config=system_config)
    assert complaint in str(info.value)
    assert not ray.is_initialized()


def test_spill_files_never_follow_planted_links(leak_check, tmp_path):
    """A name taken in advance in the node's subdirectory (a symlink to a
    file elsewhere) is never written through: the spill file takes another
    name. A subdirectory planted before the node made its own is refused
    with an error naming it, and nothing is written through it."""
    base = tmp_path / "spill"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    info = ray.init(
        num_cpus=1,
        object_store_memory=STORE,
        _system_config={"object_spilling_directory": str(base)},
    )
    try:
        n_bytes = 20 * MiB
        refs = [ray.put(array(i, n_bytes)) for i in range(6)]  # spills at least one
        directory = own_subdirectory(base, info)
        assert os.listdir(directory)
        # Every object still in memory could be spilled next: plant a link at
        # each one's file name.
        in_memory = [ref.hex() for ref in refs if location(ref) == "shared_memory"]
        assert in_memory
        for name in in_memory:
            os.symlink(victim, os.path.join(directory, name))
        refs += [ray.put(array(i, n_bytes)) for i in range(6, 12)]
        assert victim.read_bytes() == b"precious"
        sidestepped = [name for name in os.listdir(directory) if "." in name]
        assert sidestepped, "no spill met a planted name"
        for name in sidestepped:
            assert name.split(".")[0] in in_memory
            st = os.lstat(os.path.join(directory, name))
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        for i in range(len(refs)):
            check(i, ray.get(refs[i], timeout=GET_TIMEOUT_S), n_bytes)
        assert victim.read_bytes() == b"precious"
    finally:
        ray.shutdown()
    # Only what solray made is gone: the planted links stay (and so does the
    # directory holding them).
    assert sorted(os.listdir(directory)) == sorted(in_memory)
    assert all(os.path.islink(os.path.join(directory, name)) for name in in_memory)
    assert victim.read_bytes() == b"precious"

    # A planted subdirectory: a link where the node's own would go.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    info = ray.init(
        num_cpus=1,
        object_store_memory=STORE,
        _system_config={"object_spilling_directory": str(base)},
    )
    try:
        os.symlink(elsewhere, own_subdirectory(base, info))
        refs = [ray.put(array(i, n_bytes)) for i in range(4)]
        with pytest.raises(ObjectStoreFullError) as error:
            refs += [ray.put(array(i, n_bytes)) for i in range(4, 8)]
        assert own_subdirectory(base, info) in str(error.value)
        assert "already exists" in str(error.value)
        assert os.listdir(elsewhere) == []
        for i in range(len(refs)):  # nothing stored before was lost
            check(i, ray.get(refs[i], timeout=GET_TIMEOUT_S), n_bytes)
    finally:
        ray.shutdown()
    assert os.listdir(elsewhere) == []


@pytest.mark.parametrize("ray_start", [SMALL_STORE], indirect=True)
def test_readers_of_a_spilled_object_share_one_restore(ray_start):
    """Several tasks read the same spilled object at once: it is read back
    from disk once, and each gets the right bytes."""
    n_bytes = 20 * MiB
    refs = [ray.put(array(i, n_bytes)) for i in range(6)]
    assert location(refs[0]) == "spilled"
    restored = store_stats()["restored_objects_total"]

    @ray.remote(num_cpus=0)
    def digest(box):
        value = ray.get(box[0], timeout=GET_TIMEOUT_S)
        return int(value[::4096].sum())

    want = int(array(0, n_bytes)[::4096].sum())
    assert ray.get([digest.remote([refs[0]]) for _ in range(6)], timeout=60) == [want] * 6
    assert store_stats()["restored_objects_total"] == restored + 1
    del refs
    wait_for_empty_store()


@pytest.mark.parametrize("ray_start", [SMALL_STORE], indirect=True)
def test_churn_of_puts_reads_and_frees_while_spilling(ray_start):
    """Objects are freed while they are being spilled, read while they are
    being spilled or restored, and created while spills are in flight, from
    the driver and from two tasks at once: every read is right, and in the
    end every byte and every file is given back."""
    n_bytes = 10 * MiB

    @ray.remote
    def churn(seed: int, rounds: int) -> int:
        kept = {}
        for i in range(rounds):
            key = seed * 1000 + i
            kept[key] = ray.put(array(key, n_bytes))
            if len(kept) > 12:
                kept.pop(min(kept))  # freed, perhaps while being spilled
            old = min(kept)
            check(old, ray.get(kept[old], timeout=GET_TIMEOUT_S), n_bytes)
        return rounds

    tasks = [churn.remote(seed, 25) for seed in (1, 2)]
    kept = {}
    for i in range(25):
        kept[i] = ray.put(array(i, n_bytes))
        if len(kept) > 12:
            del kept[min(kept)]
        check(min(kept), ray.get(kept[min(kept)], timeout=GET_TIMEOUT_S), n_bytes)
    assert ray.get(tasks, timeout=120) == [25, 25]
    stats = store_stats()
    assert stats["spilled_objects_total"] > 10 and stats["restored_objects_total"] > 10
    del kept
    wait_for_empty_store()
    assert spill_files(stats) == []


@pytest.mark.timeout(600)
def test_spilling_gigabytes_keeps_the_node_alive(leak_check, tmp_path):
    """Over 2 GB through a 300 MiB store, with a heartbeat timeout of 2 s:
    the copies run off the node's event loop, so the node keeps reporting
    and is never declared dead, and every object reads back intact."""
    disk = shutil.disk_usage(tmp_path)
    if disk.free < 8 * GiB:
        pytest.skip("needs 8 GiB of free disk")
    base = tmp_path / "spill"
    ray.init(
        num_cpus=1,
        object_store_memory=300 * MiB,
        _system_config={"heartbeat_timeout_s": 2, "object_spilling_directory": str(base)},
    )
    try:
        (node,) = ray.nodes()
        n_bytes, count = 280 * MiB, 9
        refs = [ray.put(array(i, n_bytes)) for i in range(count)]
        assert store_stats()["spilled_bytes_total"] > 2 * 10**9
        for i in range(count):
            value = ray.get(refs[i], timeout=120)
            assert np.array_equal(value, array(i, n_bytes)), i
            del value
        # Read back, each one restored: gigabytes more, read in I/O threads
        # (each leaves memory again without a write: its file is kept).
        assert store_stats()["restored_objects_total"] >= count - 1
        assert [(n["NodeID"], n["Alive"]) for n in ray.nodes()] == [(node["NodeID"], True)]
        del refs
        wait_for_empty_store()
    finally:
        ray.shutdown()
    assert os.listdir(base) == []


@pytest.mark.parametrize("ray_start", [SMALL_STORE], indirect=True)
def test_a_put_larger_than_the_store(ray_start):
    before = [ray.put(array(i, 30 * MiB)) for i in range(2)]
    small = ray.put("small")
    with pytest.raises(ObjectStoreFullError) as info:
        ray.put(np.zeros(STORE + MiB, dtype=np.uint8))
    message = str(info.value)
    numbers = [int(n) for n in re.findall(r"\d+", message)]
    assert STORE in numbers  # the capacity
    assert any(STORE + MiB <= n < STORE + 2 * MiB for n in numbers), message  # the size
    assert "object_store_memory" in message
    # Everything stored before is intact, and the store still works.
    for i in range(len(before)):
        check(i, ray.get(before[i], timeout=GET_TIMEOUT_S), 30 * MiB)
    assert ray.get(small) == "small"
    after = ray.put(array(9, 30 * MiB))
    check(9, ray.get(after, timeout=GET_TIMEOUT_S), 30 * MiB)

    # The same from a task: its error reaches the caller.
    @ray.remote
    def put_too_much():
        ray.put(np.zeros(STORE + MiB, dtype=np.uint8))

    with pytest.raises(ObjectStoreFullError):
        ray.get(put_too_much.remote(), timeout=GET_TIMEOUT_S)
    del before, after
    wait_for_empty_store()


# -- owners that die -----------------------------------------------------------------


@ray.remote(max_restarts=0)
class Maker:
    def pid(self):
        return os.getpid()

    def make(self, n_bytes):
        return [ray.put(array(i, n_bytes)) for i in range(3)]


def test_objects_of_a_dead_owner(ray_start):
    maker = Maker.remote()
    pid = ray.get(maker.pid.remote(), timeout=GET_TIMEOUT_S)
    large = ray.get(maker.make.remote(2 * MiB), timeout=GET_TIMEOUT_S)
    small = ray.get(maker.make.remote(1024), timeout=GET_TIMEOUT_S)
    assert store_stats()["num_objects"] == 3
    assert all(row["type"] == "WORKER" for ref in large for row in listed(ref) if row["is_owner"])

    os.kill(pid, signal.SIGKILL)
    wait_for_condition(lambda: not psutil.pid_exists(pid), message="the owner did not die")

    # Not read before: the driver has no copy and must ask the dead owner.
    for ref in large + small:
        with pytest.raises(OwnerDiedError) as info:
            ray.get(ref, timeout=GET_TIMEOUT_S)
        assert isinstance(info.value, ObjectLostError)
        assert ref.hex() in str(info.value)

    @ray.remote
    def read(box):
        try:
            ray.get(box[0], timeout=GET_TIMEOUT_S)
        except OwnerDiedError as e:
            return "owner died", isinstance(e, ObjectLostError)
        return "read"

    assert (
        ray.get([read.remote([ref]) for ref in (large[0], small[1])]) == [("owner died", True)] * 2
    )
    # As a top-level argument, the task fails with it.
    with pytest.raises(OwnerDiedError):
        ray.get(read.remote(large[2]), timeout=GET_TIMEOUT_S)

    # The dead owner's objects left the store.
    wait_for_empty_store()
    del large, small


# -- the memory monitor ----------------------------------------------------------------


def _monitor_config() -> dict:
    mem = psutil.virtual_memory()
    used = 1.0 - mem.available / mem.total
    return {
        "memory_usage_threshold": min(0.99, used + 1.5 * GiB / mem.total),
        "memory_monitor_refresh_ms": 100,
    }


@ray.remote
def allocate(n_bytes, seconds, attempts=None):
    if attempts is not None:
        with open(attempts, "a") as f:
            f.write(f"{os.getpid()}\n")
    data = np.ones(n_bytes, dtype=np.uint8)  # touches every page
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return int(data[:10].sum())


def oom_score_adj(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score_adj") as f:
        return int(f.read())


@ray.remote
def my_oom_score_adj() -> tuple[int, int, str]:
    """(pid, oom_score_adj, the parent's command line), from inside a worker."""
    parent = psutil.Process(os.getppid())
    return os.getpid(), oom_score_adj(os.getpid()), " ".join(parent.cmdline())


@ray.remote(num_cpus=0, max_restarts=0)
class ScoreReader:
    def read(self):
        return ray.get(my_oom_score_adj.remote(), timeout=GET_TIMEOUT_S)

    def mine(self):
        parent = psutil.Process(os.getppid())
        return os.getpid(), oom_score_adj(os.getpid()), " ".join(parent.cmdline())


def test_workers_are_what_the_kernel_kills_first(leak_check):
    """Under memory pressure the kernel's OOM killer takes the process with
    the highest score. Workers, fresh interpreters and forked alike, get the
    maximum (1000, as in Ray); the node, the control store and the zygote
    stay low, even when started by a driver whose own score is higher. A
    zygote killed (as the kernel might) takes its forked workers with it,
    never the node: later workers start as new interpreters."""
    before = oom_score_adj(os.getpid())
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("300")  # the services inherit this, and must go lower
    try:
        ray.init(num_cpus=1)
    finally:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(before))
    try:
        # By the module each runs (a head node's arguments name the control
        # store's module too: it starts it again should it die).
        modules = {
            p.cmdline()[p.cmdline().index("-m") + 1]: p.pid
            for p in psutil.Process().children()
            if "-m" in p.cmdline()
        }
        node_pid = modules["solray._private.node"]
        control_pid = modules["solray._private.control_store"]
        assert oom_score_adj(node_pid) == 0
        assert oom_score_adj(control_pid) == 0

        # A pre-started worker: a new interpreter, the node's child.
        first, score, parent = ray.get(my_oom_score_adj.remote(), timeout=GET_TIMEOUT_S)
        assert "solray._private.node" in parent and score == 1000
        # Once the zygote is up, later workers are forked from it.
        node = psutil.Process(node_pid)

        def zygotes():
            return [p for p in node.children() if "worker_zygote" in " ".join(p.cmdline())]

        wait_for_condition(lambda: len(zygotes()) == 1, message="no zygote started")
        (zygote,) = zygotes()
        assert oom_score_adj(zygote.pid) == 0
        readers = [ScoreReader.remote() for _ in range(3)]
        found = ray.get([reader.mine.remote() for reader in readers], timeout=GET_TIMEOUT_S)
        forked = [row for row in found if row[0] != first]  # one may reuse the idle worker
        assert len(forked) >= 2
        for _, score, parent in forked:
            assert "worker_zygote" in parent and score == 1000

        # The kernel kills the zygote: its forked workers go with it, the
        # node stays, and new workers start as interpreters (score 1000 too).
        zygote.kill()
        wait_for_condition(lambda: not any(psutil.pid_exists(pid) for pid, _, _ in forked))
        fresh = ScoreReader.remote()
        pid, score, parent = ray.get(fresh.mine.remote(), timeout=GET_TIMEOUT_S)
        assert "solray._private.node" in parent and score == 1000
        assert ray.get(fresh.read.remote(), timeout=GET_TIMEOUT_S)[1] == 1000
        assert node.is_running() and [n["Alive"] for n in ray.nodes()] == [True]
    finally:
        ray.shutdown()


def test_memory_monitor_kills_the_newest_task_not_the_actor(leak_check, tmp_path):
    """Above memory_usage_threshold the node kills the worker of the most
    recently started task (never an actor's); its owner gets
    OutOfMemoryError after the retries, while an older task, the actor and
    the node carry on."""
    if psutil.virtual_memory().available < 6 * GiB:
        pytest.skip("needs about 6 GiB of free memory")
    ray.init(num_cpus=2, _system_config=_monitor_config())
    try:

        @ray.remote
        class Ballast:
            def __init__(self):
                self.data = np.ones(256 * MiB, dtype=np.uint8)

            def pid(self):
                return os.getpid()

            def total(self):
                return int(self.data[::4096].sum())

        @ray.remote
        def steady(started, go):
            open(started, "w").close()
            wait_for_file(go, timeout=120)
            return os.getpid()

        ballast = Ballast.remote()
        actor_pid = ray.get(ballast.pid.remote(), timeout=GET_TIMEOUT_S)
        started, go = tmp_path / "started", tmp_path / "go"
        older = steady.remote(str(started), str(go))
        wait_for_condition(started.exists, timeout=GET_TIMEOUT_S)

        attempts = tmp_path / "attempts"
        with pytest.raises(OutOfMemoryError) as info:
            ray.get(allocate.options(max_retries=1).remote(3 * GiB, 60, str(attempts)), timeout=90)
        # Killed once, retried once (in a new worker), killed again.
        pids = attempts.read_text().split()
        assert len(pids) == 2 and pids[0] != pids[1]
        wait_for_condition(lambda: not any(psutil.pid_exists(int(pid)) for pid in pids))
        message = str(info.value)
        assert "memory" in message.lower()
        assert "memory_usage_threshold" in message

        # The older task was not chosen: it finishes when told to.
        go.touch()
        assert ray.get(older, timeout=GET_TIMEOUT_S) not in map(int, pids)
        # The actor holding memory was not chosen, and still answers.
        assert psutil.pid_exists(actor_pid)
        assert ray.get(ballast.total.remote(), timeout=GET_TIMEOUT_S) == 256 * MiB // 4096
        # The node is alive, and other tasks run afterwards.
        assert [n["Alive"] for n in ray.nodes()] == [True]
        assert ray.get(allocate.remote(MiB, 0), timeout=GET_TIMEOUT_S) == 10
        assert (
            ray.get([allocate.remote(1024, 0) for _ in range(4)], timeout=GET_TIMEOUT_S) == [10] * 4
        )
    finally:
        ray.shutdown()


# -- the state API and `solray memory` ----------------------------------------------


def test_list_objects_describes_objects(ray_start, tmp_path):
    large = ray.put(np.zeros(MiB, dtype=np.uint8))
    small = ray.put("x")
    (row,) = listed(large)
    assert row["object_id"] == large.hex()
    assert row["object_size"] >= MiB
    assert row["location"] == "shared_memory"
    assert row["is_owner"] is True
    assert row["reference_type"] == "LOCAL_REFERENCE"
    assert row["owner"] == large.owner_address
    assert row["type"] == "DRIVER" and row["pid"] == os.getpid()
    (row,) = listed(small)
    assert row["location"] == "memory" and 0 < row["object_size"] < 1024

    # A ref only held inside another object.
    inner = ray.put(np.ones(MiB, dtype=np.uint8))
    outer = ray.put([inner])
    inner_hex = inner.hex()
    del inner
    gc.collect()
    (row,) = list_objects(filters=[("object_id", "=", inner_hex)])
    assert row["reference_types"] == ["CAPTURED_IN_OBJECT"]
    assert row["reference_type"] == "CAPTURED_IN_OBJECT"
    (row,) = listed(outer)
    assert row["reference_types"] == ["LOCAL_REFERENCE"]

    # A ref only a pending task holds (nested in its argument).
    go = tmp_path / "go"

    @ray.remote
    def wait_for(path, box):
        wait_for_file(path)
        return len(box)

    arg = ray.put("argument")
    arg_hex = arg.hex()
    pending = wait_for.remote(str(go), [arg])
    del arg
    gc.collect()
    # The owner's row (the task's worker, once it runs, lists its borrow too).
    rows = list_objects(filters=[("object_id", "=", arg_hex)])
    (row,) = [row for row in rows if row["is_owner"]]
    assert row["reference_type"] == "USED_BY_PENDING_TASK", row
    (row,) = listed(pending)
    assert row["reference_type"] == "LOCAL_REFERENCE" and row["task_status"] == "PENDING"
    go.touch()
    assert ray.get(pending, timeout=GET_TIMEOUT_S) == 1
    del pending

    # A ref an actor keeps shows both sides: the owner and the borrower.
    @ray.remote
    class Keeper:
        def keep(self, box):
            self.box = box
            return True

    keeper = Keeper.remote()
    assert ray.get(keeper.keep.remote([large]))
    rows = listed(large)
    assert {row["type"] for row in rows} == {"DRIVER", "WORKER"}
    (owner_row,) = [row for row in rows if row["is_owner"]]
    (borrower_row,) = [row for row in rows if not row["is_owner"]]
    assert owner_row["borrowers"] and "BORROWED" in owner_row["reference_types"]
    assert borrower_row["owner"] == large.owner_address

    # Freed objects disappear.
    del large, small, outer, keeper
    gc.collect()
    wait_for_condition(
        lambda: not list_objects(limit=10_000),
        message=lambda: f"objects still listed: {list_objects(limit=10_000)}",
    )


def test_call_sites_are_recorded_when_asked(leak_check, monkeypatch):
    monkeypatch.setenv("SOLRAY_RECORD_REF_CREATION_SITES", "1")
    ray.init(num_cpus=1)
    try:
        line = sys._getframe().f_lineno + 1
        ref = ray.put("where was I made")

        @ray.remote
        def task():
            return 1

        task_line = sys._getframe().f_lineno + 1
        task_ref = task.remote()
        ray.get(task_ref)
        (row,) = listed(ref)
        assert f"{os.path.basename(__file__)}:{line}" in row["call_site"], row["call_site"]
        (row,) = listed(task_ref)
        assert f"{os.path.basename(__file__)}:{task_line}" in row["call_site"]
    finally:
        ray.shutdown()


def test_call_sites_are_not_recorded_by_default(ray_start):
    ref = ray.put("x")
    (row,) = listed(ref)
    assert row["call_site"] == ""


def solray_memory(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "solray.cli", "memory", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("ray_start", [SMALL_STORE], indirect=True)
def test_solray_memory_cli(ray_start):
    session_dir = ray_start["session_dir"]
    large = ray.put(np.zeros(2 * MiB, dtype=np.uint8))
    small = ray.put("small")
    result = solray_memory("--session-dir", session_dir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert large.hex() in out and small.hex() in out
    assert "shared_memory" in out and "LOCAL_REFERENCE" in out
    assert "2 objects" in out
    assert "Object store:" in out
    line = next(line for line in out.splitlines() if large.hex() in line)
    assert "MiB" in line and f"driver {os.getpid()}" in line

    # --limit cuts the listing.
    limited = solray_memory("--session-dir", session_dir, "--limit", "1")
    assert limited.returncode == 0, limited.stderr
    assert "1 more" in limited.stdout

    del large
    gc.collect()
    wait_for_condition(
        lambda: [row["object_id"] for row in list_objects(limit=10_000)] == [small.hex()]
    )
    out = solray_memory("--session-dir", session_dir).stdout
    assert small.hex() in out and "1 objects" in out


def test_solray_memory_without_a_cluster(leak_check, tmp_path):
    # A session that never existed, and one whose cluster has stopped.
    result = solray_memory("--session-dir", str(tmp_path / "no-such-session"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Could not find" in result.stderr or "no running" in result.stderr.lower()

    info = ray.init(num_cpus=1)
    ray.shutdown()
    result = solray_memory("--session-dir", info["session_dir"])
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Could not find" in result.stderr

    result = solray_memory("--temp-dir", str(tmp_path))
    assert result.returncode != 0
    assert "Could not find" in result.stderr and "Traceback" not in result.stderr
