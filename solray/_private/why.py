"""`solray why` and `solray stack`: why work waits, and what every thread is
doing, cluster-wide (the design: docs/architecture.md, "Why is it stuck").

The truth about a waiting task is spread out, and each piece is asked of
the one that holds it, all at once:

    owners (drivers, workers)  unresolved arguments of their tasks, tasks
                               queued for a lease, tasks running (where),
                               actor constructors still resolving, and
                               their threads blocked in get()/wait()
                               (process_probe.py, asked by their node)
    nodes                      lease requests queued for resources or for
                               a worker, runtime env builds in progress
                               (node_probe.py, asked by the state client)
    control store              nodes (totals, labels, free), actors and
                               placement groups with their states

`explain(client)` joins them into one entry per waiting thing, each with a
reason category (REASONS) and a sentence a user can act on; `render_why`
groups them by reason. `gather_stacks` and `render_stacks` do `solray stack`.
"""

from __future__ import annotations

from solray._private import labels
from solray._private.protocol import Msg
from solray._private.resources import fits

INFEASIBLE = "infeasible"
ARGUMENTS = "waiting for arguments"
RESOURCES = "waiting for resources"
WORKER = "waiting for a worker"
PLACEMENT_GROUP = "waiting for a placement group"
ACTOR = "waiting for an actor"
BLOCKED = "blocked in get()"
# In the order `solray why` prints them: what needs the user first.
REASONS = (INFEASIBLE, BLOCKED, ARGUMENTS, PLACEMENT_GROUP, ACTOR, WORKER, RESOURCES)

WAITING_ACTOR_STATES = ("PENDING", "RESTARTING")
WAITING_PG_STATES = ("PENDING", "RESCHEDULING")


def _short(hex_id: str | None) -> str:
    """A random id (node, worker, actor, group) by its start; task and
    object ids share their job's prefix, so they are shown whole."""
    return f"{hex_id[:8]}..." if hex_id else "?"


def _amounts(resources: dict) -> str:
    shown = ", ".join(f"{k}: {_num(v)}" for k, v in sorted(resources.items()))
    return "{" + shown + "}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _group_of(resources: dict) -> str | None:
    """The placement group a resource shape draws on (`CPU_group_<pg id>`)."""
    for key in resources:
        if "_group_" in key:
            return key.rsplit("_", 1)[1]
    return None


class Cluster:
    """What was gathered, indexed for the sentences."""

    def __init__(self, nodes, actors, groups, node_reports, nodes_missing: bool):
        self.alive = [n for n in nodes if n["alive"]]
        self.actors = {a["actor_id"]: a for a in actors}
        self.groups = groups
        self.nodes_missing = nodes_missing  # some node did not answer
        every = [p for r in node_reports for p in r["processes"]]
        self.processes = [p for p in every if "error" not in p]
        # Alive (connected to their node) but silent: stopped, or their I/O
        # loop cannot run (a C extension holding the GIL, say).
        self.silent = {p["address"]: p for p in every if "error" in p and p.get("address")}
        self.by_address = {p["address"]: p for p in self.processes}
        self.tasks = {t["task_id"]: t for p in self.processes for t in p["tasks"]}
        # Running tasks blocked in get() have lent their CPUs (lease_scheduler.py).
        self.blocked_tasks = {g["task_id"] for p in self.processes for g in p["gets"]}
        self.requests = [req for r in node_reports for req in r["requests"]]
        self.available = {r["node_id"]: r["available"] for r in node_reports}

    # -- where work could run --------------------------------------------------

    def infeasible_why(self, resources: dict, selector: dict | None) -> str | None:
        """Why no alive node could ever run this shape, or None if one could."""
        matching = [n for n in self.alive if labels.matches(n.get("labels"), selector)]
        if any(fits(resources, n["resources_total"]) for n in matching):
            return None
        needs = f"needs {_amounts(resources)}"
        if selector:
            needs += f" on a node with labels matching {selector}"
            if not matching:
                return f"{needs}; no node has such labels"
        lacking = []
        for key, amount in sorted(resources.items()):
            best = max((n["resources_total"].get(key, 0.0) for n in matching), default=0.0)
            if best <= 0:
                lacking.append(f"no node has {key}")
            elif best < amount:
                lacking.append(f"the most {key} a node has is {_num(best)}")
        if not lacking:
            lacking.append("no single node has all of it at once")
        return f"{needs}; " + "; ".join(lacking)

    def busy_why(self, resources: dict, selector: dict | None) -> str:
        """What holds the resources a feasible shape waits for."""
        matching = [
            n
            for n in self.alive
            if labels.matches(n.get("labels"), selector) and fits(resources, n["resources_total"])
        ]
        parts = []
        for key, amount in sorted(resources.items()):
            total = sum(n["resources_total"].get(key, 0.0) for n in matching)
            free = sum(
                self.available.get(n["node_id"], n.get("resources_available", {})).get(key, 0.0)
                for n in matching
            )
            if free >= amount:
                continue
            users = self.holders(key)
            held = f" by {users}" if users else ""
            parts.append(
                f"no free {key} on any node that fits it "
                f"({_num(total - free)}/{_num(total)} in use{held})"
            )
        if not parts:
            return (
                f"needs {_amounts(resources)}, which fits now: a node is granting it "
                "(or its owner is about to ask again)"
            )
        return "; ".join(parts)

    def holders(self, key: str) -> str:
        """'3 tasks of f, 1 actor A': the running work that holds `key`."""
        counts: dict[tuple[str, str], int] = {}
        for task in self.tasks.values():
            if (
                task["state"] == "running"
                and task["resources"].get(key)
                and not (key == "CPU" and task["task_id"] in self.blocked_tasks)
            ):
                what = ("task", f"of {task['name']}")
                counts[what] = counts.get(what, 0) + 1
        for actor in self.actors.values():
            if actor["state"] == "ALIVE" and (actor.get("required_resources") or {}).get(key):
                what = ("actor", actor["class_name"] or "")
                counts[what] = counts.get(what, 0) + 1
        return ", ".join(
            f"{n} {noun}{'s' if n > 1 else ''} {which}" for (noun, which), n in counts.items()
        )

    # -- objects -----------------------------------------------------------

    def owner_gone(self, owner: str) -> bool:
        return owner not in self.by_address and owner not in self.silent and not self.nodes_missing

    def object_why(self, object_id: str, owner: str) -> str:
        """What an object someone waits for waits for."""
        ref = f"ref {object_id}"
        silent = self.silent.get(owner)
        if silent is not None:
            return (
                f"{ref} owned by pid {silent['pid']}, which is alive but did not answer "
                f"({silent['error']}): it is stopped, or its I/O thread cannot run (a C "
                "extension holding the GIL?); `solray stack --pid "
                f"{silent['pid']}` will not answer either"
            )
        if self.owner_gone(owner):
            return (
                f"{ref} is owned by {owner}, a process that is gone (a dead driver or "
                "worker): its value can never come; it will fail with OwnerDiedError "
                "once its owner's death is noticed"
            )
        task = self.tasks.get(_producer(object_id))
        if task is None:
            holder = self.by_address.get(owner)
            who = f"pid {holder['pid']}" if holder else owner
            return f"{ref} owned by {who}, which has no value for it yet"
        state = {
            "running": f"still running on node {_short(task['node_id'])}"
            + (
                ", itself blocked in get() (see its entry)"
                if task["task_id"] in self.blocked_tasks
                else ""
            ),
            "behind": f"pushed to a worker on node {_short(task['node_id'])}, waiting "
            "there behind the task that worker runs",
            "queued": "still waiting to be scheduled (see its own entry)",
            "args": "itself waiting for its arguments (see its own entry)",
        }[task["state"]]
        return f"{ref} produced by task {task['name']}() {state}"


def _producer(object_id: str) -> str:
    from solray._private.process_probe import producing_task

    return producing_task(object_id)


async def explain(client) -> list[dict]:
    """Every waiting task, actor, placement group and blocked get() of the
    cluster, each with its reason and sentence. The nodes and processes
    that did not answer (their work is not listed) are added to
    `client.missing`."""
    nodes = await client.nodes()
    actors = await client.actors()
    groups = await client.control(Msg.PG_TABLE)
    node_reports = [answer for _, answer in await client.each_node(Msg.WHY_NODE)]
    missing = client.missing
    nodes_missing = bool(missing)
    for report in node_reports:
        for process in report["processes"]:
            if "error" in process:
                missing.append(
                    f"pid {process['pid']} on node {_short(report['node_id'])}: {process['error']}"
                )
    cluster = Cluster(nodes, actors, groups, node_reports, nodes_missing)
    entries: list[dict] = []
    for process in cluster.processes:
        entries.extend(_task_entries(cluster, process))
        entries.extend(_get_entries(cluster, process))
    entries.extend(_actor_entries(cluster))
    entries.extend(_group_entries(cluster))
    entries.sort(key=lambda e: (REASONS.index(e["reason"]), e["name"], e["id"]))
    return entries


def _entry(kind: str, id_: str, name: str, reason: str, message: str, **more) -> dict:
    return {"kind": kind, "id": id_, "name": name, "reason": reason, "message": message, **more}


def _task_entries(cluster: Cluster, process: dict):
    for task in process["tasks"]:
        where = {"owner_pid": process["pid"], "owner_node_id": process["node_id"]}
        kind = "actor_task" if task["actor_id"] else "task"
        actor = cluster.actors.get(task["actor_id"]) if task["actor_id"] else None
        if actor is not None and "." not in task["name"]:  # a method: Class.method
            task = dict(task, name=f"{actor['class_name']}.{task['name']}")
        if task["state"] == "args":
            for object_id, owner in task["unresolved"]:
                sentence = cluster.object_why(object_id, owner)
                yield _entry(
                    kind, task["task_id"], task["name"], ARGUMENTS,
                    f"waiting for argument {sentence}", **where,
                )  # fmt: skip
            continue
        if task["state"] != "queued":
            continue
        if task["actor_id"]:
            if actor is not None and actor["state"] in WAITING_ACTOR_STATES:
                yield _entry(
                    kind, task["task_id"], task["name"], ACTOR,
                    f"waiting for actor {actor['class_name']} ({_short(actor['actor_id'])}), "
                    f"which is {actor['state']} (see its own entry)", **where,
                )  # fmt: skip
            continue
        reason, sentence = _placement_why(
            cluster, task["resources"], task["label_selector"], process["address"], None
        )
        yield _entry(kind, task["task_id"], task["name"], reason, sentence, **where)


def _placement_why(
    cluster: Cluster, resources: dict, selector: dict | None, owner: str | None, actor_id
) -> tuple[str, str]:
    """(reason, sentence) for work of this shape that has no worker yet."""
    group_id = _group_of(resources)
    if group_id is not None:
        group = cluster.groups.get(group_id)
        if group is not None and group["state"] != "CREATED":
            return PLACEMENT_GROUP, (
                f"waiting for placement group {group.get('name') or _short(group_id)}, "
                f"which is {group['state']} (see its own entry)"
            )
    infeasible = cluster.infeasible_why(resources, selector)
    if infeasible is not None:
        return INFEASIBLE, infeasible + " (it waits until such a node joins)"
    request = _request_of(cluster, owner, actor_id, resources)
    if request is not None and request["stage"] == "worker":
        env = request["env"]
        if env is not None:
            return WORKER, (
                f"waiting for a worker: runtime_env {env['step']} running for "
                f"{_num(round(env['for_s']))} s"
            )
        return WORKER, "waiting for a worker: its resources are held; its worker is starting"
    return RESOURCES, "waiting for a worker: " + cluster.busy_why(resources, selector)


def _request_of(cluster: Cluster, owner, actor_id, resources: dict) -> dict | None:
    """The node lease request made for this work: by its actor id, else by
    its owner and shape (one holding its resources first)."""
    found = [
        r
        for r in cluster.requests
        if (actor_id is not None and r["actor_id"] == actor_id)
        or (actor_id is None and r["owner"] == owner and r["resources"] == resources)
    ]
    found.sort(key=lambda r: r["stage"] != "worker")
    return found[0] if found else None


def _get_entries(cluster: Cluster, process: dict):
    for get in process["gets"]:
        who = (
            f"task {get['task']}()"
            if get["task"]
            else ("the driver" if process["is_driver"] else "a worker")
        )
        for object_id, owner in get["objects"]:
            sentence = cluster.object_why(object_id, owner)
            yield _entry(
                "get", f"{process['pid']}:{get['thread']}", get["task"] or get["thread"], BLOCKED,
                f"{who} (pid {process['pid']}, thread {get['thread']}) blocked in "
                f"{get['kind']}() for {_num(round(get['for_s']))} s on {sentence}",
                owner_pid=process["pid"], owner_node_id=process["node_id"],
            )  # fmt: skip


def _actor_entries(cluster: Cluster):
    creating = {c["actor_id"]: (c, p) for p in cluster.processes for c in p["creating_actors"]}
    for actor in cluster.actors.values():
        if actor["state"] not in WAITING_ACTOR_STATES:
            continue
        name = actor["class_name"] or "actor"
        resolving = creating.get(actor["actor_id"])
        if resolving is not None:
            for object_id, owner in resolving[0]["unresolved"]:
                sentence = cluster.object_why(object_id, owner)
                yield _entry(
                    "actor", actor["actor_id"], name, ARGUMENTS,
                    f"constructor waiting for argument {sentence}",
                )  # fmt: skip
            continue
        reason, sentence = _placement_why(
            cluster,
            actor.get("required_resources") or {},
            actor.get("label_selector"),
            None,
            actor["actor_id"],
        )
        yield _entry("actor", actor["actor_id"], name, reason, sentence)


def _group_entries(cluster: Cluster):
    for group_id, group in cluster.groups.items():
        if group["state"] not in WAITING_PG_STATES:
            continue
        name = group.get("name") or ""
        bundles = {int(i): b for i, b in group["bundles"].items()}
        placed = {int(i) for i in group.get("bundles_to_node_id", {})}
        problems = []
        for index, bundle in sorted(bundles.items()):
            if index in placed:
                continue
            why = cluster.infeasible_why(bundle, None)
            if why is not None:
                problems.append(f"bundle {index} {why}")
        strategy = group["strategy"]
        if not problems and strategy == "STRICT_PACK":
            need: dict[str, float] = {}
            for bundle in bundles.values():
                for key, amount in bundle.items():
                    need[key] = need.get(key, 0.0) + amount
            why = cluster.infeasible_why(need, None)
            if why is not None:
                problems.append(f"STRICT_PACK: all bundles together {why}")
        if not problems and strategy == "STRICT_SPREAD" and len(bundles) > len(cluster.alive):
            problems.append(
                f"STRICT_SPREAD needs {len(bundles)} nodes and the cluster has {len(cluster.alive)}"
            )
        if problems:
            yield _entry(
                "placement_group", group_id, name, INFEASIBLE,
                "; ".join(problems) + " (it waits until such a node joins)",
            )  # fmt: skip
            continue
        waiting = [bundles[i] for i in sorted(bundles) if i not in placed]
        shapes = ", ".join(_amounts(b) for b in waiting)
        busy = "; ".join(dict.fromkeys(cluster.busy_why(b, None) for b in waiting))
        yield _entry(
            "placement_group", group_id, name, RESOURCES,
            f"{strategy} bundles {shapes} not reserved yet: {busy}",
        )  # fmt: skip


def render_why(entries: list[dict], incomplete: list[str]) -> str:
    """`solray why`'s text: the entries grouped by reason, then what did not answer."""
    lines = []
    if not entries:
        lines.append("Nothing waits: no pending task, actor, placement group or blocked get().")
    for reason in REASONS:
        group = [e for e in entries if e["reason"] == reason]
        if not group:
            continue
        lines.append(f"{reason.capitalize()} ({len(group)}):")
        # Many tasks of one function waiting alike read as one line.
        alike: dict[tuple, list[dict]] = {}
        for e in group:
            alike.setdefault((e["kind"], e["name"], e["message"]), []).append(e)
        for (kind, name, message), same in alike.items():
            kind = kind.replace("_", " ")
            what = f"{kind} {name}" if name else kind
            if len(same) == 1:
                lines.append(f"  {what} ({same[0]['id']}): {message}")
            else:
                lines.append(f"  {len(same)} x {what} (first {same[0]['id']}): {message}")
        lines.append("")
    if incomplete:
        lines.append("Incomplete: these did not answer, so their work is not listed:")
        lines.extend(f"  {what}" for what in incomplete)
    return "\n".join(lines).rstrip() + "\n"


async def gather_stacks(client, pid: int | None = None, node_id: str | None = None) -> list[dict]:
    """The stacks of every driver and worker (of one node, or the process
    `pid`); a process that did not answer has an `error` instead."""
    body = {"pid": pid} if pid is not None else None
    if node_id is not None:
        node = await client.find_node(node_id=node_id)
        rows = [(node, await client.node(node, Msg.STACKS_NODE, body))]
    else:
        rows = await client.each_node(Msg.STACKS_NODE, body)
    return [dict(p, node_id=p.get("node_id") or node["node_id"]) for node, ps in rows for p in ps]


def render_stacks(processes: list[dict]) -> str:
    lines = []
    for process in sorted(processes, key=lambda p: (p.get("node_id") or "", p["pid"] or 0)):
        if "error" in process:
            lines.append(f"=== pid {process['pid']}: did not answer: {process['error']}")
            lines.append("")
            continue
        role = "driver" if process["is_driver"] else "worker"
        actor = f", actor {_short(process['actor_id'])}" if process.get("actor_id") else ""
        lines.append(
            f"=== pid {process['pid']} ({role} {_short(process['worker_id'])}{actor}, "
            f"node {_short(process['node_id'])})"
        )
        for thread in process["threads"]:
            task = thread["task"]
            running = f", running task {task['name']} ({task['task_id']})" if task else ""
            lines.append(f"Thread {thread['name']}{running}:")
            for filename, lineno, function, text in thread["frames"]:
                lines.append(f'  File "{filename}", line {lineno}, in {function}')
                if text:
                    lines.append(f"    {text}")
        lines.append("")
    return "\n".join(lines)
