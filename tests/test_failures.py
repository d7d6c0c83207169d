"""Worker crashes and application errors: what fails, what is retried, and
that the cluster keeps serving afterwards.

Tasks record each attempt as a file in tmp_path, so the test counts attempts
by listing a directory; a task that must be killed writes its pid to a file
and hangs, and the test kills that pid once the file appears.
"""

from __future__ import annotations

import os
import pathlib
import signal
import time
import uuid

import psutil
import pytest
from conftest import wait_for_condition

import solray
from solray.exceptions import RayTaskError, WorkerCrashedError

GET_TIMEOUT_S = 60


# -- tasks -------------------------------------------------------------------


def record_attempt(directory: str) -> int:
    """Mark one attempt in `directory`; return how many there have been."""
    path = pathlib.Path(directory)
    (path / f"attempt-{os.getpid()}-{uuid.uuid4().hex}").touch()
    return len(list(path.glob("attempt-*")))


def write_atomically(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@solray.remote
def hang_on_first_attempt(directory: str):
    """Writes its pid to `pid` and hangs on the first attempt; later attempts
    return their pid."""
    path = pathlib.Path(directory)
    record_attempt(directory)
    if not (path / "first").exists():
        (path / "first").touch()
        write_atomically(path / "pid", str(os.getpid()))
        time.sleep(300)
    return os.getpid()


@solray.remote
def exit_abruptly(directory: str):
    record_attempt(directory)
    write_atomically(pathlib.Path(directory) / "pid", str(os.getpid()))
    os._exit(1)


def process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@solray.remote
def fail_first(directory: str, failures: int, error: type[BaseException]):
    """Raise `error` on the first `failures` attempts, then succeed."""
    attempt = record_attempt(directory)
    if attempt <= failures:
        raise error(f"attempt {attempt} failed")
    return attempt


@solray.remote
def square(x):
    return x * x


@solray.remote
def getpid():
    return os.getpid()


# -- helpers -----------------------------------------------------------------


def attempts(directory: pathlib.Path) -> int:
    return len(list(directory.glob("attempt-*")))


def read_pid(path: pathlib.Path) -> int:
    wait_for_condition(path.exists, timeout=30, message=f"{path} was never written")
    return int(path.read_text())


def sigkill(pid: int) -> None:
    proc = psutil.Process(pid)
    # A worker runs worker_main, or was forked from its node's worker_zygote.
    cmdline = " ".join(proc.cmdline())
    assert "solray._private.worker_main" in cmdline or "solray._private.worker_zygote" in cmdline
    os.kill(pid, signal.SIGKILL)


def assert_cluster_serves(num_cpus: int = 2) -> None:
    """New tasks run, and every CPU is free again (a crash leaked no lease)."""
    assert solray.get([square.remote(i) for i in range(6)], timeout=GET_TIMEOUT_S) == [
        i * i for i in range(6)
    ]
    wait_for_condition(
        lambda: solray.available_resources().get("CPU") == num_cpus,
        timeout=20,
        message="CPUs were not given back after the failure",
    )


def new_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / uuid.uuid4().hex[:8]
    path.mkdir()
    return path


# -- worker crashes ------------------------------------------------------------


def test_sigkill_without_retries_raises_worker_crashed(ray_start, tmp_path):
    ref = hang_on_first_attempt.options(max_retries=0).remote(str(tmp_path))
    pid = read_pid(tmp_path / "pid")
    sigkill(pid)
    with pytest.raises(WorkerCrashedError):
        solray.get(ref, timeout=GET_TIMEOUT_S)
    wait_for_condition(lambda: process_gone(pid), timeout=10)
    assert_cluster_serves()
    assert attempts(tmp_path) == 1  # checked after later tasks ran: no retry came


def test_sigkill_with_default_retries_reruns_the_task(ray_start, tmp_path):
    ref = hang_on_first_attempt.remote(str(tmp_path))
    killed = read_pid(tmp_path / "pid")
    sigkill(killed)
    pid = solray.get(ref, timeout=GET_TIMEOUT_S)
    assert pid != killed  # the retry ran in another worker
    assert attempts(tmp_path) == 2
    assert_cluster_serves()


def test_os_exit_exhausts_retries(ray_start, tmp_path):
    ref = exit_abruptly.options(max_retries=1).remote(str(tmp_path))
    with pytest.raises(WorkerCrashedError) as info:
        solray.get(ref, timeout=GET_TIMEOUT_S)
    assert "exit_abruptly" in str(info.value)
    assert_cluster_serves()
    assert attempts(tmp_path) == 2  # the first run and one retry, and no more


def test_crash_does_not_disturb_concurrent_tasks(ray_start, tmp_path):
    """One worker crashing leaves the task in the other worker unharmed, and
    the crashed task's error is its own."""
    survivor_dir, crash_dir = new_dir(tmp_path), new_dir(tmp_path)

    @solray.remote
    def wait_for_crash(directory: str, crash_dir: str):
        record_attempt(directory)
        # Still running when the other task's worker has died.
        pid_file = pathlib.Path(crash_dir) / "pid"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if pid_file.exists() and process_gone(int(pid_file.read_text())):
                return "survived"
            time.sleep(0.01)
        return "timed out"

    survivor = wait_for_crash.remote(str(survivor_dir), str(crash_dir))
    wait_for_condition(lambda: attempts(survivor_dir) == 1, message="survivor never started")
    crashed = exit_abruptly.options(max_retries=0).remote(str(crash_dir))
    with pytest.raises(WorkerCrashedError):
        solray.get(crashed, timeout=GET_TIMEOUT_S)
    assert solray.get(survivor, timeout=GET_TIMEOUT_S) == "survived"
    assert_cluster_serves()
    assert attempts(survivor_dir) == 1


def test_idle_worker_killed_is_replaced(ray_start):
    pids = set(solray.get([getpid.remote() for _ in range(4)], timeout=GET_TIMEOUT_S))
    for pid in pids:
        sigkill(pid)
    assert_cluster_serves()
    assert not pids & set(solray.get([getpid.remote() for _ in range(4)], timeout=GET_TIMEOUT_S))


# -- application errors ----------------------------------------------------------


@pytest.mark.parametrize(
    "options, error, failures, expect_attempts, expect_success",
    [
        # Not retried: the default, and a list that does not match.
        ({}, ValueError, 1, 1, False),
        ({"retry_exceptions": False, "max_retries": 3}, ValueError, 1, 1, False),
        ({"retry_exceptions": [KeyError], "max_retries": 3}, ValueError, 1, 1, False),
        # Retried: True, a matching list, a list holding a base class.
        ({"retry_exceptions": True, "max_retries": 2}, ValueError, 2, 3, True),
        ({"retry_exceptions": [KeyError, ValueError], "max_retries": 3}, ValueError, 1, 2, True),
        ({"retry_exceptions": [LookupError], "max_retries": 3}, KeyError, 2, 3, True),
        # Retried until max_retries runs out, then the error is raised.
        ({"retry_exceptions": True, "max_retries": 1}, ValueError, 5, 2, False),
        ({"retry_exceptions": [ValueError], "max_retries": 0}, ValueError, 5, 1, False),
    ],
    ids=[
        "default",
        "retry_exceptions-false",
        "non-matching-list",
        "true",
        "matching-list",
        "base-class-in-list",
        "true-exhausted",
        "list-with-zero-retries",
    ],
)
def test_application_error_retries(
    ray_start, tmp_path, options, error, failures, expect_attempts, expect_success
):
    ref = fail_first.options(**options).remote(str(tmp_path), failures, error)
    if expect_success:
        assert solray.get(ref, timeout=GET_TIMEOUT_S) == expect_attempts
    else:
        with pytest.raises(error) as info:
            solray.get(ref, timeout=GET_TIMEOUT_S)
        assert isinstance(info.value, RayTaskError)
        assert f"attempt {expect_attempts} failed" in str(info.value)
    assert solray.get(square.remote(7), timeout=GET_TIMEOUT_S) == 49
    assert attempts(tmp_path) == expect_attempts  # after a later task: no extra attempt


def zygotes() -> list[psutil.Process]:
    """The nodes' worker fork servers (not the workers forked from them)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "solray._private.worker_zygote" not in " ".join(proc.cmdline()):
                continue
            if "solray._private.worker_zygote" not in " ".join(proc.parent().cmdline()):
                found.append(proc)
        except psutil.Error:
            continue  # gone meanwhile
    return found


@solray.remote
class Pid:
    def pid(self) -> int:
        return os.getpid()


def test_a_killed_worker_fork_server_is_replaced(ray_start):
    """Workers start as interpreters while the fork server is gone, and
    forked from a new one once it is up."""
    solray.get([square.remote(i) for i in range(4)], timeout=GET_TIMEOUT_S)
    wait_for_condition(lambda: len(zygotes()) == 1, timeout=30, message="no fork server")
    (first,) = zygotes()
    first.kill()
    first.wait(timeout=10)

    def new_worker_is_forked_from_a_new_server() -> bool:
        actor = Pid.remote()  # an actor: a worker of its own, started now
        try:
            parent = psutil.Process(solray.get(actor.pid.remote(), timeout=GET_TIMEOUT_S)).parent()
        finally:
            solray.kill(actor)
        servers = zygotes()
        return len(servers) == 1 and servers[0].pid != first.pid and parent.pid == servers[0].pid

    wait_for_condition(new_worker_is_forked_from_a_new_server, timeout=60)
    assert_cluster_serves()
