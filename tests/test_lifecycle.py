"""init() and shutdown(): state, argument checks, and that a cluster goes away
completely however its driver ends (shutdown, interpreter exit, SIGKILL)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
from conftest import cluster_processes, wait_for_condition
from test_actor_class import Cleaner, _order

import solray
from solray._private import services
from solray.exceptions import ObjectLostError


@solray.remote
def square(x):
    return x * x


# -- init and shutdown in this process -----------------------------------------


def test_init_shutdown_three_times(leak_check):
    me = psutil.Process()
    addresses = set()
    for i in range(3):
        assert not solray.is_initialized()
        context = solray.init(num_cpus=1)
        assert solray.is_initialized()
        addresses.add(context["address"])
        assert solray.get(square.remote(i + 2), timeout=30) == (i + 2) ** 2
        assert solray.get(solray.put(i)) == i
        solray.shutdown()
        assert not solray.is_initialized()
        wait_for_condition(lambda: not me.children(recursive=True), timeout=15)
    assert len(addresses) == 3  # a fresh cluster each time


def test_shutdown_when_not_initialized_is_a_no_op(leak_check):
    solray.shutdown()
    solray.shutdown()
    assert not solray.is_initialized()


def test_init_twice(ray_start):
    with pytest.raises(RuntimeError, match="ignore_reinit_error"):
        solray.init()
    assert solray.is_initialized()
    again = solray.init(ignore_reinit_error=True)
    assert again["address"] == ray_start["address"]
    assert solray.get(square.remote(3), timeout=30) == 9


def test_context_manager_shuts_down(leak_check):
    with solray.init(num_cpus=1) as context:
        assert solray.is_initialized()
        assert context.address_info["address"] == context["address"]
        assert solray.get(square.remote(4), timeout=30) == 16
    assert not solray.is_initialized()


@pytest.mark.parametrize(
    "call",
    [
        lambda: solray.get([]),
        lambda: solray.wait([]),
        lambda: solray.nodes(),
        lambda: solray.cluster_resources(),
        lambda: solray.available_resources(),
        lambda: solray.get_runtime_context(),
    ],
    ids=["get", "wait", "nodes", "cluster_resources", "available_resources", "runtime_context"],
)
def test_api_before_init_raises_clear_error(leak_check, call):
    with pytest.raises(RuntimeError, match=r"solray\.init\(\)"):
        call()
    assert not solray.is_initialized()


def test_get_after_shutdown_raises_clear_error(leak_check):
    solray.init(num_cpus=1)
    ref = solray.put("value")
    solray.shutdown()
    with pytest.raises(RuntimeError, match=r"solray\.init\(\)"):
        solray.get(ref)


def test_ref_from_a_previous_session_fails_cleanly(leak_check):
    """Its owner (the old driver core worker) is gone: an error (OwnerDiedError,
    a kind of ObjectLostError), not a hang."""
    solray.init(num_cpus=1)
    ref = solray.put("value")
    solray.shutdown()
    solray.init(num_cpus=1)
    try:
        with pytest.raises(ObjectLostError):
            solray.get(ref, timeout=30)
    finally:
        solray.shutdown()


def test_put_before_init_starts_a_cluster(leak_check):
    ref = solray.put(41)
    assert solray.is_initialized()
    assert solray.get(ref) == 41
    solray.shutdown()


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"num_cpus": -1}, ValueError),
        ({"num_cpus": "2"}, (ValueError, TypeError)),
        ({"num_cpus": True}, (ValueError, TypeError)),
        ({"num_cpus": float("nan")}, ValueError),
        ({"num_cpus": float("inf")}, ValueError),
        ({"num_gpus": -0.5}, ValueError),
        ({"resources": [("custom", 1)]}, TypeError),
        ({"resources": {"CPU": 2}}, ValueError),
        ({"resources": {"GPU": 1}}, ValueError),
        ({"resources": {"custom": -1}}, ValueError),
        ({"resources": {"custom": "many"}}, TypeError),
        ({"resources": {3: 1}}, TypeError),
        ({"object_store_memory": 0}, ValueError),
        ({"object_store_memory": -(1 << 20)}, ValueError),
        ({"object_store_memory": "1GB"}, (ValueError, TypeError)),
        ({"object_store_memory": 1.5e8}, (ValueError, TypeError)),
        ({"no_such_option": 1}, TypeError),
    ],
    ids=lambda value: repr(value) if isinstance(value, dict) else None,
)
def test_init_rejects_invalid_arguments(leak_check, kwargs, error):
    with pytest.raises(error):
        solray.init(**kwargs)
    assert not solray.is_initialized()


def test_init_after_rejected_arguments_works(leak_check):
    with pytest.raises(ValueError):
        solray.init(num_cpus=-1)
    solray.init(num_cpus=1, resources={"custom": 2}, object_store_memory=64 << 20)
    resources = solray.cluster_resources()
    assert resources["CPU"] == 1
    assert resources["custom"] == 2
    assert resources["object_store_memory"] == 64 << 20
    assert solray.get(square.options(resources={"custom": 1}).remote(5), timeout=30) == 25
    solray.shutdown()


def test_init_with_unknown_address_raises_connection_error(leak_check, tmp_path):
    # A loopback port nobody listens on, and no token known for it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(ConnectionError, match=address):
        solray.init(address=address)
    assert not solray.is_initialized()


def test_init_auto_without_a_running_cluster_raises_connection_error(leak_check, tmp_path):
    with pytest.raises(ConnectionError, match="running solray cluster"):
        solray.init(address="auto", _temp_dir=str(tmp_path))
    assert not solray.is_initialized()


# -- drivers in subprocesses -------------------------------------------------------

DRIVER_PRELUDE = """
import os, pathlib, sys, time
import numpy as np
import solray

temp_dir, pid_file = sys.argv[1], pathlib.Path(sys.argv[2])
solray.init(num_cpus=2, _temp_dir=temp_dir)

@solray.remote
def long_task(pid_file):
    tmp = pid_file.with_name("pid.tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, pid_file)
    time.sleep(600)

running = long_task.remote(pid_file)
array = solray.put(np.ones(4_000_000))  # 32 MB: lives in the shared-memory store
assert solray.get(array).sum() == 4_000_000
deadline = time.monotonic() + 60
while not pid_file.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
print("ready", flush=True)
"""

DRIVER_ENDINGS = {
    "sigkill": "time.sleep(600)\n",
    "return": "sys.stdin.readline()\n",
    "exception": "sys.stdin.readline()\nraise RuntimeError('driver failed')\n",
    "sys.exit": "sys.stdin.readline()\nsys.exit(3)\n",
}
EXPECTED_EXIT = {"sigkill": -signal.SIGKILL, "return": 0, "exception": 1, "sys.exit": 3}


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("ending", list(DRIVER_ENDINGS))
def test_driver_exit_leaves_nothing(leak_check, tmp_path, ending):
    """However the driver ends, its whole cluster goes: no service or worker
    process, no shared memory; and after a clean exit, no session directory."""
    script = DRIVER_PRELUDE + DRIVER_ENDINGS[ending]
    pid_file = tmp_path / "task.pid"
    with subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), str(pid_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as driver:
        line = driver.stdout.readline()
        assert line == "ready\n", f"driver did not start: {line!r}"
        # The cluster, as it is now: services and workers, including the one
        # running the long task, and the session's shared memory.
        procs = psutil.Process(driver.pid).children(recursive=True)
        cmdlines = [" ".join(p.cmdline()) for p in procs]
        assert any("solray._private.control_store" in c for c in cmdlines), cmdlines
        assert any("solray._private.node" in c for c in cmdlines), cmdlines
        task_pid = int(pid_file.read_text())
        assert task_pid in {p.pid for p in procs}
        (session,) = os.listdir(services.sessions_root(str(tmp_path)))
        session_dir = os.path.join(services.sessions_root(str(tmp_path)), session)
        with open(os.path.join(session_dir, "cluster.json")) as f:
            control_address = json.load(f)["control_address"]
        assert task_pid in {p.pid for p in cluster_processes([session_dir], control_address)}
        shm = [n for n in os.listdir("/dev/shm") if n.startswith(f"solray_{session}_")]
        assert shm, "the node's shared memory should exist while the driver runs"

        if ending == "sigkill":
            driver.send_signal(signal.SIGKILL)
        else:
            driver.stdin.write("exit\n")
            driver.stdin.flush()
        assert driver.wait(timeout=60) == EXPECTED_EXIT[ending]

    wait_for_condition(
        lambda: (
            not any(alive(p) for p in procs)
            and not cluster_processes([session_dir], control_address)
        ),
        timeout=20,
        message=f"solray processes left after the driver ended ({ending})",
    )
    wait_for_condition(
        lambda: not [n for n in os.listdir("/dev/shm") if n.startswith(f"solray_{session}_")],
        timeout=20,
        message=f"/dev/shm entries left after the driver ended ({ending})",
    )
    if ending != "sigkill":
        # shutdown() at exit also removed the session directory.
        assert not os.path.exists(session_dir)


def test_shutdown_kills_running_tasks(leak_check, tmp_path):
    """shutdown() while a task runs: its worker is killed, not waited for."""
    solray.init(num_cpus=1)

    @solray.remote
    def hang(pid_file: str):
        pathlib.Path(pid_file).write_text(str(os.getpid()))
        import time

        time.sleep(600)

    pid_file = tmp_path / "pid"
    hang.remote(str(pid_file))
    wait_for_condition(lambda: pid_file.exists() and pid_file.read_text(), timeout=30)
    worker = psutil.Process(int(pid_file.read_text()))
    solray.shutdown()
    wait_for_condition(lambda: not alive(worker), timeout=15)


def test_object_store_larger_than_shared_memory_is_rejected(leak_check):
    with pytest.raises(ValueError, match="object_store_memory"):
        solray.init(object_store_memory=10**15)
    assert not solray.is_initialized()


# -- actors ending gracefully with the driver, or killed when they hang ---------


def test_actors_end_gracefully_at_driver_shutdown(leak_check, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    solray.init(num_cpus=1)
    plain = Cleaner.remote(str(tmp_path / "a"))
    named = Cleaner.options(name="n").remote(str(tmp_path / "b"))
    solray.get([plain.pid.remote(), named.pid.remote()])
    solray.shutdown()
    assert _order(tmp_path / "a") == ["shutdown", "atexit"]
    assert _order(tmp_path / "b") == ["shutdown", "atexit"]


@solray.remote
class _Hanging:
    def __init__(self, directory):
        self.directory = directory

    def __ray_shutdown__(self):
        open(os.path.join(self.directory, "started"), "w").close()
        time.sleep(600)
        open(os.path.join(self.directory, "completed"), "w").close()

    def pid(self):
        return os.getpid()


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize(
    "ray_start", [{"_system_config": {"actor_graceful_shutdown_timeout_ms": 500}}], indirect=True
)
def test_a_hanging_ray_shutdown_is_killed_after_the_graceful_timeout(ray_start, tmp_path):
    hanging = _Hanging.remote(str(tmp_path))
    pid = solray.get(hanging.pid.remote())
    start = time.monotonic()
    del hanging
    wait_for_condition(lambda: (tmp_path / "started").exists())
    wait_for_condition(lambda: _gone(pid), timeout=15)
    assert time.monotonic() - start >= 0.5  # killed by the timeout, not before it
    assert not (tmp_path / "completed").exists()  # checked once the process is gone


def test_the_graceful_timeout_is_checked(leak_check):
    with pytest.raises(ValueError, match="actor_graceful_shutdown_timeout_ms"):
        solray.init(_system_config={"actor_graceful_shutdown_timeout_ms": -1})


def test_a_daemon_stopped_otherwise_than_by_a_signal_ignores_signals_in_its_shutdown():
    """A daemon stopped by its lifeline or a lost connection may still get
    SIGTERM while its loop closes (the driver's shutdown sends one). The
    loop's handler would then write to its closed self-pipe and print
    "Exception ignored when trying to write to the signal wakeup fd" on the
    user's terminal; from the moment `stop` is set a no-op handler takes over."""
    program = """
import asyncio, os, signal
from solray._private import services

async def daemon():
    stop = asyncio.Event()
    services.on_stop_signals(asyncio.get_running_loop(), stop)
    asyncio.get_running_loop().call_soon(stop.set)  # as the lifeline does
    await stop.wait()
    await asyncio.sleep(0)

asyncio.run(daemon())
os.kill(os.getpid(), signal.SIGTERM)  # what would hit the closed self-pipe
os.kill(os.getpid(), signal.SIGINT)
print("still here")
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "still here\n", "")


def test_daemons_ignore_a_solray_folder_in_the_directory_they_start_from(leak_check, tmp_path):
    """A driver run from a folder holding another `solray` (an old checkout)
    imports the installed one; so must the daemons it starts."""
    (tmp_path / "solray").mkdir()
    (tmp_path / "solray" / "__init__.py").write_text("raise SystemExit('the wrong solray')\n")
    program = "import solray; solray.init(num_cpus=1); print(solray.get(solray.put(7)))"
    done = subprocess.run(
        [sys.executable, "-P", "-c", program],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (0, "7\n"), done.stderr
