"""The proxy driver of one ray:// client (a process per client connection).

The client server (server.py) authenticated the client's connection and
handed its socket to this process (transport.adopt). On the client's first
message (CLIENT_CONNECT, carrying its namespace and log_to_driver) this
process joins the cluster as a real driver, as init(address=...) does
(worker.join_cluster), and from then on runs the client's API calls
(CLIENT_CALL: a public function's name and arguments, see API) on its
behalf. So it owns what the client creates. A foreign (Java, C++) driver's
first message is XLANG_CONNECT instead: then xlang/foreign_driver.py serves
it (messages 210-219), on this process's loop and pool, and the Python
client's messages are refused (the reverse too). When the client's connection
closes, however it closes (shutdown(), a crash, SIGKILL, the network), this
process shuts its driver down and exits: the cluster's ownership machinery
frees its objects and ends its non-detached actors, as for any driver that
exits; detached actors stay. It also exits when its node dies, or when the
client server stops it.

Refs held for the client. Each ObjectRef and ActorHandle sent to the client
inside a reply is kept in `held` with the number of times it was sent; the
client releases an id with the number of times it received it once it holds
no instance (client_worker.py), and the proxy drops its instance when the
count reaches zero. Streaming generators the client reads are kept in
`_streams` until the client's generator object dies.

Threads: the asyncio loop (main thread) owns the client connection and
`held`. API calls run on a thread pool (they block: get, wait, the next
item of a stream) and hand their packed result back to the loop, which
holds the refs inside and sends the reply. The pool grows with the calls in
flight, so a call blocked in `get` never keeps another client thread's call
from running. `_streams` is shared by those threads, under its lock.
Worker output the driver would print (log_to_driver) goes to the client as
CLIENT_OUTPUT.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import importlib
import logging
import os
import platform
import socket
import sys
import threading

import solray
from solray._private import context, services, transport
from solray._private.client import wire
from solray._private.protocol import PROTOCOL_VERSION, Msg
from solray._private.xlang.foreign_driver import ForeignDriver
from solray.job_config import JobConfig
from solray.object_ref_generator import ObjectRefGenerator

logger = logging.getLogger(__name__)

MAX_CALL_THREADS = 256
CONNECT_TIMEOUT_S = 60.0  # a client that never says who it is loses its proxy

_streams: dict[bytes, ObjectRefGenerator] = {}
_streams_lock = threading.Lock()


def proxy_stream(task_id: bytes) -> ObjectRefGenerator:
    """What a client's generator unpickles to here (ClientObjectRefGenerator)."""
    with _streams_lock:
        stream = _streams.get(task_id)
    if stream is None:
        raise ValueError(f"no streaming generator {task_id.hex()} for this client")
    return stream


class _ClientStream:
    """A generator returned to the client: kept here, sent as its client side."""

    def __init__(self, stream: ObjectRefGenerator):
        with _streams_lock:
            _streams[stream._task_id] = stream
        self._task_id = stream._task_id
        self._owner = stream._owner

    def __reduce__(self):
        from solray._private.client.client_worker import client_stream

        return client_stream, (self._task_id, self._owner)


def _remote(target, args: tuple, kwargs: dict, options: dict):
    """`.remote()` of a remote function, actor class or actor method."""
    result = target._remote(args, kwargs, options)
    return _ClientStream(result) if isinstance(result, ObjectRefGenerator) else result


def _next(stream: ObjectRefGenerator):
    return next(stream)


def _wait_indices(items: list, **options) -> list[int]:
    """`wait`, answered as the positions of the ready items: the client
    returns its own objects (refs, generators) in its lists."""
    from solray._private import worker

    ready, _ = worker.wait(items, **options)
    position = {id(item): i for i, item in enumerate(items)}
    return [position[id(item)] for item in ready]


def _api() -> dict:
    """The functions a client may call, by the name the client sends."""
    from solray._private import timeline, worker
    from solray.util import state

    # The module (solray.util's attribute of that name is the function).
    groups = importlib.import_module("solray.util.placement_group")

    names = (
        "get",
        "put",
        "cancel",
        "kill",
        "get_actor",
        "get_gpu_ids",
        "nodes",
        "cluster_resources",
        "available_resources",
    )
    api = {name: getattr(worker, name) for name in names}
    api.update(
        {
            "remote": _remote,
            "next": _next,
            "wait_indices": _wait_indices,
            # Every list_, get_, summarize_ and explain_ function (get_log as _log_lines).
            **{
                f"util.state.{name}": getattr(state, name)
                for name in state.__all__
                if name.startswith(("list_", "get_", "summarize_", "explain_"))
            },
            "util.state.get_log": state._log_lines,
            "timeline": timeline.timeline,
            "util.placement_group.placement_group": groups.placement_group,
            "util.placement_group.ready": groups.PlacementGroup.ready,
            "util.placement_group.remove_placement_group": groups.remove_placement_group,
            "util.placement_group.get_placement_group": groups.get_placement_group,
            "util.placement_group.placement_group_table": groups.placement_group_table,
        }
    )
    return api


class _Output:
    """sys.stdout/stderr of the proxy once connected: the driver's printing
    of worker output (core_worker._on_published) reaches the client."""

    def __init__(self, proxy: Proxy, err: bool):
        self._proxy = proxy
        self._err = err

    def write(self, text: str) -> int:
        try:
            self._proxy.loop.call_soon_threadsafe(self._proxy.send_output, self._err, text)
        except RuntimeError:  # the loop is closed: exiting, the client is gone
            (sys.__stderr__ if self._err else sys.__stdout__).write(text)
        return len(text)

    def flush(self) -> None:
        pass


class Proxy:
    def __init__(self, token: bytes, control_address: str, ip: str, num_clients: int):
        self.token = token
        self.num_clients = num_clients
        self.control_address = control_address
        self.ip = ip
        self.held: dict[bytes, list] = {}  # id -> [instance, times sent]
        self.api = _api()
        self.pool = concurrent.futures.ThreadPoolExecutor(
            MAX_CALL_THREADS, thread_name_prefix="solray-client-call"
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.conn: transport.Connection | None = None
        self.connected = False  # a Python client (CLIENT_CONNECT)
        self.foreign = ForeignDriver(self)  # serves a foreign client, if one connects
        self.stop: asyncio.Event | None = None

    async def run(self, sock: socket.socket) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        services.on_stop_signals(self.loop, self.stop)
        self.conn = await transport.adopt(
            sock,
            self.token,
            {
                Msg.CLIENT_CONNECT: self._on_connect,
                Msg.CLIENT_CALL: self._on_call,
                Msg.CLIENT_RELEASE: self._on_release,
                **self.foreign.handlers(),
            },
            on_close=lambda conn: self.stop.set(),
        )
        self.loop.call_later(
            CONNECT_TIMEOUT_S,
            lambda: self.connected or self.foreign.connected or self.stop.set(),
        )
        await self.stop.wait()
        self.conn.close()
        # Let go of everything before the driver goes (its shutdown frees the rest).
        self.held.clear()
        self.foreign.release_all()
        with _streams_lock:
            _streams.clear()
        await self.loop.run_in_executor(None, self._shutdown_driver)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _shutdown_driver(self) -> None:
        from solray._private import worker

        worker.shutdown()

    # -- handlers (loop thread) --------------------------------------------

    def _on_connect(self, conn, rid, body, buffers) -> None:
        if self.connected or self.foreign.connected:
            conn.reply_error(rid, "this client is already connected")
            return
        self.connected = True
        namespace = body.get("namespace")
        log_to_driver = body.get("log_to_driver", True)
        self.pool.submit(self._connect, rid, namespace, log_to_driver)

    def join(self, namespace: str | None, log_to_driver: bool, job_config: JobConfig | None = None):
        """Pool thread: join the cluster as this client's driver; its core worker."""
        from solray._private import worker

        worker.join_cluster(
            self.control_address,
            self.token,
            ip=self.ip,
            namespace=namespace,
            log_to_driver=log_to_driver,
            job_config=job_config,
        )
        cw = context.require_core_worker()
        cw.on_node_lost = lambda: self.loop.call_soon_threadsafe(self.stop.set)
        # Its call sites would be this proxy's threads, not the client's
        # code: no advice (advice.py) for a client's own calls.
        cw.advice.enabled = False
        return cw

    def _connect(self, rid: int, namespace: str | None, log_to_driver: bool) -> None:
        from solray._private import worker

        try:
            cw = self.join(namespace, log_to_driver)
            info = {
                "address": cw.address,
                "namespace": cw.namespace,
                "job_id": cw.job_bytes.hex(),
                "worker_id": cw.worker_id,
                "node_info": {
                    key: cw.node_info.get(key)
                    for key in ("node_id", "ip", "labels", "control_address")
                },
                # What Ray Client's connect() returns (`util.connect`).
                "connection_info": {
                    "num_clients": self.num_clients,
                    "python_version": platform.python_version(),
                    "ray_version": solray.__version__,
                    "ray_commit": "",  # solray is not built from a git commit
                    "protocol_version": str(PROTOCOL_VERSION),
                },
                "webui_url": worker.dashboard_url(cw),
            }
        except Exception as e:
            logger.exception("could not join the cluster for a client")
            self.loop.call_soon_threadsafe(self.conn.reply_error, rid, f"{type(e).__name__}: {e}")
            self.loop.call_soon_threadsafe(self.stop.set)
            return
        sys.stdout, sys.stderr = _Output(self, False), _Output(self, True)
        self.loop.call_soon_threadsafe(self.conn.reply, rid, info)

    def _on_call(self, conn, rid, body, buffers) -> None:
        function = self.api.get(body.get("name")) if self.connected else None
        if function is None:
            conn.reply_error(rid, f"no API function {body.get('name')!r} for clients")
            return
        self.pool.submit(self._call, rid, function, body, buffers)

    def _call(self, rid: int, function, body: dict, buffers: list) -> None:
        """Pool thread: run one call; its packed result goes back to the loop."""
        try:
            (args, kwargs), _ = wire.unpack(body, buffers)
            packed = wire.pack(function(*args, **kwargs))
        except BaseException as e:  # every call is answered, or its client waits forever
            packed = wire.pack_error(e)
        self.loop.call_soon_threadsafe(self._reply, rid, packed)

    def _reply(self, rid: int, packed) -> None:
        body, buffers, refs = packed
        if self.conn.closed:
            return
        for ref in refs:
            entry = self.held.get(ref._id)
            if entry is None:
                self.held[ref._id] = [ref, 1]
            else:
                entry[1] += 1
        self.conn.reply(rid, body, buffers)

    def _on_release(self, conn, rid, body, buffers) -> None:
        if not self.connected:
            return
        for object_id, times in body["refs"]:
            entry = self.held.get(object_id)
            if entry is not None:
                entry[1] -= times
                if entry[1] <= 0:
                    del self.held[object_id]
        if body["streams"]:
            with _streams_lock:
                for task_id in body["streams"]:
                    _streams.pop(task_id, None)

    def send_output(self, err: bool, text: str) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.send(Msg.CLIENT_OUTPUT, {"err": err, "text": text})


def main() -> None:
    parser = argparse.ArgumentParser(description="solray ray:// client proxy driver")
    parser.add_argument("--token-fd", type=int, required=True)
    parser.add_argument("--client-fd", type=int, required=True, help="the client's socket")
    parser.add_argument("--control-address", required=True)
    parser.add_argument("--node-ip-address", required=True)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--num-clients", type=int, default=1)
    args = parser.parse_args()
    token = services.read_token(args.token_fd)
    services.setup_process("client proxy", args)
    services.die_with_parent()
    sock = socket.socket(fileno=args.client_fd)
    proxy = Proxy(token, args.control_address, args.node_ip_address, args.num_clients)
    asyncio.run(proxy.run(sock))
    # Calls still blocked in the pool (a get whose value will never come)
    # must not keep this process alive: its driver is already shut down.
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    # Run as the imported module, not as __main__: clients' generators
    # unpickle to `proxy_stream` of solray._private.client.proxy, whose
    # `_streams` must be the one this process fills.
    from solray._private.client import proxy

    proxy.main()
