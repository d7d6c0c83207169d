"""What the dashboard shows: one async function per view, each returning a
JSON-ready dict built from what the cluster's services answer.

Every cluster query of the dashboard is in this module, so that when the
state API and task events land, re-pointing a view at them changes this
file alone. Today the views ask the control store (nodes, jobs in its
key-value store, actors, placement groups, and LIST_TASKS once task events
exist, the anti-patterns drivers and workers reported) and each node (its
object store and the objects its processes hold). Worker output is not
stored anywhere in the cluster: it is published by the nodes on the control
store's "logs" channel, so the dashboard subscribes from its start and keeps a bounded window of it
(WorkerLogs).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Callable

import msgpack

from solray._private import advice as advice_rules
from solray._private import ids, transport
from solray._private.protocol import Msg
from solray._private.timeline import ALL, chrome_trace
from solray.job_submission.models import NAMESPACE as SUBMISSIONS

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0  # a node that does not answer in time is shown as such
MAX_ROWS = 1000  # rows of one table sent to the page
LOG_LINES_PER_WORKER = 1000
LOG_WORKERS = 256
# The key-value entry where the dashboard records its URL, for drivers that
# join the cluster (what init() returns names it).
URL_KEY = {"ns": "dashboard", "key": "url"}


class WorkerLogs:
    """Worker output lines as the nodes publish them: the newest
    LOG_LINES_PER_WORKER of each of the LOG_WORKERS workers that wrote last,
    so memory stays bounded however much the cluster prints."""

    def __init__(self) -> None:
        # (node ip, pid) -> {"name": last task or actor name, "lines": deque}, oldest writer first
        self._workers: collections.OrderedDict[tuple[str, int], dict] = collections.OrderedDict()

    def add(self, ip: str, lines: list) -> None:
        for pid, is_err, name, text in lines:
            key = (ip, pid)
            worker = self._workers.get(key)
            if worker is None:
                worker = {"name": None, "lines": collections.deque(maxlen=LOG_LINES_PER_WORKER)}
                self._workers[key] = worker
                if len(self._workers) > LOG_WORKERS:
                    self._workers.popitem(last=False)
            self._workers.move_to_end(key)
            if name:
                worker["name"] = name
            worker["lines"].append((bool(is_err), name, text))

    def workers(self) -> list[dict]:
        return [
            {"ip": ip, "pid": pid, "name": w["name"], "num_lines": len(w["lines"])}
            for (ip, pid), w in reversed(self._workers.items())
        ]

    def lines(self, ip: str | None, pid: int | None, query: str) -> list[dict]:
        """The last MAX_ROWS lines containing `query` (any case) of one
        worker, or of all of them when `pid` is None."""
        needle = query.lower()
        found = []
        for (wip, wpid), worker in self._workers.items():
            if pid is not None and (wpid != pid or (ip and wip != ip)):
                continue
            for is_err, name, text in worker["lines"]:
                if needle in text.lower():
                    found.append(
                        {"ip": wip, "pid": wpid, "stderr": is_err, "name": name, "text": text}
                    )
        return found[-MAX_ROWS:]


class Cluster:
    """The dashboard's connections: one to the control store (subscribed to
    worker logs), and one to each node it has asked, opened on first use."""

    def __init__(self, control_address: str, token: bytes) -> None:
        self.control_address = control_address
        self.token = token
        self.logs = WorkerLogs()
        self.control: transport.Connection | None = None
        self._nodes: dict[str, transport.Connection] = {}

    async def connect(self, on_lost: Callable[[], None]) -> None:
        """Connect to the control store; `on_lost` runs if that connection
        closes (the cluster is gone)."""
        self.control = await transport.connect(
            self.control_address,
            self.token,
            {Msg.PUBLISHED: self._on_published},
            on_close=lambda conn: on_lost(),
        )
        await self.control.request(Msg.SUBSCRIBE, ["logs"])

    async def publish_url(self, url: str) -> None:
        """Record where the dashboard is, for drivers that join the cluster."""
        await self.control.request(Msg.KV_PUT, URL_KEY, [url.encode()])

    def close(self) -> None:
        for conn in [self.control, *self._nodes.values()]:
            if conn is not None:
                conn.close()
        self._nodes.clear()

    def _on_published(self, conn, rid, body, bufs) -> None:
        if body["channel"] == "logs":
            self.logs.add(body["data"]["ip"], body["data"]["lines"])

    async def ask_control(self, msg: int, body=None, buffers=(), raw: bool = False):
        return await asyncio.wait_for(
            self.control.request(msg, body, buffers, raw=raw), REQUEST_TIMEOUT_S
        )

    async def ask_node(self, address: str, msg: int, body=None):
        conn = self._nodes.get(address)
        if conn is None or conn.closed:
            conn = await transport.connect(address, self.token, timeout=REQUEST_TIMEOUT_S)
            old = self._nodes.get(address)
            if old is not None and not old.closed:  # another request connected meanwhile
                conn.close()
                conn = old
            self._nodes[address] = conn
        return await asyncio.wait_for(conn.request(msg, body), REQUEST_TIMEOUT_S)

    async def ask_alive_nodes(self, msg: int) -> list[tuple[dict, object]]:
        """(node, its answer or the exception it gave) for every alive node."""
        nodes = [n for n in await self.ask_control(Msg.GET_NODES) if n["alive"]]
        answers = await asyncio.gather(
            *(self.ask_node(n["address"], msg) for n in nodes), return_exceptions=True
        )
        return list(zip(nodes, answers, strict=True))


def _failure(answer: object) -> str | None:
    if isinstance(answer, BaseException):
        return f"no answer: {type(answer).__name__}: {answer}"
    return None


def _counts(rows: list[dict], key: str) -> dict[str, int]:
    return dict(collections.Counter(str(r.get(key)) for r in rows))


# -- the views -----------------------------------------------------------------


async def nodes(cluster: Cluster) -> dict:
    """Every node: address, state, CPU and memory (resources in use of
    total), object store use."""
    everyone = await cluster.ask_control(Msg.GET_NODES)
    stats = {n["node_id"]: s for n, s in await cluster.ask_alive_nodes(Msg.STORE_STATS)}
    rows = []
    for n in everyone:
        total, free = n["resources_total"], n.get("resources_available", n["resources_total"])
        store = stats.get(n["node_id"])
        row = {
            "node_id": n["node_id"],
            "node_name": n.get("node_name"),
            "address": n["address"],
            "state": "ALIVE" if n["alive"] else "DEAD",
            "is_head": "node:__internal_head__" in total,
            # [in use, total] of each resource; a dead node has none.
            "resources": {
                k: [total[k] - free.get(k, 0.0), total[k]]
                for k in sorted(total)
                if n["alive"] and not k.startswith("node:")
            },
            "labels": n.get("labels", {}),
            "metrics_export_address": n.get("metrics_export_address"),
        }
        if isinstance(store, dict):
            row["object_store"] = {
                "used": store["used"],
                "capacity": store["capacity"],
                "num_objects": store["num_objects"],
                "spilled_bytes": store["spilled_bytes_now"],
            }
        elif n["alive"]:
            row["error"] = _failure(store)
        rows.append(row)
    return {"nodes": rows}


async def jobs(cluster: Cluster) -> dict:
    """Every job submitted (its record, jobs.py) and every driver the
    cluster has had, as the driver recorded it."""
    submitted = sorted(await cluster.ask_control(Msg.KV_KEYS, {"ns": SUBMISSIONS}))
    records = await asyncio.gather(
        *(
            cluster.ask_control(Msg.KV_GET, {"ns": SUBMISSIONS, "key": k}, raw=True)
            for k in submitted
        )
    )
    submissions = [
        dict(json.loads(buffers[0]), submission_id=key)
        for key, (found, buffers) in zip(submitted, records, strict=True)
        if found
    ]
    submissions.sort(key=lambda j: j.get("start_time") or 0, reverse=True)
    keys = sorted(await cluster.ask_control(Msg.KV_KEYS, {"ns": "job"}))
    answers = await asyncio.gather(
        *(cluster.ask_control(Msg.KV_GET, {"ns": "job", "key": k}, raw=True) for k in keys)
    )
    rows = []
    for key, (found, buffers) in zip(keys, answers, strict=True):
        if not found:
            continue
        info = msgpack.unpackb(buffers[0])
        rows.append(
            {
                "job_id": key,
                "type": "DRIVER",
                "namespace": info.get("namespace"),
                "cwd": info.get("cwd"),
                "metadata": info.get("metadata", {}),
                "runtime_env": info.get("runtime_env", {}),
            }
        )
    return {"submissions": submissions[:MAX_ROWS], "jobs": rows}


async def tasks(cluster: Cluster) -> dict:
    """The newest tasks (Ray's TaskState fields) with counts by state and,
    per function, by state."""
    reply = await cluster.ask_control(
        Msg.LIST_TASKS, {"filters": [], "limit": MAX_ROWS, "detail": False}
    )
    rows = reply["tasks"]
    by_function: dict[str, dict[str, int]] = {}
    for row in rows:
        states = by_function.setdefault(str(row.get("func_or_class_name") or row.get("name")), {})
        states[row["state"]] = states.get(row["state"], 0) + 1
    return {
        "tasks": rows,
        "total": reply["total"],
        "dropped": reply.get("dropped", 0),
        "by_state": _counts(rows, "state"),
        "by_function": by_function,
    }


async def actors(cluster: Cluster) -> dict:
    rows = await cluster.ask_control(Msg.LIST_ACTORS)
    return {"actors": rows[:MAX_ROWS], "total": len(rows), "by_state": _counts(rows, "state")}


async def placement_groups(cluster: Cluster) -> dict:
    table = await cluster.ask_control(Msg.PG_TABLE)
    return {"placement_groups": list(table.values())[:MAX_ROWS], "total": len(table)}


async def objects(cluster: Cluster) -> dict:
    """Each node's object store, and the objects its drivers and workers
    reference (one row per object and process, as `solray memory`)."""
    stores = await cluster.ask_alive_nodes(Msg.STORE_STATS)
    listed = await cluster.ask_alive_nodes(Msg.LIST_OBJECTS)
    rows = []
    for node, answer in listed:
        for row in answer if isinstance(answer, list) else ():
            rows.append(dict(row, node_id=node["node_id"]))
    return {
        "stores": [
            dict(s, node_id=n["node_id"]) if isinstance(s, dict) else {"node_id": n["node_id"]}
            for n, s in stores
        ],
        "objects": rows[:MAX_ROWS],
        "total": len(rows),
        "total_bytes": sum(r["object_size"] or 0 for r in rows if r.get("is_owner")),
    }


async def advice(cluster: Cluster) -> dict:
    """The anti-patterns each job's drivers and workers reported (advice.py),
    past their thresholds, newest job first, as the driver's summary words
    them."""
    reply = await cluster.ask_control(Msg.GET_ADVICE, {"job": None})
    jobs = []
    for job, rows, dropped in reversed(reply["jobs"]):
        findings = advice_rules.summarize(rows)
        if findings or dropped:
            jobs.append(
                {"job_id": ids.job_id_bytes(job).hex(), "findings": findings, "dropped": dropped}
            )
    return {"jobs": jobs}


async def logs(cluster: Cluster, ip: str | None, pid: int | None, query: str) -> dict:
    return {"workers": cluster.logs.workers(), "lines": cluster.logs.lines(ip, pid, query)}


async def timeline(cluster: Cluster) -> list[dict]:
    """The tasks as a Chrome trace (chrome://tracing, Perfetto), as
    `ray.timeline()` makes it (timeline.py)."""
    body = {"filters": [], "limit": ALL, "detail": True, "precise": True}
    return chrome_trace((await cluster.ask_control(Msg.LIST_TASKS, body))["tasks"])
