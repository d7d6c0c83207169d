"""A node's worker pool: starting worker processes, keeping idle ones,
forwarding their output, and noticing when they exit.

Workers start as fresh interpreters until the first ones are up; then the
pool starts a fork server (worker_zygote.py) and forks every later worker
from it (about 3 ms instead of about 240 ms). A forked worker is not the
node's child: fork_server.py watches its exit and learns its status. A fork
server that dies is replaced the same way (the first one, or one that lived
ZYGOTE_RESTART_S); meanwhile workers start as interpreters.

The pool does not decide who gets a worker: the lease scheduler takes idle
workers (`take_idle`), asks for more (`start_worker`), and is told when a
worker is ready or exited (`on_change`) and when a leased one is gone
(`on_lost`, which frees its lease).

Runtime environments: every worker belongs to one env (`env_key`, "" for
the default), given when it is started, and only ever serves that env, so
workers of different envs never share a process. A worker of another env
starts as a new interpreter (never forked: its interpreter, variables and
working directory are the env's) once the node's RuntimeEnvAgent has
prepared it; if that fails, or the worker dies before registering, or its
setup hook raised, `on_env_failed` tells the scheduler, which fails the
requests waiting for that env with RuntimeEnvSetupError.

Output: each line a worker prints goes to the drivers (published on the
control store's `logs` channel) and to the worker's log files
(log_files.py). The pool also keeps what `list_workers` shows: its workers
and drivers, and the last EXITED_KEPT that exited with why (Ray's
`exit_type`: a worker the node ended says why it did; one that exited by
itself is INTENDED_USER_EXIT with status 0, else SYSTEM_ERROR, and the
detail says its status or the signal that killed it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from solray._private import ids, services, transport
from solray._private.fork_server import ForkedProcess, ForkServer
from solray._private.log_files import WorkerLog
from solray._private.protocol import LOG_MARK, LOG_SEP, Msg
from solray._private.runtime_env.agent import WorkerLaunch
from solray._private.runtime_env.spec import RUNTIME_ENV_VARIABLE
from solray.exceptions import RuntimeEnvSetupError

if TYPE_CHECKING:
    from solray._private.lease_scheduler import Lease

logger = logging.getLogger("solray.node")

IDLE_WORKER_TTL_S = 10.0
EXITED_KEPT = 1000
# A fork server that died is started again if it lived this long, or if it
# was the first: one that keeps dying at once is not started again and again
# (workers then start as interpreters).
ZYGOTE_RESTART_S = 10.0
# Worker output lines up to this long reach the driver whole; longer ones
# are dropped (asyncio's default limit, 64 KiB, dropped ordinary long lines).
MAX_OUTPUT_LINE = 8 * 1024 * 1024


@dataclass
class WorkerProcess:
    worker_id: str
    process: asyncio.subprocess.Process
    conn: transport.Connection | None = None
    address: str | None = None
    lease: Lease | None = None  # lease_scheduler.Lease, while leased
    idle_since: float = field(default_factory=time.monotonic)
    # What it was leased for before (see take_idle).
    ran_tasks: bool = False
    held_gpus: bool = False
    env_key: str = ""  # the runtime env it serves ("" = the default)
    launch_time_ms: int = 0  # when the node began starting it
    launched_time_ms: int = 0  # when its process existed
    start_time_ms: int | None = None  # when it registered
    # (exit_type, exit_detail) when the node ended it; None if it exited by itself.
    exit_reason: tuple[str, str] | None = None


class WorkerPool:
    def __init__(
        self,
        node,
        soft_limit: int,
        on_change: Callable[[], None],
        on_lost: Callable[[WorkerProcess], None],
        on_env_failed: Callable[[str, str], None],
    ):
        self.node = node
        self.soft_limit = soft_limit  # idle workers beyond it are reaped
        self.on_change = on_change  # a worker came or went: queued leases may go on
        self.on_env_failed = on_env_failed  # (env key, why): its waiting requests fail
        self.on_lost = on_lost  # a worker is gone: its lease is freed
        self.workers: dict[str, WorkerProcess] = {}
        self.idle: deque[WorkerProcess] = deque()
        self.starting = 0
        self.starting_for: Counter[str] = Counter()  # env key -> workers starting
        self.processes: set = set()  # every process started, until reaped
        self._zygote: ForkServer | None = None  # the worker fork server, once started
        self._zygote_requested = False
        self._zygote_started_at = 0.0
        self._zygote_restarts = 0
        self._logs: list = []
        self.drivers: dict[transport.Connection, dict] = {}  # conn -> its WorkerState row
        self.exited: deque[dict] = deque(maxlen=EXITED_KEPT)

    async def stop(self) -> None:
        """Every process started, including ones already dropped from the
        pool, is killed and reaped."""
        for proc in self.processes:
            kill_process(proc)
        if self.processes:
            await asyncio.wait([asyncio.ensure_future(p.wait()) for p in self.processes], timeout=5)

    def take_idle(
        self, env_key: str = "", for_actor: bool = False, gpus: bool = False
    ) -> WorkerProcess | None:
        """An idle worker of this runtime env for a lease, the most recently
        used first (warm caches), as Ray picks them: an actor starts only in
        a worker that never ran anything (no module state or threads a task
        left), and a lease without GPUs never gets a worker that held GPUs (a
        library may keep GPU memory or a CUDA context there)."""
        for worker in reversed(self.idle):
            if worker.env_key != env_key or worker.conn is None or worker.conn.closed:
                continue
            if (for_actor and worker.ran_tasks) or (worker.held_gpus and not gpus):
                continue
            self.idle.remove(worker)
            return worker
        return None

    def start_worker(self, fork: bool = True, env_key: str = "", env: dict | None = None) -> None:
        """Start a worker: forked from the zygote (a few ms) unless `fork` is
        False or the zygote is not there (a new interpreter: ~240 ms). A
        worker of a runtime env (`env_key`, `env`) is always an interpreter."""
        worker_id = ids.random_unique_id().hex()
        self._started(env_key, 1)
        self.node.background(self._spawn_worker(worker_id, fork, env_key, env or {}, _now_ms()))

    def _started(self, env_key: str, change: int) -> None:
        self.starting += change
        self.starting_for[env_key] += change

    async def _spawn_worker(
        self, worker_id: str, fork: bool, env_key: str, renv: dict, launch_time_ms: int
    ) -> None:
        env = {"SOLRAY_NODE_ADDRESS": self.node.address, "SOLRAY_WORKER_ID": worker_id}
        python, cwd = sys.executable, None
        if env_key:
            try:
                launch = await self.node.runtime_envs.prepare(renv)
            except Exception as e:  # a bad env, or a bug or the disk: not set up here
                expected = isinstance(e, RuntimeEnvSetupError)
                if not expected:
                    logger.exception("preparing a runtime env failed")
                self._started(env_key, -1)
                self.on_env_failed(env_key, str(e) if expected else f"{type(e).__name__}: {e}")
                return
            python, cwd = launch.python, launch.cwd
            env = {**launch.env_vars, **env, RUNTIME_ENV_VARIABLE: launch_json(launch, renv)}
            fork = False
        proc = None
        zygote = self._zygote
        if fork and zygote is not None:
            try:
                if zygote.returncode is not None:
                    raise OSError(f"it exited with status {zygote.returncode}")
                proc, stdout, stderr = await self._fork_worker(zygote, env)
            except OSError as e:  # the zygote died: start an interpreter instead
                if not self.node.stopping:
                    logger.warning(
                        "the worker fork server failed (%s); starting a worker "
                        "as a new interpreter, and a new fork server",
                        e,
                    )
                    self._zygote_gone(zygote)
        try:
            if self.node.stopping:
                raise OSError("the node is stopping")
            if proc is None:
                token_fd = services.token_pipe(self.node.token)
                try:
                    proc = await asyncio.create_subprocess_exec(
                        python,
                        "-m",
                        "solray._private.worker_main",
                        str(token_fd),
                        env=services.child_env(env),
                        cwd=cwd,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                        pass_fds=(token_fd,),
                        limit=MAX_OUTPUT_LINE,
                    )
                finally:
                    os.close(token_fd)
                stdout, stderr = proc.stdout, proc.stderr
        except OSError as e:
            self._started(env_key, -1)
            if proc is not None:
                kill_process(proc)
            elif not self.node.stopping:
                logger.exception("could not start a worker")
                if env_key:
                    self.on_env_failed(env_key, f"its worker could not be started: {e}")
            return
        self.processes.add(proc)
        worker = WorkerProcess(
            worker_id,
            proc,
            env_key=env_key,
            launch_time_ms=launch_time_ms,
            launched_time_ms=_now_ms(),
        )
        self.workers[worker_id] = worker
        try:
            log = self.node.log_files.open_worker_log(worker_id, proc.pid)
        except OSError as e:
            logger.warning("cannot write the log files of worker pid=%s: %s", proc.pid, e)
            log = None
        self.node.background(self._forward_output(proc.pid, stdout, False, log))
        self.node.background(self._forward_output(proc.pid, stderr, True, log))
        self.node.background(self._watch_worker(worker))

    def _zygote_gone(self, zygote) -> None:
        """The fork server `zygote` died. A new one is started as the first
        was (once a worker registers and none is starting) if this was the
        first fork server or it lived ZYGOTE_RESTART_S or more."""
        if self._zygote is not zygote:
            return  # another worker's start saw it first
        self._zygote = None
        zygote.close()
        lived = time.monotonic() - self._zygote_started_at
        if self._zygote_restarts == 0 or lived >= ZYGOTE_RESTART_S:
            self._zygote_restarts += 1
            self._zygote_requested = False

    async def _start_zygote(self) -> None:
        """The fork server workers are made from (worker_zygote.py)."""
        self._zygote_started_at = time.monotonic()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        token_fd = services.token_pipe(self.node.token)
        try:
            zygote = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "solray._private.worker_zygote",
                str(child.fileno()),
                str(token_fd),
                env=services.child_env(),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(child.fileno(), token_fd),
            )
        except OSError:
            logger.exception("could not start the worker fork server; starting workers plainly")
            parent.close()
            return
        finally:
            child.close()
            os.close(token_fd)
        self.processes.add(zygote)
        if self._zygote is not None:
            self._zygote.close()
        self._zygote = ForkServer(zygote, parent)

    async def _fork_worker(self, zygote: ForkServer, env: dict):
        loop = asyncio.get_running_loop()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            process = await zygote.fork(env, out_w, err_w)
        except OSError:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        streams = []
        for fd in (out_r, err_r):
            reader = asyncio.StreamReader(limit=MAX_OUTPUT_LINE)
            await loop.connect_read_pipe(
                lambda reader=reader: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
            )
            streams.append(reader)
        return process, streams[0], streams[1]

    async def _watch_worker(self, worker: WorkerProcess) -> None:
        code = await worker.process.wait()
        self.processes.discard(worker.process)
        self._exited(worker, code)
        if worker.conn is None and worker.worker_id in self.workers:
            self._started(worker.env_key, -1)
            if not self.node.stopping:
                logger.warning(
                    "worker pid=%s %s before registering", worker.process.pid, describe_exit(code)
                )
                if worker.env_key:
                    self.on_env_failed(
                        worker.env_key,
                        f"its worker process {describe_exit(code)} before it could start "
                        "(its output says why)",
                    )
        self.remove(worker)
        if not self.node.stopping:
            self.on_change()

    def register_worker(self, conn, rid, body, bufs) -> None:
        worker = self.workers.get(body["worker_id"])
        if worker is None:
            conn.close()
            return
        self._started(worker.env_key, -1)
        if body.get("setup_error"):
            # Its worker_process_setup_hook raised: the env is unusable.
            conn.reply(rid, self.node.info())
            self.remove(worker, ("USER_ERROR", body["setup_error"]))
            self.on_env_failed(worker.env_key, body["setup_error"])
            return
        worker.conn = conn
        worker.address = body["address"]
        worker.start_time_ms = _now_ms()
        conn.peer["worker"] = worker
        conn.peer["address"] = body["address"]
        self.node.clients.add(conn)
        conn.reply(rid, self.node.info())
        if self.starting == 0 and not self._zygote_requested and not self.node.stopping:
            self._zygote_requested = True
            self.node.background(self._start_zygote())
        self.make_idle(worker)
        self.on_change()

    def make_idle(self, worker: WorkerProcess) -> None:
        worker.lease = None
        worker.idle_since = time.monotonic()
        self.idle.append(worker)

    def remove(
        self,
        worker: WorkerProcess,
        reason: tuple[str, str] | None = ("INTENDED_SYSTEM_EXIT", "ended by its node"),
    ) -> None:
        """Drop a worker and kill its process; `reason` is the (exit_type,
        exit_detail) list_workers shows, None when it is already gone by itself."""
        if self.workers.pop(worker.worker_id, None) is None:
            return
        # Its connection closed first: it died by itself, whoever asks now.
        gone = worker.conn is not None and worker.conn.closed
        worker.exit_reason = None if gone else reason
        try:
            self.idle.remove(worker)
        except ValueError:
            pass
        if worker.lease is not None:
            self.on_lost(worker)
        if worker.conn is not None:
            worker.conn.close()
        kill_process(worker.process)

    async def reap_idle_workers(self) -> None:
        """Idle workers beyond the pool's size go after IDLE_WORKER_TTL_S, except
        ones that still own objects someone references: those objects
        fate-share with their owner, so killing it would lose them (as in Ray,
        where such a worker refuses to exit)."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for worker in list(self.idle):
                if (
                    len(self.workers) <= self.soft_limit
                    or now - worker.idle_since <= IDLE_WORKER_TTL_S
                ):
                    break
                idle_since = worker.idle_since
                if await self._owns_objects(worker):
                    continue
                if worker in self.idle and worker.idle_since == idle_since:
                    self.remove(worker)

    async def _owns_objects(self, worker: WorkerProcess) -> bool:
        if worker.conn is None or worker.conn.closed:
            return False
        try:
            rows = await asyncio.wait_for(worker.conn.request(Msg.OBJECT_REPORT), 5)
        except Exception:
            return False
        return any(row.get("is_owner") for row in rows or ())

    async def _forward_output(self, pid: int, stream, is_err: bool, log: WorkerLog | None) -> None:
        try:
            await self._forward_lines(pid, stream, is_err, log)
        finally:
            if log is not None:
                log.close(is_err)

    async def _forward_lines(self, pid: int, stream, is_err: bool, log: WorkerLog | None) -> None:
        while True:
            try:
                line = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue  # an over-long line: drop it, keep reading
            if not line:
                return
            text = line.decode(errors="replace").rstrip("\n")
            name = task_id = None
            if text.startswith(LOG_MARK):  # LOG_MARK name LOG_SEP task id LOG_SEP line
                name, _, text = text[1:].partition(LOG_SEP)
                task_id, _, text = text.partition(LOG_SEP)
            if log is not None:
                try:
                    log.write(is_err, task_id, text)
                except OSError:  # a full disk: the drivers still get the line
                    pass
            if not self._logs:
                asyncio.get_running_loop().call_later(0.005, self._flush_logs)
            self._logs.append([pid, is_err, name, text])

    # -- list_workers ------------------------------------------------------

    def add_driver(self, conn: transport.Connection, body: dict) -> None:
        self.drivers[conn] = {
            "worker_id": body.get("worker_id"),
            "is_alive": True,
            "worker_type": "DRIVER",
            "exit_type": None,
            "exit_detail": None,
            "node_id": self.node.node_id,
            "ip": self.node.ip,
            "pid": body.get("pid"),
            "start_time_ms": _now_ms(),
            "end_time_ms": None,
        }

    def driver_gone(self, conn: transport.Connection) -> None:
        row = self.drivers.pop(conn, None)
        if row is not None:
            self.exited.append(
                dict(
                    row,
                    is_alive=False,
                    exit_type="INTENDED_USER_EXIT",
                    exit_detail="the driver disconnected",
                    end_time_ms=_now_ms(),
                )
            )

    def worker_rows(self) -> list[dict]:
        """Ray's WorkerState fields of every worker and driver here, alive
        ones first, then the ones that exited (the last EXITED_KEPT)."""
        alive = [self._row(w) for w in self.workers.values()]
        return [*self.drivers.values(), *alive, *self.exited]

    def _row(self, worker: WorkerProcess) -> dict:
        return {
            "worker_id": worker.worker_id,
            "is_alive": True,
            "worker_type": "WORKER",
            "exit_type": None,
            "exit_detail": None,
            "node_id": self.node.node_id,
            "ip": self.node.ip,
            "pid": worker.process.pid,
            "worker_launch_time_ms": worker.launch_time_ms,
            "worker_launched_time_ms": worker.launched_time_ms,
            "start_time_ms": worker.start_time_ms,
            "end_time_ms": None,
        }

    def _exited(self, worker: WorkerProcess, code: int | None) -> None:
        if worker.exit_reason is not None:
            exit_type, detail = worker.exit_reason
        elif code == 0:
            exit_type, detail = "INTENDED_USER_EXIT", "the worker exited by itself (status 0)"
        else:
            exit_type, detail = "SYSTEM_ERROR", f"the worker process {describe_exit(code)}"
        self.exited.append(
            dict(
                self._row(worker),
                is_alive=False,
                exit_type=exit_type,
                exit_detail=detail,
                end_time_ms=_now_ms(),
            )
        )

    def _flush_logs(self) -> None:
        logs, self._logs = self._logs, []
        if logs and self.node.control is not None:
            self.node.control.send(
                Msg.PUBLISH, {"channel": "logs", "data": {"ip": self.node.ip, "lines": logs}}
            )


def _now_ms() -> int:
    return int(time.time() * 1000)


def describe_exit(code: int | None) -> str:
    """How a process ended, from asyncio's returncode (minus the signal for
    one killed by a signal; None where its status could not be learnt)."""
    if code is None:
        return "died (its exit status is unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if code == -signal.SIGKILL:
            name += ", which the kernel's out-of-memory killer also sends"
        return f"was killed by {name}"
    return f"exited with status {code}"


def kill_process(process) -> None:
    if isinstance(process, ForkedProcess):
        process.kill()
        return
    # Not process.kill(): Popen polls before signalling, which would reap the
    # child behind asyncio's child watcher. A zombie's pid cannot be reused, so
    # signalling it until the watcher has reaped it is safe.
    if process.returncode is None:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def launch_json(launch: WorkerLaunch, env: dict) -> str:
    """The worker gets its env as resolved (not its public view): tasks it
    submits inherit it, and must name the same env and the hook's code."""
    return json.dumps({"sys_path": launch.sys_path, "setup_hook": launch.setup_hook, "env": env})
