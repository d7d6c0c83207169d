"""The control store: cluster-wide state, one per cluster, on the head node.

It holds what every process may need to look up and nobody owns alone:
membership and resources of nodes, job ids, a small key-value store, a
publish/subscribe hub (worker logs, node events), and the task events every
process ships in batches (task_event_store.py). It is deliberately off the
task path: submitting and running a task never touches it.

Liveness of a node is tied to its connection here: when a node's connection
closes, the node is marked dead and a `node_removed` event is published.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from solray._private import services, transport
from solray._private.actor_manager import GRACEFUL_TIMEOUT_S, ActorManager
from solray._private.placement import ClusterView
from solray._private.placement_groups import PlacementGroupManager
from solray._private.protocol import Msg
from solray._private.task_event_store import TaskEventStore

logger = logging.getLogger("solray.control_store")


class ControlStore:
    def __init__(self, token: bytes, actor_graceful_timeout_s: float = GRACEFUL_TIMEOUT_S):
        self.token = token
        # Every node, as registered and last reported; actors and placement
        # groups are placed from it (placement.py).
        self.view = ClusterView()
        self.node_conns: dict[str, transport.Connection] = {}
        self.next_job = 1
        self.kv: dict[tuple[str, str], bytes] = {}
        self.subscribers: dict[str, set[transport.Connection]] = {}
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
        }
        self.actors = ActorManager(self, actor_graceful_timeout_s)
        self.handlers.update(self.actors.handlers)
        self.placement_groups = PlacementGroupManager(self)
        self.handlers.update(self.placement_groups.handlers)
        self.tasks = TaskEventStore()
        self.handlers[Msg.TASK_EVENTS] = self.task_events
        self.handlers[Msg.LIST_TASKS] = self.list_tasks

    def on_close(self, conn: transport.Connection) -> None:
        for subs in self.subscribers.values():
            subs.discard(conn)
        node_id = conn.peer.get("node_id")
        info = self.view.nodes.get(node_id) if node_id else None
        if info is not None and info["alive"]:
            self.view.remove(node_id)
            info["end_time"] = time.time()
            logger.warning("node %s (%s) left the cluster", node_id, info["address"])
            self.publish("node_removed", {"node_id": node_id, "address": info["address"]})
            self.placement_groups.on_node_removed(node_id)
            self.actors.on_cluster_changed()
        self.actors.on_connection_closed(conn)
        self.placement_groups.on_connection_closed(conn)

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
        node_id = body["node_id"]
        conn.peer["node_id"] = node_id
        conn.peer["last_seen"] = time.monotonic()
        self.node_conns[node_id] = conn
        conn.add_close_callback(lambda c: self.node_conns.pop(node_id, None))
        info = dict(body, alive=True, start_time=time.time())
        self.view.add(info)
        self.publish("node_added", info)
        conn.reply(rid, True)
        self.actors.on_cluster_changed()
        self.placement_groups.on_cluster_changed()

    def register_driver(self, conn, rid, body, bufs) -> None:
        job = self.next_job
        self.next_job += 1
        conn.peer["job"] = job
        conn.reply(rid, {"job": job})

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
        self.kv[key] = bufs[0] if bufs else b""
        conn.reply(rid, True)

    def kv_get(self, conn, rid, body, bufs) -> None:
        value = self.kv.get((body["ns"], body["key"]))
        if value is None:
            conn.reply(rid, False)
        else:
            conn.reply(rid, True, [value])

    def kv_del(self, conn, rid, body, bufs) -> None:
        conn.reply(rid, self.kv.pop((body["ns"], body["key"]), None) is not None)

    def kv_keys(self, conn, rid, body, bufs) -> None:
        ns, prefix = body["ns"], body.get("prefix", "")
        conn.reply(rid, [k for (n, k) in self.kv if n == ns and k.startswith(prefix)])

    def task_events(self, conn, rid, body, bufs) -> None:
        self.tasks.add_batch(body)

    def list_tasks(self, conn, rid, body, bufs) -> None:
        conn.reply(rid, self.tasks.query(body))

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


async def serve(args) -> None:
    token = services.read_token(args.token_fd)
    store = ControlStore(token, args.actor_graceful_shutdown_timeout_ms / 1000)
    sock = services.listening_socket(args)
    server = await transport.serve(sock, token, store.handlers, on_close=store.on_close)
    heartbeats = asyncio.get_running_loop().create_task(
        store.watch_heartbeats(args.heartbeat_timeout_s)
    )
    logger.info("control store listening on %s", transport.socket_address(sock))
    await services.wait_for_stop(args)
    heartbeats.cancel()
    server.close()


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
    args = parser.parse_args()
    services.setup_process("control_store", args)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
