"""Ray's `ray._private.internal_api` functions that its documentation uses:
`free` (release objects now, whatever references them) and `memory_summary`
(what `ray memory` prints).

`free` runs on the core worker's loop, which owns the tables it changes
(`Ownership.free_now`). A freed object's entry becomes an `ObjectFreedError`,
so `get` raises it, borrowers asking the owner get it too, and lineage never
rebuilds the object.
"""

from __future__ import annotations

import logging
import textwrap
import time
from collections import Counter

from solray._private import context, transport
from solray._private.protocol import Msg
from solray.object_ref import ObjectRef

logger = logging.getLogger(__name__)


def free(object_refs: list, local_only: bool = False) -> None:
    """Free the objects now, in this process's memory and in the object
    stores, even while refs to them exist: `get` of them then raises
    ObjectFreedError. Only objects this process owns are freed (a warning
    names the others, as Ray logs). An object whose task has not finished is
    freed when its value arrives. `local_only=True` frees only objects held
    inline or in this node's store; those in another node's store are left
    alone."""
    if isinstance(object_refs, ObjectRef):
        object_refs = [object_refs]
    if not isinstance(object_refs, list):
        raise TypeError(f"free() expects a list of ObjectRef, got {type(object_refs)}")
    for ref in object_refs:
        if not isinstance(ref, ObjectRef):
            raise TypeError(
                f"Attempting to call `free` on the value {ref}, which is not an ObjectRef."
            )
    if not isinstance(local_only, bool):
        raise TypeError(f"free(): local_only must be True or False, got {local_only!r}")
    if not object_refs:
        return
    cw = context.require_core_worker()
    not_owned = cw.run_on_loop(cw.ownership.free_now, [r._id for r in object_refs], local_only)
    if not_owned:
        logger.warning(
            "free(): %d object(s) were not freed because this process does not own them "
            "(only the process that created an object can free it): %s",
            len(not_owned),
            ", ".join(i.hex() for i in not_owned),
        )


# -- memory_summary ------------------------------------------------------------

_GROUP_BY = ("NODE_ADDRESS", "STACK_TRACE")
_SORT_BY = ("PID", "OBJECT_SIZE", "REFERENCE_TYPE")
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def memory_summary(
    address: str | None = None,
    group_by: str = "NODE_ADDRESS",
    sort_by: str = "OBJECT_SIZE",
    units: str = "B",
    line_wrap: bool = True,
    stats_only: bool = False,
    num_entries: int | None = None,
) -> str:
    """What `ray memory` prints, for the cluster this process is connected
    to: the object references of every node, grouped and sorted, then the
    object store usage (and spilling) summed over the nodes. With
    `stats_only`, only the latter."""
    if group_by not in _GROUP_BY:
        raise ValueError(f"memory_summary(): group_by must be one of {_GROUP_BY}, got {group_by!r}")
    if sort_by not in _SORT_BY:
        raise ValueError(f"memory_summary(): sort_by must be one of {_SORT_BY}, got {sort_by!r}")
    if units not in _UNITS:
        raise ValueError(f"memory_summary(): units must be one of {list(_UNITS)}, got {units!r}")
    if num_entries is not None and (
        isinstance(num_entries, bool) or not isinstance(num_entries, int) or num_entries < 0
    ):
        raise ValueError(f"memory_summary(): num_entries must be an int >= 0, got {num_entries!r}")
    cw = context.require_core_worker()
    if address not in (None, "auto", cw.node_info["control_address"]):
        raise ValueError(
            f"memory_summary(address={address!r}): this process is connected to the cluster "
            f"at {cw.node_info['control_address']}; pass None for it"
        )
    nodes = [n for n in cw.request("control", Msg.GET_NODES, None) if n["alive"]]
    per_node = cw.call(_query_nodes(cw, nodes), timeout=60)
    lines = []
    if not stats_only:
        lines += _references(
            per_node, group_by, sort_by, _UNITS[units], units, num_entries, line_wrap
        )
    lines += _store_stats([stats for _, _, stats in per_node])
    return "\n".join(lines) + "\n"


async def _query_nodes(cw, nodes: list[dict]) -> list[tuple[dict, list, dict]]:
    """Loop thread: each alive node's object rows and store stats."""
    results = []
    for info in nodes:
        try:
            conn = cw.node if info["address"] == cw.node_address else await cw.peer(info["address"])
            rows = await conn.request(Msg.LIST_OBJECTS)
            stats = await conn.request(Msg.STORE_STATS)
        except (OSError, TimeoutError, transport.ConnectionLost):
            continue  # the node died meanwhile: it holds nothing any more
        results.append((info, rows, stats))
    return results


_CALL_SITE_WIDTH = 24


def _references(per_node, group_by, sort_by, scale, units, num_entries, line_wrap) -> list[str]:
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    shown = "all" if num_entries is None else str(num_entries)
    lines = [
        f"======== Object references status: {when} ========",
        f"Grouping by {group_by.lower().replace('_', ' ')}...        "
        f"Sorting by {sort_by.lower().replace('_', ' ')}...        "
        f"Display {shown} entries per group...",
        "",
    ]
    groups: dict[str, list[dict]] = {}
    for info, rows, _ in per_node:
        for row in rows:
            key = info["ip"] if group_by == "NODE_ADDRESS" else (row["call_site"] or "(unknown)")
            groups.setdefault(key, []).append(row)
    sort_key = {
        "PID": lambda r: r["pid"],
        "OBJECT_SIZE": lambda r: -(r["object_size"] or 0),
        "REFERENCE_TYPE": lambda r: r["reference_type"],
    }[sort_by]
    label = "node address" if group_by == "NODE_ADDRESS" else "call site"
    for key, rows in groups.items():
        kinds = Counter(r["reference_type"] for r in rows)
        size = sum(r["object_size"] or 0 for r in rows if r["is_owner"])
        lines += [
            f"--- Summary for {label}: {key} ---",
            "Mem Used by Objects  Local References  Pinned  Used by task  Captured in Objects",
            f"{size / scale:.0f} {units:<17}{kinds['LOCAL_REFERENCE']:<18}"
            f"{kinds['PINNED_IN_MEMORY']:<8}{kinds['USED_BY_PENDING_TASK']:<14}"
            f"{kinds['CAPTURED_IN_OBJECT']}",
            "",
            f"--- Object references for {label}: {key} ---",
            f"{'IP Address':<16}{'PID':<9}{'Type':<8}{'Call Site':<24}{'Status':<10}"
            f"{'Size':<14}{'Reference Type':<22}Object Ref",
        ]
        for row in sorted(rows, key=sort_key)[:num_entries]:
            size_text = (
                "?" if row["object_size"] is None else f"{row['object_size'] / scale:.0f} {units}"
            )
            site = row["call_site"] or "disabled"
            # line_wrap: a long call site continues on the lines below, in
            # its column; else it is written whole and the row runs long.
            pieces = textwrap.wrap(site, _CALL_SITE_WIDTH - 1) if line_wrap else [site]
            lines.append(
                f"{row['ip'] or '':<16}{row['pid']:<9}{row['type']:<8}"
                f"{pieces[0]:<{_CALL_SITE_WIDTH}}{row['task_status']:<10}"
                f"{size_text:<14}{row['reference_type']:<22}{row['object_id']}"
            )
            lines += [" " * 33 + piece for piece in pieces[1:]]
        lines.append("")
    lines += [
        "To record callsite information for each ObjectRef created, set env variable "
        "SOLRAY_RECORD_REF_CREATION_SITES=1",
        "",
    ]
    return lines


def _store_stats(all_stats: list[dict]) -> list[str]:
    mib = 2**20
    used = sum(s["used"] for s in all_stats)
    capacity = sum(s["capacity"] for s in all_stats) or 1
    objects = sum(s["num_objects"] for s in all_stats)
    lines = [
        "--- Aggregate object store stats across all nodes ---",
        f"Plasma memory usage {used // mib} MiB, {objects} objects, "
        f"{100 * used / capacity:.1f}% full",
    ]
    spilled_objects = sum(s["spilled_objects_total"] for s in all_stats)
    if spilled_objects:
        spilled_bytes = sum(s["spilled_bytes_total"] for s in all_stats)
        lines.append(f"Spilled {spilled_bytes // mib} MiB, {spilled_objects} objects")
    restored = sum(s["restored_objects_total"] for s in all_stats)
    if restored:
        lines.append(f"Restored {restored} objects")
    return lines


__all__ = ["free", "memory_summary"]
