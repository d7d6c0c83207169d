"""Fixtures: real local clusters, and a check that nothing leaked.

Every cluster a test starts must be gone when the test ends: no child
processes, no /dev/shm entries, no solray threads, no file descriptors beyond
those open before the test. `wait_for_condition` is the only way tests wait:
a condition polled until a deadline, never a bare sleep.

Output a driver logs once (a warning) is waited for with `solray_log`, then
read from capfd once: never poll `capfd.readouterr()` for it. pytest's
capture reads its file and then truncates it, so a line another thread
writes between the two is lost.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pathlib
import re
import socket
import threading
import time
import uuid

import psutil
import pytest

import solray
from solray._private import services
from solray.cluster_utils import Cluster


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


@contextlib.contextmanager
def solray_log():
    """The records the "solray" logger handles while open (a list that
    grows). Open it after init(): init's handler then writes each record to
    stderr before it is added here."""
    records: list[logging.LogRecord] = []
    handler = _Recorder(records)
    logger = logging.getLogger("solray")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


class _Recorder(logging.Handler):
    def __init__(self, records: list):
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def logged(records: list, text: str) -> bool:
    """Whether a record's message holds `text`."""
    return any(text in record.getMessage() for record in records)


def wait_for_file(path, timeout: float = 30.0) -> None:
    """Inside a task or actor: block until `path` exists (files are how tests
    coordinate with code running in other processes)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def barrier(directory, parties: int, timeout: float = 60.0) -> None:
    """Inside a task: wait until `parties` callers (tasks in other processes)
    have reached the barrier in `directory`. Returning proves they ran at the
    same time; a party that never comes fails the caller loudly."""
    path = pathlib.Path(directory)
    (path / f"arrived-{os.getpid()}-{uuid.uuid4().hex}").touch()
    deadline = time.monotonic() + timeout
    while (arrived := len(list(path.glob("arrived-*")))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {arrived} of {parties} parties reached the barrier")
        time.sleep(0.01)


def mapped_file(array) -> str | None:
    """The file whose mapping holds all of `array`'s memory in this process
    (from /proc/self/maps, as a user could check), or None: heap memory, or
    not one mapping. A zero-copy read gives the object store's arena file."""
    start = array.__array_interface__["data"][0]
    end = start + max(array.nbytes, 1)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(bound, 16) for bound in fields[0].split("-"))
            if low <= start < high:
                if end > high or len(fields) < 6:
                    return None
                return fields[5].strip()
    return None


def store_file(node_id: str | None = None) -> str:
    """The object store arena file of a node (this process's node by default),
    as solray.nodes() reports it."""
    node_id = node_id or solray.get_runtime_context().get_node_id()
    (path,) = [n["ObjectStoreSocketName"] for n in solray.nodes() if n["NodeID"] == node_id]
    return os.path.realpath(path)  # as /proc/self/maps names it


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


# The processes of a cluster that name its session directory on their command line.
SESSION_SERVICES = (
    "solray._private.node",
    "solray._private.client.server",
    "solray.dashboard.server",
)


def cluster_processes(session_dirs, control_address: str) -> list[psutil.Process]:
    """The live processes of one cluster (other runs may share the machine),
    found without its token, which is in no process's environment or command
    line: the control store listening on `control_address`, the nodes (and
    ray:// client servers, dashboards) started with a --session-dir in `session_dirs`, and
    everything they started (fork server, workers, client proxies)."""
    host, port = control_address.rsplit(":", 1)
    roots = {
        conn.pid
        for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN
        and conn.pid
        and (conn.laddr.ip, conn.laddr.port) == (host, int(port))
    }
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        started_by_session = any(m in cmdline for m in SESSION_SERVICES)
        if started_by_session and "--session-dir" in cmdline:
            if cmdline[cmdline.index("--session-dir") + 1] in session_dirs:
                roots.add(proc.pid)
    found = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found[proc.pid] = proc
        except psutil.Error:
            continue
    return list(found.values())


def assert_token_hidden(procs, tokens) -> int:
    """No process in `procs` has any of `tokens` (bytes) in its command line
    or environment, nor a SOLRAY_TOKEN variable, as /proc shows them to anyone
    who may read them. Returns how many processes were checked (some may
    have exited meanwhile)."""
    checked = 0
    for proc in procs:
        try:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                cmdline = f.read().lower()
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                environ = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for token in tokens:
            hex_token = token.hex().encode()
            assert hex_token not in cmdline, f"the token is on the command line of {proc}"
            assert hex_token not in environ.lower(), f"the token is in the environment of {proc}"
        assert b"SOLRAY_TOKEN" not in environ, f"SOLRAY_TOKEN in the environment of {proc}"
        checked += 1
    return checked


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


def _describe(process: psutil.Process) -> str:
    try:
        with process.oneshot():
            age = time.time() - process.create_time()
            command = " ".join(process.cmdline())[:200]
            return f"{process.pid} {process.status()} {age:.0f}s old: {command}"
    except psutil.Error:
        return f"{process.pid} (gone)"


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
        message=lambda: (
            "child processes still running after shutdown: "
            + "; ".join(_describe(p) for p in me.children(recursive=True))
        ),
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
def cluster(leak_check, request):
    """A head node (1 CPU unless the test's `indirect` parameter says
    otherwise); the test adds nodes, then connects with init(address=...)."""
    head_args = {"num_cpus": 1, **(getattr(request, "param", None) or {})}
    c = Cluster(initialize_head=True, head_node_args=head_args)
    yield c
    c.shutdown()  # also solray.shutdown()


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


@pytest.fixture
def silent_index():
    """A local 'package index' that accepts connections and never answers:
    pip waits on it, so a runtime_env build is in progress for as long as a
    test needs (no network involved)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/simple"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()
