"""The node: one per machine. Worker pool, resources and leases, the
shared-memory object store, and forwarding of worker output.

Leases. An owner asks for a worker with a resource shape (REQUEST_LEASE). The
node grants one once the shape fits the free resources, starting a worker if
none is idle; the owner then pushes tasks to that worker directly and returns
the lease when it has no more work of that shape. Requests are served in
arrival order among those that fit, so a large request does not hold back
small ones. The control store asks for actors' leases, tagged with the
actor's id, and ends one with END_ACTOR_LEASE whether it is still queued or
granted.

Blocked workers. A worker whose task waits in `get` tells the node
(WORKER_BLOCKED); the node hands its CPUs back to the pool until it resumes,
so nested tasks can always run. Resuming may oversubscribe the node for a
moment, as in Ray: the alternative is deadlock.

Failures. A worker whose connection drops is dead: its lease's resources are
freed and its owner learns of it through its own connection to that worker.
An owner whose connection drops loses its leases, and the workers still
leased to it are killed: nobody is left to receive their results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field

import psutil

from solray._private import ids, labels, services, transport
from solray._private.object_store import ObjectStore
from solray._private.placement_groups import bundle_resources
from solray._private.protocol import LOG_MARK, LOG_SEP, Msg
from solray._private.resources import ResourceSet
from solray._private.spill import DEFAULT_BUFFER_SIZE, SpillDirectory
from solray.exceptions import ObjectStoreFullError, OutOfDiskError

logger = logging.getLogger("solray.node")

IDLE_WORKER_TTL_S = 10.0
HEARTBEAT_INTERVAL_S = 1.0
PULL_CHUNK = 8 * 1024 * 1024
PULL_PARALLEL_CHUNKS = 4
# Worker output lines up to this long reach the driver whole; longer ones
# are dropped (asyncio's default limit, 64 KiB, dropped ordinary long lines).
MAX_OUTPUT_LINE = 8 * 1024 * 1024


@dataclass
class WorkerProcess:
    worker_id: str
    process: asyncio.subprocess.Process
    conn: transport.Connection | None = None
    address: str | None = None
    lease: Lease | None = None
    idle_since: float = field(default_factory=time.monotonic)


@dataclass
class Lease:
    lease_id: int
    worker: WorkerProcess
    owner: transport.Connection
    resources: dict
    gpu_ids: list
    blocked: bool = False
    actor_id: bytes | None = None  # an actor's lease, held by the control store


@dataclass
class LeaseRequest:
    conn: transport.Connection
    rid: int
    resources: dict
    actor_id: bytes | None = None
    strategy: str = "DEFAULT"
    selector: dict | None = None  # label_selector: the node's labels must match
    stay: bool = False  # pinned here (node affinity) or already spilled once
    fail_when_busy: bool = False  # node affinity with _fail_on_unavailable


def _fits(need: dict, have: dict) -> bool:
    return all(v <= have.get(k, 0.0) + 1e-9 for k, v in need.items() if v > 0)


def _can_host(info: dict, request: LeaseRequest, which: str) -> bool:
    """Whether another node (from the cluster view) matches the request's
    labels and has its resources ("total": ever, "available": now)."""
    return labels.matches(info.get("labels"), request.selector) and _fits(
        request.resources, info[f"resources_{which}"]
    )


def _free_cpu(info: dict, node) -> float:
    available = (
        node.resources.available if info["node_id"] == node.node_id else info["resources_available"]
    )
    total = info["resources_total"].get("CPU", 0.0) or 1.0
    return available.get("CPU", 0.0) / total


class Node:
    def __init__(self, args, token: bytes):
        self.token = token
        self.node_id = args.node_id or ids.random_unique_id().hex()
        self.ip = args.node_ip_address
        self.node_name = args.node_name or self.ip
        self.session_dir = args.session_dir
        self.control_address = args.control_address
        total = dict(json.loads(args.resources or "{}"))
        num_cpus = args.num_cpus if args.num_cpus is not None else os.cpu_count() or 1
        total["CPU"] = float(num_cpus)
        if args.num_gpus:
            total["GPU"] = float(args.num_gpus)
        mem = psutil.virtual_memory()
        store_bytes = args.object_store_memory or _default_store_size(mem.total)
        total.setdefault("memory", float(int(mem.available * 0.7)))
        total["object_store_memory"] = float(store_bytes)
        total[f"node:{self.ip}"] = 1.0
        if args.head:
            total["node:__internal_head__"] = 1.0
        self.resources = ResourceSet(total, num_gpus=int(args.num_gpus or 0))
        self.labels = {**json.loads(args.labels or "{}"), labels.NODE_ID_LABEL: self.node_id}
        self.soft_worker_limit = max(1, int(num_cpus))
        self.memory_threshold = args.memory_usage_threshold
        self.memory_refresh_s = args.memory_monitor_refresh_ms / 1000.0
        self.shm_dir = services.shm_dir(self.session_dir, self.node_id)
        os.makedirs(self.shm_dir, mode=0o700)
        with open(os.path.join(self.shm_dir, "node.pid"), "w") as f:
            f.write(str(os.getpid()))
        spill_bases = dict.fromkeys(  # each directory once
            os.path.abspath(base)
            for base in args.spill_dir or [os.path.join(self.session_dir, "spill")]
        )
        self.store = ObjectStore(
            self.shm_dir,
            store_bytes,
            [SpillDirectory(base, self.session_dir, self.node_id) for base in spill_bases],
            io_threads=args.spill_io_threads,
            buffer_size=args.spill_buffer_size,
        )
        self.workers: dict[str, WorkerProcess] = {}
        self.idle: deque[WorkerProcess] = deque()
        self.starting = 0
        self.processes: set[asyncio.subprocess.Process] = set()
        self.clients: set[transport.Connection] = set()  # core workers: drivers, workers
        self._tasks: set[asyncio.Task] = set()  # background tasks (see _background)
        self._zygote = None  # the worker fork server process, once started
        self._zygote_requested = False
        self._zygote_channel: socket.socket | None = None
        self._zygote_lock = asyncio.Lock()
        self.leases: dict[int, Lease] = {}
        self.next_lease = 1
        self.pending: deque[LeaseRequest] = deque()
        self.warned_infeasible: set = set()
        self.cluster: dict[str, dict] = {}  # node id -> info, from the control store
        self._spread_turn = 0
        self._peers = transport.ConnectionCache(token)  # other nodes, by address
        self._pulls: dict[bytes, asyncio.Task] = {}  # objects being pulled here
        self.bundles: dict[tuple[str, int], dict] = {}  # placement group bundles reserved here
        self.control: transport.Connection | None = None
        self.server = None  # serving starts once the node is registered
        self.address: str | None = None
        self._report_scheduled = False
        self._logs: list = []
        self._stopping = False
        self.handlers = {
            Msg.REGISTER_WORKER: self.register_worker,
            Msg.REQUEST_LEASE: self.request_lease,
            Msg.RETURN_LEASE: self.return_lease,
            Msg.RESIZE_LEASE: self.resize_lease,
            Msg.END_ACTOR_LEASE: self.end_actor_lease,
            Msg.WORKER_BLOCKED: self.worker_blocked,
            Msg.WORKER_UNBLOCKED: self.worker_unblocked,
            Msg.NODE_INFO: self.node_info,
            Msg.STORE_CREATE: self.store_create,
            Msg.STORE_SEAL: self.store_seal,
            Msg.STORE_PIN: self.store_pin,
            Msg.STORE_UNPIN: self.store_unpin,
            Msg.STORE_FREE: self.store_free,
            Msg.STORE_STATS: self.store_stats,
            Msg.LIST_OBJECTS: self.list_objects,
            Msg.STORE_PULL: self.store_pull,
            Msg.RESERVE_BUNDLES: self.reserve_bundles,
            Msg.RELEASE_BUNDLES: self.release_bundles,
            Msg.FETCH_CHUNK: self.fetch_chunk,
        }

    # -- lifecycle ---------------------------------------------------------

    async def start(self, sock) -> None:
        self.address = transport.socket_address(sock)
        self.control = await transport.connect(
            self.control_address,
            self.token,
            {Msg.PUBLISHED: self.on_published},
            on_close=self._control_lost,
        )
        # Warm the pool while registering: the first task should find a worker.
        # These first workers start as interpreters; the zygote starts once
        # they are up (its imports would slow them down on a small machine),
        # and every later worker is forked from it.
        for _ in range(min(self.soft_worker_limit, os.cpu_count() or 1)):
            self._start_worker(fork=False)
        await self.control.request(Msg.REGISTER_NODE, self.info())
        self.cluster = {n["node_id"]: n for n in await self.control.request(Msg.GET_NODES)}
        await self.control.request(
            Msg.SUBSCRIBE, ["resources", "node_added", "node_removed", "owner_died"]
        )
        # Serve (the driver's NODE_INFO) only once registered, so that nodes()
        # and cluster_resources() right after init() see this node. The socket
        # is already listening: early connections wait in its backlog.
        self.server = await transport.serve(sock, self.token, self.handlers, on_close=self.on_close)
        self._background(self._reap_idle_workers())
        self._background(self._send_heartbeats())
        if self.memory_refresh_s > 0:
            self._background(self._watch_memory())

    async def _send_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)
            self._report_resources()

    def on_published(self, conn, rid, body, bufs) -> None:
        """The cluster view: other nodes' resources, arrivals, departures, and
        owners that died (their objects here are freed)."""
        channel, data = body["channel"], body["data"]
        if channel == "resources":
            info = self.cluster.get(data["node_id"])
            if info is not None:
                info["resources_available"] = data["available"]
                info["resources_total"] = data["total"]
                self._try_grant()  # a queued request may now fit elsewhere
        elif channel == "node_added":
            self.cluster[data["node_id"]] = data
            self._try_grant()
        elif channel == "node_removed":
            info = self.cluster.get(data["node_id"])
            if info is not None:
                info["alive"] = False
        elif channel == "owner_died":
            self.store.drop_owner(data["address"])

    def _control_lost(self, conn) -> None:
        if not self._stopping:
            logger.error("lost the control store; stopping this node")
            os.kill(os.getpid(), signal.SIGTERM)

    def info(self) -> dict:
        return {
            "node_id": self.node_id,
            "address": self.address,
            "ip": self.ip,
            "node_name": self.node_name,
            "resources_total": self.resources.total,
            "labels": self.labels,
            "arena_path": self.store.path,
            "store_capacity": self.store.capacity,
            "session_dir": self.session_dir,
            "control_address": self.control_address,
        }

    async def stop(self) -> None:
        self._stopping = True
        # Every process we started, including ones already dropped from the
        # pool, is killed and reaped before the node exits.
        for proc in self.processes:
            _kill(proc)
        if self.processes:
            await asyncio.wait([asyncio.ensure_future(p.wait()) for p in self.processes], timeout=5)
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.close()
        shutil.rmtree(self.shm_dir, ignore_errors=True)

    # -- workers -----------------------------------------------------------

    def _background(self, coro) -> asyncio.Task:
        """Run a coroutine in the background. asyncio keeps only weak refs to
        tasks, so the node holds them, and cancels those left at stop()."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_worker(self, fork: bool = True) -> None:
        """Start a worker: forked from the zygote (a few ms) unless `fork` is
        False or the zygote is not there (a new interpreter: ~240 ms)."""
        worker_id = ids.random_unique_id().hex()
        self.starting += 1
        self._background(self._spawn_worker(worker_id, fork))

    async def _spawn_worker(self, worker_id: str, fork: bool) -> None:
        env = {"SOLRAY_NODE_ADDRESS": self.address, "SOLRAY_WORKER_ID": worker_id}
        proc = None
        zygote = self._zygote
        if fork and zygote is not None and zygote.returncode is None:
            try:
                proc, stdout, stderr = await self._fork_worker(env)
            except OSError as e:  # the zygote died: start an interpreter instead
                if not self._stopping:
                    logger.warning(
                        "the worker fork server failed (%s); starting a worker "
                        "as a new interpreter",
                        e,
                    )
        try:
            if self._stopping:
                raise OSError("the node is stopping")
            if proc is None:
                token_fd = services.token_pipe(self.token)
                try:
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "solray._private.worker_main",
                        str(token_fd),
                        env=services.child_env(env),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                        pass_fds=(token_fd,),
                        limit=MAX_OUTPUT_LINE,
                    )
                finally:
                    os.close(token_fd)
                stdout, stderr = proc.stdout, proc.stderr
        except OSError:
            self.starting -= 1
            if proc is not None:
                _kill(proc)
            elif not self._stopping:
                logger.exception("could not start a worker")
            return
        self.processes.add(proc)
        worker = WorkerProcess(worker_id, proc)
        self.workers[worker_id] = worker
        self._background(self._forward_output(proc.pid, stdout, False))
        self._background(self._forward_output(proc.pid, stderr, True))
        self._background(self._watch_worker(worker))

    async def _start_zygote(self) -> None:
        """The fork server workers are made from (worker_zygote.py)."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        token_fd = services.token_pipe(self.token)
        try:
            self._zygote = await asyncio.create_subprocess_exec(
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
        parent.setblocking(False)
        self._zygote_channel = parent
        self.processes.add(self._zygote)

    async def _fork_worker(self, env: dict):
        loop = asyncio.get_running_loop()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            async with self._zygote_lock:
                socket.send_fds(self._zygote_channel, [json.dumps(env).encode()], [out_w, err_w])
                reply = await loop.sock_recv(self._zygote_channel, 64)
        except OSError:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        if not reply:
            for fd in (out_r, err_r):
                os.close(fd)
            raise OSError("the worker fork server exited")
        streams = []
        for fd in (out_r, err_r):
            reader = asyncio.StreamReader(limit=MAX_OUTPUT_LINE)
            await loop.connect_read_pipe(
                lambda reader=reader: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
            )
            streams.append(reader)
        return ForkedProcess(int(reply)), streams[0], streams[1]

    async def _watch_worker(self, worker: WorkerProcess) -> None:
        code = await worker.process.wait()
        self.processes.discard(worker.process)
        if worker.conn is None:
            self.starting -= 1
            if not self._stopping:
                logger.warning(
                    "worker pid=%s exited with %s before registering", worker.process.pid, code
                )
        self._worker_gone(worker)
        if not self._stopping:
            self._try_grant()

    def register_worker(self, conn, rid, body, bufs) -> None:
        worker = self.workers.get(body["worker_id"])
        if worker is None:
            conn.close()
            return
        worker.conn = conn
        worker.address = body["address"]
        conn.peer["worker"] = worker
        conn.peer["address"] = body["address"]
        self.clients.add(conn)
        self.starting -= 1
        conn.reply(rid, self.info())
        if self.starting == 0 and not self._zygote_requested and not self._stopping:
            self._zygote_requested = True
            self._background(self._start_zygote())
        self._make_idle(worker)
        self._try_grant()

    def _make_idle(self, worker: WorkerProcess) -> None:
        worker.lease = None
        worker.idle_since = time.monotonic()
        self.idle.append(worker)

    def _worker_gone(self, worker: WorkerProcess) -> None:
        if self.workers.pop(worker.worker_id, None) is None:
            return
        try:
            self.idle.remove(worker)
        except ValueError:
            pass
        if worker.lease is not None:
            self._release_lease(worker.lease, back_to_pool=False)
        if worker.conn is not None:
            worker.conn.close()
        _kill(worker.process)

    async def _reap_idle_workers(self) -> None:
        """Idle workers beyond the pool's size go after IDLE_WORKER_TTL_S, except
        ones that still own objects someone references: those objects
        fate-share with their owner, so killing it would lose them (as in Ray,
        where such a worker refuses to exit)."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for worker in list(self.idle):
                if (
                    len(self.workers) <= self.soft_worker_limit
                    or now - worker.idle_since <= IDLE_WORKER_TTL_S
                ):
                    break
                idle_since = worker.idle_since
                if await self._owns_objects(worker):
                    continue
                if worker in self.idle and worker.idle_since == idle_since:
                    self._worker_gone(worker)

    async def _owns_objects(self, worker: WorkerProcess) -> bool:
        if worker.conn is None or worker.conn.closed:
            return False
        try:
            rows = await asyncio.wait_for(worker.conn.request(Msg.OBJECT_REPORT), 5)
        except Exception:
            return False
        return any(row.get("is_owner") for row in rows or ())

    async def _watch_memory(self) -> None:
        """Above the memory threshold, kill the worker of the most recently
        granted task lease (never an actor's), telling its owner first, so the
        task fails with OutOfMemoryError (after its retries) instead of the
        kernel's OOM killer taking some random process."""
        while True:
            await asyncio.sleep(self.memory_refresh_s)
            mem = psutil.virtual_memory()
            used = 1.0 - mem.available / mem.total
            if used <= self.memory_threshold:
                continue
            victims = [lease for lease in self.leases.values() if lease.actor_id is None]
            if not victims:
                continue
            lease = max(victims, key=lambda lease: lease.lease_id)
            message = (
                f"Task was killed due to the node running low on memory: memory used "
                f"{used:.0%} of {mem.total / 2**30:.1f} GiB exceeds the threshold "
                f"{self.memory_threshold:.0%} (memory_usage_threshold). Its worker "
                f"(pid {lease.worker.process.pid}) was the most recently started task."
            )
            logger.warning(message)
            lease.owner.send(
                Msg.WORKER_OOM_KILLED, {"address": lease.worker.address, "message": message}
            )
            self._worker_gone(lease.worker)
            await asyncio.sleep(1.0)  # let the memory be returned before judging again

    async def _forward_output(self, pid: int, stream, is_err: bool) -> None:
        while True:
            try:
                line = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue  # an over-long line: drop it, keep reading
            if not line:
                return
            text = line.decode(errors="replace").rstrip("\n")
            name = None
            if text.startswith(LOG_MARK):
                name, _, text = text[1:].partition(LOG_SEP)
            if not self._logs:
                asyncio.get_running_loop().call_later(0.005, self._flush_logs)
            self._logs.append([pid, is_err, name, text])

    def _flush_logs(self) -> None:
        logs, self._logs = self._logs, []
        if logs and self.control is not None:
            self.control.send(
                Msg.PUBLISH, {"channel": "logs", "data": {"ip": self.ip, "lines": logs}}
            )

    # -- leases ------------------------------------------------------------

    def request_lease(self, conn, rid, body, bufs) -> None:
        request = LeaseRequest(conn, rid, body["resources"], body.get("actor_id"))
        request.strategy = body.get("strategy", "DEFAULT")
        request.selector = body.get("labels")
        request.stay = body.get("spilled", False)
        if "affinity" in body:
            refusal = self._affinity(request, *body["affinity"])
            if refusal is not None:
                conn.reply(rid, refusal)
                return
        target = self._better_node(request)
        if target is not None:
            self._spill(conn, rid, target, request.resources)
            return
        if not self._here(request, now=False):
            # An actor's request (its placer keeps waiting actors and tries
            # again when the cluster changes) is refused at once.
            if request.stay and request.actor_id is not None:
                conn.reply(
                    rid, {"infeasible": True, "total": self.resources.total, "labels": self.labels}
                )
                return
            shape = (
                tuple(sorted(request.resources.items())),
                tuple(sorted((request.selector or {}).items())),
            )
            conn.send(
                Msg.LEASE_INFEASIBLE,
                {
                    "resources": request.resources,
                    "total": self.resources.total,
                    "label_selector": request.selector,
                    "labels": self.labels,
                    "first": shape not in self.warned_infeasible,
                },
            )
            self.warned_infeasible.add(shape)
        self.pending.append(request)
        self._try_grant()

    def _affinity(self, request: LeaseRequest, soft: bool, when_busy: str) -> dict | None:
        """A request aimed at this node by NodeAffinitySchedulingStrategy (as
        in Ray): if it could ever fit here, it runs here only, waiting while
        the node is busy, unless `when_busy` says to go elsewhere ("spill":
        routed as DEFAULT, which keeps it here while it fits) or to fail. If
        it can never fit here, a soft affinity is routed as DEFAULT and a hard
        one fails. Returns the reply refusing it, or None."""
        if not self._here(request, now=False):
            if soft:
                return None
            return {"infeasible": True, "total": self.resources.total, "labels": self.labels}
        if when_busy == "spill":
            return None
        request.stay = True
        if when_busy == "fail":
            request.fail_when_busy = True
            if not self._here(request, now=True):
                return self._busy_reply()
        return None

    def _here(self, request: LeaseRequest, now: bool) -> bool:
        """Whether this node matches the request's labels and has its
        resources: free `now`, or ever."""
        if not labels.matches(self.labels, request.selector):
            return False
        if now:
            return self.resources.fits(request.resources)
        return self.resources.feasible(request.resources)

    def _busy_reply(self) -> dict:
        return {"unavailable": True, "available": self.resources.available_view()}

    def _better_node(self, request: LeaseRequest) -> dict | None:
        """Where else a request should go (spillback), or None to keep it.

        SPREAD: the feasible node with the most free CPU, ties broken by
        rotating. DEFAULT: here if it fits now; else a node where it fits now;
        else here if it could ever fit here; else any node where it could."""
        if request.stay:
            return None
        others = [n for n in self.cluster.values() if n["alive"] and n["node_id"] != self.node_id]
        if not others:
            return None
        if request.strategy == "SPREAD":
            candidates = [n for n in others if _can_host(n, request, "total")]
            if self._here(request, now=False):
                candidates.append(self.info())
            if not candidates:
                return None
            self._spread_turn += 1
            best = max(
                range(len(candidates)),
                key=lambda i: (
                    _free_cpu(candidates[i], self),
                    -((i - self._spread_turn) % len(candidates)),
                ),
            )
            chosen = candidates[best]
            return None if chosen["node_id"] == self.node_id else chosen
        if self._here(request, now=True):
            return None
        free_now = [n for n in others if _can_host(n, request, "available")]
        if free_now:
            return max(free_now, key=lambda n: n["resources_available"].get("CPU", 0.0))
        if self._here(request, now=False):
            return None
        feasible = [n for n in others if _can_host(n, request, "total")]
        return feasible[0] if feasible else None

    def _spill(self, conn, rid, target: dict, need: dict) -> None:
        """Send a request on to `target`, and count what it will take there
        now: a burst of requests must not all follow the same stale view of
        free resources to one node (the requests beyond its room would wait
        there while others idle). That node's next report sets the truth."""
        available = target["resources_available"]
        for key, amount in need.items():
            if key in available:
                available[key] -= amount
        conn.reply(rid, {"spillback": {"address": target["address"], "node_id": target["node_id"]}})

    def _try_grant(self) -> None:
        if self._stopping:
            return
        waiting_for_worker = 0
        remaining = deque()
        while self.pending:
            req = self.pending.popleft()
            if req.conn.closed:
                continue
            if not self._here(req, now=True):
                if req.fail_when_busy:  # it fit when it came; not any more
                    req.conn.reply(req.rid, self._busy_reply())
                    continue
                target = self._better_node(req)
                if target is not None:
                    self._spill(req.conn, req.rid, target, req.resources)
                else:
                    remaining.append(req)
                continue
            worker = self._take_idle_worker()
            if worker is None:
                waiting_for_worker += 1
                remaining.append(req)
                continue
            gpu_ids = self.resources.acquire(req.resources)
            lease = Lease(
                self.next_lease, worker, req.conn, req.resources, gpu_ids, actor_id=req.actor_id
            )
            self.next_lease += 1
            self.leases[lease.lease_id] = lease
            worker.lease = lease
            req.conn.peer.setdefault("leases", set()).add(lease.lease_id)
            req.conn.reply(
                req.rid,
                {
                    "lease_id": lease.lease_id,
                    "worker_id": worker.worker_id,
                    "address": worker.address,
                    "gpu_ids": gpu_ids,
                    "node_id": self.node_id,
                },
            )
        self.pending = remaining
        for _ in range(max(0, waiting_for_worker - self.starting)):
            self._start_worker()
        self._schedule_report()

    def _take_idle_worker(self) -> WorkerProcess | None:
        while self.idle:
            worker = self.idle.pop()  # most recently used: warm caches
            if worker.conn is not None and not worker.conn.closed:
                return worker
        return None

    def return_lease(self, conn, rid, body, bufs) -> None:
        lease = self.leases.get(body["lease_id"])
        if lease is not None and lease.owner is conn:
            if body.get("kill"):
                self._worker_gone(lease.worker)
            else:
                # A retiring worker (max_calls reached) exits by itself once
                # nothing it holds is needed; until then it is nobody's.
                self._release_lease(lease, back_to_pool=not body.get("retire"))
        self._try_grant()
        conn.reply(rid, True)

    def end_actor_lease(self, conn, rid, body, bufs) -> None:
        """The control store gave up an actor's attempt here: its queued
        request is dropped (and answered), or its lease returned and its
        worker killed. Sent after the request on the same connection, so one
        of the two is here, whatever the attempt had got to."""
        actor_id = body["actor_id"]
        for request in [r for r in self.pending if r.conn is conn and r.actor_id == actor_id]:
            self.pending.remove(request)
            conn.reply(request.rid, {"cancelled": True})
        for lease_id in list(conn.peer.get("leases", ())):
            lease = self.leases.get(lease_id)
            if lease is not None and lease.actor_id == actor_id:
                self._worker_gone(lease.worker)
        self._try_grant()

    def resize_lease(self, conn, rid, body, bufs) -> None:
        """An actor placed with more than it runs with (a CPU, by default; a
        bundle's CPU in a placement group) gives the rest back."""
        lease = self.leases.get(body["lease_id"])
        if lease is None or lease.owner is not conn:
            return
        running = body["resources"]
        freed = {k: v - running.get(k, 0.0) for k, v in lease.resources.items()}
        freed = {k: v for k, v in freed.items() if v > 0}
        if freed:
            # A blocked worker's CPUs are lent out already (ResourceSet.release).
            self.resources.release(freed, [], blocked=lease.blocked)
            lease.resources = {k: v - freed.get(k, 0.0) for k, v in lease.resources.items()}
            self._try_grant()

    def _release_lease(self, lease: Lease, back_to_pool: bool) -> None:
        if self.leases.pop(lease.lease_id, None) is None:
            return
        lease.owner.peer.get("leases", set()).discard(lease.lease_id)
        self.resources.release(lease.resources, lease.gpu_ids, blocked=lease.blocked)
        if back_to_pool and lease.worker.worker_id in self.workers:
            self._make_idle(lease.worker)
        self._schedule_report()

    def worker_blocked(self, conn, rid, body, bufs) -> None:
        worker = conn.peer.get("worker")
        lease = worker.lease if worker else None
        if lease is not None and not lease.blocked:
            lease.blocked = True
            self.resources.lend_cpus(lease.resources)
            self._try_grant()

    def worker_unblocked(self, conn, rid, body, bufs) -> None:
        worker = conn.peer.get("worker")
        lease = worker.lease if worker else None
        if lease is not None and lease.blocked:
            lease.blocked = False
            self.resources.reclaim_cpus(lease.resources)
            self._schedule_report()

    def on_close(self, conn) -> None:
        self.clients.discard(conn)
        address = conn.peer.get("address")
        self.store.drop_client(conn, address)
        if address is not None and self.control is not None and not self._stopping:
            # Its objects on other nodes go too.
            self.control.send(Msg.PUBLISH, {"channel": "owner_died", "data": {"address": address}})
        worker = conn.peer.get("worker")
        if worker is not None:
            self._worker_gone(worker)
        for lease_id in list(conn.peer.get("leases", ())):
            lease = self.leases.get(lease_id)
            if lease is not None:
                self._worker_gone(lease.worker)
        self._try_grant()

    def node_info(self, conn, rid, body, bufs) -> None:
        if body and body.get("driver"):
            self.clients.add(conn)
            conn.peer["address"] = body.get("address")
        conn.reply(rid, self.info())

    def _schedule_report(self) -> None:
        if not self._report_scheduled and self.control is not None:
            self._report_scheduled = True
            asyncio.get_running_loop().call_soon(self._report_resources)

    def _report_resources(self) -> None:
        self._report_scheduled = False
        if not self.control.closed:
            self.control.send(
                Msg.NODE_RESOURCES,
                {
                    "node_id": self.node_id,
                    "available": self.resources.available_view(),
                    "total": dict(self.resources.total),
                },
            )

    # -- placement group bundles ---------------------------------------------

    def reserve_bundles(self, conn, rid, body, bufs) -> None:
        """Set aside a placement group's bundles here, all or none."""
        pg_id, bundles = body["pg_id"], {int(i): b for i, b in body["bundles"].items()}
        need: dict[str, float] = {}
        for bundle in bundles.values():
            for k, v in bundle.items():
                need[k] = need.get(k, 0.0) + v
        if not self.resources.fits(need):
            conn.reply(rid, False)
            return
        for index, bundle in bundles.items():
            self.resources.acquire(bundle)
            self.resources.add(bundle_resources(bundle, pg_id, index))
            self.bundles[(pg_id, index)] = bundle
        self._schedule_report()
        conn.reply(rid, True)
        self._try_grant()

    def release_bundles(self, conn, rid, body, bufs) -> None:
        """Give a group's bundles back; workers using them are killed (as in Ray)."""
        pg_id = body["pg_id"]
        for index in body["indexes"]:
            bundle = self.bundles.pop((pg_id, index), None)
            if bundle is None:
                continue
            for lease in list(self.leases.values()):
                if any(pg_id in key for key in lease.resources):
                    self._worker_gone(lease.worker)
            self.resources.remove(bundle_resources(bundle, pg_id, index))
            self.resources.release(bundle, [])
        self._schedule_report()
        self._try_grant()

    # -- object store ------------------------------------------------------

    # Creating and pinning may have to wait (for spills to make room, for a
    # restore, for the writer's seal): then they go on as a task of their own.

    def store_create(self, conn, rid, body, bufs) -> None:
        try:
            offset = self.store.create_now(body["id"], body["size"], body["owner"], conn)
        except (ObjectStoreFullError, ValueError) as e:
            conn.reply(rid, {"error": type(e).__name__, "message": str(e)})
            return
        if offset is None:
            self._background(self._store_create(conn, rid, body))
        else:
            conn.reply(rid, {"offset": offset})

    async def _store_create(self, conn, rid, body) -> None:
        try:
            offset = await self.store.create(body["id"], body["size"], body["owner"], conn)
        except (ObjectStoreFullError, OutOfDiskError, ValueError) as e:
            conn.reply(rid, {"error": type(e).__name__, "message": str(e)})
            return
        conn.reply(rid, {"offset": offset})

    def store_seal(self, conn, rid, body, bufs) -> None:
        self.store.seal(body["id"], conn)
        conn.reply(rid, True)

    def store_pin(self, conn, rid, body, bufs) -> None:
        object_id = body["id"]
        if self.store.readable_now(object_id):
            self._answer_pin(conn, rid, self.store.pin_now(object_id, conn))
        else:
            self._background(self._store_pin(conn, rid, object_id))

    async def _store_pin(self, conn, rid, object_id: bytes) -> None:
        try:
            obj = await self.store.pin(object_id, conn)
        except (ObjectStoreFullError, OutOfDiskError) as e:
            conn.reply(rid, {"error": type(e).__name__, "message": str(e)})
            return
        self._answer_pin(conn, rid, obj)

    @staticmethod
    def _answer_pin(conn, rid, obj) -> None:
        conn.reply(rid, None if obj is None else {"offset": obj.offset, "size": obj.size})

    def store_unpin(self, conn, rid, body, bufs) -> None:
        for object_id in body["ids"]:
            self.store.unpin(object_id, conn)

    def store_free(self, conn, rid, body, bufs) -> None:
        forward: dict[str, list[bytes]] = {}
        for object_id in body["ids"]:
            for node in self.store.free(object_id):
                forward.setdefault(node, []).append(object_id)
        for node, object_ids in forward.items():
            self._background(self._send_to_node(node, Msg.STORE_FREE, {"ids": object_ids}))
        conn.reply(rid, True)

    # -- object transfer between nodes ---------------------------------------

    async def _send_to_node(self, address: str, msg: Msg, body) -> None:
        try:
            (await self._peers.get(address)).send(msg, body)
        except (OSError, TimeoutError, transport.ConnectionLost):
            pass  # that node is gone, and its copies with it

    def store_pull(self, conn, rid, body, bufs) -> None:
        """Make an object that lives on another node readable here, then pin it
        for the asker. Each object is pulled once however many ask for it."""
        object_id = body["id"]
        existing = self.store.objects.get(object_id)
        if (existing is None or existing.freed) and object_id not in self._pulls:
            self._pulls[object_id] = self._background(self._pull(object_id, body))
        pull = self._pulls.get(object_id)
        self._background(self._pin_pulled(conn, rid, object_id, pull))

    async def _pin_pulled(self, conn, rid, object_id: bytes, pull: asyncio.Task | None) -> None:
        if pull is not None:
            try:
                await asyncio.shield(pull)
            except (ObjectStoreFullError, OutOfDiskError) as e:
                conn.reply(rid, {"error": type(e).__name__, "message": str(e)})
                return
        await self._store_pin(conn, rid, object_id)

    async def _pull(self, object_id: bytes, body: dict) -> None:
        """Copy an object from `body["from"]` into the store here. Raises if
        there is no room for it; any other failure leaves it absent."""
        size, source = body["size"], body["from"]
        try:
            offset = await self.store.create(object_id, size, body["owner"], "pull")
            await self._fetch_into(object_id, source, offset, size)
        except ValueError:
            pass  # here already: a put or another pull made it meanwhile
        finally:
            self._pulls.pop(object_id, None)

    async def _fetch_into(self, object_id: bytes, source: str, offset: int, size: int) -> None:
        try:
            conn = await self._peers.get(source)
            limit = asyncio.Semaphore(PULL_PARALLEL_CHUNKS)

            async def chunk(start: int) -> None:
                async with limit:
                    reply, buffers = await conn.request(
                        Msg.FETCH_CHUNK,
                        {
                            "id": object_id,
                            "start": start,
                            "length": PULL_CHUNK,
                            "node": self.address,
                        },
                        raw=True,
                    )
                if reply is None:
                    raise LookupError("the object is gone from its node")
                self.store.write(offset + start, buffers[0])

            await asyncio.gather(*(chunk(start) for start in range(0, size, PULL_CHUNK)))
            self.store.seal(object_id, "pull")
        except Exception as e:  # the source node died, or freed the object
            logger.info("pull of %s from %s failed: %s", object_id.hex(), source, e)
            self.store.abort(object_id)

    def fetch_chunk(self, conn, rid, body, bufs) -> None:
        """Serve a piece of a local object to a node pulling a copy."""
        self._background(self._fetch_chunk(conn, rid, body))

    async def _fetch_chunk(self, conn, rid, body) -> None:
        object_id = body["id"]
        try:
            data = await self.store.read(object_id, body["start"], body["length"])
        except (ObjectStoreFullError, OutOfDiskError):
            data = None
        if data is None:
            conn.reply(rid, None)
            return
        self.store.objects[object_id].copies.add(body["node"])
        conn.reply(rid, True, [data])

    def store_stats(self, conn, rid, body, bufs) -> None:
        conn.reply(rid, self.store.stats())

    def list_objects(self, conn, rid, body, bufs) -> None:
        """Every object known to the drivers and workers on this node, with
        where the store keeps it now (shared memory, or spilled)."""
        self._background(self._list_objects(conn, rid))

    async def _list_objects(self, conn, rid) -> None:
        clients = [c for c in self.clients if not c.closed]
        replies = await asyncio.gather(
            *(asyncio.wait_for(c.request(Msg.OBJECT_REPORT), 5) for c in clients),
            return_exceptions=True,
        )
        rows = []
        for reply in replies:
            if isinstance(reply, list):
                rows.extend(reply)
        for row in rows:
            if row["location"] == "shared_memory" and self.store.is_spilled(
                bytes.fromhex(row["object_id"])
            ):
                row["location"] = "spilled"
        conn.reply(rid, rows)


class ForkedProcess:
    """A worker forked by the zygote: not our child, so its exit is watched
    through a pidfd instead of waitpid (its exit status is not ours to see)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.get_running_loop().create_future()
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:  # already gone
            self._fd = None
            self._done()
            return
        asyncio.get_running_loop().add_reader(self._fd, self._done)

    def _done(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        if self.returncode is None:
            self.returncode = -1
        if not self._exited.done():
            self._exited.set_result(self.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        """SIGKILL through the pidfd: never a recycled pid."""
        if self._fd is not None:
            try:
                signal.pidfd_send_signal(self._fd, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _kill(process) -> None:
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


def _default_store_size(total_memory: int) -> int:
    shm_free = shutil.disk_usage("/dev/shm").free
    return int(min(total_memory * 0.3, shm_free * 0.9))


async def serve(args) -> None:
    token = services.read_token(args.token_fd)
    node = Node(args, token)
    sock = services.listening_socket(args)
    try:
        await node.start(sock)
        await services.wait_for_stop(args)
    finally:
        await node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="solray node")
    services.add_service_arguments(parser)
    parser.add_argument("--control-address", required=True)
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--node-ip-address", default="127.0.0.1")
    parser.add_argument("--num-cpus", type=float)
    parser.add_argument("--num-gpus", type=float, default=0)
    parser.add_argument("--resources", default="{}")
    parser.add_argument("--labels", default="{}", help="node labels as JSON")
    parser.add_argument("--object-store-memory", type=int)
    parser.add_argument(
        "--spill-dir",
        action="append",
        help="a directory full stores spill objects to (repeat for several)",
    )
    parser.add_argument("--spill-buffer-size", type=int, default=DEFAULT_BUFFER_SIZE)
    parser.add_argument("--spill-io-threads", type=int, default=2)
    parser.add_argument("--memory-usage-threshold", type=float, default=0.95)
    parser.add_argument("--memory-monitor-refresh-ms", type=int, default=250)
    parser.add_argument("--head", action="store_true")
    parser.add_argument("--node-id", help="hex id; random if not given")
    parser.add_argument("--node-name", help="a name for nodes(); the IP address if not given")
    args = parser.parse_args()
    services.setup_process("node", args)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
