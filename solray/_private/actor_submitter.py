"""Calling actors: creation requests and ordered, direct method calls.

Creation: the owner resolves the constructor's arguments, then hands the
creation push to the control store (CREATE_ACTOR), which places the actor and
restarts it when needed (actor_manager.py). Constructor arguments are pinned
for the owner's lifetime so a restart can read them again.

Calls: per actor, a caller keeps one queue. Calls are numbered in submission
order and pushed in that order, each only once all earlier calls are pushed:
a call whose arguments are not ready holds back the calls behind it, which is
what makes "calls from one caller run in submission order" true (one TCP
connection preserves the order to the actor). Many calls are in flight at once.
An actor created with allow_out_of_order_execution=True gets each call as
soon as its arguments are ready instead.

The caller's own thread sends a call (`post_submit`) when nothing of
that caller can be ahead of it: the actor is located, no call to it waits
to be pushed (`pending`) or to reach the loop (`_posted` counts calls
posted to `submit` and not taken yet), and the call needs nothing resolved
(no ref arguments). Waking the loop to push it cost each sync call a
thread hand-off. The record of the push (`_pushed_from_caller`) is posted
before the frame is written, and runs before the loop handles anything that
wakes it next, so before the reply: the tables read the same as if the
loop had pushed it.

Failure: when the connection to the actor drops, calls in flight are retried
(in order) after the actor restarts, if their `max_task_retries` allows, and
fail with ActorDiedError otherwise. The caller asks the control store where
the actor lives now, telling it which address it knows to be dead, and the
control store answers once the actor is alive elsewhere, or dead for good.
A call that raised runs again if its `retry_exceptions` allows, within the
same `max_task_retries` (the decision is the one tasks use).

Backpressure: an actor created with `max_pending_calls=N` takes at most N
unfinished calls from each caller process; the next `.remote()` raises
PendingCallsLimitExceeded. The user thread counts a call in before it exists
and the loop counts it out when its results are stored, so that count is
the one piece of state here both threads touch (under a lock).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
from collections import deque
from functools import partial

from solray import exceptions
from solray._private import serialization, transport
from solray._private import task_events as ev
from solray._private.memory_store import decode_entry, encode_entry, error_entry
from solray._private.protocol import Msg
from solray._private.task_spec import PendingTask, encode_arguments
from solray._private.task_submitter import (
    attempts_left,
    cancelled_entry,
    complete_task,
    fail_task,
    push_body,
    resolve_dependencies,
    retry_app_error,
)

logger = logging.getLogger(__name__)

UNKNOWN, LOCATING, READY, DEAD = "unknown", "locating", "ready", "dead"


class ActorQueue:
    def __init__(self, actor_id: bytes):
        self.actor_id = actor_id
        self.state = UNKNOWN
        self.conn: transport.Connection | None = None
        self.address: str | None = None
        self.dead_address: str | None = None
        self.death: object = None  # error entry once the actor is dead for good
        self.pending: deque[PendingTask] = deque()
        self.inflight: dict[int, PendingTask] = {}
        self.next_seq = 0
        self.released = False
        self.out_of_order = False  # allow_out_of_order_execution


class ActorSubmitter:
    def __init__(self, core_worker):
        self.cw = core_worker
        self.queues: dict[bytes, ActorQueue] = {}
        self._unfinished: dict[bytes, int] = {}  # actor -> calls counted against max_pending_calls
        self._unfinished_lock = threading.Lock()
        # actor -> calls posted to `submit` that the loop has not taken yet;
        # under `_order_lock`, which also keeps a caller-sent call from
        # passing one that is being posted.
        self._posted: dict[bytes, int] = {}
        self._order_lock = threading.Lock()
        self._creating: set[asyncio.Task] = set()  # CREATE_ACTOR requests in flight
        # Actor creations whose constructor arguments are not all here yet
        # (what `solray why` says of them: process_probe.py).
        self.resolving: dict[bytes, PendingTask] = {}

    # -- max_pending_calls ---------------------------------------------------

    def admit(self, actor_id: bytes, limit: int) -> None:
        """User thread: count in one more call to an actor, unless `limit`
        calls from this process are unfinished already."""
        with self._unfinished_lock:
            unfinished = self._unfinished.get(actor_id, 0)
            if unfinished >= limit:
                raise exceptions.PendingCallsLimitExceeded(
                    f"The actor {actor_id.hex()} has {unfinished} calls from this process "
                    f"that have not finished, the most its max_pending_calls={limit} allows. "
                    "Wait for some of them (get or wait) before calling it again."
                )
            self._unfinished[actor_id] = unfinished + 1

    def call_finished(self, actor_id: bytes) -> None:
        """Loop thread: an admitted call's results are stored."""
        with self._unfinished_lock:
            unfinished = self._unfinished.pop(actor_id) - 1
            if unfinished:
                self._unfinished[actor_id] = unfinished

    # -- creation ----------------------------------------------------------

    def create(self, actor_id: bytes, task: PendingTask, runtime_options: dict) -> None:
        """Loop thread: resolve constructor arguments, then ask for placement."""
        self.cw.task_events.owner(task, ev.PENDING_ARGS_AVAIL)
        self.resolving[actor_id] = task
        resolve_dependencies(self.cw, task, partial(self._send_create, actor_id, runtime_options))

    def _send_create(self, actor_id: bytes, runtime_options: dict, task: PendingTask) -> None:
        self.resolving.pop(actor_id, None)
        if task.dep_error is not None:
            self.cw.task_events.owner(
                task, ev.FAILED, serialization.deserialize(task.dep_error.obj)
            )
            head, buffers = encode_entry(task.dep_error)
            self._request_create({"actor_id": actor_id, "dep_error": head}, buffers)
            return
        fn = task.function
        body = {
            "tid": task.task_id,
            "job": task.job,
            "fn": fn.function_id,
            "fnb": 1,
            "name": fn.name,
            "nret": 0,
            "owner": self.cw.address,
            "aid": actor_id,
            "ropts": runtime_options,
        }
        if task.event_info is None:
            body["ne"] = 1
        buffers = [fn.pickled]
        encode_arguments(task, self.cw.memory_store, body, buffers)
        self.cw.task_events.owner(task, ev.PENDING_NODE_ASSIGNMENT)
        self._request_create({"actor_id": actor_id, "spec": body}, buffers)

    def _request_create(self, body: dict, buffers: list) -> None:
        """CREATE_ACTOR as a request, not a one-way message: the control
        store answers once the creation is stored, so one lost to a control
        store restart is sent again (control_client.py). Its outcome comes
        by GET_ACTOR, as for every call."""

        async def create() -> None:
            try:
                await self.cw.control.request(Msg.CREATE_ACTOR, body, buffers)
            except (transport.ConnectionLost, transport.RemoteError):
                pass  # the control store is gone for good: GET_ACTOR says so

        task = self.cw.loop.create_task(create())
        self._creating.add(task)  # asyncio holds tasks weakly
        task.add_done_callback(self._creating.discard)

    # -- calls -------------------------------------------------------------

    def _queue(self, actor_id: bytes) -> ActorQueue:
        q = self.queues.get(actor_id)
        if q is None:
            q = self.queues[actor_id] = ActorQueue(actor_id)
        return q

    def post_submit(self, actor_id: bytes, task: PendingTask, out_of_order: bool) -> None:
        """User thread: send the call from here if it may go now; else hand
        it to the loop (`submit`)."""
        with self._order_lock:
            if self._send_from_caller(actor_id, task):
                return
            self._posted[actor_id] = self._posted.get(actor_id, 0) + 1
            self.cw.post(self.submit, actor_id, task, out_of_order)

    def _send_from_caller(self, actor_id: bytes, task: PendingTask) -> bool:
        """User thread, under `_order_lock`: push the call now, if nothing
        sent before it can still be on its way to the actor."""
        if task.deps or task.args_ref is not None or task.stream:
            return False
        q = self.queues.get(actor_id)
        if q is None or q.state != READY or q.pending or self._posted.get(actor_id):
            return False
        conn = q.conn
        if conn is None:
            return False
        body, buffers = self._call_frame(actor_id, task)
        return conn.send_now(
            Msg.PUSH_ACTOR_TASK,
            body,
            buffers,
            answer=partial(self._on_caller_sent_reply, q, task),
            on_commit=partial(self.cw.post_quiet, self._pushed_from_caller, q, task, conn),
        )

    def _pushed_from_caller(self, q: ActorQueue, task: PendingTask, conn) -> None:
        """Loop thread: record a call its caller pushed, as `submit` and
        `_push` would have."""
        task.dep_entries, task.dep_error, task.resolved = [], None, True
        self._number(q, task)
        self._in_flight(q, task, conn)

    def _on_caller_sent_reply(self, q: ActorQueue, task: PendingTask, reply, error) -> None:
        if not task.resolved:  # the reply was read before the record of its push ran
            self.cw.apply_inbox_now()
        self._on_reply(q, task, reply, error)

    def submit(self, actor_id: bytes, task: PendingTask, out_of_order: bool) -> None:
        """Loop thread: queue a call post_submit counted, and push it once
        its arguments are ready and the calls before it are pushed. It is
        uncounted only then: until it is pushed, `pending` holds it."""
        try:
            self._submit(actor_id, task, out_of_order)
        finally:
            with self._order_lock:
                left = self._posted.pop(actor_id) - 1
                if left:
                    self._posted[actor_id] = left

    def _submit(self, actor_id: bytes, task: PendingTask, out_of_order: bool) -> None:
        q = self._queue(actor_id)
        q.out_of_order = out_of_order
        self._number(q, task)
        if q.state == DEAD:
            fail_task(self.cw, task, q.death)
            return
        q.pending.append(task)
        resolve_dependencies(self.cw, task, lambda t: self._pump(q))
        if q.state == UNKNOWN:
            self._locate(q)

    def _locate(self, q: ActorQueue) -> None:
        q.state = LOCATING
        self.cw.loop.create_task(self._do_locate(q))

    async def _do_locate(self, q: ActorQueue) -> None:
        try:
            reply, buffers = await self.cw.control.request(
                Msg.GET_ACTOR, {"actor_id": q.actor_id, "not_address": q.dead_address}, raw=True
            )
        except (transport.ConnectionLost, transport.RemoteError) as e:
            self._set_dead(q, f"the control store could not be reached ({e})")
            return
        if reply["state"] != "ALIVE":
            cause = reply.get("cause") or "it died"
            if "error" in reply:
                error = serialization.deserialize(decode_entry(reply["error"], buffers).obj)
                cause = f"{cause}:\n{error}"
            kind = (
                exceptions.ActorUnschedulableError
                if reply.get("unschedulable")
                else exceptions.RuntimeEnvSetupError
                if reply.get("runtime_env_failed")
                else None
            )
            self._set_dead(q, cause, kind)
            return
        try:
            conn = await self.cw.peer(reply["address"])
        except (TimeoutError, OSError, transport.ConnectionLost):
            q.dead_address = reply["address"]
            self._locate(q)
            return
        q.conn, q.address, q.state = conn, reply["address"], READY
        conn.add_close_callback(partial(self._connection_lost, q))
        self._pump(q)

    def mark_killed(self, actor_id: bytes) -> None:
        """This process killed the actor: fail its calls without asking."""
        q = self._queue(actor_id)
        if q.state != DEAD:
            self._set_dead(q, "it was killed by solray.kill()")

    def _set_dead(self, q: ActorQueue, cause: str, kind: type | None = None) -> None:
        """The actor is gone: its calls fail with ActorDiedError, or `kind`
        (ActorUnschedulableError, RuntimeEnvSetupError) when that is why."""
        q.state = DEAD
        message = f"The actor {q.actor_id.hex()} is dead because {cause}"
        q.death = error_entry(
            kind(message)
            if kind is not None
            else exceptions.ActorDiedError(actor_id=q.actor_id.hex(), error_msg=message)
        )
        pending, q.pending = q.pending, deque()
        for task in pending:
            fail_task(self.cw, task, q.death)
        self._maybe_release(q)

    def _pump(self, q: ActorQueue) -> None:
        if q.state != READY:
            return
        if q.out_of_order:  # every call whose arguments are ready goes now
            ready = [t for t in q.pending if t.resolved or t.cancelled]
            q.pending = deque(t for t in q.pending if not (t.resolved or t.cancelled))
            for task in ready:
                self._send(q, task)
            return
        while q.pending and (q.pending[0].resolved or q.pending[0].cancelled):
            self._send(q, q.pending.popleft())

    def _send(self, q: ActorQueue, task: PendingTask) -> None:
        if task.cancelled:
            fail_task(self.cw, task, cancelled_entry(task))
        elif task.dep_error is not None:
            fail_task(self.cw, task, task.dep_error)
        else:
            self._push(q, task)

    def cancel_queued(self, task: PendingTask, error) -> None:
        """Cancel a call not pushed yet: it is failed when its turn comes, so
        the calls behind it keep their order."""
        for q in self.queues.values():
            if task in q.pending:
                self._pump(q)
                return

    def _number(self, q: ActorQueue, task: PendingTask) -> None:
        """A new call to `q`'s actor: its place in call order."""
        self.cw.task_events.owner(task, ev.PENDING_ARGS_AVAIL)
        q.released = False
        task.seq = q.next_seq
        q.next_seq += 1

    def _in_flight(self, q: ActorQueue, task: PendingTask, conn) -> None:
        """The call is pushed on `conn`: its reply, or the connection's end,
        comes to `_on_reply`."""
        q.inflight[task.seq] = task
        task.running_on = conn
        self.cw.task_events.owner(task, ev.SUBMITTED_TO_WORKER)

    def _push(self, q: ActorQueue, task: PendingTask) -> None:
        self._in_flight(q, task, q.conn)
        if task.stream:
            self.cw.task_manager.streams[task.task_id].conn = q.conn
        body, buffers = self._call_frame(q.actor_id, task)
        q.conn.request_then(Msg.PUSH_ACTOR_TASK, body, buffers, partial(self._on_reply, q, task))

    def _call_frame(self, actor_id: bytes, task: PendingTask) -> tuple[dict, list]:
        """The PUSH_ACTOR_TASK body and buffers of a call whose arguments
        are resolved."""
        body = push_body(
            self.cw, task, {"aid": actor_id, "m": task.method, "cg": task.concurrency_group}
        )
        buffers: list = []
        encode_arguments(task, self.cw.memory_store, body, buffers)
        return body, buffers

    def _on_reply(self, q: ActorQueue, task: PendingTask, reply, error) -> None:
        """Loop thread, as soon as the call's reply (or its connection's
        end) is read."""
        q.inflight.pop(task.seq, None)
        conn, task.running_on = task.running_on, None
        if error is None:
            body, buffers = reply
            if body.get("app_error") and q.state != DEAD and retry_app_error(task, body, buffers):
                self._requeue(q, task)
                self._pump(q)
                return
            complete_task(self.cw, task, body, buffers, conn)
        elif not isinstance(error, transport.ConnectionLost):
            fail_task(self.cw, task, error_entry(exceptions.RaySystemError(error)))
        elif q.state != DEAD and attempts_left(task):
            if task.event_info is not None:
                died = exceptions.ActorDiedError(
                    actor_id=q.actor_id.hex(),
                    error_msg=f"The actor {q.actor_id.hex()} died while running "
                    f"{task.method}(); the call is retried.",
                )
                self.cw.task_events.owner(task, ev.FAILED, died)
            task.attempt += 1
            self._requeue(q, task)
            if q.state == UNKNOWN:
                self._locate(q)
            return
        else:
            fail_task(
                self.cw,
                task,
                error_entry(
                    exceptions.ActorDiedError(
                        actor_id=q.actor_id.hex(),
                        error_msg=f"The actor {q.actor_id.hex()} died while running "
                        f"{task.method}() (its process exited), and max_task_retries="
                        f"{task.max_retries} allows no retry.",
                    )
                ),
            )
        self._maybe_release(q)

    def _requeue(self, q: ActorQueue, task: PendingTask) -> None:
        """A call to run again goes back among the unsent ones, in call order."""
        self.cw.task_events.owner(task, ev.PENDING_ARGS_AVAIL)  # its next attempt
        seqs = [t.seq for t in q.pending]
        q.pending.insert(bisect.bisect_left(seqs, task.seq), task)

    def _connection_lost(self, q: ActorQueue, conn) -> None:
        if q.conn is not conn:
            return
        q.conn = None
        q.dead_address = q.address
        if q.state == READY:
            q.state = UNKNOWN
            if q.pending or q.inflight:
                self._locate(q)

    # -- lifetime ----------------------------------------------------------

    def release(self, actor_id: bytes) -> None:
        """Loop thread: the owner's last handle is gone."""
        q = self._queue(actor_id)
        q.released = True
        self._maybe_release(q)

    def _maybe_release(self, q: ActorQueue) -> None:
        if q.released and not q.pending and not q.inflight:
            self.queues.pop(q.actor_id, None)
            if q.state != DEAD and not self.cw.shutting_down:
                self.cw.control.send(Msg.RELEASE_ACTOR, {"actor_id": q.actor_id})
