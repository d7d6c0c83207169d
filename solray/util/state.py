"""The state API (`ray.util.state`): what the cluster holds right now.

Entries are dicts. `filters` are `(key, predicate, value)` tuples with
predicate "=" or "!=", compared as strings, as in Ray's state API.
"""

from __future__ import annotations

from typing import Any

from solray._private import context
from solray._private.protocol import Msg

Filter = tuple[str, str, Any]


def _apply(rows: list[dict], filters: list[Filter] | None, limit: int) -> list[dict]:
    for key, predicate, value in filters or ():
        if predicate not in ("=", "!="):
            raise ValueError(f"Unsupported filter predicate {predicate!r}: use '=' or '!='")
        want = predicate == "="
        rows = [r for r in rows if (str(r.get(key)) == str(value)) == want]
    return rows[:limit]


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


__all__ = ["list_actors", "list_jobs", "list_objects"]
