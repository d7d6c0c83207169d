"""The state API (solray.util.state) over a real two-node cluster: every
list, get and summary covers both nodes with Ray's field names; filters,
limit, detail; the API from a process that never called init(); worker log
files by node, pid, actor and task, tail and follow; and a log path outside
the node's log directory refused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import psutil
import pytest
from conftest import wait_for_condition

import solray
from solray._private import transport
from solray._private.protocol import Msg
from solray._private.state_client import RayStateApiException
from solray.cluster_utils import Cluster
from solray.util import state
from solray.util.placement_group import placement_group, remove_placement_group
from solray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

GET_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def two_nodes():
    """A head and a second node (1 CPU each), a driver connected; tests leave
    it as they found it (their actors and groups removed)."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        solray.init(address=cluster.address)
        yield cluster
    finally:
        cluster.shutdown()


@solray.remote(num_cpus=0)
class Speaker:
    def __init__(self, word: str):
        print(f"hello {word}", flush=True)
        self.held = solray.put(b"x" * 200_000)  # an object in this node's store

    def say(self, text: str) -> None:
        print(text, flush=True)

    def where(self) -> tuple[str, int, str]:
        return solray.get_runtime_context().get_node_id(), os.getpid(), self.held.hex()


@solray.remote(num_cpus=0)
def chatty(text: str) -> str:
    print(text, flush=True)
    return solray.get_runtime_context().get_task_id()


def one_speaker_per_node(cluster: Cluster) -> list:
    nodes = cluster.list_all_nodes()
    speakers = [
        Speaker.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)
        ).remote(f"from {node.node_id[:8]}")
        for node in nodes
    ]
    where = solray.get([s.where.remote() for s in speakers], timeout=GET_TIMEOUT_S)
    assert [w[0] for w in where] == [n.node_id for n in nodes]
    return speakers, where


def test_every_list_and_get_covers_both_nodes(two_nodes):
    speakers, where = one_speaker_per_node(two_nodes)
    node_ids = {n.node_id for n in two_nodes.list_all_nodes()}
    try:
        nodes = state.list_nodes()
        assert {n["node_id"] for n in nodes} == node_ids
        assert all(n["state"] == "ALIVE" and n["node_ip"] == "127.0.0.1" for n in nodes)
        assert [n["is_head_node"] for n in nodes].count(True) == 1
        assert nodes[0].resources_total["CPU"] == 1.0  # attributes, as Ray's state objects
        head = state.get_node(two_nodes.head_node.node_id)
        assert head["is_head_node"] and head["start_time_ms"] > 0 and head["end_time_ms"] is None

        actors = {a["actor_id"]: a for a in state.list_actors(limit=10_000)}
        for speaker, (node_id, pid, _) in zip(speakers, where, strict=True):
            row = actors[speaker._actor_id.hex()]
            assert (row["class_name"], row["state"], row["node_id"], row["pid"]) == (
                "Speaker",
                "ALIVE",
                node_id,
                pid,
            )
            assert "num_restarts" not in row  # a detail field
            full = state.get_actor(speaker._actor_id.hex())
            assert full["num_restarts"] == 0 and full["is_detached"] is False
        assert state.get_actor("ff" * 16) is None

        workers = state.list_workers(limit=10_000)
        for node_id, pid, _ in where:
            (row,) = [w for w in workers if w["pid"] == pid]
            assert (row["node_id"], row["worker_type"]) == (node_id, "WORKER") and row["is_alive"]
            assert state.get_worker(row["worker_id"])["start_time_ms"] > 0
        (driver,) = [w for w in workers if w["worker_type"] == "DRIVER" and w["pid"] == os.getpid()]
        assert driver["node_id"] == two_nodes.head_node.node_id

        objects = state.list_objects(limit=10_000)
        for node_id, pid, object_id in where:
            (row,) = [o for o in objects if o["object_id"] == object_id]
            assert (row["node_id"], row["pid"]) == (node_id, pid) and row["object_size"] > 200_000
            assert state.get_objects(object_id)[0]["reference_type"] == "LOCAL_REFERENCE"

        summary = state.summarize_actors()["cluster"]
        assert summary["summary"]["Speaker"]["state_counts"]["ALIVE"] == 2
        objects_summary = state.summarize_objects()["cluster"]
        assert objects_summary["total_objects"] >= 2 and objects_summary["summary_by"] == "callsite"
        group = objects_summary["summary"]["disabled"]  # no call sites recorded by default
        assert group["total_num_nodes"] == 2
    finally:
        for speaker in speakers:
            solray.kill(speaker)


def test_placement_groups_list_and_get(two_nodes):
    pg = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="STRICT_SPREAD", name="spread")
    try:
        solray.get(pg.ready(), timeout=GET_TIMEOUT_S)
        (row,) = state.list_placement_groups(filters=[("name", "=", "spread")])
        assert row["state"] == "CREATED" and row["creator_job_id"] and "bundles" not in row
        full = state.get_placement_group(row["placement_group_id"])
        assert {b["node_id"] for b in full["bundles"]} == {
            n.node_id for n in two_nodes.list_all_nodes()
        }
        assert full["bundles"][0]["unit_resources"] == {"CPU": 0.5}
    finally:
        remove_placement_group(pg)
    wait_for_condition(
        lambda: state.get_placement_group(pg.id)["state"] == "REMOVED",
        message="the group is not listed as REMOVED",
    )


def test_a_removed_groups_name_is_free_again_and_the_group_stays_listed(two_nodes):
    first = placement_group([{"CPU": 0.1}], name="reused")
    solray.get(first.ready(), timeout=GET_TIMEOUT_S)
    with pytest.raises(ValueError, match="a placement group named 'reused' already exists"):
        placement_group([{"CPU": 0.1}], name="reused")
    remove_placement_group(first)
    second = placement_group([{"CPU": 0.1}], name="reused")
    try:
        solray.get(second.ready(), timeout=GET_TIMEOUT_S)
        rows = state.list_placement_groups(filters=[("name", "=", "reused")])
        assert sorted((r["placement_group_id"], r["state"]) for r in rows) == sorted(
            [(first.id, "REMOVED"), (second.id, "CREATED")]
        )
    finally:
        remove_placement_group(second)


DRIVER_WITH_GROUPS = """
import sys
import solray
from solray.util.placement_group import placement_group, remove_placement_group

solray.init(address=sys.argv[1])
groups = [placement_group([{"CPU": 0.1}], name=f"left-{i}") for i in range(3)]
kept = placement_group([{"CPU": 0.1}], name="left-kept", lifetime="detached")
solray.get([g.ready() for g in [*groups, kept]], timeout=60)
remove_placement_group(groups[0])
"""


def test_a_drivers_groups_end_with_it_but_its_detached_one(two_nodes):
    run = subprocess.run(
        [sys.executable, "-c", DRIVER_WITH_GROUPS, two_nodes.address],
        capture_output=True,
        text=True,
        timeout=GET_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr

    def states() -> dict:
        rows = state.list_placement_groups(filters=[("name", "!=", "")], limit=10_000)
        return {r["name"]: r["state"] for r in rows if r["name"].startswith("left-")}

    expected = {"left-0": "REMOVED", "left-1": "REMOVED", "left-2": "REMOVED"}
    expected["left-kept"] = "CREATED"
    wait_for_condition(lambda: states() == expected, message=lambda: f"groups: {states()}")
    remove_placement_group(solray.util.get_placement_group("left-kept"))
    wait_for_condition(lambda: states()["left-kept"] == "REMOVED")


def test_filters_limit_and_detail(two_nodes):
    nodes = state.list_nodes()
    head = two_nodes.head_node.node_id
    assert [n["node_id"] for n in state.list_nodes(filters=[("is_head_node", "=", True)])] == [head]
    assert [n["node_id"] for n in state.list_nodes(filters=[("is_head_node", "!=", "TRUE")])] == [
        n["node_id"] for n in nodes if n["node_id"] != head
    ]
    assert state.list_nodes(filters=[("state", "=", "alive")]) == nodes  # case-insensitive
    assert len(state.list_nodes(limit=1)) == 1
    assert "start_time_ms" not in nodes[0] and "start_time_ms" in state.list_nodes(detail=True)[0]
    with pytest.raises(ValueError, match="Unsupported filter predicate '>'"):
        state.list_nodes(filters=[("state", ">", "x")])
    with pytest.raises(ValueError, match="Unsupported filter column 'colour'"):
        state.list_nodes(filters=[("colour", "=", "red")])


def test_state_api_without_init_given_the_address(two_nodes):
    """A process that never called init() asks the cluster by its address;
    the token comes from this user's session registry, as for `solray status`."""
    code = (
        "from solray.util import state\n"
        "import solray\n"
        f"nodes = state.list_nodes(address={two_nodes.address!r})\n"
        f"workers = state.list_workers(address={two_nodes.address!r}, limit=10000)\n"
        "assert not solray.is_initialized()\n"
        "print(len(nodes), len({w['node_id'] for w in workers}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=GET_TIMEOUT_S
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["2", "2"]


def test_exited_worker_is_listed_with_its_exit_status_or_signal(two_nodes):
    @solray.remote(num_cpus=0, max_restarts=0)
    class Doomed:
        def pid(self) -> int:
            return os.getpid()

        def die(self) -> None:
            os._exit(3)

    def exited(pid: int) -> dict | None:
        rows = state.list_workers(filters=[("pid", "=", pid)], detail=True, limit=10_000)
        return rows[0] if rows and not rows[0]["is_alive"] else None

    def forked(pid: int) -> bool:
        return "solray._private.worker_zygote" in " ".join(psutil.Process(pid).parent().cmdline())

    # Workers forked by the node's zygote are its children, not the node's:
    # their statuses come from the zygote. The first workers of a node are
    # interpreters the node started; the zygote forks the later ones.
    doomed, pids, started = [], [], []
    while len(doomed) < 4:
        assert len(started) < 20, "no worker was forked by the zygote"
        actor = Doomed.remote()
        pid = solray.get(actor.pid.remote(), timeout=GET_TIMEOUT_S)
        started.append(actor)
        if forked(pid):
            doomed.append(actor)
            pids.append(pid)
    for d in doomed[:2]:
        d.die.remote()
    for pid in pids[2:]:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        wait_for_condition(
            lambda pid=pid: exited(pid), message=f"worker {pid} is not listed as exited"
        )
    rows = [exited(pid) for pid in pids]
    for row in rows[:2]:
        assert row["exit_type"] == "SYSTEM_ERROR", row
        assert row["exit_detail"] == "the worker process exited with status 3", row
    for row in rows[2:]:
        assert row["exit_type"] == "SYSTEM_ERROR", row
        assert row["exit_detail"].startswith("the worker process was killed by SIGKILL"), row
    assert all(row["end_time_ms"] >= row["start_time_ms"] for row in rows)


# -- logs ----------------------------------------------------------------------


def test_logs_by_node_pid_actor_and_task(two_nodes):
    speakers, where = one_speaker_per_node(two_nodes)
    try:
        for speaker, (node_id, pid, _) in zip(speakers, where, strict=True):
            files = state.list_logs(node_id=node_id)
            assert files["worker_out"][0].startswith("worker-")
            assert any(name.endswith(f"-{pid}.out") for name in files["worker_out"])
            by_actor = list(state.get_log(actor_id=speaker._actor_id.hex()))
            assert f"hello from {node_id[:8]}\n" in by_actor
            by_pid = list(state.get_log(pid=pid))  # found on whichever node has it
            assert by_pid == by_actor
            (name,) = [n for n in files["worker_out"] if n.endswith(f"-{pid}.out")]
            assert list(state.get_log(node_id=node_id, filename=name)) == by_actor
        speaker = speakers[1]
        solray.get([speaker.say.remote(f"line {i}") for i in range(5)], timeout=GET_TIMEOUT_S)
        tail = list(state.get_log(actor_id=speaker._actor_id.hex(), tail=2))
        assert tail == ["line 3\n", "line 4\n"]

        second = NodeAffinitySchedulingStrategy(where[1][0], soft=False)
        task_id = solray.get(
            chatty.options(scheduling_strategy=second).remote("only this task's line"),
            timeout=GET_TIMEOUT_S,
        )
        assert list(state.get_log(task_id=task_id)) == ["only this task's line\n"]
        with pytest.raises(ValueError, match="no output of task"):
            list(state.get_log(task_id="00" * 24))
    finally:
        for speaker in speakers:
            solray.kill(speaker)


def test_follow_yields_lines_written_later(two_nodes):
    speaker = Speaker.remote("follow")
    solray.get(speaker.where.remote(), timeout=GET_TIMEOUT_S)
    lines = state.get_log(actor_id=speaker._actor_id.hex(), follow=True, tail=1, _interval=0.05)
    try:
        assert next(lines) == "hello follow\n"  # the tail: following has begun
        speaker.say.remote("written after following began")
        assert next(lines) == "written after following began\n"
        speaker.say.remote("and another")
        assert next(lines) == "and another\n"
    finally:
        lines.close()
        solray.kill(speaker)


def test_log_paths_outside_the_log_directory_are_refused(two_nodes):
    head = two_nodes.head_node
    log_dir = os.path.join(two_nodes.session_dir, "logs", head.node_id[:16])
    os.symlink(os.path.join(two_nodes.session_dir, "cluster.json"), os.path.join(log_dir, "link"))
    for name in ("../../cluster.json", "..", "/etc/passwd", "link", "a/../../token"):
        with pytest.raises(RayStateApiException, match="ValueError: .*log directory"):
            list(state.get_log(node_id=head.node_id, filename=name))

    async def ask(body):
        conn = await transport.connect(head.address, two_nodes.token)
        try:
            return await conn.request(Msg.GET_LOG, body)
        finally:
            conn.close()

    with pytest.raises(transport.RemoteError, match="outside the node's log directory"):
        asyncio.run(ask({"filename": "link", "tail": 10}))
    os.unlink(os.path.join(log_dir, "link"))


def test_get_log_bad_arguments(two_nodes):
    with pytest.raises(ValueError, match="exactly one of"):
        state.get_log(pid=1, actor_id="ab")
    with pytest.raises(ValueError, match="suffix"):
        state.get_log(pid=1, suffix="log")
    with pytest.raises(ValueError, match="no alive node with id zz"):
        list(state.get_log(node_id="zz", filename="x"))
