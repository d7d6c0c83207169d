"""The actor directory and lifecycle, kept by the control store.

Creating, finding, restarting and killing actors goes through here, so an
actor can be named, looked up from any process, and restarted by someone who
outlives its worker. Method calls do not: callers push them straight to the
actor's worker once they know its address (actor_submitter.py).

An actor's life:

    PENDING   registered (its name is taken) but not placed yet: the creator
              is still resolving constructor arguments, or no node fits
    ALIVE     its constructor returned on a worker; `address` is that worker
    RESTARTING  its attempt ended (below) and `max_restarts` allows another
              go: a new lease is requested and the constructor runs again
    DEAD      for good: killed, out of restarts, constructor raised, its owner
              died (non-detached actors fate-share with their owner), or its
              placement group was removed

Attempts. Each placement of an actor (its first, and each restart) is an
*attempt*: a lease requested from the node the placement engine picks
(placement.place_actor; a node with no room now may send the request on, and
the control store follows), then the worker that lease grants, then the
constructor run there. The control store holds that lease and a connection
to the worker; the connection closing is how it learns the actor's process
died. However an attempt ends (kill before or after the constructor ran, the
process dying, the constructor raising, exit_actor(), the owner dying, the
last handle dropped), `_end_attempt` is the one place that gives it up: it
tells the attempt's node (the one holding its request or lease)
END_ACTOR_LEASE, which drops the lease request if it is still queued, or
returns the lease and kills its worker. Messages to a node arrive in order,
so whatever the attempt was doing (waiting for a grant, connecting,
constructing) the node frees it. The attempt's coroutine notices it is stale
at its next step and stops. Only then is the next attempt (a restart)
placed, or the actor marked DEAD.

Graceful ends. When the owner lets go of a non-detached actor (its last
handle gone: RELEASE_ACTOR) or a driver shuts down (SHUTDOWN_OWNED_ACTORS),
the actor's worker is asked to end by itself (ACTOR_SHUTDOWN): it runs the
class's `__ray_shutdown__` and the process's atexit handlers, then exits;
exit_actor() and `__ray_terminate__` do the same from inside (ACTOR_EXITING).
Either way the worker gets `graceful_timeout_s` (Ray's
`actor_graceful_shutdown_timeout_ms`, 30 s) before its attempt is ended,
which kills it. `kill()`, an owner that dies and a process that crashes end
the attempt at once, with no hooks, as in Ray.

Callers waiting in GET_ACTOR are answered when the actor is ALIVE at an
address they do not already know to be dead, or DEAD.

Persistence. Every entry is written to the control store's storage when its
state changes (`_save`); registering (its name taken) and creating (its
constructor stored, for restarts) are answered once written. A control
store started again loads them (`restore`): an ALIVE actor is *recovering*
until its node comes back and hands over its lease (ADOPT_ACTOR_LEASE) and
its worker answers again; an actor being placed is placed again; the owner
of a non-detached one must say who it is (CONTROL_HELLO, `claim`) within the
recovery window, or the actor ends as if its owner had died.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, fields

import msgpack

from solray._private import ids, transport
from solray._private.control_storage import ACTORS
from solray._private.placement import Demand, Unschedulable, place_actor
from solray._private.placement_groups import uses_group
from solray._private.protocol import Msg

logger = logging.getLogger("solray.control_store")

# A node sends a request on at most placement.MAX_HOPS times before queueing
# it; this bounds the rest (a request no node can hold bounces otherwise).
MAX_LEASE_HOPS = 16

PENDING, ALIVE, RESTARTING, DEAD = "PENDING", "ALIVE", "RESTARTING", "DEAD"


@dataclass
class ActorEntry:
    actor_id: bytes
    name: str | None
    namespace: str
    detached: bool
    max_restarts: int
    resources: dict
    placement_resources: dict
    meta: dict
    owner: transport.Connection | None  # None: restored, its owner not back yet
    job: int
    owner_address: str = ""  # the creator's core worker, which counts its handles
    strategy: dict | None = None
    label_selector: dict | None = None  # the labels its node must match
    fallback: list = field(default_factory=list)  # fallback_strategy's selectors
    state: str = PENDING
    num_restarts: int = 0
    address: str | None = None
    node_id: str | None = None
    pid: int | None = None
    spec: tuple | None = None  # (body, buffers) of the creation push
    attempt: int = 0  # bumped when an attempt ends: a stale placement stops
    node_conn: transport.Connection | None = None  # asked for this attempt's lease
    worker_conn: transport.Connection | None = None
    no_restart: bool = False
    death_cause: str | None = None
    unschedulable: bool = False  # dead because its scheduling strategy can never be met
    runtime_env: dict = field(default_factory=dict)  # resolved; its worker must have it
    runtime_env_failed: bool = False  # dead because its runtime env could not be set up
    creation_error: list | None = None  # [head, buffers] of the constructor's error
    waiters: list = field(default_factory=list)
    on_dead: list = field(default_factory=list)  # callbacks once DEAD (a driver's shutdown)
    recovering: bool = False  # restored ALIVE: its lease and worker not taken back yet


# What of an entry is stored: all but its connections and waiters (and the
# recovery flag, which only a restored entry has).
STORED = tuple(
    f.name
    for f in fields(ActorEntry)
    if f.name
    not in ("owner", "node_conn", "worker_conn", "waiters", "on_dead", "recovering", "attempt")
)


def _plain(value):
    """Buffers (memoryviews) as bytes, for msgpack."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# How long an actor ending gracefully may take before it is killed (Ray's
# default for actor_graceful_shutdown_timeout_ms).
GRACEFUL_TIMEOUT_S = 30.0


class RuntimeEnvFailed(Exception):
    """The node could not set up the actor's runtime env (the message says why)."""


class ActorManager:
    def __init__(self, store, graceful_timeout_s: float = GRACEFUL_TIMEOUT_S):
        self.store = store
        self.graceful_timeout_s = graceful_timeout_s
        self.actors: dict[bytes, ActorEntry] = {}
        self.named: dict[tuple[str, str], bytes] = {}
        self._node_conns = transport.ConnectionCache(store.token)
        self._unplaced: list[ActorEntry] = []
        self._placing: set[asyncio.Task] = set()
        self.handlers = {
            Msg.REGISTER_ACTOR: self.register,
            Msg.CREATE_ACTOR: self.create,
            Msg.GET_ACTOR: self.get_actor,
            Msg.GET_NAMED_ACTOR: self.get_named,
            Msg.KILL_ACTOR: self.kill,
            Msg.RELEASE_ACTOR: self.release,
            Msg.ACTOR_EXITING: self.exiting,
            Msg.LIST_ACTORS: self.list_actors,
            Msg.SHUTDOWN_OWNED_ACTORS: self.shutdown_owned,
        }

    # -- requests ----------------------------------------------------------

    def register(self, conn, rid, body, bufs) -> None:
        if body["actor_id"] in self.actors:
            # Sent again after a control store restart: stored already.
            conn.reply(rid, {"ok": True})
            return
        name, namespace = body.get("name"), body["namespace"]
        if name:
            existing = self.actors.get(self.named.get((namespace, name), b""))
            if existing is not None and existing.state != DEAD:
                if body.get("get_if_exists"):
                    conn.reply(
                        rid,
                        {
                            "existing": existing.actor_id,
                            "meta": existing.meta,
                            "owner": existing.owner_address,
                        },
                    )
                else:
                    conn.reply(
                        rid,
                        {
                            "error": (
                                f"The name {name} (namespace={namespace}) is already taken. Please "
                                "use a different name or get the existing actor using "
                                f"solray.get_actor('{name}', namespace='{namespace}')"
                            )
                        },
                    )
                return
        entry = ActorEntry(
            actor_id=body["actor_id"],
            name=name,
            namespace=namespace,
            detached=body.get("detached", False),
            max_restarts=body.get("max_restarts", 0),
            resources=body["resources"],
            placement_resources=body["placement_resources"],
            meta=body["meta"],
            owner=conn,
            job=body.get("job", 0),
            strategy=body.get("strategy"),
            label_selector=body.get("label_selector"),
            fallback=body.get("fallback") or [],
            owner_address=body.get("owner", ""),
            runtime_env=body.get("runtime_env") or {},
        )
        self.actors[entry.actor_id] = entry
        if name:
            self.named[(namespace, name)] = entry.actor_id
        conn.peer.setdefault("owned_actors", set()).add(entry.actor_id)
        self._save(entry)
        self.store.persist.after_commit(lambda: conn.reply(rid, {"ok": True}))

    def create(self, conn, rid, body, bufs) -> None:
        entry = self.actors.get(body["actor_id"])
        if entry is None or entry.state == DEAD or entry.spec is not None:
            conn.reply(rid, True)  # (a repeat after a control store restart: placed already)
            return
        if "dep_error" in body:
            # A constructor argument holds an error: the actor never starts.
            entry.creation_error = [body["dep_error"], [bytes(b) for b in bufs]]
            self._set_dead(entry, "an argument of its constructor raised an error")
        else:
            entry.spec = (body["spec"], [bytes(b) for b in bufs])
            self._save(entry)
            self._place(entry)
        self.store.persist.after_commit(lambda: conn.reply(rid, True))

    def get_actor(self, conn, rid, body, bufs) -> None:
        entry = self.actors.get(body["actor_id"])
        if entry is None:
            conn.reply(rid, {"state": DEAD, "cause": "the actor is unknown to this cluster"})
            return
        waiter = (conn, rid, body.get("not_address"))
        if not self._answer(entry, waiter):
            entry.waiters.append(waiter)

    def get_named(self, conn, rid, body, bufs) -> None:
        entry = self.actors.get(self.named.get((body["namespace"], body["name"]), b""))
        if entry is None or entry.state == DEAD:
            conn.reply(rid, None)
        else:
            conn.reply(
                rid, {"actor_id": entry.actor_id, "meta": entry.meta, "owner": entry.owner_address}
            )

    def kill(self, conn, rid, body, bufs) -> None:
        """Ends the current attempt wherever it is (still placing, in its
        constructor, or running); with no_restart=False that uses up a
        restart, as in Ray. Answered once the actor's process is gone, so
        calls made after `kill()` returns cannot reach it."""
        entry = self.actors.get(body["actor_id"])
        if entry is None or entry.state == DEAD:
            conn.reply(rid, True)
            return
        if body.get("no_restart", True):
            entry.no_restart = True
            entry.death_cause = "it was killed by solray.kill()"
        worker = entry.worker_conn
        self._attempt_ended(entry, "it was killed by solray.kill()")
        if worker is None:
            conn.reply(rid, True)
        else:
            worker.add_close_callback(lambda c: conn.reply(rid, True))

    def release(self, conn, rid, body, bufs) -> None:
        """The owner holds no handle any more: a non-detached actor ends
        gracefully, after the calls it has received."""
        entry = self.actors.get(body["actor_id"])
        if entry is not None and not entry.detached:
            self._end_gracefully(entry, "all references to the actor were removed", now=False)

    def exiting(self, conn, rid, body, bufs) -> None:
        """exit_actor() or __ray_terminate__: its process answers the call,
        runs its shutdown hooks and exits, which ends the attempt (with no
        restart); killed if the hooks outlast the graceful timeout."""
        entry = self.actors.get(body["actor_id"])
        if entry is not None:
            entry.no_restart = True
            entry.death_cause = "it called exit_actor()"
            self._kill_after_timeout(entry)
        conn.reply(rid, True)

    def shutdown_owned(self, conn, rid, body, bufs) -> None:
        """A driver's shutdown(): its non-detached actors end gracefully now
        (calls in flight are not waited for: nobody will read their
        results); answered once every one is DEAD."""
        ending = [
            entry
            for actor_id in conn.peer.get("owned_actors", ())
            if (entry := self.actors.get(actor_id)) is not None
            and not entry.detached
            and entry.state != DEAD
        ]
        left = len(ending)
        if not left:
            conn.reply(rid, True)
            return

        def one_dead() -> None:
            nonlocal left
            left -= 1
            if not left:
                conn.reply(rid, True)

        for entry in ending:
            entry.on_dead.append(one_dead)
        for entry in ending:
            self._end_gracefully(entry, "its owner (the driver) called shutdown()", now=True)

    def list_actors(self, conn, rid, body, bufs) -> None:
        conn.reply(
            rid,
            [
                {
                    "actor_id": e.actor_id.hex(),
                    "class_name": e.meta.get("class_name"),
                    "state": e.state,
                    "name": e.name or "",
                    "ray_namespace": e.namespace,
                    "job_id": ids.job_id_bytes(e.job).hex(),
                    "pid": e.pid,
                    "node_id": e.node_id,
                    "num_restarts": e.num_restarts,
                    "death_cause": e.death_cause,
                    "is_detached": e.detached,
                    "required_resources": e.resources,
                    "label_selector": e.label_selector,
                    "placement_group_id": _placement_group_of(e.resources),
                }
                for e in self.actors.values()
            ],
        )

    # -- events ------------------------------------------------------------

    def on_connection_closed(self, conn) -> None:
        for actor_id in conn.peer.get("owned_actors", ()):
            entry = self.actors.get(actor_id)
            if entry is not None and not entry.detached:
                self._terminate(entry, "its owner (the process that created it) died")
        for entry in self.actors.values():
            entry.waiters = [w for w in entry.waiters if w[0] is not conn]

    def on_node_removed(self, node_id: str) -> None:
        """Restored actors on a node that did not come back: their attempt
        ended with it (a connected actor learns so from its worker's
        connection)."""
        for entry in list(self.actors.values()):
            if entry.recovering and entry.node_id == node_id:
                self._attempt_ended(entry, "its node died while the control store was down")

    def on_cluster_changed(self) -> None:
        """A node came or went, or what a node has changed (a placement
        group's bundle reserved or released there): actors that found no
        node, or whose lease failed on a node dying, try again."""
        unplaced, self._unplaced = self._unplaced, []
        for entry in unplaced:
            self._place(entry)

    def on_group_removed(self, pg_id: str) -> None:
        """Actors placed (or waiting to be) in a removed group end for good."""
        for entry in list(self.actors.values()):
            if uses_group(entry.placement_resources, pg_id):
                self._terminate(entry, "its placement group was removed")

    # -- persistence and recovery --------------------------------------------

    def _save(self, entry: ActorEntry) -> None:
        row = {name: _plain(getattr(entry, name)) for name in STORED}
        if entry.state == DEAD:
            row["spec"] = None  # never placed again
        self.store.persist.put(ACTORS, entry.actor_id, msgpack.packb(row))

    def restore(self, tables: dict) -> None:
        """Entries a previous control store stored (see the header)."""
        for value in tables[ACTORS].values():
            row = msgpack.unpackb(value, strict_map_key=False)
            if row.get("spec") is not None:
                row["spec"] = tuple(row["spec"])
            entry = ActorEntry(owner=None, **row)
            self.actors[entry.actor_id] = entry
            if entry.state == DEAD:
                continue
            if entry.name:
                self.named[(entry.namespace, entry.name)] = entry.actor_id
            if entry.state == ALIVE:
                entry.recovering = True
            elif entry.spec is not None:
                entry.state = RESTARTING if entry.num_restarts else PENDING
                entry.node_id = None
                self._unplaced.append(entry)  # placed once nodes are back

    def claim(self, conn) -> None:
        """A core worker said who it is: the restored actors it owns are
        tied to its connection again (they end when it closes)."""
        address = conn.peer["address"]
        for entry in self.actors.values():
            if entry.owner is None and entry.owner_address == address:
                entry.owner = conn
                conn.peer.setdefault("owned_actors", set()).add(entry.actor_id)

    def end_recovery(self) -> None:
        """The recovery window is over: restored non-detached actors whose
        owner did not come back lost it meanwhile."""
        for entry in list(self.actors.values()):
            if entry.owner is None and not entry.detached and entry.state != DEAD:
                self._terminate(entry, "its owner (the process that created it) died")

    def on_node_registered(self, node: dict, hosted: list[dict]) -> list[bytes]:
        """A node (re)registered with the actors it hosts whose lease our
        previous incarnation held: restored ALIVE ones there are taken back;
        the ids of those that are not alive there by our tables (their
        placement was under way, or they ended meanwhile) are returned, for
        the node to end."""
        here = {h["actor_id"]: h["address"] for h in hosted}
        drop = []
        for actor_id, address in here.items():
            entry = self.actors.get(actor_id)
            if entry is None or entry.state != ALIVE or entry.address != address:
                drop.append(actor_id)
            elif entry.recovering:
                self._place_task(self._recover(entry, node, entry.attempt))
        for entry in list(self.actors.values()):
            if entry.recovering and entry.node_id == node["node_id"] and entry.actor_id not in here:
                self._attempt_ended(entry, "its worker died while the control store was down")
        return drop

    async def _recover(self, entry: ActorEntry, node: dict, attempt: int) -> None:
        """Take a restored actor's lease back from its node and reconnect to
        its worker; if either is gone, the attempt has ended."""
        try:
            node_conn = await self.node_conn(node)
            adopted = await node_conn.request(Msg.ADOPT_ACTOR_LEASE, {"actor_id": entry.actor_id})
            if entry.attempt != attempt:
                return
            if not adopted:
                raise transport.ConnectionLost("its lease is gone")
            entry.node_conn = node_conn
            worker = await transport.connect(
                entry.address, self.store.token, on_close=lambda c: self._worker_lost(entry, c)
            )
        except (OSError, TimeoutError, transport.ConnectionLost, transport.RemoteError):
            if entry.attempt == attempt:
                self._attempt_ended(entry, "its worker died while the control store was down")
            return
        if entry.attempt != attempt:
            worker.close()
            return
        entry.worker_conn = worker
        entry.recovering = False

    async def _end_orphan(self, node_id: str, actor_id: bytes, cause: str, died: bool) -> None:
        """End a restored actor's lease that was never taken back (the node
        ends leases whose holder's connection closed, too)."""
        node = self.store.view.nodes.get(node_id)
        if node is None or not node["alive"]:
            return
        try:
            (await self.node_conn(node)).send(
                Msg.END_ACTOR_LEASE, {"actor_id": actor_id, "cause": cause, "died": died}
            )
        except (OSError, TimeoutError, transport.ConnectionLost):
            pass

    # -- placement and restarts ---------------------------------------------

    def _place(self, entry: ActorEntry) -> None:
        self._place_task(self._start(entry, entry.attempt))

    def _place_task(self, coro) -> None:
        # asyncio keeps only weak references to tasks: hold each until done.
        task = asyncio.get_running_loop().create_task(coro)
        self._placing.add(task)
        task.add_done_callback(self._placing.discard)

    def _demand(self, entry: ActorEntry) -> Demand:
        return Demand(entry.placement_resources, entry.label_selector, tuple(entry.fallback))

    def _pick_node(self, entry: ActorEntry) -> tuple[dict | None, bool]:
        """Where to place (or restart) an actor, by the placement engine
        (placement.place_actor); SPREAD counts the actors each node hosts."""
        hosted: dict[str, int] = {}
        for other in self.actors.values():  # placed, or being placed
            if other.state != DEAD and other.node_id is not None:
                hosted[other.node_id] = hosted.get(other.node_id, 0) + 1
        return place_actor(
            self.store.view,
            self._demand(entry),
            entry.strategy,
            lambda node: hosted.get(node["node_id"], 0),
        )

    async def node_conn(self, node: dict) -> transport.Connection:
        return await self._node_conns.get(node["address"])

    async def _start(self, entry: ActorEntry, attempt: int) -> None:
        """One attempt's placement: lease, connect, construct. After each wait
        it stops if the attempt ended meanwhile; `_end_attempt` has then told
        the node to free whatever this attempt got there."""
        try:
            node, pinned = self._pick_node(entry)
        except Unschedulable as e:
            entry.no_restart = entry.unschedulable = True
            self._attempt_ended(entry, str(e))
            return
        entry.node_id = node["node_id"] if node is not None else None
        if node is None:
            logger.warning(
                "no node can host actor %s (needs %s, label_selector %s); waiting for one",
                entry.meta.get("class_name"),
                entry.placement_resources,
                entry.label_selector,
            )
            self._unplaced.append(entry)
            return
        try:
            grant = await self._lease(entry, attempt, node, pinned)
            if grant is None:
                return  # the attempt ended meanwhile
        except RuntimeEnvFailed as e:
            if entry.attempt == attempt:
                # As in Ray: not restarted, and its calls raise RuntimeEnvSetupError.
                entry.no_restart = entry.runtime_env_failed = True
                self._attempt_ended(entry, f"its runtime_env could not be set up: {e}")
            return
        except (OSError, transport.ConnectionLost, transport.RemoteError) as e:
            if entry.attempt != attempt:
                return
            logger.warning("could not lease a worker for an actor: %s", e)
            entry.node_conn = None
            self._unplaced.append(entry)
            node = self.store.view.nodes.get(entry.node_id)
            if node is None or not self.store.view.feasible(node, self._demand(entry)):
                # The node died, or lost what the actor needs (a bundle),
                # and we know it already: try the nodes left now.
                self.on_cluster_changed()
            return
        node_conn = entry.node_conn
        try:
            worker = await transport.connect(
                grant["address"],
                self.store.token,
                on_close=lambda c: self._worker_lost(entry, c),
            )
        except (TimeoutError, OSError, transport.ConnectionLost):
            if entry.attempt == attempt:
                self._attempt_ended(entry, "its worker process died unexpectedly", died=True)
            return
        if entry.attempt != attempt:
            worker.close()
            return
        entry.worker_conn = worker
        body, buffers = entry.spec
        body = dict(body, gpu=grant["gpu_ids"], restarts=entry.num_restarts)
        try:
            reply, reply_buffers = await worker.request(
                Msg.PUSH_ACTOR_CREATE, body, buffers, raw=True
            )
        except transport.ConnectionLost:
            return  # the worker died: _worker_lost ends the attempt
        except transport.RemoteError as e:
            if entry.attempt == attempt:
                self._attempt_ended(entry, f"its worker could not run the constructor ({e})")
            return
        if entry.attempt != attempt:
            return
        if reply.get("error") is not None:
            entry.creation_error = [reply["error"], reply_buffers]
            entry.no_restart = True
            entry.death_cause = "its constructor raised an exception"
            self._attempt_ended(entry, entry.death_cause)
            return
        if entry.placement_resources != entry.resources:
            # Placed with a CPU, runs with none (Ray's default for actors).
            node_conn.send(
                Msg.RESIZE_LEASE, {"lease_id": grant["lease_id"], "resources": entry.resources}
            )
        entry.state = ALIVE
        entry.address = grant["address"]
        entry.node_id = grant["node_id"]
        entry.pid = reply.get("pid")
        self._save(entry)
        self._notify(entry)

    async def _lease(
        self, entry: ActorEntry, attempt: int, node: dict, pinned: bool
    ) -> dict | None:
        """Ask `node` for the actor's lease, following the nodes when they
        send it on (a node with no room now routes it to one with room, as it
        does for tasks). `entry.node_conn` is always the node holding the
        request, so ending the attempt frees it there. None if the attempt
        ended meanwhile."""
        body = {
            "resources": entry.placement_resources,
            "labels": entry.label_selector,
            "fallback": entry.fallback,
            "actor_id": entry.actor_id,
        }
        if entry.runtime_env:
            body["runtime_env"] = entry.runtime_env
        if pinned:
            body["pinned"] = True
        for hops in range(MAX_LEASE_HOPS):
            self.store.view.take(node["node_id"], entry.placement_resources)
            node_conn = await self.node_conn(node)
            if entry.attempt != attempt:
                return None
            entry.node_conn, entry.node_id = node_conn, node["node_id"]
            grant = await node_conn.request(Msg.REQUEST_LEASE, dict(body, spilled=hops))
            if entry.attempt != attempt:
                return None
            if "runtime_env_error" in grant:
                raise RuntimeEnvFailed(grant["runtime_env_error"])
            if "spillback" not in grant:
                if "lease_id" not in grant:
                    raise transport.RemoteError(f"the node did not grant a worker: {grant}")
                return grant
            target = grant["spillback"]
            node = self.store.view.nodes.get(target["node_id"]) or target
        raise transport.RemoteError("the actor's lease request was sent on too many times")

    def _worker_lost(self, entry: ActorEntry, conn) -> None:
        if entry.worker_conn is conn:
            self._attempt_ended(entry, "its worker process died unexpectedly", died=True)

    def _end_gracefully(self, entry: ActorEntry, cause: str, now: bool) -> None:
        """The actor ends for good, through its own shutdown hooks if it is
        running (ACTOR_SHUTDOWN; `now`: without waiting for the calls it has
        received), else at once."""
        if entry.state == DEAD:
            return
        if entry.state != ALIVE or entry.worker_conn is None:
            self._terminate(entry, cause)
            return
        entry.no_restart = True
        entry.death_cause = cause
        entry.worker_conn.send(Msg.ACTOR_SHUTDOWN, {"now": now})
        self._kill_after_timeout(entry)

    def _kill_after_timeout(self, entry: ActorEntry) -> None:
        """An actor ending by itself gets graceful_timeout_s to exit; then
        its attempt is ended, which kills its worker."""
        attempt = entry.attempt

        def overdue() -> None:
            if entry.attempt == attempt and entry.state != DEAD:
                logger.warning(
                    "actor %s did not exit within %.3g s of being asked to end "
                    "(its __ray_shutdown__ or atexit handlers hung?): killing it",
                    entry.actor_id.hex(),
                    self.graceful_timeout_s,
                )
                self._attempt_ended(entry, entry.death_cause or "it was asked to exit")

        asyncio.get_running_loop().call_later(self.graceful_timeout_s, overdue)

    def _terminate(self, entry: ActorEntry, cause: str) -> None:
        """The actor ends for good (its owner died, or released it)."""
        if entry.state == DEAD:
            return
        entry.no_restart = True
        entry.death_cause = cause
        self._attempt_ended(entry, cause)

    def _attempt_ended(self, entry: ActorEntry, cause: str, died: bool = False) -> None:
        """The current attempt is over: give it up, then restart the actor if
        it may, else it is DEAD. Every way an actor ends comes here."""
        self._end_attempt(entry, cause, died)
        if not entry.no_restart and (
            entry.max_restarts == -1 or entry.num_restarts < entry.max_restarts
        ):
            entry.num_restarts += 1
            entry.state = RESTARTING
            self._save(entry)
            if entry.spec is not None:  # else it is placed once its arguments are
                self._place(entry)
            return
        cause = entry.death_cause or cause
        if entry.max_restarts and not entry.no_restart:
            cause += f" and it was already restarted {entry.num_restarts} time(s)"
        self._set_dead(entry, cause)

    def _end_attempt(self, entry: ActorEntry, cause: str, died: bool) -> None:
        """The one place an attempt's resources are given back: its node drops
        the lease request or returns the lease, killing the worker. `cause`
        and `died` (its process died by itself) are what list_workers shows."""
        entry.attempt += 1
        if entry.node_conn is not None:
            entry.node_conn.send(
                Msg.END_ACTOR_LEASE, {"actor_id": entry.actor_id, "cause": cause, "died": died}
            )
        elif entry.recovering and entry.node_id is not None:
            self._place_task(self._end_orphan(entry.node_id, entry.actor_id, cause, died))
        entry.recovering = False
        if entry in self._unplaced:
            self._unplaced.remove(entry)
        entry.node_conn = entry.worker_conn = None
        entry.address = entry.pid = None

    def _set_dead(self, entry: ActorEntry, cause: str) -> None:
        entry.state = DEAD
        entry.death_cause = entry.death_cause or cause
        if entry.name and self.named.get((entry.namespace, entry.name)) == entry.actor_id:
            del self.named[(entry.namespace, entry.name)]
        self._save(entry)
        self._notify(entry)
        callbacks, entry.on_dead = entry.on_dead, []
        for callback in callbacks:
            callback()

    def _notify(self, entry: ActorEntry) -> None:
        entry.waiters = [w for w in entry.waiters if not self._answer(entry, w)]

    def _answer(self, entry: ActorEntry, waiter) -> bool:
        conn, rid, not_address = waiter
        if entry.state == ALIVE and entry.address != not_address:
            conn.reply(
                rid, {"state": ALIVE, "address": entry.address, "restarts": entry.num_restarts}
            )
            return True
        if entry.state == DEAD:
            reply = {"state": DEAD, "cause": entry.death_cause}
            if entry.unschedulable:
                reply["unschedulable"] = True
            if entry.runtime_env_failed:
                reply["runtime_env_failed"] = True
            buffers = []
            if entry.creation_error is not None:
                reply["error"], buffers = entry.creation_error
            conn.reply(rid, reply, buffers)
            return True
        return False


def _placement_group_of(resources: dict) -> str | None:
    """The placement group an actor runs in: its resources name the group's
    bundles (`CPU_group_<pg id>`, placement_groups.bundle_resource_names)."""
    for key in resources:
        if "_group_" in key:
            return key.rsplit("_", 1)[1]
    return None
