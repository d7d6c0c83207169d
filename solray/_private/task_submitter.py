"""Submitting tasks: dependency resolution, worker leases, direct pushes.

A task moves through three stages, all on the owner's event loop thread:

  1. resolve  wait until every top-level ObjectRef argument has a value (ours,
              or fetched from its owner). An argument that holds an error fails
              the task without running it: the error propagates.
  2. queue    per scheduling key (the resource shape), tasks wait for a leased
              worker. While a key has queued tasks and too few leases, more
              leases are requested from the node.
  3. push     a leased worker runs one task at a time, straight from the owner.
              Its reply carries the return values (inline) or their locations.

Pipelining: a leased worker is given tasks of its queue before it answers,
as many as its pace says it finishes within PIPELINE_QUEUED_S (its last
task's time, from the reply before, at most PIPELINE_MAX_QUEUED), so a
burst of small tasks does not leave each worker idle for a round trip per
task: it starts the next one as it sends its reply, and neither process
sleeps (and is woken: slow on a VM) between tasks. A worker whose last task
took PIPELINE_QUEUED_S or more gets none ahead. The cost is that tasks may
wait behind one that turned out to be long while another worker is free:
an owner with nothing queued takes them back (STEAL_TASKS) from a worker
whose running task has gone PIPELINE_STEAL_S without a reply, and pushes
them again, once it has a leased worker idle; without one, it asks for one
more lease (the node may have a CPU free). The worker hands back (REQUEUE)
the tasks queued behind one that blocks in get or wait too, so a task never
waits behind one that waits for it (executor.py).
Pipelined are only tasks that may run again (max_retries > 0) and whose
worker does not go away after them (no max_calls, not SPREAD), nor
generators: a worker that dies takes its queued tasks down with the
running one, and they are put back without counting an attempt, since they
most likely never started.

A lease that runs out of work lingers briefly before it is returned, so a
program that submits one task at a time (`get(f.remote())` in a loop) does not
pay for a lease round trip per task. A lease held LEASE_REUSE_S is given
back after its task even while tasks of its shape wait, and asked for again,
as Ray's owner does (`worker_lease_timeout_milliseconds`): the node serves
its queued requests class by class in turn (lease_scheduler.py), so an actor
or another shape queued there behind a burst gets its turn instead of
waiting for the whole burst.

Failures: if the worker's connection drops while it runs a task, the worker
died; the task is retried (`max_retries`) on a new lease, else its returns hold
WorkerCrashedError. Application errors are retried only when
`retry_exceptions` allows.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from functools import partial

from solray import exceptions
from solray._private import ids, serialization, transport
from solray._private import task_events as ev
from solray._private.memory_store import InStore, error_entry
from solray._private.options import placement_of
from solray._private.protocol import Msg
from solray._private.runtime_env.spec import env_hash
from solray._private.task_spec import PendingTask, decode_returns, encode_arguments
from solray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

logger = logging.getLogger(__name__)

LEASE_LINGER_S = 0.02
LEASE_REUSE_S = 0.5  # Ray's worker_lease_timeout_milliseconds default
LEASE_RETRY_S = 0.05  # after another node died holding a lease request of ours
MAX_LEASE_REQUESTS_PER_KEY = 8
PIPELINE_QUEUED_S = 0.005  # a leased worker's queued tasks: this much work by its pace
PIPELINE_MAX_QUEUED = 32  # and at most this many, behind the running one
PIPELINE_STEAL_S = 0.002  # no reply for this long: its queued tasks may go elsewhere


def resolve_dependencies(cw, task: PendingTask, on_resolved) -> None:
    """Loop thread: call `on_resolved(task)` once every top-level argument
    (and the stored argument blob, if any) has a value here. If one of them
    holds an error, `task.dep_error` is that error's entry."""
    if not task.deps and task.args_ref is None:  # most calls: nothing to wait for
        task.dep_entries, task.dep_error, task.resolved = [], None, True
        on_resolved(task)
        return
    dep_ids = [d._id for d in task.deps]
    if task.args_ref is not None:
        dep_ids.append(task.args_ref._id)
    for ref in task.deps:
        if not cw.refs.owns(ref._id):
            cw.reader.fetch_borrowed_from_loop(ref)

    def done():
        entries = [cw.memory_store.get(d._id) for d in task.deps]
        task.dep_entries = entries
        task.dep_error = next((e for e in entries if e is not None and e.is_error), None)
        task.resolved = True
        on_resolved(task)

    if cw.memory_store.wait(dep_ids, len(set(dep_ids)), lambda: cw.post(done)) is None:
        done()


def complete_task(cw, task: PendingTask, body: dict, buffers: list, conn) -> None:
    """A task's worker replied (on `conn`): store its return values, the
    values of a dynamic generator, and the end of a stream; take over the refs
    contained in them."""
    returns, pos = decode_returns(body["r"], buffers)
    if task.site is not None:  # anti-patterns: returned put() refs, tiny tasks
        cw.advice.on_reply(task, body)
    if "dyn" not in body and "c" not in body and not task.stream:
        # Most replies: plain return values, no refs inside them.
        store_returns(cw, task, returns)
        cw.borrowing.finish_handoff(task.task_id, conn, bool(body.get("hh")))
        return
    dynamic, _ = decode_returns(body.get("dyn", ()), buffers, pos)
    # Refs inside the results are taken over before any result is readable:
    # a caller that read one first would hold those refs without this loop
    # knowing to wait for its registration as their borrower, and the worker
    # could let go of them (and their owner free them) before it is done.
    # They become readable only once the owners of those refs know we borrow
    # them: the worker that sent them may die the moment it replied, and its
    # own hold on them dies with it.
    dynamic_ids = [ids.return_object_id(task.task_id, i) for i in range(1, len(dynamic) + 1)]
    for object_id in dynamic_ids:
        cw.refs.add_owned(object_id)
    registered = [
        cw.borrowing.take_over_refs(task.task_id, ids.return_object_id(task.task_id, index), refs)
        for index, refs in body.get("c", ())
    ]

    def readable(_=None) -> None:
        for object_id, entry in zip(dynamic_ids, dynamic, strict=True):
            cw.memory_store.put(object_id, entry)
        store_returns(cw, task, returns)
        cw.borrowing.finish_handoff(task.task_id, conn, bool(body.get("hh")))
        if task.stream:
            cw.task_manager.end_stream(task.task_id, count=body.get("n", 0))

    if all(r.done() for r in registered):
        readable()
    else:
        asyncio.gather(*registered).add_done_callback(readable)


def fail_task(cw, task: PendingTask, entry) -> None:
    """The task failed as a whole: every return holds `entry`, and a stream
    ends with it."""
    if task.event_info is not None:
        cw.task_events.owner(task, ev.FAILED, serialization.deserialize(entry.obj))
    if task.stream:
        cw.task_manager.end_stream(task.task_id, error=entry)
    store_returns(cw, task, [entry] * len(task.return_ids))


def store_returns(cw, task: PendingTask, returns: list) -> None:
    """A task is over: its return values (or errors) become readable, and it
    lets go of its arguments. Values nobody wants any more are freed."""
    keep_lineage = False
    for object_id, entry in zip(task.return_ids, returns, strict=True):
        if not cw.refs.owns(object_id):
            if isinstance(entry, InStore):
                cw.store.free(object_id, entry.node)
            continue
        kept = cw.memory_store.get(object_id)
        if kept is None:
            cw.memory_store.put(object_id, entry)
        else:
            # A re-run to rebuild another of its returns: this one was not
            # lost, and its readers may hold the first value. Keep that.
            if isinstance(entry, InStore) and not (
                isinstance(kept, InStore) and kept.node == entry.node
            ):
                cw.store.free(object_id, entry.node)
            entry = kept
        if isinstance(entry, InStore) and task.function is not None:
            # Only its node has it: if that node dies, run the task again.
            cw.lineage.keep(object_id, task)
            keep_lineage = True
    cw.task_manager.tasks.pop(task.task_id, None)
    task.running_on = None
    if task.admitted:
        task.admitted = False
        cw.actor_submitter.call_finished(task.actor_id)
    if not keep_lineage:  # else its arguments stay, for a re-run
        task.deps = []
        task.dep_entries = []
        task.args_ref = None
        task.contained = []


def attempts_left(task: PendingTask) -> bool:
    """Whether a task (or actor call) that failed may run again: not
    cancelled, and retries left (max_retries, or max_task_retries for calls)."""
    return not task.cancelled and (task.max_retries == -1 or task.attempt < task.max_retries)


def retry_app_error(task: PendingTask, body: dict, buffers: list) -> bool:
    """A task or actor call raised (its reply says app_error): whether to run
    it again, per retry_exceptions (True, or the exception classes to retry)
    within its retries. Counts the attempt if so. A cancelled task is never
    run again, whatever it raised."""
    if task.cancelled or not task.retry_exceptions or not attempts_left(task):
        return False
    if isinstance(task.retry_exceptions, (list, tuple)):
        returns, _ = decode_returns(body["r"], buffers)
        entry = next((e for e in returns if e.is_error), None)
        if entry is None:  # num_returns=0: no return value carries the error
            return False
        error = serialization.deserialize(entry.obj)
        cause = getattr(error, "cause", error)
        if not isinstance(cause, tuple(task.retry_exceptions)):
            return False
    task.attempt += 1
    return True


def push_body(cw, task: PendingTask, body: dict) -> dict:
    """The fields every push shares: who owns the results, and how a
    generator's values come back."""
    body["tid"] = task.task_id
    body["job"] = task.job
    body["owner"] = cw.address
    if task.attempt:
        body["at"] = task.attempt
    if task.event_info is None:  # the worker records no events for it either
        body["ne"] = 1
    if task.task_name:
        body["tn"] = task.task_name
    if isinstance(task.num_returns, str):
        body["gen"] = task.num_returns
        body["nret"] = 1 if task.num_returns == "dynamic" else 0
    else:
        body["nret"] = task.num_returns
    if task.stream:
        stream = cw.task_manager.streams.get(task.task_id)
        body["skip"] = stream.received if stream is not None else 0
        if task.backpressure:
            body["bp"] = task.backpressure
    return body


class NodeBusy(Exception):
    """A node-affinity request with _fail_on_unavailable met a busy node."""

    def __init__(self, error: exceptions.TaskUnschedulableError):
        super().__init__(str(error))
        self.error = error


class LeasedWorker:
    __slots__ = (
        "lease_id", "conn", "address", "gpu_ids", "pushed", "linger", "node_id", "node", "expires",
        "since", "ahead", "stealing",
    )  # fmt: skip

    def __init__(
        self,
        lease_id: int,
        conn: transport.Connection,
        address: str,
        gpu_ids: list,
        node_id: str,
        node: transport.Connection,
    ):
        self.lease_id = lease_id
        self.conn = conn
        self.node = node  # the node that granted the lease, to give it back to
        self.address = address
        self.gpu_ids = gpu_ids
        self.node_id = node_id
        # Tasks pushed and not answered, in push order: the first runs, the
        # rest wait on the worker (pipelining: `ahead` of them at most).
        self.pushed: list[PendingTask] = []
        self.linger: asyncio.TimerHandle | None = None
        # After this (loop time) the lease goes back to the node between tasks.
        self.expires = asyncio.get_running_loop().time() + LEASE_REUSE_S
        self.since = 0.0  # loop time the first pushed task's turn began
        self.ahead = 0  # tasks it may hold queued behind its running one (its pace)
        self.stealing = False  # asked to hand its queued tasks back, no reply since


class KeyQueue:
    """Tasks of one resource shape, label selector and placement, and the
    workers leased for them."""

    __slots__ = (
        "resources", "selector", "fallbacks", "placement", "runtime_env", "tasks", "workers",
        "requests", "steal_timer",
    )  # fmt: skip

    def __init__(
        self,
        resources: dict,
        selector: dict | None,
        fallbacks: tuple,
        placement: tuple,
        runtime_env: dict | None,
    ):
        self.resources = resources
        self.selector = selector
        self.fallbacks = fallbacks
        self.placement = placement
        self.runtime_env = runtime_env
        self.tasks: deque[PendingTask] = deque()
        self.workers: list[LeasedWorker] = []
        self.requests = 0
        self.steal_timer: asyncio.TimerHandle | None = None  # TaskSubmitter._steal


class TaskSubmitter:
    def __init__(self, core_worker):
        self.cw = core_worker
        self.queues: dict[tuple, KeyQueue] = {}
        self.oom_killed: dict[str, str] = {}  # worker address -> why the node killed it

    # -- 1. resolve --------------------------------------------------------

    def submit(self, task: PendingTask) -> None:
        """Loop thread: start resolving a freshly submitted task."""
        self.cw.task_events.owner(task, ev.PENDING_ARGS_AVAIL)
        resolve_dependencies(self.cw, task, self._resolved)

    def _resolved(self, task: PendingTask) -> None:
        if task.cancelled:
            if task.task_id in self.cw.task_manager.tasks:  # not failed at cancel() already
                fail_task(self.cw, task, cancelled_entry(task))
        elif task.dep_error is not None:
            fail_task(self.cw, task, task.dep_error)
        else:
            self.cw.task_events.owner(task, ev.PENDING_NODE_ASSIGNMENT)
            self._enqueue(task)

    def cancel_queued(self, task: PendingTask, error) -> None:
        """Cancel a task not pushed yet. One still resolving its arguments
        fails now (as in Ray), not once they resolve: they may never."""
        if not task.resolved:
            fail_task(self.cw, task, error)
            return
        for q in self.queues.values():
            if task in q.tasks:
                q.tasks.remove(task)
                fail_task(self.cw, task, error)
                return

    # -- 2. queue and lease ------------------------------------------------

    def _enqueue(self, task: PendingTask) -> None:
        placement = self._placement(task)
        selector = task.label_selector
        fallbacks = task.fallback_selectors
        key = (
            tuple(sorted(task.resources.items())),
            tuple(sorted((selector or {}).items())),
            tuple(tuple(sorted(s.items())) for s in fallbacks),
            placement,
            env_hash(task.runtime_env) if task.runtime_env else "",
        )
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = KeyQueue(
                task.resources, selector, fallbacks, placement, task.runtime_env
            )
        q.tasks.append(task)
        self._pump(q)

    def _placement(self, task: PendingTask) -> tuple:
        """Where leases for this task should be asked for."""
        strategy = task.strategy
        if isinstance(strategy, NodeAffinitySchedulingStrategy):
            return ("AFFINITY", strategy.node_id, bool(strategy.soft), strategy.when_busy)
        if strategy == "SPREAD":
            return ("SPREAD",)
        return ("DEFAULT", self._locality(task))

    def _locality(self, task: PendingTask) -> str | None:
        """The node holding most of the task's argument bytes, if not ours:
        running there saves moving them."""
        by_node: dict[str, int] = {}
        entries = list(task.dep_entries)
        if task.args_ref is not None:
            entries.append(self.cw.memory_store.get(task.args_ref._id))
        for entry in entries:
            if isinstance(entry, InStore):
                by_node[entry.node] = by_node.get(entry.node, 0) + entry.size
        if not by_node:
            return None
        node = max(by_node, key=by_node.get)
        return None if node == self.cw.node_address else node

    def _pump(self, q: KeyQueue) -> None:
        for lw in q.workers:
            if not lw.pushed and lw.conn.closed:
                self._drop_dead_idle_workers(q)
                break
        expired = []
        now = self.cw.loop.time()
        for lw in q.workers:
            if not q.tasks:
                break
            if not lw.pushed:
                if now > lw.expires:
                    expired.append(lw)
                else:
                    self._push(q, lw, q.tasks.popleft())
        if q.tasks and q.placement[0] != "SPREAD":
            self._push_ahead(q, now)
        for lw in expired:
            self._give_back(q, lw)
        wanted = len(q.tasks) - q.requests
        while wanted > 0 and q.requests < MAX_LEASE_REQUESTS_PER_KEY:
            self._ask_lease(q)
            wanted -= 1
        if not q.tasks:
            idle = False
            for lw in q.workers:
                if not lw.pushed:
                    idle = True
                    if lw.linger is None:
                        lw.linger = self.cw.loop.call_later(
                            LEASE_LINGER_S, self._return_lease, q, lw
                        )
            self._steal(q, now, idle)

    def _push_ahead(self, q: KeyQueue, now: float) -> None:
        """Pipelining (see the header): queued tasks go to leased workers
        with room ahead of their running task, the least loaded first."""
        while q.tasks and _pipelined(q.tasks[0]):
            best = None
            for lw in q.workers:
                if (
                    lw.pushed
                    and len(lw.pushed) <= lw.ahead
                    and (best is None or len(lw.pushed) < len(best.pushed))
                    and now <= lw.expires  # let an expiring lease drain
                    and _pipelined(lw.pushed[0])
                ):
                    best = lw
            if best is None:
                return
            self._push(q, best, q.tasks.popleft())

    def _steal(self, q: KeyQueue, now: float, idle: bool) -> None:
        """No task waits here. Tasks queued on a worker whose running task
        has gone PIPELINE_STEAL_S without a reply come back (answered
        `requeue`) to be pushed again if a leased worker is `idle`; if none
        is, one more lease is asked for (the node may have room: granted,
        that worker is idle). Sooner, a timer looks again then."""
        due = math.inf
        for lw in q.workers:
            if len(lw.pushed) > 1 and not lw.stealing:
                late = lw.since + PIPELINE_STEAL_S
                if now < late:
                    due = min(due, late)
                elif idle:
                    lw.stealing = True
                    lw.conn.send(Msg.STEAL_TASKS)
                elif not q.requests:
                    self._ask_lease(q)
        if due < math.inf and q.steal_timer is None:
            q.steal_timer = self.cw.loop.call_at(due, self._steal_due, q)

    def _steal_due(self, q: KeyQueue) -> None:
        q.steal_timer = None
        self._pump(q)

    def _drop_dead_idle_workers(self, q: KeyQueue) -> None:
        """Leased workers that died while idle (their node was lost, say) get
        no more tasks: a push there would fail and cost the task a retry."""
        for lw in [lw for lw in q.workers if not lw.pushed and lw.conn.closed]:
            self._give_back(q, lw, kill=True)

    def _ask_lease(self, q: KeyQueue) -> None:
        q.requests += 1
        self.cw.loop.create_task(self._lease(q))

    async def _lease(self, q: KeyQueue) -> None:
        """Ask for one worker, following spillbacks to the node that has room."""
        try:
            grant, node = await self._request_lease(q)
        except (OSError, TimeoutError, transport.ConnectionLost, transport.RemoteError) as e:
            q.requests -= 1
            if self.cw.shutting_down:
                return
            if not isinstance(e, transport.RemoteError) and not self.cw.node.closed:
                # Another node (the request was spilled there) died or cannot
                # be reached; ours is fine: ask again, once it has noticed.
                self.cw.loop.call_later(LEASE_RETRY_S, self._pump, q)
                return
            self._fail_queue(
                q, exceptions.LocalRayletDiedError(f"the node could not grant a worker: {e}")
            )
            return
        except (exceptions.TaskUnschedulableError, exceptions.RuntimeEnvSetupError) as e:
            q.requests -= 1
            self._fail_queue(q, e)
            return
        except NodeBusy as e:
            # _fail_on_unavailable: this request's task fails; the others of
            # the queue ask again, and fail or not on their own.
            q.requests -= 1
            if q.tasks:
                fail_task(self.cw, q.tasks.popleft(), error_entry(e.error))
            self._pump(q)
            return
        q.requests -= 1
        try:
            conn = await self.cw.peer(grant["address"])
        except (TimeoutError, OSError, transport.ConnectionLost):
            node.send(Msg.RETURN_LEASE, {"lease_id": grant["lease_id"], "kill": True})
            self._pump(q)
            return
        lw = LeasedWorker(
            grant["lease_id"], conn, grant["address"], grant["gpu_ids"], grant["node_id"], node
        )
        q.workers.append(lw)
        self._pump(q)

    async def _request_lease(self, q: KeyQueue):
        kind = q.placement[0]
        body = {"resources": q.resources}
        if q.selector:
            body["labels"] = q.selector
        if q.fallbacks:
            body["fallback"] = list(q.fallbacks)
        if q.runtime_env:
            body["runtime_env"] = q.runtime_env
        address = self.cw.node_address
        if kind == "SPREAD":
            body["strategy"] = "SPREAD"
        elif kind == "DEFAULT" and q.placement[1] is not None:
            address = q.placement[1]
        elif kind == "AFFINITY":
            _, node_id, soft, when_busy = q.placement
            target = await self.cw.find_node(node_id)
            if target is not None:
                address, body["affinity"] = target["address"], [soft, when_busy]
            elif not soft:
                raise exceptions.TaskUnschedulableError(
                    f"The task requires node {node_id} (NodeAffinitySchedulingStrategy with "
                    "soft=False), which is not an alive node of this cluster."
                )
        # A node sends a request on at most placement.MAX_HOPS times, then
        # queues it; this bounds the rest.
        for hops in range(1, 17):
            if address == self.cw.node_address:
                node = self.cw.node
            elif kind == "DEFAULT" and "spilled" not in body:
                try:
                    node = await self.cw.peer(address)
                except (OSError, TimeoutError, transport.ConnectionLost):
                    # The node holding the arguments is gone: ask ours.
                    address, node = self.cw.node_address, self.cw.node
            else:
                node = await self.cw.peer(address)
            reply = await node.request(Msg.REQUEST_LEASE, body)
            if "spillback" in reply:
                address = reply["spillback"]["address"]
                body = dict(body, spilled=hops)
                body.pop("affinity", None)  # a soft affinity let it go elsewhere
                continue
            if "runtime_env_error" in reply:
                raise exceptions.RuntimeEnvSetupError(
                    "The runtime_env of this task could not be set up on node "
                    f"{address}: {reply['runtime_env_error']}"
                )
            if reply.get("infeasible"):
                wanted = f"{q.resources}" + (
                    f" on a node with labels matching {q.selector}" if q.selector else ""
                )
                raise exceptions.TaskUnschedulableError(
                    f"The task requires {wanted}, which node {q.placement[1]} cannot provide "
                    f"(it has {reply['total']}, labels {reply['labels']}), and its "
                    "NodeAffinitySchedulingStrategy is not soft."
                )
            if reply.get("unavailable"):
                raise NodeBusy(
                    exceptions.TaskUnschedulableError(
                        f"The task requires {q.resources} on node {q.placement[1]}, which has "
                        f"no room for it now (it has {reply['available']} free), and its "
                        "NodeAffinitySchedulingStrategy has _fail_on_unavailable=True."
                    )
                )
            return reply, node
        raise transport.RemoteError("too many spillbacks")

    def _return_lease(self, q: KeyQueue, lw: LeasedWorker) -> None:
        lw.linger = None
        if not lw.pushed and not q.tasks:
            self._give_back(q, lw)

    def _give_back(self, q: KeyQueue, lw: LeasedWorker, **how) -> None:
        """Return a lease whose worker runs nothing to its node; `how` is
        RETURN_LEASE's `kill` or `retire`."""
        if lw.linger is not None:
            lw.linger.cancel()
            lw.linger = None
        q.workers.remove(lw)
        lw.node.send(Msg.RETURN_LEASE, {"lease_id": lw.lease_id, **how})

    def on_infeasible(self, conn, rid, body, bufs) -> None:
        if not body.get("first"):
            return
        selector = body.get("label_selector")
        wanted = f"{body['resources']}" + (
            f" on a node with labels matching {selector}" if selector else ""
        )
        message = (
            f"A task requires {wanted}, which no node in the cluster can provide (this "
            f"node has {body['total']}, labels {body['labels']}). The task will wait until "
            "a node that can joins the cluster."
        )
        logger.warning(message)

    def _fail_queue(self, q: KeyQueue, error: BaseException) -> None:
        entry = error_entry(error)
        while q.tasks:
            fail_task(self.cw, q.tasks.popleft(), entry)

    # -- 3. push -----------------------------------------------------------

    def _push(self, q: KeyQueue, lw: LeasedWorker, task: PendingTask) -> None:
        if lw.linger is not None:
            lw.linger.cancel()
            lw.linger = None
        if not lw.pushed:
            lw.since = self.cw.loop.time()
        lw.pushed.append(task)
        task.running_on = lw.conn
        self.cw.task_events.owner(task, ev.SUBMITTED_TO_WORKER)
        if task.stream:
            self.cw.task_manager.streams[task.task_id].conn = lw.conn
        fn = task.function
        # A task named by the `name` option shows that name in its output and errors.
        name = task.task_name or fn.name
        body = push_body(
            self.cw,
            task,
            {"fn": fn.function_id, "name": name, "gpu": lw.gpu_ids, "res": task.resources},
        )
        if task.max_calls:
            body["mc"] = task.max_calls
        placement = placement_of(task.strategy)
        if placement:
            body["pg"] = placement
        buffers: list = []
        sent = lw.conn.peer.setdefault("functions", set())
        if fn.function_id not in sent:
            sent.add(fn.function_id)
            body["fnb"] = 1
            buffers.append(fn.pickled)
        encode_arguments(task, self.cw.memory_store, body, buffers)
        lw.conn.request_then(Msg.PUSH_TASK, body, buffers, partial(self._on_reply, q, lw, task))

    def _on_reply(self, q: KeyQueue, lw: LeasedWorker, task: PendingTask, reply, error) -> None:
        """Loop thread, as soon as the task's reply (or its worker's end) is read."""
        task.running_on = None
        if error is not None:
            if lw in q.workers:
                q.workers.remove(lw)
            # Answered tasks leave `pushed`; a lost worker's stay, so each
            # can tell whether it was the one running.
            if lw.pushed.index(task) > 0 and isinstance(error, transport.ConnectionLost):
                # It waited behind a task that never answered: it most
                # likely never started (the worker runs one at a time).
                self._queue_again(q, task)
            elif isinstance(error, transport.ConnectionLost):
                self._worker_died(q, task, self.oom_killed.pop(lw.address, None))
            else:
                fail_task(self.cw, task, error_entry(exceptions.RaySystemError(error)))
            self._pump(q)
            return
        lw.pushed.remove(task)
        body, buffers = reply
        if body.get("requeue"):
            # The worker's running task blocked (executor.py), or this owner
            # took its queued tasks back: this one goes back to the queue,
            # and the worker gets nothing more ahead.
            lw.ahead = 0
            if task.cancelled:
                fail_task(self.cw, task, cancelled_entry(task))
            else:
                self._queue_again(q, task)
            self._pump(q)
            return
        lw.stealing = False  # its running task answered: a new one runs
        now = self.cw.loop.time()
        took = now - lw.since
        lw.ahead = (
            min(PIPELINE_MAX_QUEUED, int(PIPELINE_QUEUED_S / took))
            if took > 0
            else PIPELINE_MAX_QUEUED
        )
        lw.since = now
        retiring = bool(body.get("retire"))
        if retiring or q.placement[0] == "SPREAD":
            # A worker that reached max_calls exits once it is no longer
            # needed: the node must not lease it again. And each spread task
            # gets its own placement: no lease reuse.
            self._give_back(q, lw, retire=retiring)
        if body.get("app_error") and retry_app_error(task, body, buffers):
            self._queue_again(q, task)  # its next attempt
        else:
            complete_task(self.cw, task, body, buffers, lw.conn)
        self._pump(q)

    def _queue_again(self, q: KeyQueue, task: PendingTask) -> None:
        """A pushed task goes back to the front of its queue, to be pushed again."""
        self.cw.task_events.owner(task, ev.PENDING_NODE_ASSIGNMENT)
        q.tasks.appendleft(task)

    def _worker_died(self, q: KeyQueue, task: PendingTask, oom_message: str | None) -> None:
        if task.cancelled:  # force-cancelled: its worker was killed on purpose
            fail_task(self.cw, task, cancelled_entry(task))
            return
        if attempts_left(task):
            if task.event_info is not None:
                died = exceptions.WorkerCrashedError(
                    oom_message or "its worker process exited unexpectedly; the task is retried"
                )
                self.cw.task_events.owner(task, ev.FAILED, died)
            task.attempt += 1
            self._queue_again(q, task)
            return
        if oom_message is not None:
            error = exceptions.OutOfMemoryError(
                f"Task {task.function.name} failed after {task.attempt + 1} attempt(s). "
                f"{oom_message}"
            )
        else:
            error = exceptions.WorkerCrashedError(
                f"Task {task.function.name} failed after {task.attempt + 1} attempt(s): "
                "its worker process exited unexpectedly (killed, crashed, or os._exit)."
            )
        fail_task(self.cw, task, error_entry(error))

    def on_oom_killed(self, conn, rid, body, bufs) -> None:
        """The node is about to kill one of our leased workers for memory."""
        self.oom_killed[body["address"]] = body["message"]


def _pipelined(task: PendingTask) -> bool:
    """Whether a task may share its worker with a task queued behind it (see
    the module's header)."""
    return (
        task.max_retries != 0
        and not task.max_calls
        and not task.stream
        and not isinstance(task.num_returns, str)
    )


def cancelled_entry(task: PendingTask):
    return error_entry(exceptions.TaskCancelledError(task.task_id.hex()))
