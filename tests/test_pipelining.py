"""Pipelined tasks (task_submitter.py): a leased worker whose last task was
short gets the next tasks of a burst before it answers. What a user must
not see of it: a task stuck behind one that waits for it, or behind one
that turned out long while another worker is idle, a forced cancel of a
queued task killing the task running ahead of it, a task run twice or
charged a retry because the worker died under the task ahead of it.

Each test first runs a burst of tiny tasks on the one CPU, so the lease is
"fast", then pushes a task that holds the worker and one behind it, and
waits (with a deadline) until the state API shows the second one
SUBMITTED_TO_WORKER: with the only CPU held, that happens only if it was
pipelined, so each test checks the path it means to.
"""

from __future__ import annotations

import os
import pathlib
import signal

import pytest
from conftest import wait_for_condition, wait_for_file

import solray as ray
from solray.exceptions import TaskCancelledError
from solray.util.state import explain_pending, list_tasks

GET_TIMEOUT_S = 60


@ray.remote
def tiny():
    return 1


@ray.remote
def hold(started, release, runs):
    """Holds the worker (not in a get or wait) until `release` exists."""
    with open(runs, "a") as f:
        f.write(f"{os.getpid()}\n")
    pathlib.Path(started).touch()
    wait_for_file(release, timeout=60.0)
    return "held"


@ray.remote
def behind(runs):
    with open(runs, "a") as f:
        f.write("ran\n")
    return "behind"


@ray.remote(num_cpus=0)
class Signal:
    def __init__(self):
        self.sent = False

    def send(self):
        self.sent = True

    def sent_yet(self):
        return self.sent


@ray.remote
def waits_for(signal):
    """Blocks in get (a loop of them) until the signal is sent."""
    while not ray.get(signal.sent_yet.remote()):
        pass
    return "waited"


@ray.remote
def waits_on_future(signal):
    """The same, waiting on each ref's future instead of in get."""
    while not signal.sent_yet.remote().future().result():
        pass
    return "waited"


def warm_up() -> None:
    """A burst of tiny tasks: the lease's last task is short."""
    assert sum(ray.get([tiny.remote() for _ in range(200)], timeout=GET_TIMEOUT_S)) == 200


def pushed_to_worker(ref) -> bool:
    rows = list_tasks(filters=[("task_id", "=", ref.task_id())])
    return bool(rows) and rows[0]["state"] in ("SUBMITTED_TO_WORKER", "RUNNING", "FINISHED")


def lines(path: pathlib.Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("ray_start", [{"num_cpus": 1}], indirect=True)
def test_a_task_queued_behind_one_that_blocks_runs_elsewhere(ray_start):
    """The task ahead blocks in get until the driver has the second task's
    result: the second must not wait on the worker behind it."""
    signal = Signal.remote()
    assert ray.get(signal.sent_yet.remote(), timeout=GET_TIMEOUT_S) is False
    warm_up()
    ahead = waits_for.remote(signal)
    second = tiny.remote()
    assert ray.get(second, timeout=GET_TIMEOUT_S) == 1
    ray.get(signal.send.remote(), timeout=GET_TIMEOUT_S)
    assert ray.get(ahead, timeout=GET_TIMEOUT_S) == "waited"


@ray.remote(num_cpus=1)
class CPUHolder:
    def ready(self):
        return True


@pytest.mark.parametrize("ray_start", [{"num_cpus": 2}], indirect=True)
def test_a_task_queued_behind_one_waiting_on_a_future_runs_elsewhere(ray_start):
    """As above, with the task ahead waiting on refs' futures, which (as in
    Ray) keeps its CPU: an actor holds the other CPU until the second task
    was pipelined, then frees it for the second task to run on."""
    holder = CPUHolder.remote()
    assert ray.get(holder.ready.remote(), timeout=GET_TIMEOUT_S)
    signal = Signal.remote()
    assert ray.get(signal.sent_yet.remote(), timeout=GET_TIMEOUT_S) is False
    warm_up()
    ahead = waits_on_future.remote(signal)
    second = tiny.remote()
    wait_for_condition(
        lambda: pushed_to_worker(second), message="the second task was not pipelined"
    )
    ray.kill(holder)
    assert ray.get(second, timeout=GET_TIMEOUT_S) == 1
    ray.get(signal.send.remote(), timeout=GET_TIMEOUT_S)
    assert ray.get(ahead, timeout=GET_TIMEOUT_S) == "waited"


@pytest.mark.parametrize("ray_start", [{"num_cpus": 1}], indirect=True)
@pytest.mark.parametrize("force", [False, True])
def test_cancelling_a_queued_task_leaves_the_one_ahead_running(ray_start, tmp_path, force):
    started, release = tmp_path / "started", tmp_path / "release"
    held_runs, behind_runs = tmp_path / "held", tmp_path / "behind"
    warm_up()
    ahead = hold.remote(str(started), str(release), str(held_runs))
    queued = behind.remote(str(behind_runs))
    wait_for_condition(started.exists, message="the first task never started")
    wait_for_condition(
        lambda: pushed_to_worker(queued), message="the second task was not pipelined"
    )
    ray.cancel(queued, force=force)
    with pytest.raises(TaskCancelledError):
        ray.get(queued, timeout=GET_TIMEOUT_S)
    release.touch()
    assert ray.get(ahead, timeout=GET_TIMEOUT_S) == "held"
    assert len(lines(held_runs)) == 1  # its worker was not killed, nor the task run again
    assert lines(behind_runs) == []


def finish_behind_a_holder(tmp_path: pathlib.Path, n: int) -> None:
    """Push a task that holds its worker, then `n` tasks: they all finish
    while it still holds, and each runs once."""
    started, release = tmp_path / "started", tmp_path / "release"
    held_runs, behind_runs = tmp_path / "held", tmp_path / "behind"
    ahead = hold.remote(str(started), str(release), str(held_runs))
    queued = [behind.remote(str(behind_runs)) for _ in range(n)]
    assert ray.get(queued, timeout=GET_TIMEOUT_S) == ["behind"] * n
    assert ray.wait([ahead], timeout=0)[0] == []  # it still holds its worker
    release.touch()
    assert ray.get(ahead, timeout=GET_TIMEOUT_S) == "held"
    assert len(lines(held_runs)) == 1
    assert lines(behind_runs) == ["ran"] * n


@pytest.mark.parametrize("ray_start", [{"num_cpus": 2}], indirect=True)
def test_tasks_queued_behind_a_long_one_move_to_the_idle_worker(ray_start, tmp_path):
    """Two workers, both fast: the tasks pushed behind one that holds its
    worker are taken back for the other, idle worker."""
    warm_up()
    finish_behind_a_holder(tmp_path, 20)


@pytest.mark.parametrize("ray_start", [{"num_cpus": 2}], indirect=True)
def test_tasks_queued_behind_a_long_one_get_a_worker_of_their_own(ray_start, tmp_path):
    """One leased worker (its tasks ran one after another, so fast), and
    a CPU free: the tasks pushed behind one that holds that worker are
    taken back once the owner has leased the other CPU's worker for them."""
    for _ in range(50):
        assert ray.get(tiny.remote(), timeout=GET_TIMEOUT_S) == 1
    finish_behind_a_holder(tmp_path, 10)


@ray.remote
def consume(value):
    return value


@pytest.mark.parametrize("ray_start", [{"num_cpus": 1}], indirect=True)
def test_why_says_a_task_waits_behind_the_one_its_worker_runs(ray_start, tmp_path):
    started, release = tmp_path / "started", tmp_path / "release"
    warm_up()
    ahead = hold.remote(str(started), str(release), str(tmp_path / "held"))
    queued = behind.remote(str(tmp_path / "behind"))
    consumer = consume.remote(queued)
    wait_for_condition(
        lambda: pushed_to_worker(queued), message="the second task was not pipelined"
    )
    (entry,) = [e for e in explain_pending() if e["id"] == consumer.task_id()]
    assert entry["message"].startswith(
        f"waiting for argument ref {queued.hex()} produced by task behind() pushed to a "
        "worker on node "
    )
    assert entry["message"].endswith("waiting there behind the task that worker runs")
    release.touch()
    assert ray.get([ahead, consumer], timeout=GET_TIMEOUT_S) == ["held", "behind"]


@pytest.mark.parametrize("ray_start", [{"num_cpus": 1}], indirect=True)
def test_worker_killed_under_the_task_ahead(ray_start, tmp_path):
    """SIGKILL the worker while a task waits behind the running one: the
    running one is retried (an attempt used); the waiting one, which never
    started, runs once, in its first attempt."""
    started, release = tmp_path / "started", tmp_path / "release"
    held_runs, behind_runs = tmp_path / "held", tmp_path / "behind"
    warm_up()
    ahead = hold.options(max_retries=1).remote(str(started), str(release), str(held_runs))
    queued = behind.options(max_retries=1).remote(str(behind_runs))
    wait_for_condition(started.exists, message="the first task never started")
    wait_for_condition(
        lambda: pushed_to_worker(queued), message="the second task was not pipelined"
    )
    started.unlink()
    os.kill(int(lines(held_runs)[0]), signal.SIGKILL)
    wait_for_condition(started.exists, message="the first task was not retried")
    release.touch()
    assert ray.get(ahead, timeout=GET_TIMEOUT_S) == "held"
    assert ray.get(queued, timeout=GET_TIMEOUT_S) == "behind"
    assert len(lines(held_runs)) == 2
    assert lines(behind_runs) == ["ran"]
    wait_for_condition(
        lambda: (
            [r["state"] for r in attempts(ahead)] == ["FAILED", "FINISHED"]
            and [r["state"] for r in attempts(queued)] == ["FINISHED"]
        ),
        message="attempts as the state API shows them",
    )


def attempts(ref) -> list[dict]:
    rows = list_tasks(filters=[("task_id", "=", ref.task_id())])
    return sorted(rows, key=lambda r: r["attempt_number"])
