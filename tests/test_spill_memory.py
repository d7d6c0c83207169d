"""Memory beyond reference counting, on a real local cluster: spilling a full
object store to disk and reading it back, a put larger than the store,
objects of an owner that died, the memory monitor killing tasks (never
actors) when the node runs low, and what the state API and `solray memory`
show about objects.
"""

from __future__ import annotations

import gc
import os
import re
import signal
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
    directory = stats["spill_dir"]
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
    assert all(os.path.getsize(os.path.join(stats["spill_dir"], h)) >= n_bytes for h in spilled)

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


def test_spill_directory_from_system_config(leak_check, tmp_path):
    spill_dir = tmp_path / "spill-here"
    ray.init(
        num_cpus=1,
        object_store_memory=STORE,
        _system_config={"object_spilling_directory": str(spill_dir)},
    )
    try:
        stats = store_stats()
        assert os.path.realpath(stats["spill_dir"]) == os.path.realpath(spill_dir)
        n_bytes = 25 * MiB
        refs = [ray.put(array(i, n_bytes)) for i in range(6)]
        files = sorted(os.listdir(spill_dir))
        assert files and set(files) <= {ref.hex() for ref in refs}
        for i in range(len(refs)):
            check(i, ray.get(refs[i], timeout=GET_TIMEOUT_S), n_bytes)
        del refs
        wait_for_empty_store()
        assert os.listdir(spill_dir) == []
    finally:
        ray.shutdown()


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


def test_memory_monitor_kills_the_task_not_the_actor(leak_check, tmp_path):
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

        ballast = Ballast.remote()
        actor_pid = ray.get(ballast.pid.remote(), timeout=GET_TIMEOUT_S)

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

        # The actor holding memory was not chosen, and still answers.
        assert psutil.pid_exists(actor_pid)
        assert ray.get(ballast.total.remote(), timeout=GET_TIMEOUT_S) == 256 * MiB // 4096
        # Other tasks run afterwards.
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
    (row,) = list_objects(filters=[("object_id", "=", arg_hex)])
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
