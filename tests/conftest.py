"""Fixtures: real local clusters, and a check that nothing leaked.

Every cluster a test starts must be gone when the test ends: no child
processes, no /dev/shm entries, no solray threads, no file descriptors beyond
those open before the test. `wait_for_condition` is the only way tests wait:
a condition polled until a deadline, never a bare sleep.
"""

from __future__ import annotations

import gc
import os
import re
import threading
import time

import psutil
import pytest

import solray
from solray._private import services


def wait_for_condition(predicate, timeout: float = 20.0, interval: float = 0.02, message=""):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as e:  # the condition may raise until it holds
            last_error = e
        time.sleep(interval)
    raise AssertionError(
        f"condition not met within {timeout}s: "
        f"{(message() if callable(message) else message) or predicate}"
        + (f" (last error: {last_error!r})" if last_error else "")
    )


def wait_for_file(path, timeout: float = 30.0) -> None:
    """Inside a task or actor: block until `path` exists (files are how tests
    coordinate with code running in other processes)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


class DriverOutput:
    """Everything the driver printed so far (capfd's reads consume it)."""

    def __init__(self, capfd):
        self._capfd = capfd
        self.text = ""

    def read(self) -> str:
        self.text += self._capfd.readouterr().out
        return self.text

    def wait_for_lines(self, pattern: str, count: int = 1) -> list[str]:
        """Waits until `count` lines of the driver's stdout match `pattern`."""
        regex = re.compile(pattern)
        wait_for_condition(
            lambda: (
                len([line for line in self.read().splitlines() if regex.fullmatch(line)]) >= count
            ),
            message=f"{count} line(s) matching {pattern!r} in the driver's stdout",
        )
        return [line for line in self.text.splitlines() if regex.fullmatch(line)]


def _sessions() -> set[str]:
    """Sessions this process has started."""
    return set(services.started_sessions)


def _shm_of(sessions: set[str]) -> list[str]:
    """/dev/shm entries of the given sessions (other runs may share the machine)."""
    return [
        name
        for name in os.listdir("/dev/shm")
        if any(name.startswith(f"solray_{session}_") for session in sessions)
    ]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def leak_check():
    """Fails the test if it leaves processes, shared memory, threads or fds."""
    assert not solray.is_initialized(), "a previous test left solray initialized"
    sessions_before = _sessions()
    fds_before = _open_fds()
    yield
    if solray.is_initialized():
        solray.shutdown()
    me = psutil.Process()
    wait_for_condition(
        lambda: not me.children(recursive=True),
        timeout=15,
        message="child processes still running after shutdown",
    )
    new_sessions = _sessions() - sessions_before
    wait_for_condition(
        lambda: not _shm_of(new_sessions),
        timeout=10,
        message=lambda: f"/dev/shm entries left behind: {_shm_of(new_sessions)}",
    )
    wait_for_condition(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("solray")],
        timeout=10,
        message="solray threads still running",
    )
    gc.collect()  # values viewing the store keep its mapping (and fd) until collected
    wait_for_condition(
        lambda: _open_fds() <= fds_before,
        timeout=10,
        message=f"file descriptors leaked ({_open_fds()} > {fds_before})",
    )


@pytest.fixture
def ray_start(leak_check, request):
    """A fresh local cluster; `@pytest.mark.parametrize("ray_start", [{...}],
    indirect=True)` passes init() arguments."""
    kwargs = dict(num_cpus=2)
    kwargs.update(getattr(request, "param", None) or {})
    context = solray.init(**kwargs)
    yield context
    solray.shutdown()


@pytest.fixture(scope="module")
def shared_cluster(request):
    """One cluster for a module of tests that leave it as they found it;
    `SHARED_CLUSTER = {...}` in the module passes init() arguments. The leak
    check runs once, after the module."""
    sessions_before = _sessions()
    solray.init(**getattr(request.module, "SHARED_CLUSTER", {"num_cpus": 2}))
    yield
    solray.shutdown()
    me = psutil.Process()
    wait_for_condition(lambda: not me.children(recursive=True), timeout=15)
    new_sessions = _sessions() - sessions_before
    wait_for_condition(lambda: not _shm_of(new_sessions), timeout=10)


@pytest.fixture
def ray(shared_cluster):
    return solray
