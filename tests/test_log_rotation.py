"""Worker log files rotate as Ray's do (RAY_ROTATION_MAX_BYTES,
RAY_ROTATION_BACKUP_COUNT), and the state API still finds every line it
should: an actor's tail, a task's lines in a rotated file."""

from __future__ import annotations

import os

import pytest
from conftest import wait_for_condition

import solray
from solray._private import context
from solray.util import state

LINE = "x" * 60


@solray.remote
class Chatty:
    def say(self, tag: str, n: int) -> int:
        for i in range(n):
            print(f"{tag} {i:04d} {LINE}")
        return os.getpid()


@solray.remote
def task_lines(tag: str) -> str:
    print(f"{tag} from a task")
    return solray.get_runtime_context().get_task_id()


def test_worker_logs_rotate_and_stay_readable(leak_check, monkeypatch):
    monkeypatch.setenv("RAY_ROTATION_MAX_BYTES", "4000")
    monkeypatch.setenv("RAY_ROTATION_BACKUP_COUNT", "2")
    solray.init(num_cpus=1, log_to_driver=False)
    chatty = Chatty.remote()
    pid = solray.get(chatty.say.remote("first", 1))
    actor_id = chatty._actor_id.hex()
    solray.get(chatty.say.remote("bulk", 300))  # ~21 kB: five files' worth
    solray.get(chatty.say.remote("last", 3))
    base = [n for n in state.list_logs()["worker_out"] if n.endswith(f"-{pid}.out")][0]

    log_dir = context.require_core_worker().node_info["log_dir"]

    def sizes() -> dict[str, int]:
        return {
            name: os.path.getsize(os.path.join(log_dir, name))
            for name in os.listdir(log_dir)
            if name.startswith(base)
        }

    wait_for_condition(
        lambda: any(state.get_log(actor_id=actor_id, tail=1)),
        message="the actor's last line in its log",
    )
    files = sizes()
    assert sorted(files) == [base, base + ".1", base + ".2"], files  # two kept, older deleted
    assert all(size <= 4000 for size in files.values()), files
    assert state.list_logs()["worker_out"].count(base + ".1") == 1  # listed as the worker's
    assert list(state.get_log(actor_id=actor_id, tail=2)) == [
        f"last 0001 {LINE}\n",
        f"last 0002 {LINE}\n",
    ]
    solray.kill(chatty)

    # A task's lines, written before its worker's file rotated, are still
    # found in the rotated file.
    task_id = solray.get(task_lines.remote("early"))
    solray.get([task_lines.remote(f"filler {i} {LINE}") for i in range(80)])
    wait_for_condition(
        lambda: list(state.get_log(task_id=task_id)) == ["early from a task\n"],
        message=lambda: f"the task's line: {list(state.get_log(task_id=task_id))}",
    )
    solray.shutdown()


@pytest.mark.parametrize(
    "name, value", [("RAY_ROTATION_MAX_BYTES", "lots"), ("RAY_ROTATION_BACKUP_COUNT", "-1")]
)
def test_a_bad_rotation_setting_is_refused_naming_it(leak_check, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name} must be a whole number >= 0, not '{value}'"):
        solray.init(num_cpus=1)
