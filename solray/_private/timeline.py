"""`solray.timeline()` and `solray timeline`: the task events as a Chrome trace.

The trace (Trace Event Format, loadable in Perfetto and chrome://tracing) has
one process row per node and one thread row per worker (named by metadata
events), one complete ("X") slice per task attempt or actor call that
reached a worker, named as the task, and before it, on the same row, a
"fetch args" slice when it read its arguments from a store. The waits that
happened elsewhere (for its arguments to exist, for a worker, in the actor's
queue) are the slice's args, with the size of its pickled arguments.

Everything comes from the control store's task table (LIST_TASKS with
microsecond times): the timeline costs nothing while tasks run.
"""

from __future__ import annotations

import json
import time

# All the attempts the control store keeps (it keeps a bounded number).
ALL = 1 << 31

_FETCH = ("GETTING_AND_PINNING_ARGS", "PENDING_ACTOR_TASK_ARGS_FETCH")


def _us(ms: float) -> float:
    return round(ms * 1000, 3)


def _first(times: dict, *states: str) -> float | None:
    found = [times[s] for s in states if s in times]
    return min(found) if found else None


def chrome_trace(tasks: list[dict], now_ms: float | None = None) -> list[dict]:
    """Trace events for task rows from LIST_TASKS (detail, precise times).
    A task still running ends at `now_ms` (default: now)."""
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    trace: list[dict] = []
    nodes: dict[str, int] = {}
    workers: set[tuple[int, int]] = set()
    for row in tasks:
        if row["type"] == "DRIVER_TASK" or not row.get("worker_id"):
            continue  # never reached a worker: no row to draw it on
        times: dict[str, float] = {}
        for event in row["events"]:
            times.setdefault(event["state"], event["created_ms"])
        start = times.get("RUNNING")
        if start is None:
            continue
        end = _first(times, "FINISHED", "FAILED")
        pid = nodes.setdefault(row["node_id"], len(nodes) + 1)
        tid = row["worker_pid"]
        if (pid, tid) not in workers:
            workers.add((pid, tid))
            trace.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": pid,
                    "tid": tid,
                    "args": {"name": f"worker {row['worker_id'][:8]} (pid {tid})"},
                }
            )
        submitted = times.get("SUBMITTED_TO_WORKER")
        fetch = _first(times, *_FETCH)
        queued_from = _first(times, "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY") or submitted
        args = {
            "task_id": row["task_id"],
            "attempt_number": row["attempt_number"],
            "func_or_class_name": row["func_or_class_name"],
            "state": row["state"],
            "args_bytes": row.get("args_bytes", 0),
        }
        pending, assigning = times.get("PENDING_ARGS_AVAIL"), times.get("PENDING_NODE_ASSIGNMENT")
        waits = (
            ("wait_for_args_ms", pending, assigning or submitted),
            # an actor's creation has no SUBMITTED_TO_WORKER: the control store sends it
            (
                "wait_for_worker_ms",
                times.get("PENDING_NODE_ASSIGNMENT"),
                submitted or fetch or start,
            ),
            ("queued_at_worker_ms", queued_from, fetch or start),
            ("fetch_args_ms", fetch, start),
        )
        for name, begin, until in waits:
            if begin is not None and until is not None:
                args[name] = round(until - begin, 3)
        if row.get("error_type"):
            args["error_type"] = row["error_type"]
        if fetch is not None:
            trace.append(
                {
                    "ph": "X",
                    "name": f"fetch args: {row['name']}",
                    "cat": "fetch_args",
                    "pid": pid,
                    "tid": tid,
                    "ts": _us(fetch),
                    "dur": _us(start - fetch),
                    "args": {"task_id": row["task_id"], "args_bytes": args["args_bytes"]},
                }
            )
        trace.append(
            {
                "ph": "X",
                "name": row["name"],
                "cat": row["type"].lower(),
                "pid": pid,
                "tid": tid,
                "ts": _us(start),
                "dur": _us((end if end is not None else now_ms) - start),
                "args": args,
            }
        )
    for node_id, pid in nodes.items():
        trace.append(
            {"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"node {node_id}"}}
        )
    return trace


def timeline(filename: str | None = None) -> list[dict] | None:
    """Ray's `ray.timeline()`: the cluster's task trace as a list of Chrome
    trace events, or written to `filename` as JSON (then None)."""
    from solray._private import context
    from solray.util import state

    if context.client is not None:  # a ray:// client: its proxy driver asks
        trace = context.client.call("timeline", (), {})
    else:
        reply = state._query_tasks(None, ALL, True, 30, precise=True)
        trace = chrome_trace(reply["tasks"])
    if filename is None:
        return trace
    with open(filename, "w") as f:
        json.dump(trace, f)
    return None
