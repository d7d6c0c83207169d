"""Starting and stopping solray's long-lived processes.

Both sides live here: the launcher (a driver's `init()` starting a control
store and a node as its children) and what every service does at start-up
(read the token from its pipe, take its listening socket, learn when to stop).

Start-up is parallel: the launcher binds each service's listening socket
itself and hands it over as an inherited fd, so it knows every address before
any child has finished importing, and the node can dial the control store
while the control store is still starting (the connection waits in the
socket's backlog).

A service stops on SIGTERM/SIGINT, or when its lifeline pipe closes: the
launcher holds the write end, so if the driver dies, even by SIGKILL, its
cluster notices at once and cleans up after itself.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from solray._private import log_files, tls, transport

logger = logging.getLogger(__name__)

# User inputs only (init(address=...), the CLI): solray never sets them, and
# strips them from the environment of every process it starts.
TOKEN_ENV = "SOLRAY_TOKEN"
TOKEN_FILE_ENV = "SOLRAY_TOKEN_FILE"
MAX_TOKEN_BYTES = 1024  # a token must fit a pipe's buffer (token_pipe)
# Session directories of the clusters this process started (tests check that
# each one's shared memory is gone after shutdown).
started_sessions: list[str] = []
SHM_ROOT = "/dev/shm"
SHM_PREFIX = "solray_"


# -- the token -----------------------------------------------------------------
#
# The token is the cluster's master key: whoever holds it can make any process
# of the cluster unpickle data, i.e. run code as this user. So it never travels
# where others (or code running in tasks) could find it: not on a command line
# (/proc/PID/cmdline is readable by every local user), not in an environment
# (a task's subprocesses and crash reporters inherit or dump it). A launcher
# hands it to each child through an inherited pipe the child reads once and
# closes.


def parse_token(text: str, source: str) -> bytes:
    """The token written as hex in `source` (a file, a variable), checked."""
    try:
        token = bytes.fromhex(text.strip())
    except ValueError as e:
        raise ValueError(f"the cluster token in {source} must be hex: {e}") from None
    if not 0 < len(token) <= MAX_TOKEN_BYTES:
        raise ValueError(
            f"the cluster token in {source} must hold 1 to {MAX_TOKEN_BYTES} bytes, "
            f"not {len(token)}"
        )
    return token


def token_pipe(token: bytes) -> int:
    """The read end of a pipe that holds the token and nothing else, for one
    child to inherit (pass_fds): the write end is already closed, so the child
    reads to EOF. The parent closes its copy once the child has started."""
    r, w = os.pipe()
    try:
        os.write(w, token)  # at most MAX_TOKEN_BYTES: fits the pipe's buffer
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return r


def read_token(fd: int) -> bytes:
    """The token from the pipe the launcher passed (token_pipe); the fd is
    closed after, so nothing this process starts inherits it."""
    with os.fdopen(fd, "rb") as f:
        token = f.read()
    if not token:
        raise SystemExit(f"no cluster token on fd {fd}: a solray process needs the cluster token")
    return token


def daemon_command(module: str, *args: str) -> list[str]:
    """The command line of a solray daemon (node, control store, dashboard,
    client server). `-P`: the directory it was started from is not put on
    sys.path, so a `solray` folder there (an old checkout, say) is never
    what a daemon imports instead of the installed solray."""
    return [sys.executable, "-P", "-m", module, *args]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a process solray starts: this one's, without the
    user's token variables (a worker's environment is every task's)."""
    env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, TOKEN_FILE_ENV)}
    env.update(extra or {})
    return env


# -- the session registry -----------------------------------------------------
#
# Clusters of this user on this machine record themselves in a per-user
# directory, <temp dir>/solray-sessions-<uid>: one session directory each,
# holding cluster.json (addresses, the pid it lives as long as) and the token
# (mode 0600). Another user able to write there could make init("auto") join
# their cluster (and unpickle our results: code execution as us) or read our
# token, so the registry must be ours alone, and every entry in it is checked
# before it is believed.


class SessionRegistryError(PermissionError):
    """The session registry is not a private directory of this user."""


# Ray's variable for the temp dir when none is given; a job's entrypoint
# gets its head's (dashboard/jobs.py), so init() in it finds the head's session.
TEMP_DIR_ENV = "RAY_TMPDIR"


def sessions_root(temp_dir: str | None = None) -> str:
    """Where this user's session registry is (it may not exist yet)."""
    temp_dir = temp_dir or os.environ.get(TEMP_DIR_ENV) or tempfile.gettempdir()
    return os.path.join(temp_dir, f"solray-sessions-{os.getuid()}")


def session_registry(temp_dir: str | None = None, create: bool = False) -> str | None:
    """This user's session registry, checked (SessionRegistryError if it is
    not private); None if it does not exist and `create` is False."""
    root = sessions_root(temp_dir)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        if not create:
            return None
        os.makedirs(os.path.dirname(root), exist_ok=True)
        try:
            os.mkdir(root, 0o700)
        except FileExistsError:
            pass  # made meanwhile (by us, or not): checked below
        st = os.lstat(root)
    problem = _not_private(st)
    if problem is not None:
        fix = (
            f"make it private (chmod 700 {root})"
            if problem.startswith("accessible")
            else "remove it (solray makes a new one)"
        )
        raise SessionRegistryError(
            f"solray's session registry {root} is {problem}; it must be a directory "
            f"only you (uid {os.getuid()}) own and can open, or another user could read "
            f"your clusters' tokens or make you join theirs. Either {fix}, or use another "
            "temp dir (init(_temp_dir=...), --temp-dir)."
        )
    return root


def _not_private(st: os.stat_result) -> str | None:
    """What makes a registry directory unsafe to trust, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}"
    if st.st_mode & 0o077:
        return f"accessible to other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def new_session_dir(temp_dir: str | None = None) -> str:
    root = session_registry(temp_dir, create=True)
    # mkdtemp makes it mode 0700.
    return tempfile.mkdtemp(prefix=time.strftime("session_%Y-%m-%d_%H-%M-%S_"), dir=root)


def write_session_file(
    session_dir: str,
    node_address: str,
    control_address: str,
    token: bytes,
    pid: int | None = None,
    client_server_address: str | None = None,
    dashboard_url: str | None = None,
) -> None:
    """Let tools of this user (`solray memory`, init(address="auto")) find the
    running cluster: the addresses in cluster.json, the token in a file only
    this user can read. `pid` is the process whose life the cluster's follows
    (the driver that started it, or a daemon); its start time tells it from a
    later process that got the same pid. `client_server_address` is where
    the head's ray:// client server listens, if it runs one, and
    `dashboard_url` (HOST:PORT) where its dashboard and job API are."""
    import psutil  # here, not at the top: workers import this module, and start faster without it

    pid = pid or os.getpid()
    token_path = os.path.join(session_dir, "token")
    fd = os.open(token_path, os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token.hex())
    with open(os.path.join(session_dir, "cluster.json"), "w") as f:
        json.dump(
            {
                "node_address": node_address,
                "control_address": control_address,
                "driver_pid": pid,
                "driver_create_time": psutil.Process(pid).create_time(),
                "client_server_address": client_server_address,
                "dashboard_url": dashboard_url,
                # Its processes' TLS (tls.py): the dashboard serves https:// then.
                "tls": tls.enabled(),
            },
            f,
        )


def find_session(temp_dir: str | None = None, session_dir: str | None = None) -> tuple[dict, bytes]:
    """The given session, or the newest whose driver is alive: (cluster.json, token)."""
    if session_dir is not None:
        where, sessions = f"at {session_dir}", _live_sessions([session_dir])
    else:
        where, sessions = f"in {sessions_root(temp_dir)}", _registered_sessions(temp_dir)
    if sessions:
        _, info, token = max(sessions, key=lambda s: s[0])
        return info, token
    raise ConnectionError(
        f"Could not find any running solray cluster of this user (looked {where}). "
        "Start one with solray.init() in a program that keeps running."
    )


def resolve_cluster(address: str, temp_dir: str | None = None) -> tuple[str, bytes]:
    """(control store address, token) for init(address=...) and the CLI.

    "auto" means the newest running cluster of this user on this machine.
    `address` may also be the cluster's ray:// client server (init("ray://
    HOST:PORT") gives the part after ray://). The token comes from
    SOLRAY_TOKEN, else the file named by SOLRAY_TOKEN_FILE, else this user's
    session registry (clusters started here by init(), `solray start` or the
    Cluster helper record their token, readable only by their user)."""
    registry = None
    if address == "auto":
        registry = find_session(temp_dir)
        address = registry[0]["control_address"]
    else:
        transport.parse_address(address)  # validates the form
    given = token_from_environment()
    if given is not None:
        return address, given
    if registry is None:
        registry = _session_for(address, temp_dir)
    if registry is None:
        raise ConnectionError(
            f"No token for the cluster at {address}: set SOLRAY_TOKEN_FILE (or SOLRAY_TOKEN) "
            "to the token file `solray start --head` printed."
        )
    return address, registry[1]


def token_from_environment() -> bytes | None:
    """The token SOLRAY_TOKEN holds, else the one in SOLRAY_TOKEN_FILE's file,
    else None."""
    if os.environ.get(TOKEN_ENV):
        return parse_token(os.environ[TOKEN_ENV], TOKEN_ENV)
    if os.environ.get(TOKEN_FILE_ENV):
        path = os.environ[TOKEN_FILE_ENV]
        with open(path) as f:
            return parse_token(f.read(), f"{path} ({TOKEN_FILE_ENV})")
    return None


def resolve_dashboard(address: str | None, temp_dir: str | None = None) -> tuple[str, bytes]:
    """(http(s)://HOST:PORT, token) of a cluster's dashboard, for the job
    SDK and `solray job`. `address`: the dashboard's http(s):// URL, or
    None/"auto" for the newest running cluster of this user on this
    machine (https:// if that cluster runs with TLS). The token comes as in
    resolve_cluster: SOLRAY_TOKEN, else SOLRAY_TOKEN_FILE, else the
    registered session whose dashboard this is; a token is never sent to a
    dashboard it was not recorded for."""
    if address in (None, "auto"):
        info, token = find_session(temp_dir)
        if not info.get("dashboard_url"):
            raise ConnectionError(
                f"The newest running cluster (control store at {info['control_address']}) "
                "runs no dashboard, so no job API: start it with the dashboard on."
            )
        url = f"{'https' if info.get('tls') else 'http'}://{info['dashboard_url']}"
    elif address.startswith(("http://", "https://")):
        url = address.rstrip("/")
        token = None
    else:
        raise ValueError(
            f"the job API's address must be the dashboard's http://HOST:PORT (or 'auto'), "
            f"got {address!r}"
        )
    given = token_from_environment()
    if given is not None:
        return url, given
    if token is None:
        where = url.split("://", 1)[1]
        sessions = [s for s in _registered_sessions(temp_dir) if s[1].get("dashboard_url") == where]
        if not sessions:
            raise ConnectionError(
                f"No token for the dashboard at {url}: set SOLRAY_TOKEN_FILE (or SOLRAY_TOKEN) "
                "to the token file `solray start --head` printed."
            )
        token = max(sessions, key=lambda s: s[0])[2]
    return url, token


def _session_for(address: str, temp_dir: str | None) -> tuple[dict, bytes] | None:
    """The newest live session of this user whose control store (or ray://
    client server) has this address (older ones on the same address are
    stale: their port may be another cluster's now)."""
    sessions = [
        s
        for s in _registered_sessions(temp_dir)
        if address in (s[1]["control_address"], s[1].get("client_server_address"))
    ]
    if not sessions:
        return None
    _, info, token = max(sessions, key=lambda s: s[0])
    return info, token


def _registered_sessions(temp_dir: str | None) -> list[tuple[float, dict, bytes]]:
    root = session_registry(temp_dir)
    if root is None:
        return []
    return _live_sessions([os.path.join(root, name) for name in os.listdir(root)])


def _live_sessions(session_dirs: list[str]) -> list[tuple[float, dict, bytes]]:
    """(time recorded, cluster.json, token) of each session that is this
    user's and whose driver still runs. Anything else is skipped: entries of
    other users, symbolic links, sessions gone (or going: their files are
    removed at shutdown), sessions whose driver died."""
    found = []
    for path in session_dirs:
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            text, recorded = _read_own_file(os.path.join(path, "cluster.json"))
            info = json.loads(text)
            if not _process_alive(info["driver_pid"], info["driver_create_time"]):
                continue
            token, _ = _read_own_file(os.path.join(path, "token"))
            found.append((recorded, info, parse_token(token, path)))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def _read_own_file(path: str) -> tuple[str, float]:
    """(text, modification time) of a regular file of this user; OSError for
    anything else (a symbolic link, a fifo, another user's file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise PermissionError(f"{path} is not a file of this user")
        return f.read(), st.st_mtime


def _process_alive(pid: int, create_time: float) -> bool:
    """Whether the process `pid` that started at `create_time` still runs as
    this user. A process of another user is not ours, whatever its pid; one
    that started at another time got a recycled pid."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return (
            proc.uids().real == os.getuid()
            and abs(proc.create_time() - create_time) < 1.0
            and proc.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def shm_dir(session_dir: str, node_id: str) -> str:
    """A node's shared-memory directory; its name starts with the session's."""
    return os.path.join(SHM_ROOT, f"{SHM_PREFIX}{os.path.basename(session_dir)}_{node_id[:8]}")


def remove_session_shm(session_dir: str) -> None:
    """Remove every shared-memory directory of a session's nodes."""
    prefix = f"{SHM_PREFIX}{os.path.basename(session_dir)}_"
    for name in os.listdir(SHM_ROOT):
        if name.startswith(prefix):
            shutil.rmtree(os.path.join(SHM_ROOT, name), ignore_errors=True)


def sweep_stale_shm() -> None:
    """Remove this user's shared-memory directories whose node process is
    gone (a node killed with SIGKILL together with its driver cannot clean up
    itself). /dev/shm is shared by every user: a directory of another user is
    never touched, and a node.pid naming another user's process (or a process
    we cannot see) never counts as ours being alive or dead."""
    import psutil  # here, not at the top: workers import this module

    for name in os.listdir(SHM_ROOT):
        if not name.startswith(SHM_PREFIX):
            continue
        path = os.path.join(SHM_ROOT, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            text, _ = _read_own_file(os.path.join(path, "node.pid"))
            pid = int(text)
        except (OSError, ValueError):
            continue  # being created, or not ours
        try:
            if psutil.Process(pid).uids().real == os.getuid():
                continue  # a live node of ours (or a process of ours that got its pid)
        except psutil.NoSuchProcess:
            pass
        except psutil.Error:
            continue
        shutil.rmtree(path, ignore_errors=True)


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-fd", type=int, required=True, help="inherited pipe holding the cluster token"
    )
    parser.add_argument("--listen-fd", type=int, help="inherited listening socket")
    parser.add_argument(
        "--twin-fd", type=int, help="inherited local twin of the listening socket (transport.py)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifeline-fd", type=int, help="stop when this pipe closes")
    parser.add_argument("--log-level", default="WARNING")


def setup_process(name: str, args) -> None:
    """Logging, and a low OOM score: the kernel must never prefer a service
    (a node, a control store) to a worker."""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format=f"[{name} pid={os.getpid()}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    set_oom_score_adj(SERVICE_OOM_SCORE_ADJ, lower_only=True)


# The kernel's OOM killer takes the process with the highest score: its
# memory use plus oom_score_adj (-1000..1000, in thousandths of the machine's
# memory). Workers run user code, which is what overcommits memory, so they
# get the maximum, as in Ray: whatever a node maps and touches of its arena,
# the kernel takes the worker running a greedy task first, and its owner
# sees WorkerCrashedError. Services stay at 0 (going lower needs
# CAP_SYS_RESOURCE). The zygote keeps the node's score: it is small, and its
# forked workers die with it.
WORKER_OOM_SCORE_ADJ = 1000
SERVICE_OOM_SCORE_ADJ = 0


def set_oom_score_adj(score: int, lower_only: bool = False) -> None:
    """Set this process's oom_score_adj; with `lower_only`, never above the
    inherited one (an operator may have set the cluster's lower)."""
    path = "/proc/self/oom_score_adj"
    try:
        if lower_only:
            with open(path) as f:
                score = min(score, int(f.read()))
        with open(path, "w") as f:
            f.write(str(score))
    except (OSError, ValueError) as e:  # not Linux, or not permitted
        logger.info("could not set the OOM score to %s: %s", score, e)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a backstop)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def listening_socket(args) -> socket.socket:
    if args.listen_fd is not None:
        return socket.socket(fileno=args.listen_fd)
    return transport.bind_socket(args.host, args.port)


def listening_twin(args) -> socket.socket | bool:
    """The local twin the launcher bound with the listening socket, or True:
    `transport.serve` binds it itself."""
    return True if args.twin_fd is None else socket.socket(fileno=args.twin_fd)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop`. Once `stop` is set, for whatever reason
    (a signal, the lifeline, a lost connection), they are handled by a plain
    no-op handler instead: the loop's signal handling writes to its
    self-pipe, which closing the loop closes before it removes the handlers,
    so a signal during shutdown would hit a closed fd ("Exception ignored
    when trying to write to the signal wakeup fd")."""

    async def hand_over_when_stopped() -> None:
        try:
            await stop.wait()
        finally:  # also when asyncio.run cancels this task at the end
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
                signal.signal(sig, _already_stopping)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    watcher = loop.create_task(hand_over_when_stopped())
    _stop_watchers.add(watcher)
    watcher.add_done_callback(_stop_watchers.discard)


# The loop keeps only weak references to its tasks.
_stop_watchers: set[asyncio.Task] = set()


def _already_stopping(signum, frame) -> None:
    pass  # shutdown is under way; SIGKILL is the way to hurry it


def lifeline_closed(args) -> bool:
    """Whether this daemon's launcher has let go of its lifeline (the
    cluster is stopping), though the loop may not have seen it yet: the
    launcher never writes to it, so readable means closed."""
    if args.lifeline_fd is None:
        return False
    readable, _, _ = select.select([args.lifeline_fd], [], [], 0)
    return bool(readable)


async def wait_for_stop(args) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    on_stop_signals(loop, stop)
    if args.lifeline_fd is not None:

        def on_lifeline():
            try:
                data = os.read(args.lifeline_fd, 64)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(args.lifeline_fd)
                stop.set()

        loop.add_reader(args.lifeline_fd, on_lifeline)
    await stop.wait()


# -- the launcher side ------------------------------------------------------


class MetricsPortError(OSError):
    """A node's metrics endpoint cannot listen where it was asked to."""


class DashboardPortError(OSError):
    """The dashboard cannot listen where it was asked to."""


# Ray's: the dashboard listens on 8265 unless told otherwise, and on a free
# port if 8265 is taken (a port the user gave must be free).
DEFAULT_DASHBOARD_PORT = 8265


@dataclass
class ServiceProcess:
    name: str
    popen: subprocess.Popen
    address: str
    node_id: str | None = None
    metrics_export_port: int | None = None  # a node's /metrics endpoint
    dashboard_url: str | None = None  # HOST:PORT of the dashboard it serves
    # A control store's own arguments; the head node is given them, to start
    # it again should it die (control_supervisor.py).
    control_args: list[str] | None = None


class Launcher:
    """Starts a cluster's processes and stops them.

    As children (init(), the Cluster helper): every process holds the read end
    of a lifeline pipe this launcher writes, so they all stop when the
    launching process dies. As daemons (`solray start`): a new session each,
    output to log files in the session directory, stopped by `solray stop`.
    """

    def __init__(
        self, session_dir: str, token: bytes, daemon: bool = False, log_level: str = "WARNING"
    ):
        self.session_dir = session_dir
        self.token = token
        self.daemon = daemon
        self.log_level = log_level
        self.processes: list[ServiceProcess] = []
        self.storage: str | None = None  # where our control store keeps its tables
        self.storage_namespace = ""
        self._lifeline_r: int | None = None
        self._lifeline_w: int | None = None
        if not daemon:
            self._lifeline_r, self._lifeline_w = os.pipe()
            os.set_inheritable(self._lifeline_r, True)
        started_sessions.append(os.path.basename(session_dir))

    def start_control_store(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        args: list[str] = (),
        storage: str | None = None,
    ) -> ServiceProcess:
        """A control store keeping its tables in `storage` (storage_url)."""
        self.storage = storage_url(self.session_dir, storage)
        self.storage_namespace = os.environ.get(
            STORAGE_NAMESPACE_ENV, os.path.basename(self.session_dir)
        )
        args = [*args, *self._storage_arguments(), "--storage-namespace", self.storage_namespace]
        proc = self._start("control store", "solray._private.control_store", host, port, args)
        proc.control_args = args
        return proc

    def _storage_arguments(self) -> list[str]:
        """--storage URL; a URL with credentials (a Redis password) goes in
        a file only this user can read instead: a command line is readable
        by every local user."""
        if "@" not in self.storage:
            return ["--storage", self.storage]
        path = os.path.join(self.session_dir, "control_store_storage")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.storage)
        return ["--storage-file", path]

    def start_node(
        self,
        control_address: str,
        node_args: list[str],
        host: str = "127.0.0.1",
        port: int = 0,
        metrics_export_port: int = 0,
        metrics_export_host: str = "127.0.0.1",
    ) -> ServiceProcess:
        """A node; its /metrics endpoint listens on metrics_export_host:
        metrics_export_port (0: a free port), bound here, so a port in use is
        an OSError now. Log rotation settings in the environment are checked
        here too, so a bad one is the caller's ValueError, not a dead node."""
        log_files.Rotation.from_environment()
        node_id = random_node_id()
        try:
            metrics_sock = transport.bind_socket(metrics_export_host, metrics_export_port)
        except OSError as e:
            raise MetricsPortError(
                e.errno,
                f"cannot listen on {metrics_export_host}:{metrics_export_port} for the node's "
                f"metrics endpoint (_metrics_export_port, --metrics-export-port): {e.strerror}",
            ) from None
        try:
            proc = self._start(
                "node",
                "solray._private.node",
                host,
                port,
                [
                    "--control-address",
                    control_address,
                    "--session-dir",
                    self.session_dir,
                    "--node-ip-address",
                    host,
                    "--node-id",
                    node_id,
                    "--metrics-fd",
                    str(metrics_sock.fileno()),
                    *node_args,
                ],
                inherit=metrics_sock,
            )
            proc.metrics_export_port = metrics_sock.getsockname()[1]
        finally:
            metrics_sock.close()
        proc.node_id = node_id
        return proc

    def start_client_server(
        self,
        control_address: str,
        host: str,
        port: int,
        dashboard: tuple[str, int | None] | None = None,
    ) -> ServiceProcess:
        """The ray:// client server (client/server.py) of a head, and in it
        the dashboard on `dashboard` (host, port) if given."""
        args = ["--control-address", control_address, "--session-dir", self.session_dir]
        if dashboard is None:
            return self._start("client server", "solray._private.client.server", host, port, args)
        sock, url = _bind_dashboard(control_address, *dashboard)
        try:
            args += ["--dashboard-fd", str(sock.fileno()), "--dashboard-url", url]
            proc = self._start(
                "client server", "solray._private.client.server", host, port, args, inherit=sock
            )
        finally:
            sock.close()
        proc.dashboard_url = url
        return proc

    def start_dashboard(self, control_address: str, host: str, port: int | None) -> ServiceProcess:
        """The dashboard (solray/dashboard/) as a process of its own, for a
        cluster without a client server."""
        sock, url = _bind_dashboard(control_address, host, port)
        try:
            args = ["--control-address", control_address, "--session-dir", self.session_dir]
            proc = self._start(
                "dashboard",
                "solray.dashboard.server",
                host,
                0,
                [*args, "--dashboard-url", url],
                listen=sock,
            )
        finally:
            sock.close()
        proc.dashboard_url = url
        return proc

    def _start(
        self,
        name: str,
        module: str,
        host: str,
        port: int,
        extra: list[str],
        inherit: socket.socket | None = None,
        listen: socket.socket | None = None,
    ):
        """Start `module` on a socket bound to host:port (or on `listen`, a
        socket the caller bound); `inherit` is one more socket the child gets
        (its fd is in `extra`)."""
        sock = transport.bind_socket(host, port) if listen is None else listen.dup()
        # An RPC port's twin is bound with it, so a peer that connects
        # before the child serves waits in its backlog too (`listen`: the
        # dashboard's HTTP port, which has none).
        twin = transport.bind_local_twin(sock) if listen is None else None
        token_fd = None
        try:
            token_fd = token_pipe(self.token)
            fd = sock.fileno()
            os.set_inheritable(fd, True)
            args = ["--token-fd", str(token_fd), "--listen-fd", str(fd)]
            args += ["--log-level", self.log_level, *extra]
            pass_fds: tuple = (token_fd, fd)
            if twin is not None:
                os.set_inheritable(twin.fileno(), True)
                args += ["--twin-fd", str(twin.fileno())]
                pass_fds += (twin.fileno(),)
            if inherit is not None:
                pass_fds += (inherit.fileno(),)
            if self._lifeline_r is not None:
                args += ["--lifeline-fd", str(self._lifeline_r)]
                pass_fds += (self._lifeline_r,)
            log = None
            if self.daemon:
                log = open(
                    os.path.join(
                        self.session_dir, f"{module.rsplit('.', 1)[-1]}_{len(self.processes)}.log"
                    ),
                    "ab",
                )
            try:
                popen = subprocess.Popen(
                    daemon_command(module, *args),
                    env=child_env(),
                    pass_fds=pass_fds,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    close_fds=True,
                    start_new_session=self.daemon,
                )
            finally:
                if log is not None:
                    log.close()
            proc = ServiceProcess(name, popen, transport.socket_address(sock))
            self.processes.append(proc)
            return proc
        finally:
            if token_fd is not None:
                os.close(token_fd)
            sock.close()
            if twin is not None:
                twin.close()

    @property
    def dashboard_url(self) -> str | None:
        """HOST:PORT of the dashboard this launcher started, if it did."""
        return next((p.dashboard_url for p in self.processes if p.dashboard_url), None)

    def kill(self, proc: ServiceProcess) -> None:
        """End one process at once, as a machine loss would (its node's store
        directory is removed by stop())."""
        if proc.popen.poll() is None:
            proc.popen.kill()
        proc.popen.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self._lifeline_w is not None:
            os.close(self._lifeline_w)
            os.close(self._lifeline_r)
            self._lifeline_w = self._lifeline_r = None
        # Nodes first: each stops its workers and removes its store.
        for proc in sorted(self.processes, key=lambda p: p.name != "node"):
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in self.processes:
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0fs; killing it", proc.name, timeout)
                proc.popen.kill()
                proc.popen.wait()
        # A node removes its store when it stops; if it was killed, we do.
        remove_session_shm(self.session_dir)
        if self.storage is not None and not self.daemon:
            drop_storage(self.storage, self.storage_namespace)


# Ray's variables for a head whose control store keeps its tables in Redis,
# and for the name its tables go under there (control_storage/).
REDIS_ADDRESS_ENV = "RAY_REDIS_ADDRESS"
STORAGE_NAMESPACE_ENV = "RAY_external_storage_namespace"
CONTROL_STORE_FILE = "control_store.sqlite3"


def storage_url(session_dir: str, storage: str | None = None) -> str:
    """Where a control store keeps its tables: `storage` if given (the
    CLI's --storage), else Redis at RAY_REDIS_ADDRESS if set, else a SQLite
    file in the session directory."""
    from solray._private.control_storage import redis_url

    if storage:
        return storage
    if os.environ.get(REDIS_ADDRESS_ENV):
        return redis_url(os.environ[REDIS_ADDRESS_ENV])
    return "sqlite://" + os.path.join(os.path.abspath(session_dir), CONTROL_STORE_FILE)


def drop_storage(url: str, namespace: str) -> None:
    """A cluster started by init() ends with its driver: its tables go too
    (a Redis server outlives it; a SQLite file goes with the session)."""
    from solray._private.control_storage import open_storage

    try:
        open_storage(url, namespace).drop()
    except Exception as e:  # StorageError, OSError, redis.RedisError: it may be gone already
        logger.warning("could not delete the control store's tables in %s: %s", url, e)


def head_node_arguments(control: ServiceProcess) -> list[str]:
    """What makes a node the head: it starts `control` again if it dies."""
    return ["--head", "--control-store-args", json.dumps(control.control_args)]


def _bind_dashboard(control_address: str, host: str, port: int | None) -> tuple[socket.socket, str]:
    """The dashboard's listening socket on host:port (None: DEFAULT_DASHBOARD_PORT,
    or any free port if it is taken), and its URL's HOST:PORT, as Ray's webui_url."""
    try:
        try:
            sock = transport.bind_socket(host, DEFAULT_DASHBOARD_PORT if port is None else port)
        except OSError:
            if port is not None:
                raise
            sock = transport.bind_socket(host, 0)
    except OSError as e:
        raise DashboardPortError(
            e.errno,
            f"cannot listen on {host}:{port if port is not None else DEFAULT_DASHBOARD_PORT} "
            f"for the dashboard (dashboard_port, --dashboard-port): {e.strerror}",
        ) from None
    shown = host
    if host in ("0.0.0.0", "::"):  # every interface: name the head's address
        shown = transport.parse_address(control_address)[0]
    return sock, f"{shown}:{sock.getsockname()[1]}"


def random_node_id() -> str:
    return os.urandom(28).hex()


def start_local_cluster(
    session_dir: str,
    node_args: list[str],
    host: str = "127.0.0.1",
    log_level: str = "WARNING",
    control_args: list[str] = (),
    metrics_export_port: int = 0,
    dashboard: tuple[str, int | None] | None = None,
) -> tuple[Launcher, str, str]:
    """A control store and a head node as children, and the dashboard on
    `dashboard` (host, port) if given: (launcher, control address, node
    address). All start in parallel: the node dials the control store's
    already-bound socket while it is still starting."""
    sweep_stale_shm()
    launcher = Launcher(session_dir, os.urandom(32), log_level=log_level)
    try:
        control = launcher.start_control_store(host, 0, control_args)
        if dashboard is not None:
            launcher.start_dashboard(control.address, *dashboard)
        node = launcher.start_node(
            control.address,
            [*head_node_arguments(control), *node_args],
            host,
            metrics_export_port=metrics_export_port,
        )
    except BaseException:
        launcher.stop()
        raise
    return launcher, control.address, node.address
