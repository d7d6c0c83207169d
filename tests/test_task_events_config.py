"""Task events under cluster-wide settings: the control store's bounds
(task_events_max_num_task_in_gcs, task_events_max_num_task_per_job) and
recording switched off
(task_events_report_interval_ms=0). Each test starts a cluster of its own
with the setting in its environment, as a user would set it.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import wait_for_condition
from test_client import head, run_client  # noqa: F401  (the head is a fixture)

import solray
from solray._private import context
from solray._private.protocol import Msg
from solray.util.state import RayStateApiException, list_tasks

BATCH_TIMEOUT_S = 30


def task_hex(ref) -> str:
    return ref.binary()[:24].hex()


def tasks_of(function: str) -> dict:
    """The control store's raw LIST_TASKS reply for one function's attempts."""
    body = {"filters": [["func_or_class_name", "=", function]], "limit": 1000, "detail": False}
    return context.require_core_worker().request("control", Msg.LIST_TASKS, body)


def test_the_bound_evicts_and_counts_drops(leak_check, monkeypatch):
    monkeypatch.setenv("SOLRAY_task_events_max_num_task_in_gcs", "50")
    solray.init(num_cpus=2)
    try:

        @solray.remote
        def tiny(i):
            return i

        refs = [tiny.remote(i) for i in range(80)]
        assert solray.get(refs) == list(range(80))
        seen: dict = {}

        def all_finished():
            seen.update(tasks_of("tiny"))
            return seen["num_filtered"] and all(r["state"] == "FINISHED" for r in seen["tasks"])

        # 80 tasks and the driver: 81 attempts for 50 places.
        wait_for_condition(
            lambda: all_finished() and seen["dropped"] >= 31, timeout=BATCH_TIMEOUT_S,
            message=lambda: f"reply: {seen}",
        )  # fmt: skip
        assert seen["total"] == 50
        # The newest tasks are kept (the oldest finished ones went first).
        kept = {r["task_id"] for r in seen["tasks"]}
        assert task_hex(refs[-1]) in kept and task_hex(refs[0]) not in kept
        with pytest.raises(RayStateApiException, match="dropped"):
            list_tasks()
        with pytest.warns(UserWarning, match="task_events_max_num_task_in_gcs"):
            rows = list_tasks(raise_on_missing_output=False, limit=1000)
        assert len(rows) == 50
    finally:
        solray.shutdown()


FLOOD = """
import sys
import solray

solray.init(address=sys.argv[1])

@solray.remote
def flood(i):
    return i

print(sum(solray.get([flood.remote(i) for i in range(60)])))
solray.shutdown()
"""


def test_a_job_that_floods_evicts_its_own_attempts_only(leak_check, monkeypatch):
    monkeypatch.setenv("SOLRAY_task_events_max_num_task_per_job", "30")
    solray.init(num_cpus=2)
    try:

        @solray.remote
        def kept(i):
            return i

        assert solray.get([kept.remote(i) for i in range(5)]) == list(range(5))
        wait_for_condition(lambda: tasks_of("kept")["num_filtered"] == 5, timeout=BATCH_TIMEOUT_S)
        address = solray.get_runtime_context().gcs_address
        other = subprocess.run(
            [sys.executable, "-c", FLOOD, address], capture_output=True, text=True, timeout=120
        )
        assert other.returncode == 0, other.stderr
        assert other.stdout.strip() == str(sum(range(60)))
        # The other job's 60 tasks and its driver: 61 attempts for 30 places
        # of that job; this job's attempts stay.
        wait_for_condition(
            lambda: tasks_of("flood")["dropped"] >= 31, timeout=BATCH_TIMEOUT_S,
            message=lambda: f"reply: {tasks_of('flood')}",
        )  # fmt: skip
        assert tasks_of("kept")["num_filtered"] == 5
        assert tasks_of("flood")["num_filtered"] <= 30
    finally:
        solray.shutdown()


def test_events_switched_off_for_the_cluster(leak_check, monkeypatch):
    monkeypatch.setenv("RAY_task_events_report_interval_ms", "0")
    solray.init(num_cpus=2)
    try:

        @solray.remote
        def unrecorded():
            return 1

        assert solray.get([unrecorded.remote() for _ in range(3)]) == [1, 1, 1]
        # Nothing is recorded: still nothing after two report intervals (the
        # default 1 s), by when a recording process would have sent them.
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert list_tasks(raise_on_missing_output=False) == []
            time.sleep(0.1)
    finally:
        solray.shutdown()


def test_task_state_and_timeline_through_a_ray_client(head):  # noqa: F811
    """A thin client asks its proxy driver, as list_actors does, and writes
    the timeline on its own machine."""
    out = run_client(
        head,
        """
        import json, tempfile
        from solray.util.state import get_task, list_tasks, summarize_tasks

        ray.init(ADDRESS)

        @ray.remote
        def through_client(x):
            return x * 2

        ref = through_client.remote(21)
        assert ray.get(ref) == 42
        wait_for_condition(
            lambda: [r["state"] for r in list_tasks(
                filters=[("func_or_class_name", "=", "through_client")])] == ["FINISHED"],
            timeout=30,
        )
        assert get_task(ref)["name"] == "through_client"
        summary = summarize_tasks()["cluster"]["summary"]
        assert summary["through_client"]["state_counts"] == {"FINISHED": 1}
        path = tempfile.mktemp(suffix=".json")
        ray.timeline(filename=path)
        with open(path) as f:
            names = [e["name"] for e in json.load(f) if e["ph"] == "X"]
        assert "through_client" in names, names
        print("CLIENT TASKS OK")
        """,
    )
    assert "CLIENT TASKS OK" in out
