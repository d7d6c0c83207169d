"""`solray list|get|summary|logs` in subprocesses against a `solray start
--head` cluster with a second node: each format parsed as a user's script
would, tables within the terminal width, logs by node, pid and actor,
task id, --tail, --follow, clear errors; and the state API through a ray:// client.

The daemons are found and stopped as test_cluster_cli.py does (never
`solray stop`, which would stop other runs' daemons).
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from test_cluster_cli import cli_env, solray_cli, start_head, stop_daemons

from solray.util import state

CLI_TIMEOUT_S = 120

# Makes two detached actors, one per node, each printing three lines.
SETUP = """
import json, os, solray
from solray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
solray.init(address={address!r}, namespace="statecli")

@solray.remote(num_cpus=0)
class Speaker:
    def __init__(self, word):
        for line in (f"hello from {{word}}", "line 1", "line 2"):
            print(line, flush=True)
    def say(self, text):
        print(text, flush=True)
    def pid(self):
        return os.getpid()

out = []
for i, node in enumerate(sorted(n["NodeID"] for n in solray.nodes() if n["Alive"])):
    strategy = NodeAffinitySchedulingStrategy(node, soft=False)
    s = Speaker.options(name=f"speaker-{{i}}", lifetime="detached",
                        scheduling_strategy=strategy).remote(node[:8])
    pid = solray.get(s.pid.remote())
    out.append({{"actor_id": s._actor_id.hex(), "pid": pid, "node_id": node}})

@solray.remote
def shout():
    print("from a task", flush=True)
    return solray.get_runtime_context().get_task_id()

print("TASK", solray.get(shout.remote()))
print("SPEAKERS", json.dumps(out))
"""

SAY = """
import solray
solray.init(address={address!r}, namespace="statecli")
solray.get(solray.get_actor("speaker-0").say.remote({text!r}))
"""


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    temp_dir = str(tmp_path_factory.mktemp("state-cli") / "temp")
    try:
        head = start_head("--num-cpus", "1", "--temp-dir", temp_dir)
        assert head.returncode == 0, head.stdout + head.stderr
        address = re.search(r"control store at ([\d.]+:\d+)", head.stdout).group(1)
        token_path = re.search(r"Cluster token: (\S+)", head.stdout).group(1)
        client = re.search(r'init\("ray://([\d.]+:\d+)"\)', head.stdout).group(1)
        env = {**cli_env(), "SOLRAY_TOKEN_FILE": token_path}
        node = solray_cli(
            "start", "--address", address, "--num-cpus", "1", "--temp-dir", temp_dir, env=env
        )
        assert node.returncode == 0, node.stdout + node.stderr
        setup = run_python(SETUP.format(address=address), env)
        # (Workers' output reaches the driver's stdout as it is streamed:
        # the task's line may come after the driver's own last line.)
        speakers = json.loads(setup.stdout.split("SPEAKERS", 1)[1].splitlines()[0])
        assert len({s["node_id"] for s in speakers}) == 2
        task_id = re.search(r"^TASK (\w+)$", setup.stdout, re.MULTILINE).group(1)
        yield {
            "address": address,
            "env": env,
            "speakers": speakers,
            "client": client,
            "task_id": task_id,
        }
    finally:
        stop_daemons(temp_dir)


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def cli(started, *args: str, ok: bool = True, columns: int | None = None):
    env = dict(started["env"])
    if columns is not None:
        env["COLUMNS"] = str(columns)
    run = solray_cli(*args, "--address", started["address"], env=env)
    if ok:
        assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_list_nodes_in_every_format(started):
    nodes = json.loads(cli(started, "list", "nodes", "--format", "json").stdout)
    assert {n["node_id"] for n in nodes} == {s["node_id"] for s in started["speakers"]}
    assert all(n["state"] == "ALIVE" for n in nodes) and "start_time_ms" not in nodes[0]
    as_yaml = yaml.safe_load(cli(started, "list", "nodes", "--format", "yaml").stdout)
    assert as_yaml == nodes
    detail = json.loads(cli(started, "list", "nodes", "--detail", "--format", "json").stdout)
    assert all(n["start_time_ms"] > 0 for n in detail)
    head = json.loads(
        cli(started, "list", "nodes", "--filter", "is_head_node=true", "--format", "json").stdout
    )
    assert len(head) == 1 and head[0]["is_head_node"] is True
    limited = cli(started, "list", "nodes", "--limit", "1", "--format", "json").stdout
    assert len(json.loads(limited)) == 1

    for columns in (60, 200):
        table = cli(started, "list", "nodes", columns=columns).stdout.splitlines()
        assert table[0].startswith("NODE_ID") and len(table) == 3
        assert max(len(line) for line in table) <= columns
    narrow = cli(started, "list", "nodes", columns=60).stdout
    assert "…" in narrow  # 56-character node ids do not fit whole


def test_list_get_and_summary_of_actors_workers_objects(started):
    speakers = started["speakers"]
    actors = json.loads(cli(started, "list", "actors", "--format", "json").stdout)
    by_id = {a["actor_id"]: a for a in actors}
    for s in speakers:
        assert (by_id[s["actor_id"]]["node_id"], by_id[s["actor_id"]]["pid"]) == (
            s["node_id"],
            s["pid"],
        )
    got = yaml.safe_load(cli(started, "get", "actors", speakers[0]["actor_id"]).stdout)
    assert got["name"] == "speaker-0" and got["num_restarts"] == 0 and got["is_detached"]
    summary = json.loads(cli(started, "summary", "actors", "--format", "json").stdout)
    assert summary["cluster"]["summary"]["Speaker"]["state_counts"] == {"ALIVE": 2}
    table = cli(started, "summary", "actors").stdout
    assert "Speaker" in table and "total_actors: 2" in table

    workers = json.loads(cli(started, "list", "workers", "--format", "json").stdout)
    for s in speakers:
        (row,) = [w for w in workers if w["pid"] == s["pid"]]
        assert row["node_id"] == s["node_id"] and row["worker_type"] == "WORKER"
    worker = yaml.safe_load(cli(started, "get", "workers", row["worker_id"]).stdout)
    assert worker["pid"] == s["pid"] and worker["start_time_ms"] > 0
    nodes = yaml.safe_load(cli(started, "get", "nodes", s["node_id"], "--format", "yaml").stdout)
    assert nodes["node_id"] == s["node_id"]
    assert json.loads(cli(started, "list", "placement-groups", "--format", "json").stdout) == []
    jobs = json.loads(cli(started, "list", "jobs", "--format", "json").stdout)
    # The module's drivers, which have ended, in Ray's JobDetails fields.
    drivers = [j for j in jobs if j["type"] == "DRIVER"]
    assert drivers and all(j["submission_id"] is None for j in drivers)
    assert any(j["status"] == "SUCCEEDED" and "python" in j["entrypoint"] for j in drivers)
    objects = json.loads(cli(started, "summary", "objects", "--format", "json").stdout)
    assert objects["cluster"]["summary_by"] == "callsite"


def test_clear_errors(started):
    run = cli(started, "list", "colours", ok=False)
    assert run.returncode != 0 and "unknown resource 'colours'" in run.stderr
    assert "placement-groups" in run.stderr
    run = cli(started, "list", "nodes", "--filter", "nonsense", ok=False)
    assert run.returncode != 0 and "a filter is KEY=VALUE or KEY!=VALUE" in run.stderr
    run = cli(started, "list", "nodes", "--filter", "colour=red", ok=False)
    assert run.returncode != 0 and "Unsupported filter column 'colour'" in run.stderr
    run = cli(started, "get", "actors", "ff" * 16, ok=False)
    assert run.returncode != 0 and f"no actor with id {'ff' * 16}" in run.stderr
    run = cli(started, "list", "tasks", "--format", "json", ok=False)
    if hasattr(state, "list_tasks"):  # task events are in this build
        assert run.returncode == 0, run.stderr
    else:
        assert run.returncode != 0
        assert "`solray list tasks` is not available: solray.util.state has no list_tasks()" in (
            run.stderr
        )
    run = solray_cli("list", "nodes", "--address", "127.0.0.1:1", env=started["env"])
    assert run.returncode != 0 and "cannot reach 127.0.0.1:1" in run.stderr


def test_logs_by_node_pid_actor_and_task_with_tail(started):
    listing = cli(started, "logs").stdout
    for s in started["speakers"]:
        assert f"node {s['node_id']}" in listing
        assert re.search(rf"worker-\w+-{s['pid']}\.out", listing)
    for s in started["speakers"]:
        expected = f"hello from {s['node_id'][:8]}\nline 1\nline 2\n"
        assert cli(started, "logs", "actor", "--id", s["actor_id"]).stdout == expected
        assert cli(started, "logs", "worker", "--pid", str(s["pid"])).stdout == expected
        by_node = cli(started, "logs", "--node-id", s["node_id"], f"worker-*-{s['pid']}.out")
        assert by_node.stdout == expected
        tail = cli(started, "logs", "actor", "--id", s["actor_id"], "--tail", "1")
        assert tail.stdout == "line 2\n"
    assert cli(started, "logs", "worker", "--pid", str(s["pid"]), "--err").stdout == ""
    assert cli(started, "logs", "task", "--id", started["task_id"]).stdout == "from a task\n"
    run = cli(started, "logs", "--node-id", s["node_id"], "no-such-*", ok=False)
    assert run.returncode != 0 and "no log file matches 'no-such-*'" in run.stderr


def test_logs_follow_prints_lines_written_later(started):
    speaker = started["speakers"][0]
    follow = subprocess.Popen(
        [sys.executable, "-m", "solray.cli", "logs", "actor", "--id", speaker["actor_id"]]
        + ["--follow", "--tail", "1", "--interval", "0.1", "--address", started["address"]],
        env=started["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in follow.stdout])
    reader.start()
    try:
        assert lines.get(timeout=CLI_TIMEOUT_S) == "line 2\n"  # following has begun
        run_python(SAY.format(address=started["address"], text="said later"), started["env"])
        assert lines.get(timeout=CLI_TIMEOUT_S) == "said later\n"
    finally:
        follow.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            follow.wait(timeout=30)
        finally:
            follow.kill()
            reader.join()
            follow.stderr.close()
    assert follow.returncode == 0


def test_state_api_through_a_ray_client(started):
    speaker = started["speakers"][1]
    code = (
        "import solray\n"
        "from solray.util import state\n"
        f"solray.init('ray://{started['client']}')\n"
        "print(len(state.list_nodes()), len({w['node_id'] for w in state.list_workers()}))\n"
        f"print(state.get_actor({speaker['actor_id']!r})['pid'])\n"
        f"print(''.join(state.get_log(actor_id={speaker['actor_id']!r}, tail=1)), end='')\n"
    )
    started_at = time.monotonic()
    run = run_python(code, started["env"])
    assert run.stdout.splitlines() == ["2 2", str(speaker["pid"]), "line 2"]
    assert time.monotonic() - started_at < CLI_TIMEOUT_S
