"""The control store: cluster-wide state, one per cluster, on the head node.

It holds what every process may need to look up and nobody owns alone:
membership and resources of nodes, job ids, a small key-value store, a
publish/subscribe hub (worker logs, node events), and the task events every
process ships in batches (task_event_store.py). It is deliberately off the
task path: submitting and running a task never touches it.

Liveness of a node is tied to its connection here: when a node's connection
closes, the node is marked dead and a `node_removed` event is published.

Persistence (control_storage/): nodes, actors, placement groups, the job
counter and the KV store are written to storage (a SQLite file in the
session directory, or Redis) as they change, in batches off the loop; a
reply that tells a user something was stored (a named actor registered, a KV
entry put, a job id) leaves only once it is written. Started again on the
same address, the control store loads its tables and waits a recovery
window (the heartbeat timeout) for the nodes and owners it knew to come back:

    a node that was alive registers again (control_client.py reconnects
        it), telling which actors it hosts; one that does not come back in
        time is dead, as if its connection had closed
    an actor that was ALIVE keeps its address (callers never stopped
        calling it): the control store adopts its lease from the node and
        reconnects to its worker; if the worker is gone, the actor restarts
        or dies as it would have
    an actor or group being placed is placed again
    the owner of a non-detached actor or group says who it is
        (CONTROL_HELLO); one that does not come back in time died meanwhile,
        and what it owned ends with it
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable

import msgpack

from solray._private import services, transport
from solray._private.actor_manager import GRACEFUL_TIMEOUT_S, ActorManager
from solray._private.advice_store import AdviceStore
from solray._private.control_storage import (
    EXIT_STORAGE_UNREADABLE,
    KV,
    META,
    NODES,
    Persistence,
    Storage,
    StorageError,
    StorageUnavailable,
    open_storage,
)
from solray._private.placement import ClusterView
from solray._private.placement_groups import PlacementGroupManager
from solray._private.protocol import Msg
from solray._private.task_event_store import TaskEventStore

logger = logging.getLogger("solray.control_store")


NEXT_JOB = b"next_job"


class ControlStore:
    def __init__(
        self,
        token: bytes,
        storage: Storage,
        actor_graceful_timeout_s: float = GRACEFUL_TIMEOUT_S,
        cluster_stopping: Callable[[], bool] = lambda: False,
    ):
        self.token = token
        self.persist = Persistence(storage)
        # Nodes loaded from storage as alive that have not registered again.
        self.unconfirmed: set[str] = set()
        # Every node, as registered and last reported; actors and placement
        # groups are placed from it (placement.py).
        self.view = ClusterView()
        self.node_conns: dict[str, transport.Connection] = {}
        self.next_job = 1
        self.kv: dict[tuple[str, str], bytes] = {}
        self.subscribers: dict[str, set[transport.Connection]] = {}
        # Whether the whole cluster is stopping (its launcher let go), when a
        # node's leaving is expected, not news for the user's terminal.
        self.cluster_stopping = cluster_stopping
        self.handlers = {
            Msg.REGISTER_NODE: self.register_node,
            Msg.REGISTER_DRIVER: self.register_driver,
            Msg.NODE_RESOURCES: self.node_resources,
            Msg.GET_NODES: self.get_nodes,
            Msg.KV_PUT: self.kv_put,
            Msg.KV_GET: self.kv_get,
            Msg.KV_DEL: self.kv_del,
            Msg.KV_KEYS: self.kv_keys,
            Msg.SUBSCRIBE: self.subscribe,
            Msg.PUBLISH: self.publish_message,
            Msg.CONTROL_HELLO: self.hello,
        }
        self.actors = ActorManager(self, actor_graceful_timeout_s)
        self.handlers.update(self.actors.handlers)
        self.placement_groups = PlacementGroupManager(self)
        self.handlers.update(self.placement_groups.handlers)
        self.tasks = TaskEventStore()
        self.handlers[Msg.TASK_EVENTS] = self.task_events
        self.handlers[Msg.LIST_TASKS] = self.list_tasks
        self.advice = AdviceStore()
        self.handlers[Msg.ADVICE_REPORT] = self.advice_report
        self.handlers[Msg.GET_ADVICE] = self.get_advice

    def on_close(self, conn: transport.Connection) -> None:
        for subs in self.subscribers.values():
            subs.discard(conn)
        node_id = conn.peer.get("node_id")
        if node_id is not None and self.node_conns.get(node_id, conn) is conn:
            self._node_lost(node_id)
        self.actors.on_connection_closed(conn)
        self.placement_groups.on_connection_closed(conn)

    def _node_lost(self, node_id: str) -> None:
        info = self.view.nodes.get(node_id)
        if info is None or not info["alive"]:
            return
        self.view.remove(node_id)
        info["end_time"] = time.time()
        self._save_node(info)
        logger.log(
            logging.INFO if self.cluster_stopping() else logging.WARNING,
            "node %s (%s) left the cluster",
            node_id,
            info["address"],
        )
        self.publish("node_removed", {"node_id": node_id, "address": info["address"]})
        self.placement_groups.on_node_removed(node_id)
        self.actors.on_node_removed(node_id)
        self.actors.on_cluster_changed()

    def _save_node(self, info: dict) -> None:
        self.persist.put(NODES, info["node_id"].encode(), msgpack.packb(info))

    # -- restarts --------------------------------------------------------------

    def restore(self, tables: dict[str, dict[bytes, bytes]]) -> None:
        """Load the tables a previous control store at this address wrote."""
        if NEXT_JOB in tables[META]:
            self.next_job = msgpack.unpackb(tables[META][NEXT_JOB])
        for key, value in tables[KV].items():
            ns, name = msgpack.unpackb(key, strict_map_key=False)
            self.kv[(ns, name)] = value
        for value in tables[NODES].values():
            info = msgpack.unpackb(value, strict_map_key=False)
            self.view.add(info)
            if info["alive"]:
                self.unconfirmed.add(info["node_id"])
        self.actors.restore(tables)
        self.placement_groups.restore(tables)
        if tables[NODES]:
            logger.warning(
                "restored from %s: %d node(s), %d actor(s), %d placement group(s), %d KV entries",
                self.persist.storage.description,
                len(tables[NODES]),
                len(self.actors.actors),
                len(self.placement_groups.groups),
                len(self.kv),
            )

    async def end_recovery(self, window_s: float) -> None:
        """After a restart: nodes and owners that have not come back within
        `window_s` died while the control store was away."""
        await asyncio.sleep(window_s)
        for node_id in list(self.unconfirmed):
            logger.warning("node %s did not come back after the restart", node_id)
            self._node_lost(node_id)
        self.unconfirmed.clear()
        self.actors.end_recovery()
        self.placement_groups.end_recovery()

    def hello(self, conn, rid, body, bufs) -> None:
        """A core worker (re)connected: who it is. What it owns (by its
        address) is tied to this connection again."""
        conn.peer["address"] = body.get("address")
        if body.get("job") is not None:
            conn.peer["job"] = body["job"]
        if conn.peer["address"]:
            self.actors.claim(conn)
            self.placement_groups.claim(conn)
        conn.reply(rid, True)

    async def watch_heartbeats(self, timeout_s: float) -> None:
        """A node that stops reporting (hung, or cut off by the network) is
        declared dead after `timeout_s`; closing its connection makes it stop
        itself, should it come back."""
        while True:
            await asyncio.sleep(min(1.0, timeout_s / 4))
            now = time.monotonic()
            for conn in list(self.node_conns.values()):
                if now - conn.peer.get("last_seen", now) > timeout_s:
                    logger.warning(
                        "node %s missed heartbeats for %.1fs: declaring it dead",
                        conn.peer.get("node_id"),
                        timeout_s,
                    )
                    self.on_close(conn)
                    conn.close()

    def register_node(self, conn, rid, body, bufs) -> None:
        """A node joins, or (after a restart of ours) comes back with the
        actors it hosts: the reply names those to end (their actors are not
        alive there as far as the stored tables say). A node declared dead
        may not come back."""
        node_id = body["node_id"]
        known = self.view.nodes.get(node_id)
        if known is not None and not known["alive"]:
            # Declared dead (missed heartbeats, or did not come back after a
            # restart of ours): what it held is placed elsewhere by now, so
            # it stops rather than rejoin (as in Ray).
            conn.reply(rid, {"dead": True})
            return
        hosted = body.pop("actors", [])
        conn.peer["node_id"] = node_id
        conn.peer["last_seen"] = time.monotonic()
        self.node_conns[node_id] = conn

        def forget(c) -> None:
            if self.node_conns.get(node_id) is c:
                del self.node_conns[node_id]

        conn.add_close_callback(forget)
        started = known["start_time"] if known else time.time()
        info = dict(body, alive=True, start_time=started)
        self.view.add(info)
        self.unconfirmed.discard(node_id)
        self._save_node(info)
        self.publish("node_added", info)
        drop = self.actors.on_node_registered(info, hosted)
        conn.reply(rid, {"drop_actors": drop})
        self.actors.on_cluster_changed()
        self.placement_groups.on_cluster_changed()

    def register_driver(self, conn, rid, body, bufs) -> None:
        job = self.next_job
        self.next_job += 1
        conn.peer["job"] = job
        self.persist.put(META, NEXT_JOB, msgpack.packb(self.next_job))
        self.persist.after_commit(lambda: conn.reply(rid, {"job": job}))

    def node_resources(self, conn, rid, body, bufs) -> None:
        """Resources a node has free; also its heartbeat."""
        conn.peer["last_seen"] = time.monotonic()
        info = self.view.nodes.get(body["node_id"])
        if info is not None and info["alive"]:
            totals_changed = info["resources_total"] != body["total"]
            if self.view.report(body["node_id"], body["available"], body["total"]):
                self.publish(
                    "resources",
                    {
                        "node_id": body["node_id"],
                        "available": body["available"],
                        "total": body["total"],
                    },
                )
                self.placement_groups.on_cluster_changed()
                if totals_changed:
                    self.actors.on_cluster_changed()
        conn.reply(rid, True)

    def get_nodes(self, conn, rid, body, bufs) -> None:
        conn.reply(rid, list(self.view.nodes.values()))

    def kv_put(self, conn, rid, body, bufs) -> None:
        key = (body["ns"], body["key"])
        overwrite = body.get("overwrite", True)
        if not overwrite and key in self.kv:
            conn.reply(rid, False)
            return
        self.kv[key] = bytes(bufs[0]) if bufs else b""
        self.persist.put(KV, msgpack.packb(list(key)), self.kv[key])
        self.persist.after_commit(lambda: conn.reply(rid, True))

    def kv_get(self, conn, rid, body, bufs) -> None:
        value = self.kv.get((body["ns"], body["key"]))
        if value is None:
            conn.reply(rid, False)
        else:
            conn.reply(rid, True, [value])

    def kv_del(self, conn, rid, body, bufs) -> None:
        key = (body["ns"], body["key"])
        existed = self.kv.pop(key, None) is not None
        if existed:
            self.persist.delete(KV, msgpack.packb(list(key)))
        self.persist.after_commit(lambda: conn.reply(rid, existed))

    def kv_keys(self, conn, rid, body, bufs) -> None:
        ns, prefix = body["ns"], body.get("prefix", "")
        conn.reply(rid, [k for (n, k) in self.kv if n == ns and k.startswith(prefix)])

    def task_events(self, conn, rid, body, bufs) -> None:
        self.tasks.add_batch(body)

    def list_tasks(self, conn, rid, body, bufs) -> None:
        conn.reply(rid, self.tasks.query(body))

    def advice_report(self, conn, rid, body, bufs) -> None:
        self.advice.add(body["rows"])

    def get_advice(self, conn, rid, body, bufs) -> None:
        conn.reply(rid, self.advice.query(body.get("job")))

    def subscribe(self, conn, rid, body, bufs) -> None:
        for channel in body:
            self.subscribers.setdefault(channel, set()).add(conn)
        conn.reply(rid, True)

    def publish_message(self, conn, rid, body, bufs) -> None:
        self.publish(body["channel"], body["data"])
        conn.reply(rid, True)

    def publish(self, channel: str, data) -> None:
        for sub in list(self.subscribers.get(channel, ())):
            sub.send(Msg.PUBLISHED, {"channel": channel, "data": data})


async def serve(args, token: bytes, storage: Storage, tables: dict) -> None:
    store = ControlStore(
        token,
        storage,
        args.actor_graceful_shutdown_timeout_ms / 1000,
        cluster_stopping=lambda: services.lifeline_closed(args),
    )
    try:
        store.restore(tables)
    except Exception as e:  # rows that do not decode to what this version stores
        raise StorageError(
            f"{storage.description} holds tables this control store cannot read ({e!r}). "
            "Move it away (or delete it, forgetting the cluster's actors, placement groups "
            "and key-value store) to start the control store empty."
        ) from None
    sock = services.listening_socket(args)
    server = await transport.serve(
        sock, token, store.handlers, on_close=store.on_close, twin=services.listening_twin(args)
    )
    loop = asyncio.get_running_loop()
    heartbeats = loop.create_task(store.watch_heartbeats(args.heartbeat_timeout_s))
    recovery = loop.create_task(store.end_recovery(args.heartbeat_timeout_s))
    logger.info("control store listening on %s", transport.socket_address(sock))
    await services.wait_for_stop(args)
    heartbeats.cancel()
    recovery.cancel()
    server.close()
    await store.persist.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="solray control store")
    services.add_service_arguments(parser)
    parser.add_argument(
        "--heartbeat-timeout-s",
        type=float,
        default=10.0,
        help="declare a node dead after this long without a report",
    )
    parser.add_argument(
        "--actor-graceful-shutdown-timeout-ms",
        type=float,
        default=GRACEFUL_TIMEOUT_S * 1000,
        help="kill an actor that has not exited this long after being asked to end",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--storage", help="where the tables are kept: sqlite:///PATH or redis://HOST:PORT"
    )
    where.add_argument(
        "--storage-file", help="a file holding --storage (a URL with a password in it)"
    )
    parser.add_argument(
        "--storage-namespace",
        default="default",
        help="this cluster's tables on a storage several clusters share (Redis)",
    )
    parser.add_argument(
        "--die-with-parent",
        action="store_true",
        help="exit when the process that started this one dies (a head node restarting it)",
    )
    args = parser.parse_args()
    if args.die_with_parent:
        services.die_with_parent()
    services.setup_process("control_store", args)
    token = services.read_token(args.token_fd)
    try:
        storage = open_storage(_storage_url(args), args.storage_namespace)
        tables = storage.load()
        asyncio.run(serve(args, token, storage, tables))
    except StorageUnavailable as e:
        print(f"solray control store: {e}", file=sys.stderr)
        sys.exit(1)  # the head node tries again
    except StorageError as e:
        print(f"solray control store: {e}", file=sys.stderr)
        sys.exit(EXIT_STORAGE_UNREADABLE)


def _storage_url(args) -> str:
    if args.storage_file is None:
        return args.storage
    try:
        with open(args.storage_file) as f:
            return f.read().strip()
    except OSError as e:
        raise StorageError(f"cannot read --storage-file {args.storage_file}: {e}") from None


if __name__ == "__main__":
    main()
