"""`solray why` and `solray stack` on real local clusters: each test makes
something wait for a known reason, then asserts the words a user reads
(explain_pending(), the CLI's text and JSON) and, for stacks, the frame of
a task that is sleeping while the stack is taken.

Tasks coordinate through files (a task waits for a file the test writes),
never through sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import warnings

import pytest
from click.testing import CliRunner
from conftest import wait_for_condition, wait_for_file
from test_cluster_cli import solray_cli

import solray
from solray import cli
from solray.cluster_utils import Cluster
from solray.runtime_env import RuntimeEnvConfig
from solray.util.placement_group import placement_group, remove_placement_group
from solray.util.state import RayStateApiException, explain_pending, get_stacks

TIMEOUT = 60


def waiting_entry(predicate, timeout: float = TIMEOUT, complete: bool = True) -> dict:
    """The first explain_pending() entry matching `predicate`, once there is
    one; with `complete=False`, processes that did not answer are let go."""
    found = []

    def check() -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore" if not complete else "error")
            entries = explain_pending(raise_on_missing_output=complete)
        found[:] = [e for e in entries if predicate(e)]
        return bool(found)

    wait_for_condition(check, timeout=timeout, message="no such waiting entry")
    return found[0]


@solray.remote
def wait_for(path: str) -> int:
    wait_for_file(path, timeout=300)
    return os.getpid()


@solray.remote
def consume(value):
    return value


def test_a_task_needing_a_gpu_is_infeasible_naming_gpu(ray_start):
    @solray.remote(num_gpus=1)
    def train():
        return 1

    ref = train.remote()
    entry = waiting_entry(lambda e: e["name"] == "train")
    assert entry["kind"] == "task" and entry["reason"] == "infeasible"
    assert "needs {CPU: 1, GPU: 1}; no node has GPU" in entry["message"]
    assert entry["id"] == ref.task_id()

    text = CliRunner().invoke(cli.main, ["why"])
    assert text.exit_code == 0, text.output
    assert "Infeasible (1):" in text.output
    assert f"task train ({ref.task_id()}): needs {{CPU: 1, GPU: 1}}; no node has GPU" in (
        text.output
    )
    # From another process of the user, as a user types it: --address finds the token.
    as_json = solray_cli("why", "--address", ray_start["address"], "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    parsed = json.loads(as_json.stdout)
    assert [e["reason"] for e in parsed["waiting"] if e["name"] == "train"] == ["infeasible"]
    assert parsed["incomplete"] == []
    solray.cancel(ref)


def test_a_task_waits_for_the_argument_a_running_task_produces(ray_start, tmp_path):
    go = str(tmp_path / "go")
    produced = wait_for.remote(go)
    consumer = consume.remote(produced)
    entry = waiting_entry(lambda e: e["name"] == "consume" and "still running" in e["message"])
    assert entry["reason"] == "waiting for arguments"
    assert entry["id"] == consumer.task_id()
    assert entry["message"].startswith(
        f"waiting for argument ref {produced.hex()} produced by task wait_for() "
        "still running on node "
    )
    open(go, "w").close()
    assert solray.get(consumer, timeout=TIMEOUT) == solray.get(produced, timeout=TIMEOUT)
    wait_for_condition(lambda: not explain_pending(), message="work still listed as waiting")


def test_a_task_queued_behind_busy_cpus_names_them(ray_start, tmp_path):
    go = str(tmp_path / "go")
    busy = [wait_for.remote(go) for _ in range(3)]  # two CPUs: the third waits
    # Until both of the first two run, the node may hold one of them as a
    # lease being granted: the words settle once both run.
    entry = waiting_entry(
        lambda e: e["reason"] == "waiting for resources" and "2 tasks" in e["message"]
    )
    assert entry["name"] == "wait_for" and entry["kind"] == "task"
    assert entry["message"] == (
        "waiting for a worker: no free CPU on any node that fits it "
        "(2/2 in use by 2 tasks of wait_for)"
    )
    more = [wait_for.remote(go) for _ in range(2)]
    wait_for_condition(
        lambda: "  3 x task wait_for (first " in CliRunner().invoke(cli.main, ["why"]).output,
        timeout=TIMEOUT,
        message="three alike waiting tasks are not one line",
    )
    open(go, "w").close()
    solray.get(busy + more, timeout=TIMEOUT)


def test_an_actor_needing_an_unknown_resource_is_reported(ray_start):
    @solray.remote
    class Trainer:
        pass

    actor = Trainer.options(resources={"TPU_POD": 1}).remote()
    entry = waiting_entry(lambda e: e["kind"] == "actor")
    assert entry["name"] == "Trainer" and entry["reason"] == "infeasible"
    assert entry["id"] == actor._actor_id.hex()
    assert "no node has TPU_POD" in entry["message"]
    solray.kill(actor)


def test_an_actor_waits_for_its_constructor_argument_and_its_calls_for_it(ray_start, tmp_path):
    go = str(tmp_path / "go")

    @solray.remote(num_cpus=0)
    class Holder:
        def __init__(self, value):
            self.value = value

        def get(self):
            return self.value

    produced = wait_for.remote(go)
    actor = Holder.remote(produced)
    call = actor.get.remote()
    entry = waiting_entry(lambda e: e["kind"] == "actor" and "still running" in e["message"])
    assert entry["name"] == "Holder" and entry["reason"] == "waiting for arguments"
    assert entry["message"] == (
        f"constructor waiting for argument ref {produced.hex()} produced by task wait_for() "
        f"still running on node {entry['message'].rsplit('node ', 1)[1]}"
    )
    waiting_call = waiting_entry(lambda e: e["kind"] == "actor_task")
    assert waiting_call["name"] == "Holder.get" and waiting_call["reason"] == "waiting for an actor"
    assert waiting_call["message"].startswith("waiting for actor Holder (")
    assert waiting_call["message"].endswith("which is PENDING (see its own entry)")
    open(go, "w").close()
    assert solray.get(call, timeout=TIMEOUT) == solray.get(produced, timeout=TIMEOUT)


def test_a_pending_placement_group_names_the_bundle_that_fits_nowhere(ray_start):
    group = placement_group([{"CPU": 1}, {"CPU": 64}], name="too-big")
    entry = waiting_entry(lambda e: e["kind"] == "placement_group")
    assert entry["name"] == "too-big" and entry["reason"] == "infeasible"
    assert entry["message"].startswith("bundle 1 needs {CPU: 64}; the most CPU a node has is 2"), (
        entry["message"]
    )
    assert "bundle 0" not in entry["message"]
    remove_placement_group(group)


def test_an_actor_waits_for_its_placement_group(ray_start):
    group = placement_group([{"CPU": 64}], name="never")

    @solray.remote(num_cpus=1)
    class Member:
        pass

    from solray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    actor = Member.options(scheduling_strategy=PlacementGroupSchedulingStrategy(group)).remote()
    entry = waiting_entry(lambda e: e["kind"] == "actor")
    assert entry["reason"] == "waiting for a placement group"
    assert entry["message"].startswith("waiting for placement group never, which is PENDING")
    solray.kill(actor)
    remove_placement_group(group)


def test_a_worker_blocked_in_get_names_what_it_waits_for(ray_start, tmp_path):
    go = str(tmp_path / "go")

    @solray.remote
    def waiter(path):
        return solray.get(wait_for.remote(path))

    outer = waiter.remote(go)
    entry = waiting_entry(
        lambda e: e["kind"] == "get" and e["name"] == "waiter" and "still running" in e["message"]
    )
    assert entry["reason"] == "blocked in get()"
    message = entry["message"]
    assert message.startswith(f"task waiter() (pid {entry['owner_pid']}, thread MainThread)")
    assert " blocked in get() for " in message
    assert "produced by task wait_for() still running on node" in message
    open(go, "w").close()
    solray.get(outer, timeout=TIMEOUT)


def test_an_argument_whose_owner_cannot_answer_names_the_owner(ray_start, tmp_path):
    """An owner whose I/O thread cannot run (stopped here; a C extension
    holding the GIL does the same) is alive but silent: its borrowers wait."""
    go = str(tmp_path / "go")

    @solray.remote
    def hand_out(path):
        import os

        return [wait_for.remote(path)], os.getpid()  # this worker owns the ref

    (inner,), owner_pid = solray.get(hand_out.remote(go), timeout=TIMEOUT)
    os.kill(owner_pid, signal.SIGSTOP)
    try:
        later = consume.remote(inner)
        entry = waiting_entry(lambda e: e["name"] == "consume", complete=False)
        assert entry["reason"] == "waiting for arguments"
        assert entry["message"].startswith(
            f"waiting for argument ref {inner.hex()} owned by pid {owner_pid}, which is alive "
            "but did not answer"
        ), entry["message"]
        with pytest.raises(RayStateApiException, match=f"pid {owner_pid} on node .*: Timeout"):
            explain_pending()
        silent = get_stacks(pid=owner_pid)
        assert len(silent) == 1 and silent[0]["error"] == "TimeoutError"
    finally:
        os.kill(owner_pid, signal.SIGCONT)
    open(go, "w").close()
    assert solray.get(later, timeout=TIMEOUT) == solray.get(inner, timeout=TIMEOUT)


@pytest.fixture
def two_nodes(leak_check):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        second = cluster.add_node(num_cpus=1, resources={"far": 1})
        solray.init(address=cluster.address)
        yield cluster, second
    finally:
        solray.shutdown()
        cluster.shutdown()


def test_why_and_stack_cover_every_node(two_nodes, tmp_path):
    _, second = two_nodes
    go = str(tmp_path / "go")

    @solray.remote(resources={"far": 1})
    def far_away(path):
        return solray.get(wait_for.remote(path))

    outer = far_away.remote(go)
    later = consume.remote(outer)
    entry = waiting_entry(lambda e: e["name"] == "consume" and "still running" in e["message"])
    blocked = waiting_entry(lambda e: e["kind"] == "get" and e["name"] == "far_away")
    entry = waiting_entry(lambda e: e["name"] == "consume" and "itself blocked" in e["message"])
    assert entry["message"] == (
        f"waiting for argument ref {outer.hex()} produced by task far_away() "
        f"still running on node {second.node_id[:8]}..., itself blocked in get() (see its entry)"
    )
    assert blocked["owner_node_id"] == second.node_id

    def far_stack():
        return [
            p
            for p in get_stacks(node_id=second.node_id)
            if any(t["task"] and t["task"]["name"] == "far_away" for t in p["threads"])
        ]

    wait_for_condition(lambda: far_stack(), timeout=TIMEOUT)
    assert {p["node_id"] for p in get_stacks(node_id=second.node_id)} == {second.node_id}
    open(go, "w").close()
    assert solray.get(later, timeout=TIMEOUT) == solray.get(outer, timeout=TIMEOUT)


def test_a_task_waiting_for_its_runtime_env_build_says_so(ray_start, silent_index):
    env = {
        "pip": {
            "packages": ["nothing-to-find-here"],
            "pip_install_options": ["--index-url", silent_index, "--retries", "0"],
        },
        "config": RuntimeEnvConfig(setup_timeout_seconds=300),
    }

    @solray.remote(runtime_env=env)
    def in_env():
        return "ran"

    ref = in_env.remote()
    entry = waiting_entry(lambda e: e["name"] == "in_env")
    assert entry["reason"] == "waiting for a worker"
    assert entry["message"].startswith(
        "waiting for a worker: runtime_env pip install nothing-to-find-here running for "
    )
    assert entry["message"].endswith(" s")
    solray.cancel(ref)


def test_stack_shows_a_sleeping_task_and_one_pid_only(ray_start):
    @solray.remote
    def sleepy():
        import time

        time.sleep(300)

    ref = sleepy.remote()

    def sleeping_thread():
        for process in get_stacks():
            for thread in process.get("threads", ()):
                if thread["task"] and thread["task"]["name"] == "sleepy":
                    return process, thread
        return None

    wait_for_condition(lambda: sleeping_thread() is not None, timeout=TIMEOUT)
    process, thread = sleeping_thread()
    assert thread["name"] == "MainThread" and thread["task"]["task_id"] == ref.task_id()
    innermost = thread["frames"][-1]
    assert innermost[2] == "sleepy" and innermost[3] == "time.sleep(300)"

    pid = process["pid"]
    run = solray_cli("stack", "--address", ray_start["address"], "--pid", str(pid))
    assert run.returncode == 0, run.stderr
    output = run.stdout
    assert output.count("=== pid ") == 1
    assert f"=== pid {pid} (worker " in output
    assert f"Thread MainThread, running task sleepy ({ref.task_id()}):" in output
    assert "in sleepy\n    time.sleep(300)\n" in output
    assert "Thread solray-io" in output  # the loop thread answered
    everyone = CliRunner().invoke(cli.main, ["stack"])
    assert f"=== pid {os.getpid()} (driver " in everyone.output
    assert f"=== pid {pid} (worker " in everyone.output
    solray.cancel(ref)


def test_stack_refuses_bad_input(ray_start):
    missing = CliRunner().invoke(cli.main, ["stack", "--pid", "999999999"])
    assert missing.exit_code != 0
    assert "no driver or worker with pid 999999999 in the cluster" in missing.output
    with pytest.raises(TypeError, match="pid must be an int"):
        get_stacks(pid="12")
