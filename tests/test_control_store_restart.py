"""The control store is SIGKILLed while a driver works, and comes back.

With its tables in SQLite (the default, a file in the session directory) and
in a real Redis server (Debian's redis-server, started here on a free
loopback port; the Redis tests skip, saying so, where it is not installed).
The head node starts the control store again (control_supervisor.py); until
then, actor calls and tasks go on, and what needs the control store waits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from conftest import wait_for_condition

import solray
from solray._private import services, transport
from solray._private.control_storage import KV, Persistence, open_storage
from solray.experimental import internal_kv
from solray.util.placement_group import (
    placement_group,
    placement_group_table,
    remove_placement_group,
)

REDIS_SERVER = shutil.which("redis-server")


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server on a free loopback port; stopped and reaped after."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    sock = transport.bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    data = tmp_path / "redis"
    data.mkdir()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
        + ["--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        wait_for_condition(client.ping, timeout=10, message="redis-server did not start")
        client.close()
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


class HeldAddress:
    """Holds a dead control store's address, so the outage lasts until the
    test ends it (the head node starts a new control store only where it can
    bind the address: control_supervisor.py), however slow the machine.
    Dials get a connection that closes at once, as from a store that is not
    there yet."""

    def __init__(self, address: str):
        host, port = transport.parse_address(address)
        self.sock = transport.bind_socket(host, port)
        self.sock.settimeout(0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._refuse, daemon=True)
        self.thread.start()

    def _refuse(self) -> None:
        while not self.stop.is_set():
            try:
                self.sock.accept()[0].close()
            except OSError:
                continue

    def release(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def control_store_procs(address: str) -> list[psutil.Process]:
    """The control store processes listening on `address`."""
    host, port = transport.parse_address(address)
    return [
        psutil.Process(c.pid)
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.pid and (c.laddr.ip, c.laddr.port) == (host, port)
    ]


@solray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n

    def pid(self) -> int:
        return os.getpid()


@solray.remote
def square(x: int) -> int:
    return x * x


SECOND_DRIVER = """
import sys
import solray

solray.init(address=sys.argv[1], namespace="ft")
counter = solray.get_actor("counter")
print(solray.get(counter.incr.remote(), timeout=60), flush=True)
solray.shutdown()
"""


@pytest.fixture(params=["sqlite", "redis"])
def storage(request, monkeypatch):
    """How the cluster's control store keeps its tables."""
    if request.param == "redis":
        address = request.getfixturevalue("redis_server")
        monkeypatch.setenv("RAY_REDIS_ADDRESS", address)
        return "redis"
    monkeypatch.delenv("RAY_REDIS_ADDRESS", raising=False)
    return "sqlite"


def test_control_store_killed_and_restarted(leak_check, storage):
    solray.init(num_cpus=2, namespace="ft")
    address = solray.get_runtime_context().gcs_address
    counter = Counter.options(name="counter", lifetime="detached").remote()
    actor_pid = solray.get(counter.pid.remote(), timeout=60)
    assert solray.get(counter.incr.remote(), timeout=60) == 1
    solray.get([square.remote(i) for i in range(8)], timeout=60)  # workers started
    pg = placement_group([{"CPU": 0.5}], name="kept", lifetime="detached")
    solray.get(pg.ready(), timeout=60)
    internal_kv._internal_kv_put(b"survives", b"yes")
    nodes_before = {n["NodeID"] for n in solray.nodes() if n["Alive"]}

    (old,) = control_store_procs(address)
    killed_at = time.time()
    old.send_signal(signal.SIGKILL)
    old.wait(10)
    held = HeldAddress(address)

    # The outage: actor calls and tasks go on; creating an actor waits.
    created: dict = {}

    def create_during_outage() -> None:
        handle = Counter.options(name="made_during_outage").remote()
        created["value"] = solray.get(handle.incr.remote(), timeout=60)
        created["handle"] = handle

    def group_during_outage() -> None:
        group = placement_group([{"CPU": 0.25}])
        created["group_ready"] = solray.get(group.ready(), timeout=60) is not None
        created["group"] = group

    creator = threading.Thread(target=create_during_outage)
    creator.start()
    grouper = threading.Thread(target=group_during_outage)
    grouper.start()
    assert [solray.get(counter.incr.remote(), timeout=30) for _ in range(5)] == [2, 3, 4, 5, 6]
    calls_done_at = time.time()
    assert creator.is_alive(), "an actor was created while the control store was down"
    assert grouper.is_alive(), "a placement group was made while the control store was down"
    held.release()
    # Tasks go on too (one that needs a new worker waits for the control
    # store, which the head node now starts again: the worker reads its
    # job's import path there).
    assert solray.get([square.remote(i) for i in range(8)], timeout=30) == [i * i for i in range(8)]

    # The head node starts the control store again; the actor calls above
    # were made before it did.
    wait_for_condition(
        lambda: len(control_store_procs(address)) == 1, timeout=30, message="no new control store"
    )
    (new,) = control_store_procs(address)
    assert new.pid != old.pid
    assert new.create_time() > calls_done_at > killed_at

    creator.join(60)
    grouper.join(60)
    assert created.get("value") == 1, "the actor created during the outage did not start"
    assert created.get("group_ready"), "the group created during the outage was not placed"
    wait_for_condition(
        lambda: {n["NodeID"] for n in solray.nodes() if n["Alive"]} == nodes_before,
        timeout=30,
        message="the nodes did not come back",
    )
    again = solray.get_actor("counter")
    assert solray.get(again.incr.remote(), timeout=60) == 7
    assert solray.get(again.pid.remote(), timeout=60) == actor_pid  # the same actor
    fresh = Counter.remote()
    assert solray.get(fresh.incr.remote(), timeout=60) == 1
    (table,) = [g for g in placement_group_table().values() if g["name"] == "kept"]
    assert table["state"] == "CREATED"
    assert internal_kv._internal_kv_get(b"survives") == b"yes"

    second = subprocess.run(
        [sys.executable, "-c", SECOND_DRIVER, address],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "8"

    solray.kill(counter)
    solray.kill(created["handle"])
    remove_placement_group(pg)
    remove_placement_group(created["group"])
    solray.shutdown()
    new.wait(15)  # the restarted control store went with the cluster (not our child)
    if storage == "redis":  # a cluster started by init() takes its tables with it
        import redis

        client = redis.Redis.from_url("redis://" + os.environ["RAY_REDIS_ADDRESS"])
        assert client.keys("solray:*") == []
        client.close()


@solray.remote(max_restarts=1)
class Restartable:
    def pid(self) -> int:
        return os.getpid()


def test_actor_worker_dies_during_outage(leak_check, storage):
    """An actor whose process dies while the control store is down restarts
    (max_restarts) once it is back; one without restarts is dead, and says so."""
    solray.init(num_cpus=2)
    address = solray.get_runtime_context().gcs_address
    restartable = Restartable.remote()
    mortal = Counter.remote()
    first_pid = solray.get(restartable.pid.remote(), timeout=60)
    mortal_pid = solray.get(mortal.pid.remote(), timeout=60)

    (old,) = control_store_procs(address)
    old.send_signal(signal.SIGKILL)
    old.wait(10)
    for pid in (first_pid, mortal_pid):
        process = psutil.Process(pid)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    wait_for_condition(lambda: len(control_store_procs(address)) == 1, timeout=30)
    second_pid = solray.get(restartable.pid.remote(), timeout=60)
    assert second_pid != first_pid
    with pytest.raises(solray.exceptions.ActorDiedError):
        solray.get(mortal.pid.remote(), timeout=60)
    new_store = control_store_procs(address)[0]
    solray.shutdown()  # while its storage (a Redis server) is still up
    new_store.wait(15)  # it went with the cluster (it is not our child)


def test_unreadable_sqlite_file_is_named(tmp_path):
    """A control store whose SQLite file is not a database exits at once
    with an error naming the file (the head node does not start it again)."""
    path = tmp_path / "control_store.sqlite3"
    path.write_bytes(b"this is not a SQLite database" * 100)
    token_fd = services.token_pipe(os.urandom(32))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "solray._private.control_store"]
            + ["--token-fd", str(token_fd), "--storage", f"sqlite://{path}"],
            pass_fds=(token_fd,),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(token_fd)
    assert proc.returncode == 78, proc.stderr
    assert str(path) in proc.stderr
    assert "cannot be read" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_sqlite_file_is_not_restarted_in_a_loop(leak_check, monkeypatch, capfd):
    """The head node starts a dead control store again, but not one that
    cannot read its storage: that one fails once, naming its file."""
    monkeypatch.delenv("RAY_REDIS_ADDRESS", raising=False)
    solray.init(num_cpus=1)
    address = solray.get_runtime_context().gcs_address
    (old,) = control_store_procs(address)
    cmdline = old.cmdline()
    path = cmdline[cmdline.index("--storage") + 1].removeprefix("sqlite://")
    old.send_signal(signal.SIGKILL)
    old.wait(10)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    with open(path, "wb") as f:
        f.write(b"this is not a SQLite database" * 100)

    output = []

    def said(text: str) -> bool:
        output.append(capfd.readouterr().err)
        return text in "".join(output)

    wait_for_condition(lambda: said("not starting it again"), timeout=30)
    err = "".join(output)
    assert f"{path} cannot be read" in err
    assert err.count("starting it again") == 2  # once started, once refused
    assert control_store_procs(address) == []


BEFORE_KILL = """
import sys
import solray
from solray.experimental import internal_kv

solray.init(address=sys.argv[1], namespace="ft")

@solray.remote
class Keeper:
    def value(self):
        return "kept"

Keeper.options(name="keeper", lifetime="detached").remote()
print(solray.get(solray.get_actor("keeper").value.remote(), timeout=60), flush=True)
internal_kv._internal_kv_put(b"cli", b"stored")
solray.shutdown()
"""

AFTER_RESTART = """
import sys
import solray
from solray.experimental import internal_kv

solray.init(address=sys.argv[1], namespace="ft")
keeper = solray.get_actor("keeper")
print(solray.get(keeper.value.remote(), timeout=60), internal_kv._internal_kv_get(b"cli").decode())
solray.kill(keeper)
solray.shutdown()
"""


def test_solray_start_head_with_redis_storage(leak_check, redis_server, tmp_path):
    """`solray start --head --storage redis://...`: the tables are in Redis,
    under the session's namespace, and a killed control store comes back
    with them (started again by the head node, a daemon)."""
    from test_cluster_cli import (
        cli_env,
        daemons_of,
        sessions_under,
        solray_cli,
        start_head,
        stop_daemons,
    )

    temp_dir = str(tmp_path / "temp")
    refused = solray_cli("start", "--address", "127.0.0.1:1", "--storage", "redis://x:1")
    assert refused.returncode != 0 and "--storage is for --head" in refused.stderr
    refused = solray_cli("start", "--head", "--storage", "mysql://x", "--temp-dir", temp_dir)
    assert refused.returncode != 0 and "redis://HOST:PORT or sqlite:///PATH" in refused.stderr

    import redis

    password = os.urandom(8).hex()
    client = redis.Redis.from_url(f"redis://{redis_server}")
    client.config_set("requirepass", password)
    client.close()
    client = redis.Redis.from_url(f"redis://:{password}@{redis_server}")
    refused = solray_cli(
        "start", "--head", "--storage", f"redis://{redis_server}", "--redis-password", password
    )
    assert refused.returncode != 0 and "--redis-password-file" in refused.stderr
    password_file = tmp_path / "redis-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    started = start_head(
        "--storage",
        f"redis://{redis_server}",
        "--redis-password-file",
        str(password_file),
        "--temp-dir",
        temp_dir,
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        ((session_dir, address),) = sessions_under(temp_dir).items()
        env = dict(cli_env(), SOLRAY_TOKEN_FILE=os.path.join(session_dir, "token"))

        def driver(script: str) -> str:
            run = subprocess.run(
                [sys.executable, "-c", script, address],
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert run.returncode == 0, run.stderr
            return run.stdout.strip()

        assert driver(BEFORE_KILL) == "kept"
        for proc in daemons_of(sessions_under(temp_dir)):  # a command line is public
            assert password not in " ".join(proc.cmdline())
        namespace = os.path.basename(session_dir)
        assert client.hlen(f"solray:{namespace}:kv") >= 1
        assert client.hlen(f"solray:{namespace}:actors") == 1

        (old,) = control_store_procs(address)
        old.send_signal(signal.SIGKILL)
        wait_for_condition(
            lambda: [p.pid for p in control_store_procs(address)] not in ([], [old.pid]),
            timeout=30,
            message="the head node did not start the control store again",
        )
        assert driver(AFTER_RESTART) == "kept stored"
    finally:
        stop_daemons(temp_dir)
        client.close()


ORPHANING_DRIVER = """
import os, sys
import solray

solray.init(address=sys.argv[1], namespace="ft")

@solray.remote
class Owned:
    def pid(self):
        return os.getpid()

owned = Owned.options(name="orphan").remote()
print(solray.get(owned.pid.remote(), timeout=60), flush=True)
sys.stdin.readline()
"""


def test_owners_claim_their_actors_after_a_restart(leak_check):
    """Non-detached actors fate-share with their owner across a restart: the
    owner that comes back keeps its actor; the actor of an owner that died
    during the outage ends once the recovery window is over."""
    solray.init(num_cpus=2, namespace="ft")
    address = solray.get_runtime_context().gcs_address
    kept = Counter.options(name="kept").remote()
    assert solray.get(kept.incr.remote(), timeout=60) == 1
    with subprocess.Popen(
        [sys.executable, "-c", ORPHANING_DRIVER, address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as other:
        line = other.stdout.readline()
        assert line.strip().isdigit(), f"the second driver did not start its actor: {line!r}"
        orphan = psutil.Process(int(line))

        (old,) = control_store_procs(address)
        old.send_signal(signal.SIGKILL)
        old.wait(10)
        other.kill()  # its owner dies while nobody can notice
        other.wait(10)
    assert orphan.is_running()

    wait_for_condition(lambda: len(control_store_procs(address)) == 1, timeout=30)
    orphan.wait(60)  # ended when the recovery window closed
    states = {a["name"]: a["state"] for a in solray.util.state.list_actors()}
    assert states["orphan"] == "DEAD"
    assert states["kept"] == "ALIVE"
    assert solray.get(solray.get_actor("kept").incr.remote(), timeout=60) == 2
    new_store = control_store_procs(address)[0]
    solray.shutdown()
    new_store.wait(15)  # it went with the cluster (it is not our child)


def test_a_job_that_ends_during_the_outage_is_recorded_as_ended(leak_check, tmp_path, monkeypatch):
    """The job manager writes its jobs' records through a reconnecting
    client: a job whose entrypoint ends while the control store is away is
    SUCCEEDED once the control store is back, never RUNNING for ever."""
    from solray.job_submission import JobStatus, JobSubmissionClient

    context = solray.init(num_cpus=1, dashboard_port=0)
    address = solray.get_runtime_context().gcs_address
    monkeypatch.setenv("SOLRAY_TOKEN_FILE", os.path.join(context["session_dir"], "token"))
    client = JobSubmissionClient(f"http://{context.dashboard_url}")
    release, started = tmp_path / "release", tmp_path / "started"
    entrypoint = f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done"
    job = client.submit_job(entrypoint=entrypoint)
    wait_for_condition(started.exists, timeout=60, message="the job did not start")
    assert client.get_job_status(job) == JobStatus.RUNNING

    (old,) = control_store_procs(address)
    old.send_signal(signal.SIGKILL)
    old.wait(10)
    release.touch()  # the job ends now, with the control store away

    def ended() -> bool:
        try:
            return client.get_job_status(job) == JobStatus.SUCCEEDED
        except (RuntimeError, ConnectionError):
            return False  # the job API waits for the control store too

    wait_for_condition(ended, timeout=90, message="the job's end was never recorded")
    info = client.get_job_info(job)
    assert info.driver_exit_code == 0 and info.end_time >= info.start_time
    (new,) = control_store_procs(address)
    assert new.pid != old.pid


def test_changes_made_while_the_storage_closes_are_written_and_later_ones_dropped(tmp_path, caplog):
    """The control store's last flush takes what changes while it runs; a
    change after it (a connection closing as the store stops) is dropped
    quietly, never written to a closed file with an ERROR about lost changes."""
    url = f"sqlite://{tmp_path / 'control.db'}"

    async def stop_while_changing() -> None:
        storage = open_storage(url)
        storage.load()  # as the control store starts
        persistence = Persistence(storage)
        persistence.put(KV, b"before", b"1")
        closing = asyncio.get_running_loop().create_task(persistence.close())
        await asyncio.sleep(0)
        persistence.put(KV, b"during", b"2")
        await closing
        persistence.put(KV, b"after", b"3")
        await asyncio.sleep(0.1)  # where a stray flush would have failed

    with caplog.at_level(logging.DEBUG, logger="solray.control_store"):
        asyncio.run(stop_while_changing())
    reopened = open_storage(url)
    try:
        assert reopened.load()[KV] == {b"before": b"1", b"during": b"2"}
    finally:
        reopened.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
