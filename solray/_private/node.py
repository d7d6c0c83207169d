"""The node: one per machine. It registers with the control store, keeps
its cluster view, reports its resources, and serves its drivers, workers and
peer nodes. The work is done by parts named for what they hold:

    worker_pool.py      worker processes: start (fork server), idle, output, exit
    fork_server.py      the node's end of the worker fork server (worker_zygote.py)
    lease_scheduler.py  leases and placement group bundles, routed by the
                        placement engine (placement.py) from the view here
    object_manager.py   the shared-memory store's handlers, transfer between nodes
    metrics_exporter.py the /metrics endpoint: what its processes report, summed
    node_probe.py       `solray why` and `solray stack`: its queue, env builds,
                        and what its drivers and workers report

The control store may be killed and started again (control_store.py): the
node's connection to it (control_client.py) reconnects, registering again
with the actors it hosts, and the head node is the one that starts it again
(control_supervisor.py). Meanwhile the node goes on serving its workers.

The view (placement.ClusterView) holds every node as the control store
publishes it (`resources`, `node_added`, `node_removed`); this node's own
entry reads its ResourceSet. Every change here is reported at once (one
report per loop iteration) and at least every HEARTBEAT_INTERVAL_S, which is
also the heartbeat.
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

import psutil

from solray._private import ids, labels, services, transport
from solray._private.control_client import ControlClient
from solray._private.control_supervisor import ControlSupervisor
from solray._private.lease_scheduler import LeaseScheduler
from solray._private.log_files import LogFiles, log_dir
from solray._private.metrics_exporter import MetricsExporter
from solray._private.node_probe import NodeProbe
from solray._private.object_manager import ObjectManager
from solray._private.object_store import ObjectStore
from solray._private.placement import ClusterView
from solray._private.protocol import Msg
from solray._private.resources import ResourceSet
from solray._private.runtime_env import packages
from solray._private.runtime_env.agent import RuntimeEnvAgent
from solray._private.spill import DEFAULT_BUFFER_SIZE, SpillDirectory
from solray._private.system_metrics import HostUsage, SystemMetrics
from solray._private.worker_pool import WorkerPool
from solray.exceptions import RuntimeEnvSetupError

logger = logging.getLogger("solray.node")

HEARTBEAT_INTERVAL_S = 1.0


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
        self.log_files = LogFiles(self, log_dir(self.session_dir, self.node_id))
        self.clients: set[transport.Connection] = set()  # core workers: drivers, workers
        self._tasks: set[asyncio.Task] = set()  # background tasks (see background)
        self.view = ClusterView(self.node_id, self.resources)
        self.pool = WorkerPool(
            self,
            soft_limit=max(1, int(num_cpus)),
            on_change=lambda: self.leases.try_grant(),
            on_lost=lambda worker: self.leases.worker_lost(worker),
            on_env_failed=lambda env_key, error: self.leases.env_failed(env_key, error),
        )
        # Runtime envs this node prepared (unpacked packages, virtual
        # environments): its own, so nodes sharing a session never race.
        self.runtime_resources = os.path.join(
            self.session_dir, "runtime_resources", self.node_id[:16]
        )
        self.runtime_envs = RuntimeEnvAgent(self.runtime_resources, self._fetch_package)
        self.leases = LeaseScheduler(self, self.pool)
        self.objects = ObjectManager(self)
        self.host = HostUsage()  # the metrics' and the dashboard's one reading of the host
        self.metrics = MetricsExporter(self)
        self.metrics.add_source(SystemMetrics(self, self.metrics.constant_labels).collect)
        self.control: ControlClient | None = None
        # The head node starts the control store again when it dies.
        self.supervisor = (
            ControlSupervisor(
                self.control_address,
                token,
                json.loads(args.control_store_args),
                args.lifeline_fd,
                args.log_level,
            )
            if args.control_store_args
            else None
        )
        self.server = None  # serving starts once the node is registered
        self.address: str | None = None
        self._report_scheduled = False
        self.stopping = False
        self.handlers = {
            Msg.REGISTER_WORKER: self.pool.register_worker,
            Msg.NODE_INFO: self.node_info,
            Msg.PREPARE_RUNTIME_ENV: self.prepare_runtime_env,
            Msg.LIST_WORKERS: self.list_workers,
            Msg.NODE_STATS: self.node_stats,
            **self.log_files.handlers,
            **self.leases.handlers,
            **self.objects.handlers,
            **self.metrics.handlers,
            **NodeProbe(self).handlers,
        }

    # -- lifecycle ---------------------------------------------------------

    async def start(self, sock, metrics_sock, twin: socket.socket | bool = True) -> None:
        self.address = transport.socket_address(sock)
        self.metrics.start(metrics_sock)
        self.control = ControlClient(
            self.control_address,
            self.token,
            {Msg.PUBLISHED: self.on_published},
            on_connect=self._register_again,
            on_retry=self._control_down,
            on_lost=self._control_lost,
        )
        await self.control.connect()
        # Warm the pool while registering: the first task should find a worker.
        # These first workers start as interpreters; the zygote starts once
        # they are up (its imports would slow them down on a small machine),
        # and every later worker is forked from it.
        for _ in range(min(self.pool.soft_limit, os.cpu_count() or 1)):
            self.pool.start_worker(fork=False)
        await self.control.request(Msg.REGISTER_NODE, self.info())
        for info in await self.control.request(Msg.GET_NODES):
            self.view.add(info)
        await self.control.subscribe(["resources", "node_added", "node_removed", "owner_died"])
        # Serve (the driver's NODE_INFO) only once registered, so that nodes()
        # and cluster_resources() right after init() see this node. The socket
        # is already listening: early connections wait in its backlog.
        self.server = await transport.serve(
            sock, self.token, self.handlers, on_close=self.on_close, twin=twin
        )
        self.background(self.pool.reap_idle_workers())
        self.background(self._send_heartbeats())
        if self.memory_refresh_s > 0:
            self.background(self.leases.watch_memory(self.memory_threshold, self.memory_refresh_s))

    def prepare_runtime_env(self, conn, rid, body, bufs) -> None:
        """A job's env with eager_install: set it up now, before its first
        task needs it. A failure shows when a task needs the env."""

        async def prepare() -> None:
            try:
                await self.runtime_envs.prepare(body["runtime_env"])
            except Exception:
                pass

        self.background(prepare())
        conn.reply(rid, True)

    async def _fetch_package(self, digest: str) -> bytes:
        """A runtime env package (or pickled setup hook) from the control store."""
        found, buffers = await self.control.request(
            Msg.KV_GET, {"ns": packages.NAMESPACE, "key": digest}, raw=True
        )
        if not found:
            raise RuntimeEnvSetupError(
                f"runtime_env package {digest} is not in the cluster (was its job's driver "
                "connected to another cluster?)"
            )
        return bytes(buffers[0])

    async def _send_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)
            self._report_resources()
            if self.leases.pending:
                # What this node sent elsewhere lapses in its view without an
                # event (placement.TAKEN_TTL_S): queued requests look again.
                self.leases.try_grant()

    def on_published(self, conn, rid, body, bufs) -> None:
        """The cluster view: other nodes' resources, arrivals, departures, and
        owners that died (their objects here are freed)."""
        channel, data = body["channel"], body["data"]
        if channel == "resources":
            if data["node_id"] != self.node_id:
                self.view.report(data["node_id"], data["available"], data["total"])
                self.leases.try_grant()  # a queued request may now fit elsewhere
        elif channel == "node_added":
            self.view.add(data)
            self.leases.try_grant()
        elif channel == "node_removed":
            self.view.remove(data["node_id"])
        elif channel == "owner_died":
            self.store.drop_owner(data["address"])

    async def _register_again(self, conn: transport.Connection) -> None:
        """A new control store (the old one was restarted): register again,
        with the actors running here whose lease the old one held; it names
        those it does not know as alive here, which end. Then take its view
        of the cluster."""
        reply = await conn.request(
            Msg.REGISTER_NODE, dict(self.info(), actors=self.leases.orphaned_actors())
        )
        if reply.get("dead"):
            logger.error("the control store declared this node dead; stopping it")
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.leases.end_orphaned_actors(reply["drop_actors"])
        for info in await conn.request(Msg.GET_NODES):
            if info["node_id"] != self.node_id:
                self.view.add(info)
                if not info["alive"]:
                    self.view.remove(info["node_id"])

    def _control_down(self, for_s: float) -> None:
        if self.supervisor is not None and not self.stopping:
            self.supervisor.revive(for_s)

    def _control_lost(self) -> None:
        if not self.stopping:
            logger.error("the control store did not come back; stopping this node")
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
            "metrics_export_port": self.metrics.port,
            "metrics_export_address": self.metrics.address,
            "log_dir": self.log_files.dir,
        }

    async def stop(self) -> None:
        self.stopping = True
        if self.supervisor is not None:
            self.supervisor.stop()
        self.metrics.stop()
        await self.pool.stop()  # every process we started, killed and reaped
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.close()
        shutil.rmtree(self.shm_dir, ignore_errors=True)
        shutil.rmtree(self.runtime_resources, ignore_errors=True)
        if self.control is not None:
            self.control.close()

    def background(self, coro) -> asyncio.Task:
        """Run a coroutine in the background. asyncio keeps only weak refs to
        tasks, so the node holds them, and cancels those left at stop()."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- connections ---------------------------------------------------------

    def on_close(self, conn) -> None:
        self.clients.discard(conn)
        self.pool.driver_gone(conn)
        address = conn.peer.get("address")
        self.store.drop_client(conn, address)
        if address is not None and self.control is not None and not self.stopping:
            # Its objects on other nodes go too.
            self.control.send(Msg.PUBLISH, {"channel": "owner_died", "data": {"address": address}})
        self.leases.on_close(conn)

    def list_workers(self, conn, rid, body, bufs) -> None:
        conn.reply(rid, self.pool.worker_rows())

    def node_stats(self, conn, rid, body, bufs) -> None:
        conn.reply(rid, {"host": self.host.read(), "store": self.store.stats()})

    def node_info(self, conn, rid, body, bufs) -> None:
        if body and body.get("driver"):
            self.clients.add(conn)
            conn.peer["address"] = body.get("address")
            self.pool.add_driver(conn, body)
        conn.reply(rid, self.info())

    # -- resource reports ----------------------------------------------------

    def schedule_report(self) -> None:
        if not self._report_scheduled and self.control is not None:
            self._report_scheduled = True
            asyncio.get_running_loop().call_soon(self._report_resources)

    def _report_resources(self) -> None:
        self._report_scheduled = False
        if self.control.connected:
            self.control.send(
                Msg.NODE_RESOURCES,
                {
                    "node_id": self.node_id,
                    "available": self.resources.available_view(),
                    "total": dict(self.resources.total),
                },
            )


def _default_store_size(total_memory: int) -> int:
    shm_free = shutil.disk_usage("/dev/shm").free
    return int(min(total_memory * 0.3, shm_free * 0.9))


async def serve(args) -> None:
    token = services.read_token(args.token_fd)
    node = Node(args, token)
    sock = services.listening_socket(args)
    metrics_sock = socket.socket(fileno=args.metrics_fd)  # bound by the launcher
    try:
        await node.start(sock, metrics_sock, services.listening_twin(args))
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
    parser.add_argument(
        "--control-store-args",
        help="JSON list: the control store's arguments, for the head node to start it "
        "again when it dies",
    )
    parser.add_argument("--node-id", help="hex id; random if not given")
    parser.add_argument("--node-name", help="a name for nodes(); the IP address if not given")
    parser.add_argument(
        "--metrics-fd", type=int, required=True, help="inherited listening socket for /metrics"
    )
    args = parser.parse_args()
    services.setup_process("node", args)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
