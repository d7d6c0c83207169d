"""The placement engine: which node fits a piece of work, decided one way
for every kind of work.

Three deciders use it, each from its own copy of one kind of view:

    a node routing a lease request  grant here, send the owner on to another
                                    node (spillback), or queue here
                                    (`lease_scheduler.py`)
    the control store placing an    the node to ask for the actor's lease
    actor                           (`actor_manager.py`)
    the control store reserving     a node per bundle of a placement group
    placement group bundles         (`placement_groups.py`)

The view (`ClusterView`) holds every node's totals, free resources, labels
and liveness as the node last reported them (`NODE_RESOURCES`, published to
the nodes on the `resources` channel). Reports arrive about once a second,
and a burst of decisions is made much faster than that: a decider that sends
work to a node therefore subtracts what the work takes (`ClusterView.take`),
and the node's next report supersedes the subtraction (by then the node
counts what it granted itself). Without this, every decision of a burst
would follow the same stale number to the same node, and the requests
beyond its room would wait there while other nodes idle. The control store
publishes a report only when it changed something, so a subtraction also
lapses after TAKEN_TTL_S (the work may have moved on, leaving the node as it
was). A node's own entry in its view is its `ResourceSet`, always exact, GPU
instances included.

The view can still be wrong (a report in flight, two deciders choosing the
same free CPU at once), so no decision is final: a node that gets a request
it cannot grant now sends it on to a node where it fits now, a bounded number
of hops (`MAX_HOPS`), and then queues it where it is.

The policies, shared by the deciders:

    DEFAULT   the preferred node (the asking node, or where the arguments
              are) while the work fits there now; else the node where it fits
              now with the largest share of its CPUs free; else the preferred
              node if it could ever fit there (wait there); else any node
              where it could
    SPREAD    among nodes where it could ever fit, those where it fits now
              first, then the least loaded (free CPU share for tasks, actors
              hosted for actors), ties taken in turn
    affinity  NodeAffinitySchedulingStrategy, as in Ray: see `affinity`
    labels    a label selector is a constraint like a resource: a node whose
              labels do not match can never host the work; with fallbacks,
              the first selector some node could host it with (`selector_for`)
    bundles   PACK, SPREAD, STRICT_PACK, STRICT_SPREAD, with
              `_max_cpu_fraction_per_node` and `_soft_target_node_id`: see
              `assign_bundles`
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from solray._private import labels
from solray._private.resources import EPS, ResourceSet, fits

# A lease request is sent on at most this many times; then it waits where it
# is (it could otherwise bounce between nodes whose views disagree).
MAX_HOPS = 4

# What a decider sent to a node counts there until the node reports, or this
# long (nodes report at least every second; an unchanged report is not
# published to the other nodes).
TAKEN_TTL_S = 2.0

# Verdicts of `affinity`.
PIN = "pin"  # runs on the target node only, waiting while it is busy
ROUTE = "route"  # placed as DEFAULT, preferring the target node
INFEASIBLE = "infeasible"  # hard affinity to a node that can never host it
BUSY = "busy"  # _fail_on_unavailable and the target has no room now

BUNDLE_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass(frozen=True)
class Demand:
    """What a piece of work needs from its node."""

    resources: dict
    selector: dict | None = None  # label selector
    fallbacks: tuple = ()  # selectors tried in order if no node could host it with `selector`


class ClusterView:
    """Every node as last reported, minus what was sent to it since.

    `local_id`/`local`: in a node, its own entry is read from its
    ResourceSet (exact, and aware of GPU instances)."""

    def __init__(self, local_id: str | None = None, local: ResourceSet | None = None):
        self.nodes: dict[str, dict] = {}  # node id -> info, as registered and reported
        # node id -> (until when, what was taken there since its last report)
        self._taken: dict[str, tuple[float, dict]] = {}
        self.local_id = local_id
        self.local = local
        self._turn = itertools.count()

    # -- keeping the view ---------------------------------------------------

    def add(self, info: dict) -> None:
        info.setdefault("alive", True)
        info.setdefault("resources_available", dict(info["resources_total"]))
        self.nodes[info["node_id"]] = info
        self._taken.pop(info["node_id"], None)

    def report(self, node_id: str, available: dict, total: dict) -> bool:
        """A node's report; True if it changed what the view had."""
        self._taken.pop(node_id, None)
        info = self.nodes.get(node_id)
        if info is None or not info["alive"]:
            return False
        changed = info["resources_available"] != available or info["resources_total"] != total
        info["resources_available"] = available
        info["resources_total"] = total
        return changed

    def remove(self, node_id: str) -> None:
        info = self.nodes.get(node_id)
        if info is not None:
            info["alive"] = False
            info["resources_available"] = {}
        self._taken.pop(node_id, None)

    def take(self, node_id: str, need: dict) -> None:
        """Work was sent to a node: count it there until the node reports."""
        if node_id == self.local_id:
            return  # the local ResourceSet counts it when it is granted
        now = time.monotonic()
        until, taken = self._taken.get(node_id, (0.0, {}))
        if until < now:
            taken = {}  # lapsed: the node's state is as last reported
        for key, amount in need.items():
            taken[key] = taken.get(key, 0.0) + amount
        self._taken[node_id] = (now + TAKEN_TTL_S, taken)

    # -- reading it ---------------------------------------------------------

    def alive(self) -> list[dict]:
        return [n for n in self.nodes.values() if n["alive"]]

    def available(self, node: dict) -> dict:
        if node["node_id"] == self.local_id and self.local is not None:
            return self.local.available
        have = node["resources_available"]
        until, taken = self._taken.get(node["node_id"], (0.0, None))
        if not taken or until < time.monotonic():
            return have
        return {k: have.get(k, 0.0) - taken.get(k, 0.0) for k in have.keys() | taken.keys()}

    def total(self, node: dict) -> dict:
        if node["node_id"] == self.local_id and self.local is not None:
            return self.local.total
        return node["resources_total"]

    def feasible(self, node: dict, demand: Demand) -> bool:
        """Whether the node could ever host the work (alive, labels, totals)."""
        return (
            node["alive"]
            and labels.matches(node.get("labels"), self.selector_for(demand))
            and fits(demand.resources, self.total(node))
        )

    def selector_for(self, demand: Demand) -> dict | None:
        """The label selector the work is placed by: its own, else (Ray's
        fallback_strategy) the first fallback some alive node could host it
        with; its own again if none can (it waits for such a node)."""
        if not demand.fallbacks:
            return demand.selector
        for selector in (demand.selector, *demand.fallbacks):
            for node in self.nodes.values():
                if (
                    node["alive"]
                    and labels.matches(node.get("labels"), selector)
                    and fits(demand.resources, self.total(node))
                ):
                    return selector
        return demand.selector

    def fits_now(self, node: dict, demand: Demand) -> bool:
        if not self.feasible(node, demand):
            return False
        if node["node_id"] == self.local_id and self.local is not None:
            return self.local.fits(demand.resources)
        return fits(demand.resources, self.available(node))

    def free_cpu_share(self, node: dict) -> float:
        total = self.total(node).get("CPU", 0.0) or 1.0
        return self.available(node).get("CPU", 0.0) / total

    # -- policies -----------------------------------------------------------

    def pick_default(self, demand: Demand, prefer: str | None = None) -> dict | None:
        """DEFAULT (see the module's header)."""
        preferred = self.nodes.get(prefer) if prefer else None
        if preferred is not None and self.fits_now(preferred, demand):
            return preferred
        free = [n for n in self.alive() if self.fits_now(n, demand)]
        if free:
            return max(free, key=self.free_cpu_share)
        if preferred is not None and self.feasible(preferred, demand):
            return preferred
        return next((n for n in self.alive() if self.feasible(n, demand)), None)

    def pick_spread(
        self, demand: Demand, load: Callable[[dict], float] | None = None
    ) -> dict | None:
        """SPREAD: where it fits now first, then the least `load` (by default
        the smallest free CPU share), ties taken in turn."""
        feasible = [n for n in self.alive() if self.feasible(n, demand)]
        if not feasible:
            return None
        load = load or (lambda n: -self.free_cpu_share(n))
        turn = next(self._turn)
        best = min(
            range(len(feasible)),
            key=lambda i: (
                not self.fits_now(feasible[i], demand),
                load(feasible[i]),
                (i - turn) % len(feasible),
            ),
        )
        return feasible[best]

    def affinity(self, demand: Demand, node_id: str, soft: bool, when_busy: str) -> str:
        """NodeAffinitySchedulingStrategy, as in Ray. If the target node is
        alive and could ever host the work, the work runs there only, waiting
        while it is busy (PIN), unless `when_busy` says to go elsewhere then
        ("spill": ROUTE) or to fail ("fail": BUSY if it has no room now, else
        PIN; a node fails a task's request should it become busy before the
        grant).
        Another node: a soft affinity is routed as DEFAULT, a hard one is
        INFEASIBLE."""
        target = self.nodes.get(node_id)
        if target is None or not self.feasible(target, demand):
            return ROUTE if soft else INFEASIBLE
        if when_busy == "spill":
            return ROUTE
        if when_busy == "fail" and not self.fits_now(target, demand):
            return BUSY
        return PIN


class Unschedulable(Exception):
    """The work's scheduling strategy can never be met."""


def place_actor(
    view: ClusterView, demand: Demand, strategy: dict | None, load: Callable[[dict], float]
) -> tuple[dict | None, bool]:
    """The node to ask for an actor's lease (None if no node can host it
    yet), and whether the actor is pinned there (node affinity). `strategy`:
    None (DEFAULT), {"type": "spread"}, or {"type": "affinity", "node_id",
    "soft", "when_busy"}. `load`: actors hosted per node, for SPREAD. Raises
    Unschedulable if the strategy can never be met."""
    kind = strategy.get("type") if strategy else None
    if kind == "affinity":
        node_id = strategy["node_id"]
        verdict = view.affinity(demand, node_id, strategy["soft"], strategy["when_busy"])
        if verdict == PIN:
            return view.nodes[node_id], True
        if verdict == INFEASIBLE:
            raise Unschedulable(
                f"its NodeAffinitySchedulingStrategy (soft=False) names node {node_id}, which "
                f"is not an alive node that could host it (it needs {demand.resources})"
            )
        if verdict == BUSY:
            raise Unschedulable(
                f"its NodeAffinitySchedulingStrategy names node {node_id}, which has no room "
                f"for it now (it needs {demand.resources}), and _fail_on_unavailable=True"
            )
        return view.pick_default(demand, prefer=node_id), False
    if kind == "spread":
        return view.pick_spread(demand, load), False
    return view.pick_default(demand), False


# -- placement group bundles ---------------------------------------------------


@dataclass
class BundleRequest:
    """A placement group's bundles, as the control store asks to place them."""

    bundles: list[dict]
    strategy: str
    selectors: list | None = None  # a label selector per bundle
    max_cpu_fraction: float | None = None  # _max_cpu_fraction_per_node
    soft_target: str | None = None  # _soft_target_node_id (STRICT_PACK)


@dataclass
class _Room:
    """What a node has left while bundles are assigned."""

    free: dict
    pg_cpus: float  # CPUs held by placement group bundles there

    def copy(self) -> _Room:
        return _Room(dict(self.free), self.pg_cpus)


def assign_bundles(
    view: ClusterView,
    request: BundleRequest,
    placed: list[str | None],
    bundle_cpus: dict[str, float],
) -> list[str] | None:
    """A node id per bundle, or None if the strategy cannot be met now.

    `placed`: the node already holding each bundle (None: to place), so a
    group that lost some bundles with a node gets only those placed again,
    by the same rules (STRICT_PACK: on the node of the others; STRICT_SPREAD:
    on nodes holding none of the others; PACK: nodes already used first;
    SPREAD: unused nodes first). `bundle_cpus`: CPUs held by every group's
    bundles per node, for `_max_cpu_fraction_per_node` (below 1, at least
    one CPU of a node stays outside placement groups, as in Ray)."""
    nodes = {n["node_id"]: n for n in view.alive()}
    rooms = {
        node_id: _Room(dict(view.available(n)), bundle_cpus.get(node_id, 0.0))
        for node_id, n in nodes.items()
    }
    order = sorted(rooms, key=lambda node_id: -rooms[node_id].free.get("CPU", 0.0))
    if request.soft_target in rooms:  # tried first; anywhere else if it has no room
        order.remove(request.soft_target)
        order.insert(0, request.soft_target)

    def take(node_id: str, index: int, room: _Room) -> bool:
        selector = request.selectors[index] if request.selectors else None
        if not labels.matches(nodes[node_id].get("labels"), selector):
            return False
        bundle = request.bundles[index]
        cpus = bundle.get("CPU", 0.0)
        if request.max_cpu_fraction is not None:
            cap = _cpu_cap(view.total(nodes[node_id]), request.max_cpu_fraction)
            if room.pg_cpus + cpus > cap + EPS:
                return False
        if not fits(bundle, room.free):
            return False
        for key, amount in bundle.items():
            room.free[key] = room.free.get(key, 0.0) - amount
        room.pg_cpus += cpus
        return True

    todo = [i for i, node_id in enumerate(placed) if node_id is None]
    used = [node_id for node_id in placed if node_id is not None]
    if any(node_id not in nodes for node_id in used):
        return None  # a node it holds bundles on is gone: those are placed first
    strategy = request.strategy
    assignment = list(placed)
    if strategy in ("PACK", "STRICT_PACK"):
        candidates = list(dict.fromkeys(used)) if used else order
        if strategy == "PACK" and used:
            candidates += [n for n in order if n not in used]
        for node_id in candidates:  # all on one node if any can
            trial = rooms[node_id].copy()
            if all(take(node_id, i, trial) for i in todo):
                for i in todo:
                    assignment[i] = node_id
                return assignment
        if strategy == "STRICT_PACK":
            return None
    for index in todo:
        taken = {n for n in assignment if n is not None}
        if strategy in ("SPREAD", "STRICT_SPREAD"):
            candidates = [n for n in order if n not in taken]
            if strategy == "SPREAD":
                candidates += [n for n in order if n in taken]
        else:  # PACK that did not fit on one node: fill the nodes in use first
            candidates = list(dict.fromkeys(n for n in assignment if n is not None)) + order
        for node_id in candidates:
            if take(node_id, index, rooms[node_id]):
                assignment[index] = node_id
                break
        else:
            return None
    return assignment


def _cpu_cap(total: dict, fraction: float) -> float:
    cpus = total.get("CPU", 0.0)
    cap = cpus * fraction
    return min(cap, cpus - 1) if fraction < 1 else cap
