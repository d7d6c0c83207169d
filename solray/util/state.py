"""The state API (`ray.util.state`): what the cluster holds right now.

Entries are dicts with Ray's field names (readable as attributes too, as
Ray's state objects are). `filters` are `(key, predicate, value)` tuples
with predicate "=" or "!=", compared as strings, case-insensitively, as in
Ray's state API. `detail=False` leaves out the fields Ray shows only with
detail. Every call covers the whole cluster: objects, workers and logs are
asked of every alive node (_private/state_client.py has how and where it
connects: the caller's own cluster, or `address`, "auto" or the control
store's HOST:PORT, from any process of the user). In a ray:// client the
call runs in the client's proxy driver, on the cluster. Tasks are filtered
where their events are kept, in the control store (_private/state_filters.py
is the one filter rule, used here and there).
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

from solray._private import context, log_files
from solray._private.protocol import Msg
from solray._private.state_client import RayStateApiException, Session, StateClient
from solray._private.state_filters import check_filters, matches

Filter = tuple[str, str, Any]


class StateRow(dict):
    """One entry: a dict whose fields also read as attributes (`actor.state`)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _apply(
    rows: list[dict],
    filters: list[Filter] | None,
    limit: int,
    columns: set[str] | None = None,
) -> list[dict]:
    checked = check_filters(filters)
    known = columns if columns is not None else (set(rows[0]) if rows else None)
    for key, _, _ in checked:
        if known is not None and key not in known:
            raise ValueError(
                f"Unsupported filter column {key!r}: the columns are {', '.join(sorted(known))}"
            )
    return [r for r in rows if matches(r, checked)][:limit]


# Fields Ray shows only with detail=True (or from a get_* call), per resource;
# every other field is shown always.
DETAIL_ONLY = {
    "actors": {
        "death_cause",
        "is_detached",
        "num_restarts",
        "required_resources",
        "label_selector",
    },
    "nodes": {"state_message", "start_time_ms", "end_time_ms"},
    "workers": {
        "exit_detail",
        "worker_launch_time_ms",
        "worker_launched_time_ms",
        "start_time_ms",
        "end_time_ms",
    },
    "placement_groups": {"bundles", "stats"},
    "jobs": {"runtime_env", "driver_agent_http_address", "driver_node_id", "driver_exit_code"},
}


def _rows(resource: str, rows: list[dict], detail: bool) -> list[StateRow]:
    hidden = () if detail else DETAIL_ONLY.get(resource, ())
    return [StateRow((k, v) for k, v in row.items() if k not in hidden) for row in rows]


def _forwarded(fn):
    """In a ray:// client the call runs in its proxy driver, which is on the
    cluster (so `address` is not sent: the proxy asks its own cluster)."""
    name = f"util.state.{fn.__name__}"
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if context.client is not None:
            bound = signature.bind(*args, **kwargs).arguments
            bound.pop("address", None)
            return context.client.call(name, (), bound)
        return fn(*args, **kwargs)

    return call


def _gather(
    address: str | None, timeout: int, raise_on_missing_output: bool, query
) -> list[dict] | Any:
    """query(client) on the cluster; nodes that did not answer raise
    RayStateApiException, or with raise_on_missing_output=False a warning."""
    cw = context.core_worker
    if cw is not None:
        # This process's refs dropped before the call are counted out first
        # (their decrements wait on its loop), so its own rows are current.
        cw.run_on_loop(lambda: None)
    with Session(address, timeout) as session:
        result = session.call(query)
        missing = session.client.missing
    if missing:
        message = "some nodes did not answer, so the output is incomplete: " + "; ".join(missing)
        if raise_on_missing_output:
            raise RayStateApiException(message)
        warnings.warn(message, stacklevel=3)
    return result


def _list(resource: str, query, address, filters, limit, timeout, detail, raise_on_missing_output):
    rows = _gather(address, timeout, raise_on_missing_output, query)
    return _rows(resource, _apply(rows, filters, limit), detail)


def _get(resource: str, query, key: str, id: str, address, timeout) -> list[StateRow]:
    rows = [r for r in _gather(address, timeout, True, query) if r.get(key) == id]
    return _rows(resource, rows, detail=True)


# -- list ---------------------------------------------------------------------


@_forwarded
def list_actors(
    address: str | None = None,
    filters: list[Filter] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[dict]:
    """Actors: `actor_id`, `class_name`, `state` (PENDING, ALIVE, RESTARTING,
    DEAD), `name`, `ray_namespace`, `job_id`, `pid`, `node_id`,
    `placement_group_id`; with detail `num_restarts`, `death_cause`,
    `is_detached`, `required_resources`, `label_selector`."""
    return _list(
        "actors",
        StateClient.actors,
        address,
        filters,
        limit,
        timeout,
        detail,
        raise_on_missing_output,
    )


@_forwarded
def list_objects(
    address: str | None = None,
    filters: list[Filter] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[dict]:
    """Live objects, on every node: one entry per object and process that
    references it, with `object_id` (== ref.hex()), `object_size`,
    `location` ("memory", "shared_memory" or "spilled"), `reference_type`,
    `owner`, `call_site` (with SOLRAY_RECORD_REF_CREATION_SITES=1), `pid`,
    `ip`, `node_id`, `type`, `task_status`."""
    return _list(
        "objects",
        StateClient.objects,
        address,
        filters,
        limit,
        timeout,
        detail,
        raise_on_missing_output,
    )


@_forwarded
def list_nodes(
    address: str | None = None,
    filters: list[Filter] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[dict]:
    """Every node the cluster has had: `node_id`, `node_ip`, `is_head_node`,
    `state` (ALIVE, DEAD), `node_name`, `resources_total`, `labels`; with
    detail `state_message`, `start_time_ms`, `end_time_ms`."""
    return _list(
        "nodes",
        StateClient.node_states,
        address,
        filters,
        limit,
        timeout,
        detail,
        raise_on_missing_output,
    )


@_forwarded
def list_workers(
    address: str | None = None,
    filters: list[Filter] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[dict]:
    """Workers and drivers on every node, alive and recently exited:
    `worker_id`, `is_alive`, `worker_type` (WORKER, DRIVER), `exit_type`,
    `node_id`, `ip`, `pid`; with detail `exit_detail`, `start_time_ms`,
    `end_time_ms`, `worker_launch_time_ms`, `worker_launched_time_ms`."""
    return _list(
        "workers",
        StateClient.workers,
        address,
        filters,
        limit,
        timeout,
        detail,
        raise_on_missing_output,
    )


@_forwarded
def list_placement_groups(
    address: str | None = None,
    filters: list[Filter] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[dict]:
    """Placement groups: `placement_group_id`, `name`, `creator_job_id`,
    `state` (PENDING, CREATED, REMOVED, RESCHEDULING), `is_detached`; with
    detail `bundles` (`bundle_id`, `node_id`, `unit_resources`) and `stats`."""
    return _list(
        "placement_groups",
        StateClient.placement_groups,
        address,
        filters,
        limit,
        timeout,
        detail,
        raise_on_missing_output,
    )


@_forwarded
def list_jobs(
    address: str | None = None,
    filters: list[Filter] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
) -> list[dict]:
    """Every job, as Ray's JobDetails: the submitted ones (`type`
    "SUBMISSION", with `submission_id`, `entrypoint`, `status`, `message`,
    `start_time`, `end_time`, ... and `job_id`/`driver_info` of the driver
    the job started, once it did) and the drivers no submission started
    (`type` "DRIVER", `status` RUNNING while connected, else SUCCEEDED).
    `metadata` is the job's (`init(job_config=JobConfig(metadata=...))`);
    with detail `runtime_env`, `driver_node_id`, `driver_exit_code`,
    `driver_agent_http_address`."""
    return _list(
        "jobs", StateClient.jobs, address, filters, limit, timeout, detail, raise_on_missing_output
    )


# -- get ----------------------------------------------------------------------


@_forwarded
def get_actor(id: str, address: str | None = None, timeout: int = 30) -> dict | None:
    """The actor with this id (hex), with every field; None if there is none."""
    rows = _get("actors", StateClient.actors, "actor_id", id, address, timeout)
    return rows[0] if rows else None


@_forwarded
def get_node(id: str, address: str | None = None, timeout: int = 30) -> dict | None:
    rows = _get("nodes", StateClient.node_states, "node_id", id, address, timeout)
    return rows[0] if rows else None


@_forwarded
def get_worker(id: str, address: str | None = None, timeout: int = 30) -> dict | None:
    rows = _get("workers", StateClient.workers, "worker_id", id, address, timeout)
    return rows[0] if rows else None


@_forwarded
def get_placement_group(id: str, address: str | None = None, timeout: int = 30) -> dict | None:
    rows = _get(
        "placement_groups", StateClient.placement_groups, "placement_group_id", id, address, timeout
    )
    return rows[0] if rows else None


@_forwarded
def get_objects(id: str, address: str | None = None, timeout: int = 30) -> list[dict]:
    """Every process's reference to the object with this id (hex): a list,
    as in Ray, since several processes hold one object."""
    return _get("objects", StateClient.objects, "object_id", id, address, timeout)


# -- summaries ------------------------------------------------------------------


@_forwarded
def summarize_actors(
    address: str | None = None, timeout: int = 30, raise_on_missing_output: bool = True
) -> dict:
    """Actors by class: `{"cluster": {"summary": {class: {"class_name",
    "state_counts"}}, "total_actors", "summary_by": "class"}}`, as Ray."""
    actors = _gather(address, timeout, raise_on_missing_output, StateClient.actors)
    summary: dict[str, dict] = {}
    for actor in actors:
        entry = summary.setdefault(
            actor["class_name"], {"class_name": actor["class_name"], "state_counts": Counter()}
        )
        entry["state_counts"][actor["state"]] += 1
    for entry in summary.values():
        entry["state_counts"] = dict(entry["state_counts"])
    return {"cluster": {"summary": summary, "total_actors": len(actors), "summary_by": "class"}}


@_forwarded
def summarize_objects(
    address: str | None = None, timeout: int = 30, raise_on_missing_output: bool = True
) -> dict:
    """Objects by call site (with SOLRAY_RECORD_REF_CREATION_SITES=1; else
    one group, "disabled"), as Ray: per group `total_objects`,
    `total_size_mb`, `total_num_workers`, `total_num_nodes`,
    `task_state_counts`, `ref_type_counts`."""
    rows = _gather(address, timeout, raise_on_missing_output, StateClient.objects)
    enabled = any(row.get("call_site") for row in rows)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get("call_site") or "disabled", []).append(row)
    summary = {site: _object_group(group) for site, group in groups.items()}
    return {
        "cluster": {
            "summary": summary,
            "total_objects": len({row["object_id"] for row in rows}),
            "total_size_mb": _size_mb(rows),
            "callsite_enabled": enabled,
            "summary_by": "callsite",
        }
    }


def _object_group(rows: list[dict]) -> dict:
    return {
        "total_objects": len({row["object_id"] for row in rows}),
        "total_size_mb": _size_mb(rows),
        "total_num_workers": len({(row["node_id"], row["pid"]) for row in rows}),
        "total_num_nodes": len({row["node_id"] for row in rows}),
        "task_state_counts": dict(Counter(row.get("task_status") for row in rows)),
        "ref_type_counts": dict(Counter(row["reference_type"] for row in rows)),
    }


def _size_mb(rows: list[dict]) -> float:
    sizes = {row["object_id"]: row.get("object_size") or 0 for row in rows}
    return sum(sizes.values()) / 2**20


# -- logs -----------------------------------------------------------------------


@_forwarded
def list_logs(
    address: str | None = None,
    node_id: str | None = None,
    node_ip: str | None = None,
    glob_filter: str | None = None,
    timeout: int = 30,
) -> dict[str, list[str]]:
    """The log files of a node (the head if neither node_id nor node_ip is
    given), by category as Ray: `worker_out`, `worker_err`, `misc`."""

    async def query(client: StateClient) -> list[dict]:
        return await client.log_files(await client.find_node(node_id, node_ip))

    files = _gather(address, timeout, True, query)
    out: dict[str, list[str]] = {}
    for f in files:
        name = f["filename"]
        if glob_filter is not None and not fnmatch.fnmatch(name, glob_filter):
            continue
        stream = log_files.worker_stream(name)
        out.setdefault(f"worker_{stream}" if stream else "misc", []).append(name)
    return out


def get_log(
    address: str | None = None,
    node_id: str | None = None,
    node_ip: str | None = None,
    filename: str | None = None,
    actor_id: str | None = None,
    task_id: str | None = None,
    pid: int | None = None,
    follow: bool = False,
    tail: int = 1000,
    timeout: int = 30,
    suffix: str = "out",
    encoding: str = "utf-8",
    errors: str = "strict",
    _interval: float | None = None,
) -> Iterator[str]:
    """Lines of one log file (Ray's get_log), as a generator of strings
    (each a line with its newline). Give one of `filename` (on `node_id` /
    `node_ip`, the head by default), `pid` (a worker on that node, or on
    whichever node has it),
    `actor_id` (its worker's file, found from the actor) or `task_id` (the
    lines that task printed, cut out of its worker's files on every node).
    `suffix` "out" or "err" picks stdout or stderr for pid, actor and task.
    `tail` lines from the end (-1: all); `follow` keeps yielding lines
    written later, polling every `_interval` seconds (0.5 by default),
    until the caller stops iterating. Files are read as UTF-8 with errors
    replaced; other `encoding`/`errors` are refused."""
    given = [x for x in (filename, actor_id, task_id, pid) if x is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of filename, actor_id, task_id and pid")
    if suffix not in ("out", "err"):
        raise ValueError(f"suffix must be 'out' or 'err', not {suffix!r}")
    if encoding.lower().replace("-", "") != "utf8" or errors not in ("strict", "replace"):
        raise ValueError("log files are read as UTF-8 (undecodable bytes replaced)")
    if task_id is not None and follow:
        raise ValueError("follow is not supported for a task's lines: follow its worker (pid)")
    if context.client is not None:
        if follow:
            raise NotImplementedError("get_log(follow=True) through a ray:// client")
        kwargs = dict(node_id=node_id, node_ip=node_ip, filename=filename, actor_id=actor_id)
        kwargs.update(task_id=task_id, pid=pid, tail=tail, timeout=timeout, suffix=suffix)
        return iter(context.client.call("util.state.get_log", (), kwargs))
    where = (node_id, node_ip, filename, actor_id, task_id, pid, suffix)
    return _log_generator(address, where, follow, tail, timeout, _interval or 0.5)


def _log_lines(**kwargs) -> list[str]:
    """get_log without follow, as a list: what a ray:// client's proxy sends back."""
    return list(get_log(**kwargs))


def _log_generator(
    address: str | None, where: tuple, follow: bool, tail: int, timeout: int, interval: float
) -> Iterator[str]:
    node_id, node_ip, filename, actor_id, task_id, pid, suffix = where
    session = Session(address, timeout)
    try:
        if task_id is not None:
            yield from session.call(_task_lines, task_id, suffix, tail)
            return
        node, name = session.call(_locate, node_id, node_ip, filename, actor_id, pid, suffix)
        reply = session.call(StateClient.read_log, node, filename=name, tail=tail)
        while True:
            for line in reply["lines"]:
                yield line + "\n"
            if not (reply["more"] or follow):
                return
            if not reply["more"]:
                time.sleep(interval)
            reply = session.call(StateClient.read_log, node, filename=name, offset=reply["offset"])
    finally:
        session.close()


async def _locate(client: StateClient, node_id, node_ip, filename, actor_id, pid, suffix):
    """(node, file name) of the log asked for."""
    if actor_id is not None:
        actors = [a for a in await client.actors() if a["actor_id"] == actor_id]
        if not actors:
            raise ValueError(f"no actor with id {actor_id}")
        if actors[0]["pid"] is None:
            raise ValueError(f"actor {actor_id} has no worker yet (state {actors[0]['state']})")
        node_id, node_ip, pid = actors[0]["node_id"], None, actors[0]["pid"]
    if pid is None:
        return await client.find_node(node_id, node_ip), filename
    # A pid on the given node, else on any node.
    if node_id or node_ip:
        nodes = [await client.find_node(node_id, node_ip)]
    else:
        nodes = [n for n in await client.nodes() if n["alive"]]
    pattern = f"worker-*-{pid}.{suffix}"
    for node in nodes:
        names = [f["filename"] for f in await client.log_files(node)]
        found = [n for n in names if fnmatch.fnmatch(n, pattern)]
        if found:
            return node, found[-1]
    where = f"node {nodes[0]['node_id']}" if len(nodes) == 1 else "any node"
    raise ValueError(f"no log file of a worker with pid {pid} on {where}")


async def _task_lines(client: StateClient, task_id: str, suffix: str, tail: int) -> list[str]:
    replies = await client.each_node(
        Msg.GET_LOG, {"task_id": task_id, "suffix": suffix, "tail": tail}
    )
    lines = [line + "\n" for _, reply in replies for line in reply["lines"]]
    if not any(reply["found"] for _, reply in replies):
        raise ValueError(
            f"no output of task {task_id} in the workers' {suffix} files of the cluster "
            "(it printed nothing there, or it is not a task id)"
        )
    return lines if tail < 0 else lines[-tail:] if tail else []


# -- tasks (task events, kept and filtered in the control store) ----------------


def _query_tasks(
    filters, limit: int, detail: bool, timeout, precise: bool = False, address=None
) -> dict:
    """The control store's answer to LIST_TASKS (task_event_store.py)."""
    check_filters(filters)  # a bad one is this caller's ValueError
    sent = [[k, p, str(v)] for k, p, v in filters or ()]
    with Session(address, timeout) as session:
        return session.call(StateClient.tasks, sent, limit, detail, precise)


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
        "task_events_max_num_task_in_gcs attempts, and task_events_max_num_task_per_job of "
        "one job, each set through SOLRAY_<name> or RAY_<name>)."
    )
    if raise_on_missing_output:
        raise RayStateApiException(
            message + " To get the partial result, pass raise_on_missing_output=False."
        )
    warnings.warn(message, stacklevel=3)


@_forwarded
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
    reply = _query_tasks(filters, limit, detail, timeout, address=address)
    _check_complete(reply, "The task list", raise_on_missing_output)
    return [StateRow(row) for row in reply["tasks"]]


@_forwarded
def get_task(id, address: str | None = None, timeout: int = 30):
    """A task by id (hex string, or an ObjectRef it returned): None if
    unknown, its attempt if it ran once, else the list of its attempts, as
    Ray's get_task. Always in detail."""
    from solray._private import ids
    from solray.object_ref import ObjectRef

    if isinstance(id, ObjectRef):
        id = ids.task_id_of(id.binary()).hex()
    reply = _query_tasks([("task_id", "=", id)], 1_000_000, True, timeout, address=address)
    rows = [StateRow(row) for row in reply["tasks"]]
    if not rows:
        return None
    return rows[0] if len(rows) == 1 else rows


@_forwarded
def summarize_tasks(
    address: str | None = None,
    timeout: int = 30,
    raise_on_missing_output: bool = True,
) -> dict:
    """Ray's summary of tasks by function or class name: {"cluster":
    {"summary": {name: {"func_or_class_name", "type", "state_counts"}},
    "total_tasks", "total_actor_tasks", "total_actor_scheduled",
    "summary_by": "func_name"}}."""
    reply = _query_tasks(
        [("type", "!=", "DRIVER_TASK")], 1_000_000_000, False, timeout, address=address
    )
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


@_forwarded
def explain_pending(
    address: str | None = None, timeout: int = 30, raise_on_missing_output: bool = True
) -> list[dict]:
    """solray's own (Ray has none): every pending task, actor call, actor and
    placement group of the cluster, and every thread blocked in get() or
    wait(), with why it waits (`solray why`). Each entry: `kind` (task,
    actor_task, actor, placement_group, get), `id`, `name`, `reason` (one of
    "infeasible", "blocked in get()", "waiting for arguments", "waiting for a
    placement group", "waiting for an actor", "waiting for a worker",
    "waiting for resources") and `message`, the sentence to act on; tasks
    and gets also name `owner_pid` and `owner_node_id`. Nodes or processes
    that did not answer raise RayStateApiException unless
    `raise_on_missing_output` is False (then a warning)."""
    from solray._private import why

    rows = _gather(address, timeout, raise_on_missing_output, why.explain)
    return [StateRow(row) for row in rows]


@_forwarded
def get_stacks(
    pid: int | None = None,
    node_id: str | None = None,
    address: str | None = None,
    timeout: int = 30,
) -> list[dict]:
    """solray's own: the Python stack of every thread of every driver and
    worker (or of those of one node, or of the process `pid`), taken
    without stopping them (`solray stack`). Each entry: `pid`, `worker_id`,
    `is_driver`, `node_id`, `actor_id`, `threads` ([{name, task: {task_id,
    name} or None, frames: [[file, line, function, source], ...]}], the
    innermost frame last); a process that did not answer has `error`."""
    from solray._private import why

    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int)):
        raise TypeError(f"pid must be an int, not {type(pid).__name__}")
    rows = _gather(address, timeout, True, lambda client: why.gather_stacks(client, pid, node_id))
    return [StateRow(row) for row in rows]


__all__ = [
    "RayStateApiException",
    "explain_pending",
    "get_actor",
    "get_log",
    "get_node",
    "get_objects",
    "get_placement_group",
    "get_stacks",
    "get_task",
    "get_worker",
    "list_actors",
    "list_jobs",
    "list_logs",
    "list_nodes",
    "list_objects",
    "list_placement_groups",
    "list_tasks",
    "list_workers",
    "summarize_actors",
    "summarize_objects",
    "summarize_tasks",
]
