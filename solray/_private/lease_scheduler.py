"""A node's lease scheduler: who gets a worker, with which resources.

An owner asks for a worker with a resource shape (REQUEST_LEASE). Where the
request should run is decided by the placement engine (placement.py) from
this node's cluster view: here, or another node, to which the owner is sent
on (spillback; the view counts what the request will take there until that
node reports). A request that stays here waits in `pending` until its shape
fits the free resources; then the resources are taken at once (so the next
decision and the next report see them) and it waits in `awaiting` for an
idle worker, which the worker pool starts if need be. Requests are served
class by class in turn (`in_turn`: an owner's requests of one shape, or one
actor's, are a class; within a class, and among the classes' first requests,
arrival order), and among those that fit, so a large request does not hold
back small ones. Taking turns is what lets an actor created behind a burst
of tasks start before the burst ends: the burst's owner asks for more leases
than it gets, and those older requests would otherwise come first each time
it gives one back (which it does every LEASE_REUSE_S, task_submitter.py), as
Ray's raylet takes scheduling classes in turn. A queued request is routed
on when the view shows another node where it fits now (unless pinned here
by node affinity, or sent on MAX_HOPS times already).

The control store asks for actors' leases the same way, tagged with the
actor's id; an actor's request that no node could ever grant is refused at
once (the control store tries again when the cluster changes), and
END_ACTOR_LEASE ends one whether it is still queued or granted.

Blocked workers. A worker whose task waits in `get` tells the node
(WORKER_BLOCKED); the node hands its CPUs back to the pool until it resumes,
so nested tasks can always run. Resuming may oversubscribe the node for a
moment, as in Ray: the alternative is deadlock.

Failures. A worker that dies frees its lease's resources; its owner learns of
it through its own connection to that worker. An owner whose connection
drops loses its leases, and the workers still leased to it are killed:
nobody is left to receive their results. Actors' leases are the exception:
their holder is the control store, which may restart (control_store.py);
the actor keeps running, its lease held by the closed connection until the
new control store takes it over (ADOPT_ACTOR_LEASE) or ends it.

Placement group bundles reserved here (RESERVE_BUNDLES) take their resources
(GPUs included, by device: see resources.py) and add the bundle's own
resources, which requests in the group ask for.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from itertools import zip_longest

import psutil

from solray._private import transport
from solray._private.placement import BUSY, INFEASIBLE, MAX_HOPS, PIN, Demand
from solray._private.placement_groups import bundle_resource_names, bundle_resources, uses_group
from solray._private.protocol import Msg
from solray._private.resources import Allocation, device_ids
from solray._private.runtime_env.spec import env_hash
from solray._private.worker_pool import WorkerPool, WorkerProcess

logger = logging.getLogger("solray.node")


@dataclass
class Lease:
    lease_id: int
    worker: WorkerProcess
    owner: transport.Connection
    resources: dict
    allocation: Allocation
    blocked: bool = False
    actor_id: bytes | None = None  # an actor's lease, held by the control store


@dataclass
class LeaseRequest:
    conn: transport.Connection
    rid: int
    demand: Demand
    actor_id: bytes | None = None
    strategy: str = "DEFAULT"
    hops: int = 0  # times it was sent on before it came here
    pinned: bool = False  # by node affinity: runs here only
    fail_when_busy: bool = False  # node affinity with _fail_on_unavailable
    env: dict = field(default_factory=dict)  # its resolved runtime env ({}: the default)
    env_key: str = ""  # spec.env_hash(env): which workers may serve it
    allocation: Allocation | None = field(default=None)  # once its resources are taken

    @property
    def resources(self) -> dict:
        return self.demand.resources

    @property
    def scheduling_class(self) -> tuple:
        return (id(self.conn), self.actor_id, self.env_key, *sorted(self.resources.items()))


def in_turn(requests: deque[LeaseRequest]) -> deque[LeaseRequest]:
    """`requests` with their classes taking turns: the first request of each
    class (classes in the order their first requests came), then the second
    of each, and so on. The result's order is its own turn order, so the
    queue keeps it from one pass to the next."""
    classes: dict[tuple, list[LeaseRequest]] = {}
    for request in requests:
        classes.setdefault(request.scheduling_class, []).append(request)
    if len(classes) < 2:
        return requests
    return deque(r for turn in zip_longest(*classes.values()) for r in turn if r is not None)


class LeaseScheduler:
    def __init__(self, node, pool: WorkerPool):
        self.node = node
        self.pool = pool
        self.resources = node.resources
        self.view = node.view
        self.leases: dict[int, Lease] = {}
        self.next_lease = 1
        self.pending: deque[LeaseRequest] = deque()  # waiting for resources
        self.awaiting: deque[LeaseRequest] = deque()  # resources taken, waiting for a worker
        self.warned_infeasible: set = set()
        # Placement group bundles reserved here: (pg, index) -> (bundle,
        # what it took from the node, the device instances it added).
        self.bundles: dict[tuple[str, int], tuple[dict, Allocation, Allocation]] = {}
        self.handlers = {
            Msg.REQUEST_LEASE: self.request_lease,
            Msg.RETURN_LEASE: self.return_lease,
            Msg.RESIZE_LEASE: self.resize_lease,
            Msg.END_ACTOR_LEASE: self.end_actor_lease,
            Msg.ADOPT_ACTOR_LEASE: self.adopt_actor_lease,
            Msg.WORKER_BLOCKED: self.worker_blocked,
            Msg.WORKER_UNBLOCKED: self.worker_unblocked,
            Msg.RESERVE_BUNDLES: self.reserve_bundles,
            Msg.RELEASE_BUNDLES: self.release_bundles,
        }

    @property
    def here(self) -> dict:
        return self.view.nodes[self.node.node_id]

    # -- requests ------------------------------------------------------------

    def request_lease(self, conn, rid, body, bufs) -> None:
        request = LeaseRequest(
            conn,
            rid,
            Demand(body["resources"], body.get("labels"), tuple(body.get("fallback") or ())),
            actor_id=body.get("actor_id"),
            strategy=body.get("strategy", "DEFAULT"),
            hops=int(body.get("spilled", 0)),
            pinned=bool(body.get("pinned")),
        )
        if body.get("runtime_env"):
            request.env = body["runtime_env"]
            request.env_key = env_hash(request.env)
        if "affinity" in body:
            soft, when_busy = body["affinity"]
            verdict = self.view.affinity(request.demand, self.node.node_id, soft, when_busy)
            if verdict == INFEASIBLE:
                conn.reply(rid, self._infeasible_reply())
                return
            if verdict == BUSY:
                conn.reply(rid, self._busy_reply())
                return
            if verdict == PIN:
                request.pinned = True
                request.fail_when_busy = when_busy == "fail"
        target = self._elsewhere(request)
        if target is not None:
            self._spill(request, target)
            return
        if not self.view.feasible(self.here, request.demand):
            if request.actor_id is not None:
                # Its placer keeps waiting actors and tries again when the
                # cluster changes.
                conn.reply(rid, self._infeasible_reply())
                return
            self._warn_infeasible(request)
        self.pending.append(request)
        self.try_grant()

    def _elsewhere(self, request: LeaseRequest) -> dict | None:
        """The node a request should go to instead of this one, or None.
        Pinned requests stay here (refused if they can never run here); ones
        sent on MAX_HOPS times stay here if they could ever run here."""
        if request.pinned:
            return None
        if request.hops >= MAX_HOPS and self.view.feasible(self.here, request.demand):
            return None
        if request.strategy == "SPREAD" and request.hops == 0:
            target = self.view.pick_spread(request.demand)
        else:
            target = self.view.pick_default(request.demand, prefer=self.node.node_id)
        if target is None or target["node_id"] == self.node.node_id:
            return None
        return target

    def _spill(self, request: LeaseRequest, target: dict) -> None:
        """Send the owner on to `target`; the view counts what the request
        will take there until that node's next report."""
        self.view.take(target["node_id"], request.resources)
        request.conn.reply(
            request.rid,
            {"spillback": {"address": target["address"], "node_id": target["node_id"]}},
        )

    def _warn_infeasible(self, request: LeaseRequest) -> None:
        shape = (
            tuple(sorted(request.resources.items())),
            tuple(sorted((request.demand.selector or {}).items())),
        )
        request.conn.send(
            Msg.LEASE_INFEASIBLE,
            {
                "resources": request.resources,
                "total": self.resources.total,
                "label_selector": request.demand.selector,
                "labels": self.node.labels,
                "first": shape not in self.warned_infeasible,
            },
        )
        self.warned_infeasible.add(shape)

    def _infeasible_reply(self) -> dict:
        return {"infeasible": True, "total": self.resources.total, "labels": self.node.labels}

    def _busy_reply(self) -> dict:
        return {"unavailable": True, "available": self.resources.available_view()}

    # -- granting ------------------------------------------------------------

    def try_grant(self) -> None:
        """Take resources for the queued requests that fit now (classes in
        turn), send on those that fit elsewhere now, then give workers to
        the requests holding resources, starting workers if need be."""
        if self.node.stopping:
            return
        remaining: deque[LeaseRequest] = deque()
        pending = in_turn(self.pending)
        while pending:
            request = pending.popleft()
            if request.conn.closed:
                continue
            if self.view.fits_now(self.here, request.demand):
                request.allocation = self.resources.acquire(request.resources)
                self.awaiting.append(request)
                continue
            if request.fail_when_busy:  # it fit when it came; not any more
                request.conn.reply(request.rid, self._busy_reply())
                continue
            target = self._elsewhere(request)
            if target is not None and self.view.fits_now(target, request.demand):
                self._spill(request, target)
                continue
            remaining.append(request)
        self.pending = remaining
        awaiting: deque[LeaseRequest] = deque()
        for request in self.awaiting:
            if request.conn.closed:
                self.resources.release(request.resources, request.allocation)
            else:
                awaiting.append(request)
        self.awaiting = awaiting
        # Each request needs a worker of its own runtime env (and as Ray picks
        # them: see take_idle); one that finds none does not hold back the others.
        waiting: deque[LeaseRequest] = deque()
        needed: dict[str, list[LeaseRequest]] = {}
        for request in self.awaiting:
            worker = self.pool.take_idle(
                request.env_key,
                for_actor=request.actor_id is not None,
                gpus=bool(device_ids(request.allocation)),
            )
            if worker is None:
                waiting.append(request)
                needed.setdefault(request.env_key, []).append(request)
            else:
                self._grant(request, worker)
        self.awaiting = waiting
        for env_key, requests in needed.items():
            for _ in range(max(0, len(requests) - self.pool.starting_for[env_key])):
                self.pool.start_worker(env_key=env_key, env=requests[0].env)
        self.node.schedule_report()

    def env_failed(self, env_key: str, error: str) -> None:
        """A runtime env could not be set up here: the requests waiting for
        it fail with RuntimeEnvSetupError (their owners fail their tasks)."""
        reply = {"runtime_env_error": error}
        for queue in (self.pending, self.awaiting):
            for request in [r for r in queue if r.env_key == env_key]:
                queue.remove(request)
                if request.allocation is not None:
                    self.resources.release(request.resources, request.allocation)
                if not request.conn.closed:
                    request.conn.reply(request.rid, reply)
        self.try_grant()

    def _grant(self, request: LeaseRequest, worker: WorkerProcess) -> None:
        lease = Lease(
            self.next_lease,
            worker,
            request.conn,
            request.resources,
            request.allocation,
            actor_id=request.actor_id,
        )
        self.next_lease += 1
        self.leases[lease.lease_id] = lease
        worker.lease = lease
        worker.ran_tasks = True
        worker.held_gpus = worker.held_gpus or bool(device_ids(lease.allocation))
        request.conn.peer.setdefault("leases", set()).add(lease.lease_id)
        request.conn.reply(
            request.rid,
            {
                "lease_id": lease.lease_id,
                "worker_id": worker.worker_id,
                "address": worker.address,
                "gpu_ids": device_ids(lease.allocation),
                "node_id": self.node.node_id,
            },
        )

    # -- leases --------------------------------------------------------------

    def return_lease(self, conn, rid, body, bufs) -> None:
        lease = self.leases.get(body["lease_id"])
        if lease is not None and lease.owner is conn:
            if body.get("kill"):
                self.pool.remove(
                    lease.worker, ("INTENDED_USER_EXIT", "killed by its owner (kill or cancel)")
                )
            else:
                # A retiring worker (max_calls reached) exits by itself once
                # nothing it holds is needed; until then it is nobody's.
                self._release_lease(lease, back_to_pool=not body.get("retire"))
        self.try_grant()
        conn.reply(rid, True)

    def end_actor_lease(self, conn, rid, body, bufs) -> None:
        """The control store gave up an actor's attempt here: its queued
        request is dropped (and answered), or its lease returned and its
        worker killed. Sent after the request on the same connection, so one
        of the two is here, whatever the attempt had got to."""
        actor_id = body["actor_id"]

        def ended(request: LeaseRequest) -> bool:
            return request.conn is conn and request.actor_id == actor_id

        for request in [r for r in self.pending if ended(r)]:
            self.pending.remove(request)
            conn.reply(request.rid, {"cancelled": True})
        for request in [r for r in self.awaiting if ended(r)]:
            self.awaiting.remove(request)
            self.resources.release(request.resources, request.allocation)
            conn.reply(request.rid, {"cancelled": True})
        for lease in list(self.leases.values()):
            if lease.actor_id == actor_id and (lease.owner is conn or lease.owner.closed):
                # A process that died by itself: its exit status tells.
                reason = None if body.get("died") else ("INTENDED_SYSTEM_EXIT", body.get("cause"))
                self.pool.remove(lease.worker, reason)
        self.try_grant()

    def adopt_actor_lease(self, conn, rid, body, bufs) -> None:
        """A restarted control store takes over an actor's lease whose
        holder (its previous incarnation) is gone; False if there is none."""
        for lease in self.leases.values():
            if lease.actor_id == body["actor_id"] and lease.owner.closed:
                lease.owner = conn
                conn.peer.setdefault("leases", set()).add(lease.lease_id)
                conn.reply(rid, True)
                return
        conn.reply(rid, False)

    def orphaned_actors(self) -> list[dict]:
        """Actors running here whose lease holder (a control store that
        died) is gone: for the next control store to adopt or end. (A new
        control store may already hold leases here: those are not in doubt.)"""
        return [
            {"actor_id": lease.actor_id, "address": lease.worker.address}
            for lease in self.leases.values()
            if lease.actor_id is not None and lease.owner.closed
        ]

    def end_orphaned_actors(self, actor_ids: list[bytes]) -> None:
        """The control store does not know these orphaned actors as alive here."""
        ending = set(actor_ids)
        for lease in list(self.leases.values()):
            if lease.actor_id in ending and lease.owner.closed:
                self.pool.remove(lease.worker)
        self.try_grant()

    def resize_lease(self, conn, rid, body, bufs) -> None:
        """An actor placed with more than it runs with (a CPU, by default; a
        bundle's CPU in a placement group) gives the rest back."""
        lease = self.leases.get(body["lease_id"])
        if lease is None or lease.owner is not conn:
            return
        running = body["resources"]
        freed = {k: v - running.get(k, 0.0) for k, v in lease.resources.items()}
        freed = {k: v for k, v in freed.items() if v > 0}
        if freed:
            # A blocked worker's CPUs are lent out already (ResourceSet.release).
            self.resources.release(freed, {}, blocked=lease.blocked)
            lease.resources = {k: v - freed.get(k, 0.0) for k, v in lease.resources.items()}
            self.try_grant()

    def _release_lease(self, lease: Lease, back_to_pool: bool) -> None:
        if self.leases.pop(lease.lease_id, None) is None:
            return
        lease.owner.peer.get("leases", set()).discard(lease.lease_id)
        self.resources.release(lease.resources, lease.allocation, blocked=lease.blocked)
        if back_to_pool and lease.worker.worker_id in self.pool.workers:
            self.pool.make_idle(lease.worker)
        self.node.schedule_report()

    def worker_lost(self, worker: WorkerProcess) -> None:
        """The pool dropped a leased worker: its lease's resources are free."""
        self._release_lease(worker.lease, back_to_pool=False)

    def worker_blocked(self, conn, rid, body, bufs) -> None:
        worker = conn.peer.get("worker")
        lease = worker.lease if worker else None
        if lease is not None and not lease.blocked:
            lease.blocked = True
            self.resources.lend_cpus(lease.resources)
            self.try_grant()

    def worker_unblocked(self, conn, rid, body, bufs) -> None:
        worker = conn.peer.get("worker")
        lease = worker.lease if worker else None
        if lease is not None and lease.blocked:
            lease.blocked = False
            self.resources.reclaim_cpus(lease.resources)
            self.node.schedule_report()

    def on_close(self, conn) -> None:
        """A connection closed: a worker's (it is gone), or an owner's (the
        workers leased to it are killed)."""
        worker = conn.peer.get("worker")
        if worker is not None:
            self.pool.remove(worker, None)  # it is gone: its exit status says how
        for lease_id in list(conn.peer.get("leases", ())):
            lease = self.leases.get(lease_id)
            if lease is not None and lease.actor_id is None:
                self.pool.remove(lease.worker)
        self.try_grant()

    async def watch_memory(self, threshold: float, period_s: float) -> None:
        """Above the memory threshold, kill the worker of the most recently
        granted task lease (never an actor's), telling its owner first, so the
        task fails with OutOfMemoryError (after its retries) instead of the
        kernel's OOM killer taking some random process."""
        while True:
            await asyncio.sleep(period_s)
            mem = psutil.virtual_memory()
            used = 1.0 - mem.available / mem.total
            if used <= threshold:
                continue
            victims = [lease for lease in self.leases.values() if lease.actor_id is None]
            if not victims:
                continue
            lease = max(victims, key=lambda lease: lease.lease_id)
            message = (
                f"Task was killed due to the node running low on memory: memory used "
                f"{used:.0%} of {mem.total / 2**30:.1f} GiB exceeds the threshold "
                f"{threshold:.0%} (memory_usage_threshold). Its worker "
                f"(pid {lease.worker.process.pid}) was the most recently started task."
            )
            logger.warning(message)
            lease.owner.send(
                Msg.WORKER_OOM_KILLED, {"address": lease.worker.address, "message": message}
            )
            self.pool.remove(lease.worker, ("NODE_OUT_OF_MEMORY", message))
            await asyncio.sleep(1.0)  # let the memory be returned before judging again

    # -- placement group bundles ---------------------------------------------

    def reserve_bundles(self, conn, rid, body, bufs) -> None:
        """Set aside a placement group's bundles here, all or none. A
        bundle's GPUs are devices taken now; they back its own GPU resources."""
        pg_id, bundles = body["pg_id"], {int(i): b for i, b in body["bundles"].items()}
        need: dict[str, float] = {}
        for bundle in bundles.values():
            for k, v in bundle.items():
                need[k] = need.get(k, 0.0) + v
        if not self.resources.fits(need):
            conn.reply(rid, False)
            return
        for index, bundle in bundles.items():
            taken = self.resources.acquire(bundle)
            devices = taken.get("GPU")
            names = bundle_resource_names("GPU", pg_id, index)
            instances = {name: dict(devices) for name in names} if devices else {}
            self.resources.add(bundle_resources(bundle, pg_id, index), instances)
            self.bundles[(pg_id, index)] = (bundle, taken, instances)
        self.node.schedule_report()
        conn.reply(rid, True)
        self.try_grant()

    def release_bundles(self, conn, rid, body, bufs) -> None:
        """Give a group's bundles back, devices included; workers using the
        group here are killed (as in Ray)."""
        pg_id = body["pg_id"]
        for index in body["indexes"]:
            reserved = self.bundles.pop((pg_id, index), None)
            if reserved is None:
                continue
            bundle, taken, instances = reserved
            for lease in list(self.leases.values()):
                if uses_group(lease.resources, pg_id):
                    self.pool.remove(lease.worker)
            for request in [r for r in self.awaiting if uses_group(r.resources, pg_id)]:
                # Holding the group's resources, not granted yet: back to waiting.
                self.awaiting.remove(request)
                self.resources.release(request.resources, request.allocation)
                request.allocation = None
                self.pending.append(request)
            self.resources.remove(bundle_resources(bundle, pg_id, index), instances)
            self.resources.release(bundle, taken)
        self.node.schedule_report()
        self.try_grant()
