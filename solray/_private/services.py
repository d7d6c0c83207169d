"""Starting and stopping solray's long-lived processes.

Both sides live here: the launcher (a driver's `init()` starting a control
store and a node as its children) and what every service does at start-up
(read the token, take its listening socket, learn when to stop).

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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from solray._private import transport

logger = logging.getLogger(__name__)

TOKEN_ENV = "SOLRAY_TOKEN"
# Session directories of the clusters this process started (tests check that
# each one's shared memory is gone after shutdown).
started_sessions: list[str] = []
SHM_ROOT = "/dev/shm"
SHM_PREFIX = "solray_"


def sessions_root(temp_dir: str | None = None) -> str:
    return os.path.join(temp_dir or tempfile.gettempdir(), "solray-sessions")


def write_session_file(
    session_dir: str, node_address: str, control_address: str, token: bytes
) -> None:
    """Let tools of this user (`solray memory`) find the running cluster: the
    addresses in cluster.json, the token in a file only this user can read."""
    token_path = os.path.join(session_dir, "token")
    fd = os.open(token_path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token.hex())
    with open(os.path.join(session_dir, "cluster.json"), "w") as f:
        json.dump(
            {
                "node_address": node_address,
                "control_address": control_address,
                "driver_pid": os.getpid(),
            },
            f,
        )


def find_session(temp_dir: str | None = None, session_dir: str | None = None) -> tuple[dict, bytes]:
    """The given session, or the newest whose driver is alive: (cluster.json, token)."""
    root = sessions_root(temp_dir)
    candidates = []
    if session_dir is not None:
        candidates.append((0.0, session_dir))
    elif os.path.isdir(root):
        for name in os.listdir(root):
            path = os.path.join(root, name, "cluster.json")
            if os.path.exists(path):
                candidates.append((os.path.getmtime(path), os.path.join(root, name)))
    for _, session_dir in sorted(candidates, reverse=True):
        with open(os.path.join(session_dir, "cluster.json")) as f:
            info = json.load(f)
        try:
            os.kill(info["driver_pid"], 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        with open(os.path.join(session_dir, "token")) as f:
            return info, bytes.fromhex(f.read().strip())
    raise ConnectionError(
        f"Could not find any running solray cluster of this user (looked in {root}). "
        "Start one with solray.init() in a program that keeps running."
    )


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
    """Remove shared-memory directories whose node process is gone (a node
    killed with SIGKILL together with its driver cannot clean up itself)."""
    for name in os.listdir(SHM_ROOT):
        if not name.startswith(SHM_PREFIX):
            continue
        path = os.path.join(SHM_ROOT, name)
        try:
            with open(os.path.join(path, "node.pid")) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            continue  # being created, or not ours
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def read_token() -> bytes:
    value = os.environ.get(TOKEN_ENV)
    if not value:
        raise SystemExit(f"{TOKEN_ENV} is not set: a solray process needs the cluster token")
    return bytes.fromhex(value)


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen-fd", type=int, help="inherited listening socket")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifeline-fd", type=int, help="stop when this pipe closes")
    parser.add_argument("--log-level", default="WARNING")


def setup_process(name: str, args) -> None:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format=f"[{name} pid={os.getpid()}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


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


async def wait_for_stop(args) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
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


@dataclass
class ServiceProcess:
    name: str
    popen: subprocess.Popen
    address: str


@dataclass
class LocalCluster:
    """The processes `init()` started, and how to stop them."""

    token: bytes
    session_dir: str
    control_address: str
    node_address: str
    processes: list[ServiceProcess] = field(default_factory=list)
    lifeline_w: int | None = None

    def stop(self, timeout: float = 10.0) -> None:
        if self.lifeline_w is not None:
            os.close(self.lifeline_w)
            self.lifeline_w = None
        # The node first: it stops its workers and removes the store.
        for proc in self.processes:
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in self.processes:
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0fs; killing it", proc.name, timeout)
                proc.popen.kill()
                proc.popen.wait()
        # The node removes its store when it stops; if it was killed, we do.
        remove_session_shm(self.session_dir)


def _spawn(module: str, args: list[str], env: dict, pass_fds: tuple) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env=env,
        pass_fds=pass_fds,
        stdin=subprocess.DEVNULL,
        close_fds=True,
    )


def start_local_cluster(
    session_dir: str,
    node_args: list[str],
    host: str = "127.0.0.1",
    log_level: str = "WARNING",
) -> LocalCluster:
    sweep_stale_shm()
    started_sessions.append(os.path.basename(session_dir))
    token = os.urandom(32)
    env = dict(os.environ, **{TOKEN_ENV: token.hex()})
    control_sock = transport.bind_socket(host, 0)
    node_sock = transport.bind_socket(host, 0)
    lifeline_r, lifeline_w = os.pipe()
    os.set_inheritable(lifeline_r, True)
    cluster = LocalCluster(
        token=token,
        session_dir=session_dir,
        control_address=transport.socket_address(control_sock),
        node_address=transport.socket_address(node_sock),
        lifeline_w=lifeline_w,
    )
    try:
        for name, module, sock, extra in (
            (
                "node",
                "solray._private.node",
                node_sock,
                [
                    "--control-address",
                    cluster.control_address,
                    "--session-dir",
                    session_dir,
                    *node_args,
                ],
            ),
            ("control store", "solray._private.control_store", control_sock, []),
        ):
            fd = sock.fileno()
            os.set_inheritable(fd, True)
            popen = _spawn(
                module,
                [
                    "--listen-fd",
                    str(fd),
                    "--lifeline-fd",
                    str(lifeline_r),
                    "--log-level",
                    log_level,
                    *extra,
                ],
                env,
                (fd, lifeline_r),
            )
            cluster.processes.append(ServiceProcess(name, popen, transport.socket_address(sock)))
    except BaseException:
        cluster.stop()
        raise
    finally:
        os.close(lifeline_r)
        control_sock.close()
        node_sock.close()
    return cluster
