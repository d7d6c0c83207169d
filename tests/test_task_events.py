"""Task events, the task state API and the timeline, on real clusters.

Every task and actor call records Ray's TaskStatus states where they happen
(the owner's submission states, the worker's running and end states); the
control store merges them per attempt. These tests read them the way a user
does: `util.state.list_tasks` / `get_task` / `summarize_tasks`,
`solray.timeline()` and `solray timeline`. Events reach the control store in
batches (once a second), so every read waits for the state it expects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import barrier, wait_for_condition, wait_for_file

from solray._private import context
from solray._private.protocol import Msg
from solray.util.state import (
    get_task,
    list_tasks,
    summarize_tasks,
)

SHARED_CLUSTER = {"num_cpus": 2}
BATCH_TIMEOUT_S = 30  # events come once a second; the machine may be busy


def rows_of(func_or_class_name: str, **kwargs) -> list[dict]:
    return list_tasks(
        filters=[("func_or_class_name", "=", func_or_class_name)], detail=True, **kwargs
    )


def wait_for_rows(func_or_class_name: str, predicate) -> list[dict]:
    """The rows of that function once `predicate(rows)` holds."""
    found: list = []

    def check():
        found[:] = rows_of(func_or_class_name)
        return predicate(found)

    wait_for_condition(
        check, timeout=BATCH_TIMEOUT_S, message=lambda: f"rows of {func_or_class_name}: {found}"
    )
    return found


# A task's states, from submission to its end, when nothing goes wrong.
FULL_LIFE = [
    "PENDING_ARGS_AVAIL",
    "PENDING_NODE_ASSIGNMENT",
    "SUBMITTED_TO_WORKER",
    "RUNNING",
    "FINISHED",
]


def states(row: dict) -> list[str]:
    return [e["state"] for e in row["events"]]


def task_hex(ref) -> str:
    return ref.binary()[:24].hex()


def test_a_normal_task_records_its_states_node_and_worker(ray):
    @ray.remote
    def where():
        ctx = ray.get_runtime_context()
        return os.getpid(), ctx.get_worker_id(), ctx.get_node_id()

    ref = where.remote()
    pid, worker_id, node_id = ray.get(ref)
    (row,) = wait_for_rows("where", lambda rows: rows and states(rows[0]) == FULL_LIFE)
    assert row["task_id"] == task_hex(ref)
    assert row["type"] == "NORMAL_TASK" and row["name"] == "where"
    assert row["attempt_number"] == 0
    assert (row["worker_pid"], row["worker_id"], row["node_id"]) == (pid, worker_id, node_id)
    assert row["job_id"] == ray.get_runtime_context().get_job_id()
    times = [e["created_ms"] for e in row["events"]]
    assert times == sorted(times)
    assert row["creation_time_ms"] <= row["start_time_ms"] <= row["end_time_ms"]
    assert row["required_resources"] == {"CPU": 1.0}
    assert row["error_type"] is None
    # Its parent is the driver, a task of its own (Ray's DRIVER_TASK).
    (driver,) = list_tasks(filters=[("task_id", "=", row["parent_task_id"])])
    assert driver["type"] == "DRIVER_TASK" and driver["state"] == "RUNNING"
    assert driver["worker_pid"] == os.getpid()


def test_a_failing_task_records_its_error(ray):
    @ray.remote(max_retries=0)
    def fails():
        raise ValueError("the input was bad")

    with pytest.raises(ValueError):
        ray.get(fails.remote())
    (row,) = wait_for_rows("fails", lambda rows: rows and rows[0]["state"] == "FAILED")
    assert row["error_type"] == "TASK_EXECUTION_EXCEPTION"
    assert "the input was bad" in row["error_message"]
    assert states(row)[-2:] == ["RUNNING", "FAILED"]


def test_a_retried_task_has_one_row_per_attempt(ray, tmp_path):
    marker = str(tmp_path / "failed-once")

    @ray.remote(max_retries=2, retry_exceptions=True)
    def flaky():
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("first attempt fails")
        return "ok"

    ref = flaky.remote()
    assert ray.get(ref) == "ok"
    rows = wait_for_rows("flaky", lambda rows: [r["state"] for r in rows] == ["FAILED", "FINISHED"])
    assert [r["attempt_number"] for r in rows] == [0, 1]
    assert {r["task_id"] for r in rows} == {task_hex(ref)}
    assert rows[0]["error_type"] == "TASK_EXECUTION_EXCEPTION"
    attempts = get_task(ref)  # Ray: the list of attempts when there are several
    assert isinstance(attempts, list)
    assert [a["attempt_number"] for a in attempts] == [0, 1]


def test_a_cancelled_task_is_failed_with_task_cancelled(ray, tmp_path):
    never = str(tmp_path / "never")

    @ray.remote
    def blocked():
        wait_for_file(never, timeout=60)

    ref = blocked.remote()
    wait_for_rows("blocked", lambda rows: rows and rows[0]["state"] == "RUNNING")
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref)
    (row,) = wait_for_rows("blocked", lambda rows: rows and rows[0]["state"] == "FAILED")
    assert row["error_type"] == "TASK_CANCELLED"


def test_actor_creation_and_calls(ray):
    @ray.remote
    class Counter:
        def __init__(self, start):
            self.n = start

        def add(self, k):
            self.n += k
            return self.n

    counter = Counter.remote(10)
    assert ray.get([counter.add.remote(1), counter.add.remote(2)]) == [11, 13]
    actor_id = counter._actor_id.hex()
    (creation,) = wait_for_rows(
        "Counter.__init__", lambda rows: rows and rows[0]["state"] == "FINISHED"
    )
    assert creation["type"] == "ACTOR_CREATION_TASK" and creation["actor_id"] == actor_id
    call_life = [
        "PENDING_ARGS_AVAIL",
        "SUBMITTED_TO_WORKER",
        "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY",
        "RUNNING",
        "FINISHED",
    ]
    calls = wait_for_rows("Counter.add", lambda rows: [states(r) for r in rows] == [call_life] * 2)
    for call in calls:
        assert call["type"] == "ACTOR_TASK" and call["name"] == "Counter.add"
        assert call["actor_id"] == actor_id
        assert call["worker_pid"] == creation["worker_pid"]


def test_a_task_waiting_for_its_argument_is_pending_args_avail(ray, tmp_path):
    release = str(tmp_path / "release")

    @ray.remote
    def produce():
        wait_for_file(release, timeout=60)
        return 41

    @ray.remote
    def consume(x):
        return x + 1

    ref = consume.remote(produce.remote())
    (row,) = wait_for_rows(
        "consume", lambda rows: rows and rows[0]["state"] == "PENDING_ARGS_AVAIL"
    )
    assert states(row) == ["PENDING_ARGS_AVAIL"]
    open(release, "w").close()
    assert ray.get(ref) == 42
    # The worker's batch and ours arrive in either order; the events end up
    # in time order.
    wait_for_rows("consume", lambda rows: rows and states(rows[0]) == FULL_LIFE)


def test_filters_and_limit_are_applied_by_the_control_store(ray):
    @ray.remote
    def numbered(i):
        return i

    ray.get([numbered.remote(i) for i in range(5)])
    wait_for_rows("numbered", lambda rows: [r["state"] for r in rows] == ["FINISHED"] * 5)
    assert len(rows_of("numbered", limit=2)) == 2
    others = list_tasks(filters=[("func_or_class_name", "!=", "numbered")], limit=10_000)
    assert others and all(r["func_or_class_name"] != "numbered" for r in others)
    both = list_tasks(filters=[("func_or_class_name", "=", "numbered"), ("state", "=", "FINISHED")])
    assert len(both) == 5
    # The wire contract the dashboard reads: only `limit` rows travel.
    cw = context.require_core_worker()
    body = {"filters": [["func_or_class_name", "=", "numbered"]], "limit": 2, "detail": False}
    reply = cw.request("control", Msg.LIST_TASKS, body)
    assert len(reply["tasks"]) == 2 and reply["num_filtered"] == 5
    assert reply["total"] >= 5 and reply["dropped"] == 0
    assert "events" not in reply["tasks"][0]
    with pytest.raises(ValueError, match="predicate"):
        list_tasks(filters=[("state", ">", "RUNNING")])


def test_enable_task_events_false_records_nothing_for_that_actor(ray):
    @ray.remote(enable_task_events=False)
    class Quiet:
        def ping(self):
            return os.getpid()

    @ray.remote(enable_task_events=False)
    def quiet_task():
        return 1

    quiet = Quiet.remote()
    ray.get([quiet.ping.remote(), quiet_task.remote()])
    # A later call of the same actor, in the same processes, with events on:
    # once it is visible, anything recorded before it would be too.
    ray.get(quiet.ping.options(enable_task_events=True).remote())
    wait_for_rows("Quiet.ping", lambda rows: rows and rows[0]["state"] == "FINISHED")
    assert len(rows_of("Quiet.ping")) == 1
    assert rows_of("Quiet.__init__") == []
    assert rows_of("quiet_task") == []


def test_get_task_and_summarize_tasks(ray):
    @ray.remote
    def summed():
        return 1

    @ray.remote(max_retries=0)
    def broken():
        raise KeyError("x")

    ref = summed.remote()
    ray.get([ref, summed.remote()])
    with pytest.raises(KeyError):
        ray.get(broken.remote())
    wait_for_rows("summed", lambda rows: [r["state"] for r in rows] == ["FINISHED"] * 2)
    wait_for_rows("broken", lambda rows: rows and rows[0]["state"] == "FAILED")
    one = get_task(ref)
    assert isinstance(one, dict) and one["task_id"] == task_hex(ref)
    assert get_task(task_hex(ref)) == one
    assert get_task("00" * 24) is None
    summary = summarize_tasks()["cluster"]
    assert summary["summary_by"] == "func_name"
    assert summary["summary"]["summed"] == {
        "func_or_class_name": "summed",
        "type": "NORMAL_TASK",
        "state_counts": {"FINISHED": 2},
    }
    assert summary["summary"]["broken"]["state_counts"] == {"FAILED": 1}
    # Counted where the events are kept, over every attempt: the same as the rows.
    normal = list_tasks(filters=[("type", "=", "NORMAL_TASK")], limit=100_000)
    assert summary["total_tasks"] == len(normal) >= 3


def test_timeline_has_a_slice_per_task_on_its_workers_row(ray, tmp_path):
    gate = str(tmp_path / "gate")
    os.mkdir(gate)

    @ray.remote
    def traced(n):
        barrier(gate, 2)  # two at once: two workers
        time.sleep(0.05)  # the work being traced
        return os.getpid()

    @ray.remote
    class Tracer:
        def step(self, payload):
            return len(payload)

    pids = set(ray.get([traced.remote(i) for i in range(2)]))
    assert len(pids) == 2
    tracer = Tracer.remote()
    assert ray.get(tracer.step.remote(b"x" * 5000)) == 5000
    wait_for_rows("traced", lambda rows: [r["state"] for r in rows] == ["FINISHED"] * 2)
    wait_for_rows("Tracer.step", lambda rows: rows and rows[0]["state"] == "FINISHED")

    trace = ray.timeline()
    slices = [e for e in trace if e["ph"] == "X"]
    mine = [e for e in slices if e["name"] == "traced"]
    assert len(mine) == 2
    assert {e["tid"] for e in mine} == pids  # one row per worker
    assert all(e["dur"] >= 50_000 for e in mine)  # microseconds
    (step,) = [e for e in slices if e["name"] == "Tracer.step"]
    assert step["dur"] > 0 and step["args"]["args_bytes"] > 5000
    assert "queued_at_worker_ms" in step["args"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace if e["name"] == "thread_name"}
    assert all((e["pid"], e["tid"]) in names for e in slices)

    path = tmp_path / "trace.json"
    assert ray.timeline(filename=str(path)) is None
    written = json.loads(path.read_text())
    assert {e["name"] for e in written if e["ph"] == "X"} >= {"traced", "Tracer.step"}

    # The CLI, as a user runs it against this cluster.
    out_path = tmp_path / "cli-trace.json"
    address = ray.get_runtime_context().gcs_address
    out = subprocess.run(
        [sys.executable, "-m", "solray.cli", "timeline", "--address", address,
         "--output", str(out_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert str(out_path) in out.stdout
    cli_slices = [e for e in json.loads(out_path.read_text()) if e["ph"] == "X"]
    assert len([e for e in cli_slices if e["name"] == "traced"]) == 2
