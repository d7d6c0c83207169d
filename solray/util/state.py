"""The state API (`ray.util.state`): what the cluster holds right now.

Entries are dicts. `filters` are `(key, predicate, value)` tuples with
predicate "=" or "!=", compared as strings, as in Ray's state API
(`_private/state_filters.py`; tasks are filtered in the control store).
"""

from __future__ import annotations

import warnings
from typing import Any

from solray._private import context
from solray._private.protocol import Msg
from solray._private.state_filters import check_filters, matches

Filter = tuple[str, str, Any]


class RayStateApiException(Exception):
    """Ray's error for a state query that cannot give a complete answer."""


def _apply(rows: list[dict], filters: list[Filter] | None, limit: int) -> list[dict]:
    checked = check_filters(filters)
    return [r for r in rows if matches(r, checked)][:limit]


def list_objects(
    address: str | None = None,
    filters: list[Filter] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[dict]:
    """Live objects: one entry per object and process that references it, with
    `object_id` (== ref.hex()), `object_size`, `location` ("memory",
    "shared_memory" or "spilled"), `reference_type`, `owner`, `call_site`
    (with SOLRAY_RECORD_REF_CREATION_SITES=1), `pid`, `type`."""
    if context.client is not None:  # a ray:// client: its proxy driver asks
        return context.client.call(
            "util.state.list_objects", (), {"filters": filters, "limit": limit, "timeout": timeout}
        )
    cw = context.require_core_worker()
    rows = cw.request("node", Msg.LIST_OBJECTS, None, timeout=timeout)
    return _apply(rows, filters, limit)


def list_actors(
    address: str | None = None,
    filters: list[Filter] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[dict]:
    """Actors: `actor_id`, `class_name`, `state` (PENDING, ALIVE, RESTARTING,
    DEAD), `name`, `namespace`, `pid`, `node_id`, `num_restarts`, `death_cause`."""
    if context.client is not None:  # a ray:// client: its proxy driver asks
        return context.client.call(
            "util.state.list_actors", (), {"filters": filters, "limit": limit, "timeout": timeout}
        )
    cw = context.require_core_worker()
    rows = cw.request("control", Msg.LIST_ACTORS, None, timeout=timeout)
    return _apply(rows, filters, limit)


def list_jobs(
    address: str | None = None,
    filters: list[Filter] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[dict]:
    """The jobs (drivers) the cluster has had: `job_id`, `type` ("DRIVER"),
    `namespace`, and `metadata` (from `init(job_config=JobConfig(metadata=...))`)."""
    import msgpack

    cw = context.require_core_worker()
    rows = []
    for key in sorted(cw.request("control", Msg.KV_KEYS, {"ns": "job"}, timeout=timeout)):
        found, buffers = cw.request(
            "control", Msg.KV_GET, {"ns": "job", "key": key}, raw=True, timeout=timeout
        )
        if found:
            info = msgpack.unpackb(buffers[0])
            rows.append(
                {
                    "job_id": key,
                    "type": "DRIVER",
                    "namespace": info.get("namespace"),
                    "metadata": info.get("metadata", {}),
                }
            )
    return _apply(rows, filters, limit)


def _query_tasks(filters, limit: int, detail: bool, timeout, precise: bool = False) -> dict:
    """The control store's answer to LIST_TASKS (task_event_store.py)."""
    check_filters(filters)  # a bad one is this caller's ValueError
    body = {
        "filters": [[k, p, str(v)] for k, p, v in filters or ()],
        "limit": limit,
        "detail": detail,
    }
    if precise:
        body["precise"] = True
    cw = context.require_core_worker()
    return cw.request("control", Msg.LIST_TASKS, body, timeout=timeout)


def _check_complete(reply: dict, what: str, raise_on_missing_output: bool) -> None:
    """Ray's raise_on_missing_output: task attempts the cluster dropped (its
    bound, task_events_max_num_task_in_gcs, or a process's full buffer)
    make the answer incomplete: an error, or a warning when allowed."""
    dropped = reply["dropped"]
    if not dropped:
        return
    message = (
        f"{what} may be incomplete: {dropped} task attempt(s) or event(s) were dropped "
        f"({reply['total']} attempts kept; the control store keeps at most "
        "task_events_max_num_task_in_gcs, set through SOLRAY_task_events_max_num_task_in_gcs "
        "or RAY_task_events_max_num_task_in_gcs)."
    )
    if raise_on_missing_output:
        raise RayStateApiException(
            message + " To get the partial result, pass raise_on_missing_output=False."
        )
    warnings.warn(message, stacklevel=3)


def list_tasks(
    address: str | None = None,
    filters: list[Filter] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[dict]:
    """Task attempts, as Ray's TaskState: `task_id`, `attempt_number`,
    `name`, `state` (Ray's TaskStatus names), `job_id`, `actor_id`, `type`,
    `func_or_class_name`, `parent_task_id`, `node_id`, `worker_id`,
    `worker_pid`, `error_type`, `error_message`, `placement_group_id`; with
    `detail`, also `required_resources`, `events` ([{state, created_ms}]),
    `creation_time_ms`, `start_time_ms`, `end_time_ms`, `args_bytes` (the
    pickled arguments' size). Filtered in the control store. Dropped
    attempts raise RayStateApiException unless `raise_on_missing_output`
    is False (then a warning)."""
    if context.client is not None:  # a ray:// client: its proxy driver asks
        return context.client.call(
            "util.state.list_tasks",
            (),
            {
                "filters": filters,
                "limit": limit,
                "timeout": timeout,
                "detail": detail,
                "raise_on_missing_output": raise_on_missing_output,
            },
        )
    reply = _query_tasks(filters, limit, detail, timeout)
    _check_complete(reply, "The task list", raise_on_missing_output)
    return reply["tasks"]


def get_task(id, address: str | None = None, timeout: int = 30, _explain: bool = False):
    """A task by id (hex string, or an ObjectRef it returned): None if
    unknown, its attempt (a dict) if it ran once, else the list of its
    attempts, as Ray's get_task. Always in detail."""
    from solray._private import ids
    from solray.object_ref import ObjectRef

    if isinstance(id, ObjectRef):
        id = ids.task_id_of(id.binary()).hex()
    if context.client is not None:
        return context.client.call("util.state.get_task", (id,), {"timeout": timeout})
    rows = _query_tasks([("task_id", "=", id)], 1_000_000, True, timeout)["tasks"]
    if not rows:
        return None
    return rows[0] if len(rows) == 1 else rows


def summarize_tasks(
    address: str | None = None,
    timeout: int = 30,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> dict:
    """Ray's summary of tasks by function or class name: {"cluster":
    {"summary": {name: {"func_or_class_name", "type", "state_counts"}},
    "total_tasks", "total_actor_tasks", "total_actor_scheduled",
    "summary_by": "func_name"}}."""
    if context.client is not None:
        return context.client.call(
            "util.state.summarize_tasks",
            (),
            {"timeout": timeout, "raise_on_missing_output": raise_on_missing_output},
        )
    reply = _query_tasks([("type", "!=", "DRIVER_TASK")], 1_000_000_000, False, timeout)
    _check_complete(reply, "The task summary", raise_on_missing_output)
    summary: dict[str, dict] = {}
    totals = {"NORMAL_TASK": 0, "ACTOR_TASK": 0, "ACTOR_CREATION_TASK": 0}
    for row in reply["tasks"]:
        name = row["func_or_class_name"]
        entry = summary.get(name)
        if entry is None:
            entry = summary[name] = {
                "func_or_class_name": name,
                "type": row["type"],
                "state_counts": {},
            }
        counts = entry["state_counts"]
        counts[row["state"]] = counts.get(row["state"], 0) + 1
        totals[row["type"]] = totals.get(row["type"], 0) + 1
    return {
        "cluster": {
            "summary": summary,
            "total_tasks": totals["NORMAL_TASK"],
            "total_actor_tasks": totals["ACTOR_TASK"],
            "total_actor_scheduled": totals["ACTOR_CREATION_TASK"],
            "summary_by": "func_name",
        }
    }


__all__ = [
    "RayStateApiException",
    "get_task",
    "list_actors",
    "list_jobs",
    "list_objects",
    "list_tasks",
    "summarize_tasks",
]
