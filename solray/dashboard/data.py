"""What the dashboard shows: one async function per view, each returning a
JSON-ready dict built from what the cluster's services answer.

Every view asks through the state API's client (_private/state_client.py
StateClient), the one set of cluster queries behind `util.state`, the CLI
and this page: nodes, actors, placement groups, objects, jobs and tasks
(LIST_TASKS) come out the same here as in `solray list`; the anti-patterns
that drivers and workers reported come from GET_ADVICE (advice.py). Each node's
actual CPU and memory use and its object store come from the node's
NODE_STATS answer, the reading its metrics export too
(system_metrics.HostUsage). Worker output is not stored anywhere in the
cluster: it is published by the nodes on the control store's "logs"
channel, so the dashboard subscribes from its start and keeps a bounded
window of it (WorkerLogs).
"""

from __future__ import annotations

import asyncio
import collections

from solray._private import advice as advice_rules
from solray._private import ids
from solray._private.protocol import Msg
from solray._private.state_client import StateClient
from solray._private.timeline import ALL, chrome_trace

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


def _counts(rows: list[dict], key: str) -> dict[str, int]:
    return dict(collections.Counter(str(r.get(key)) for r in rows))


# -- the views -----------------------------------------------------------------


def _node_error(missing: list[str], node_id: str) -> str | None:
    prefix = f"node {node_id[:12]} "
    return next((m.removeprefix(prefix) for m in missing if m.startswith(prefix)), None)


async def nodes(state: StateClient) -> dict:
    """Every node: address, state, logical resources (in use of total), the
    host's actual CPU utilization and memory use, object store use."""
    missing: list[str] = []
    everyone = await state.nodes()
    stats = await state.node_stats(missing)
    rows = []
    for n in everyone:
        total, free = n["resources_total"], n.get("resources_available", n["resources_total"])
        answer = stats.get(n["node_id"])
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
        if answer is not None:
            store = answer["store"]
            row["host"] = answer["host"]
            row["object_store"] = {
                "used": store["used"],
                "capacity": store["capacity"],
                "num_objects": store["num_objects"],
                "spilled_bytes": store["spilled_bytes_now"],
            }
        elif n["alive"]:
            row["error"] = f"no answer: {_node_error(missing, n['node_id'])}"
        rows.append(row)
    return {"nodes": rows}


async def jobs(state: StateClient) -> dict:
    """Every job, as `list_jobs()` gives it (submitted jobs and drivers,
    Ray's JobDetails), newest first."""
    rows = await state.jobs(missing=[])
    rows.sort(key=lambda j: j.get("start_time") or 0, reverse=True)
    return {"jobs": rows[:MAX_ROWS], "total": len(rows)}


async def tasks(state: StateClient) -> dict:
    """The newest tasks (Ray's TaskState fields) with counts by state and,
    per function, by state, over every attempt the cluster keeps (not only
    the rows shown)."""
    reply, summary = await asyncio.gather(
        state.tasks([], MAX_ROWS, detail=False), state.task_summary()
    )
    by_function: dict[str, dict[str, int]] = {}
    by_state: dict[str, int] = {}
    for name, entry in summary["summary"].items():
        by_function[str(name)] = entry["state_counts"]
        for task_state, n in entry["state_counts"].items():
            by_state[task_state] = by_state.get(task_state, 0) + n
    return {
        "tasks": reply["tasks"],
        "total": reply["total"],
        "dropped": reply.get("dropped", 0),
        "by_state": by_state,
        "by_function": by_function,
    }


async def actors(state: StateClient) -> dict:
    rows = await state.actors()
    return {"actors": rows[:MAX_ROWS], "total": len(rows), "by_state": _counts(rows, "state")}


async def placement_groups(state: StateClient) -> dict:
    rows = await state.placement_groups()
    return {"placement_groups": rows[:MAX_ROWS], "total": len(rows)}


async def objects(state: StateClient) -> dict:
    """Each node's object store, and the objects its drivers and workers
    reference (one row per object and process, as `solray list objects`)."""
    missing: list[str] = []
    stats, rows = await asyncio.gather(state.node_stats(missing), state.objects(missing))
    return {
        "stores": [dict(s["store"], node_id=node_id) for node_id, s in stats.items()],
        "objects": rows[:MAX_ROWS],
        "total": len(rows),
        "total_bytes": sum(r["object_size"] or 0 for r in rows if r.get("is_owner")),
        "missing": sorted(set(missing)),
    }


async def advice(state: StateClient) -> dict:
    """The anti-patterns each job's drivers and workers reported (advice.py),
    past their thresholds, newest job first, as the driver's summary words
    them."""
    reply = await state.control(Msg.GET_ADVICE, {"job": None})
    jobs = []
    for job, rows, dropped in reversed(reply["jobs"]):
        findings = advice_rules.summarize(rows)
        if findings or dropped:
            jobs.append(
                {"job_id": ids.job_id_bytes(job).hex(), "findings": findings, "dropped": dropped}
            )
    return {"jobs": jobs}


async def logs(worker_logs: WorkerLogs, ip: str | None, pid: int | None, query: str) -> dict:
    return {"workers": worker_logs.workers(), "lines": worker_logs.lines(ip, pid, query)}


async def timeline(state: StateClient) -> list[dict]:
    """The tasks as a Chrome trace (chrome://tracing, Perfetto), as
    `ray.timeline()` makes it (timeline.py)."""
    reply = await state.tasks([], ALL, detail=True, precise=True)
    return chrome_trace(reply["tasks"])
