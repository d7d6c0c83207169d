"""Running pushed tasks and actor calls inside a worker process.

Work arrives on the event loop thread and is handed to where it runs:

    tasks, actor constructors, and calls   the worker's main thread, one at a
    to a plain actor                       time, in arrival order
    threaded actors (max_concurrency > 1)  a thread pool per concurrency group
    async actors (any `async def` method)  an event loop of the actor's own,
                                           concurrency bounded per group

User code never runs on the I/O loop, so a call that blocks (in `get`, in C
code, in a sleep) never stalls the worker's I/O, and calls may themselves
submit tasks and wait for them.

Threads. The loop hands work over through `queue` (or an actor's pool or
loop) and marks cancellations in `interrupts` (interrupts.py: how a running
call is interrupted, and where), which the running call's thread tests;
`_acks` changes under `_ack_cond`. What a call leaves for the core worker's
tables (refs held for the caller, the end of its children) is posted to the
loop, which owns them. The reply goes out from the call's thread itself
when everything the call posted has run and nothing waits to be written on
its connection (`_send_reply`, `Connection.send_now`); else the loop sends
it, after what was posted before it.

An actor call that has arrived but not started can be cancelled: the I/O loop
answers it with TaskCancelledError at once (the caller need not wait for the
calls ahead of it) and it never runs; the calls behind it keep their order.

Tasks queued behind the running one (their owner pipelines a burst of short
tasks: task_submitter.py) are `_waiting` until they start. Cancelling one
answers it at once, even with force (it is not running: nothing to kill).
Their owner may take them back (STEAL_TASKS) for another of its workers,
which is idle: they are answered `requeue`. A running task that blocks in
get or wait hands the tasks waiting behind it back to their owners
(REQUEUE), and tasks pushed while it is blocked go back at once: a task
that waits on one queued behind it would wait forever. One
that takes a not-ready ref's future (`ref.future()`, `await ref`) hands them
back as it does: that wait is user code's, out of this worker's sight.

The result of a call is one entry per return value: inline bytes when small,
or a location in this node's store. A call that raises produces its error (a
RayTaskError carrying the user's exception and the remote traceback) as every
one of its return values. An actor that calls exit_actor() answers that call
with ActorDiedError, tells the control store not to restart it, and exits.

Graceful ends (`graceful_exit`): exit_actor(), `__ray_terminate__`, and the
control store's ACTOR_SHUTDOWN (the owner let go of the actor, or its driver
shut down) run the class's `__ray_shutdown__`, then the process's atexit
handlers, then exit. The control store kills the process if that takes
longer than its graceful timeout. kill() never gets here.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import inspect
import io
import logging
import math
import os
import pickle
import queue
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import cloudpickle
import msgpack

from solray import exceptions
from solray._private import event_loop, ids, serialization
from solray._private import task_events as ev
from solray._private.advice import TINY_US
from solray._private.interrupts import Interrupts
from solray._private.loop_inbox import Inbox
from solray._private.memory_store import Inline, Wake, decode_entry, encode_entry, error_entry
from solray._private.object_reader import ObjectReader
from solray._private.protocol import LOG_MARK, LOG_SEP, Msg
from solray._private.serialization import NO_ARGUMENTS, SerializedObject
from solray._private.task_spec import substitute_deps
from solray.actor import CALL, READY, SHUTDOWN, TERMINATE, ActorExit, exit_actor
from solray.object_ref import ObjectRef
from solray.object_ref_generator import DynamicObjectRefGenerator

logger = logging.getLogger(__name__)

# A None result as _store_return sends it (inline, as every small value).
_NONE_HEAD, _NONE_BUFFERS = encode_entry(Inline(serialization.serialize(None)))


@dataclass
class TaskContext:
    task_id: bytes
    name: str
    job: int
    gpu_ids: list
    owner: str
    method: str | None = None  # actor calls: the method's name
    # [index, [[id, owner], ...]] for results that contain refs
    contained: list = field(default_factory=list)
    retire: bool = False  # the last call max_calls allows this worker
    placement: list | None = None  # [group id, bundles, capture] of its placement group
    task_name: str = ""  # the `name` option, else "function" or "Class.method"
    resources: dict = field(default_factory=dict)  # what its lease holds for it
    function: object = None  # what it runs, once loaded
    attempt: int = 0  # which attempt of the task this is (retries count up)
    events: bool = True  # whether it records task events (task_events.py)
    error: BaseException | None = None  # what it failed with, if it did
    put_refs: bool = False  # it returned refs it made with put() (advice.py)
    run_us: int = -1  # how long a task's function ran, microseconds (advice.py)


class Executor:
    def __init__(self, core_worker):
        self.cw = core_worker
        self.queue = WorkQueue(core_worker.loop)
        self.functions: dict[bytes, object] = {}
        self._pickled_functions: dict[bytes, bytes] = {}  # function id -> as sent
        self.actor: ActorRuntime | None = None
        self.actor_restarts = 0
        self.actor_exiting = False  # exit_actor() was called: run no more calls
        self._exit_once = threading.Lock()  # acquired once, by the graceful exit
        self.gpu_ids: list = []
        self._jobs_seen: set[int] = set()
        self.interrupts = Interrupts()
        self.interrupts.add_points(
            Executor._execute,
            Executor._static,
            Executor._dynamic,
            Executor._stream,
            Executor._wait_for_consumer,
            ObjectReader.block,
            Inbox.call,
        )
        self._acks: dict[bytes, int] = {}  # streaming task -> items the caller took
        self._ack_cond = threading.Condition()
        self._calls: dict[bytes, int] = {}  # function id -> calls run (for max_calls)
        self.actor_placement: list | None = None  # the hosted actor's placement group
        self.actor_resources: dict = {}  # what the hosted actor holds while it runs
        self.actor_name: str | None = None  # the hosted actor's name option
        # Tasks pushed and not started, by (connection, request id): the loop
        # adds them, the main thread takes them as it starts them or hands
        # them back; `_blocked` counts the running task's blocking waits.
        self._waiting: dict[tuple, tuple] = {}
        self._blocked = 0
        self._waiting_lock = threading.Lock()

    # -- entry points, called on the I/O loop ------------------------------

    def on_push(self, conn, rid, body, buffers) -> None:
        # Kept as it arrives: the push may never run here (handed back,
        # cancelled), and later pushes of the function do not carry it.
        self._keep_function(body, buffers)
        with self._waiting_lock:
            if not self._blocked:
                self._waiting[conn, rid] = (body, buffers)
                self.queue.put(partial(self.run_task, conn, rid))
                return
        conn.reply(rid, {"requeue": 1})

    def blocking(self, blocked: bool) -> None:
        """Main thread: the running task starts (or ends) a blocking get or
        wait. Tasks waiting behind it go back to their owners."""
        with self._waiting_lock:
            self._blocked += 1 if blocked else -1
        if blocked:
            self.hand_back()

    def hand_back(self, owner=None) -> None:
        """Any thread: tasks waiting behind the running one go back to their
        owners (REQUEUE). All of them when the running task is about to
        wait for a value (in get or wait, or on a ref's future, which this
        worker cannot see being waited on): one of them may be what it
        waits for. Those pushed on `owner` when that owner takes them back."""
        with self._waiting_lock:
            if not self._waiting:
                return
            if owner is None:
                waiting, self._waiting = self._waiting, {}
            else:
                waiting = [key for key in self._waiting if key[0] is owner]
                for key in waiting:
                    del self._waiting[key]
        for conn, rid in waiting:
            self.cw.post(conn.reply, rid, {"requeue": 1})

    def on_steal(self, conn, rid, body, buffers) -> None:
        """The owner takes back the tasks it pushed that wait here behind
        the running one (another of its workers is idle: task_submitter.py)."""
        self.hand_back(conn)

    def on_actor_create(self, conn, rid, body, buffers) -> None:
        self.queue.put(partial(self.create_actor, conn, rid, body, buffers))

    def on_actor_task(self, conn, rid, body, buffers) -> None:
        if self.actor is None or self.actor.actor_id != body["aid"]:
            conn.reply_error(rid, "this worker does not host that actor")
            return
        self.actor.dispatch(conn, rid, body, buffers)

    def run_forever(self) -> None:
        while True:
            work = self.queue.get()
            if work is None:
                return
            try:
                work()
            except Exception:
                # A push we cannot even start (malformed by its sender) must
                # not take the worker down with it.
                logger.exception("dropped a task that could not be run")

    # -- tasks -------------------------------------------------------------

    def _context(self, body, name: str, gpu_ids, placement, resources) -> TaskContext:
        """What the context of a task, an actor's creation and an actor's
        call is made of, and the job it runs for joined."""
        method = body.get("m")
        ctx = TaskContext(
            body["tid"],
            name,
            body["job"],
            gpu_ids,
            body["owner"],
            method,
            placement=placement,
            resources=resources,
        )
        ctx.task_name = body.get("tn") or (f"{name}.{method}" if method else name)
        ctx.attempt = body.get("at", 0)
        ctx.events = self.cw.task_events.enabled and not body.get("ne")
        job = ctx.job
        if job != self.cw.job:
            self.cw.set_job(job)
        if job not in self._jobs_seen:
            self._join_job(job)
        return ctx

    def _task_context(self, body, name: str) -> TaskContext:
        """A task's or an actor creation's context: its GPU ids, placement
        and resources as pushed, and CUDA_VISIBLE_DEVICES its own."""
        ctx = self._context(
            body,
            name,
            body.get("gpu", self.gpu_ids),
            body.get("pg", self.actor_placement),
            body.get("res", self.actor_resources),
        )
        # Every task gets its own, so a task without GPUs never inherits the
        # ids of the task that ran before it on this worker (as in Ray).
        visible = ",".join(map(str, ctx.gpu_ids))
        if _environ.get(b"CUDA_VISIBLE_DEVICES") != visible.encode():
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
        return ctx

    def run_task(self, conn, rid) -> None:
        with self._waiting_lock:
            pushed = self._waiting.pop((conn, rid), None)
        if pushed is None:  # handed back, or answered as cancelled
            return
        body, buffers = pushed
        ctx = self._task_context(body, body["name"])
        max_calls = body.get("mc", 0)
        if max_calls:
            calls = self._calls[body["fn"]] = self._calls.get(body["fn"], 0) + 1
            ctx.retire = calls >= max_calls
        omp_set = set_omp_num_threads(ctx.resources)
        try:
            self._execute(conn, rid, body, buffers, ctx, self._task_function)
        finally:
            # As Ray does: the next task gets its own (if this one left it set).
            if omp_set and _environ.pop(b"OMP_NUM_THREADS", None) is not None:
                os.unsetenv(b"OMP_NUM_THREADS")
        if ctx.retire:
            self._retire()

    def _retire(self) -> None:
        """max_calls reached: this worker runs nothing more (its owner was told
        in the reply, and hands the lease back) and exits as soon as nothing
        it holds is needed: results whose refs the caller has not taken over
        yet, objects it owns that others still reference, tasks it submitted."""
        cw = self.cw

        async def unneeded() -> None:
            while cw.borrowing.handoffs or cw.task_manager.tasks or cw.refs.owns_any():
                await asyncio.sleep(0.01)

        cw.call(unneeded())
        _flush_output()
        cw.shutdown()
        os._exit(0)

    def _keep_function(self, body, buffers) -> None:
        """The owner sends a function's (or actor class's) bytes once per
        worker: keep them before anything can fail, so a first call that is
        cancelled before it starts, interrupted while unpickling, or whose
        unpickling raises, does not leave the next call without them."""
        if body.get("fnb"):
            self._pickled_functions.setdefault(body["fn"], bytes(buffers[0]))

    def _task_function(self, body, buffers):
        """The task's function, unpickled from the bytes this worker was sent
        with the first push of it (see on_push), once."""
        function_id = body["fn"]
        function = self.functions.get(function_id)
        if function is None:
            function = self.functions[function_id] = cloudpickle.loads(
                self._pickled_functions[function_id]
            )
        return function, 1 if body.get("fnb") else 0

    def _execute(self, conn, rid, body, buffers, ctx: TaskContext, lookup) -> None:
        self.cw.current_task = ctx
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            self.interrupts.running_main = ctx.task_id
        num_returns = body["nret"]
        # The call is done (_task_done) only once its reply is out: its
        # caller's wait does not include the bookkeeping.
        try:
            try:
                self.interrupts.check(ctx.task_id)
                function, args, kwargs = self._start(ctx, body, buffers, lookup)
                start = time.perf_counter()
                result = function(*args, **kwargs)
                if inspect.isgenerator(result) or body.get("gen"):
                    reply, reply_buffers = self._generator_results(conn, ctx, body, result)
                else:
                    ctx.run_us = int((time.perf_counter() - start) * 1e6)
                    reply, reply_buffers = self._results(ctx, _outputs(result, num_returns), False)
            except ActorExit:
                self._exit_actor(conn, rid, ctx, num_returns)
                return
            except KeyboardInterrupt:  # cancelled (see cancel())
                reply, reply_buffers = self._failed(ctx, self._cancelled_error(ctx), num_returns)
            except Exception as e:
                reply, reply_buffers = self._failed(ctx, self._task_error(ctx.name, e), num_returns)
            finally:
                if on_main:
                    self.interrupts.running_main = None
            self._send_reply(conn, rid, ctx, reply, reply_buffers)
        finally:
            self._task_done(ctx)

    async def _execute_async(self, conn, rid, body, buffers, ctx: TaskContext, lookup) -> None:
        self.cw.current_task = ctx
        num_returns = body["nret"]
        try:
            try:
                if ctx.task_id in self.interrupts.cancelled:
                    raise asyncio.CancelledError
                function, args, kwargs = self._start(ctx, body, buffers, lookup)
                result = function(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
                if inspect.isasyncgen(result):
                    if body.get("gen") == "streaming":
                        reply, reply_buffers = await self._stream_async(conn, ctx, body, result)
                    else:  # static or dynamic: collect, then store as a sync generator would
                        values = [value async for value in result]
                        reply, reply_buffers = self._generator_results(
                            conn, ctx, body, iter(values)
                        )
                elif inspect.isgenerator(result) or body.get("gen"):
                    reply, reply_buffers = self._generator_results(conn, ctx, body, result)
                else:
                    reply, reply_buffers = self._results(ctx, _outputs(result, num_returns), False)
            except ActorExit:
                self._exit_actor(conn, rid, ctx, num_returns)
                return
            except asyncio.CancelledError:
                reply, reply_buffers = self._failed(ctx, self._cancelled_error(ctx), num_returns)
            except Exception as e:
                reply, reply_buffers = self._failed(ctx, self._task_error(ctx.name, e), num_returns)
            self._send_reply(conn, rid, ctx, reply, reply_buffers)
        finally:
            self._task_done(ctx)

    def _start(self, ctx: TaskContext, body, buffers, lookup):
        """Read the call's function and arguments (from a store, if they are
        there: a state of its own), then it is RUNNING."""
        events = self.cw.task_events if ctx.events else None
        deps = body["d"]
        if events is not None and ("ao" in body or (deps and any(d[1][0] != "i" for d in deps))):
            fetch = ev.PENDING_ACTOR_TASK_ARGS_FETCH if ctx.method else ev.GETTING_AND_PINNING_ARGS
            events.executed(ctx.task_id, ctx.attempt, fetch)
        function, args, kwargs = self._prepare(body, buffers, lookup)
        ctx.function = function
        if events is not None:
            events.executed(ctx.task_id, ctx.attempt, ev.RUNNING)
        return function, args, kwargs

    def _task_done(self, ctx: TaskContext) -> None:
        self._record_end(ctx, ctx.error)
        # Its child-task record goes with the reply (_answer): a post of its
        # own here woke the loop a second time per call.
        self.cw.current_task = None
        self.interrupts.done(ctx.task_id)
        self._acks.pop(ctx.task_id, None)

    def _failed(self, ctx: TaskContext, error: BaseException, num_returns: int):
        """Every return value of a failed call holds its error."""
        return self._results(ctx, [error] * num_returns, True)

    def _results(self, ctx: TaskContext, outputs: list, app_error: bool):
        heads, reply_buffers = [], []
        for i, value in enumerate(outputs):
            head, bufs = self._store_return(ctx, i, value, app_error)
            heads.append(head)
            reply_buffers.extend(bufs)
        return {"r": heads, "app_error": app_error}, reply_buffers

    def _reply(self, conn, rid, ctx: TaskContext, outputs: list, app_error: bool) -> None:
        reply, reply_buffers = self._results(ctx, outputs, app_error)
        self._send_reply(conn, rid, ctx, reply, reply_buffers)

    def _send_reply(self, conn, rid, ctx: TaskContext, reply: dict, buffers: list) -> None:
        if ctx.contained:
            reply["c"] = ctx.contained
        if ctx.retire:
            reply["retire"] = 1
        if self.cw.advice.enabled:  # for the owner's advice (advice.py)
            if ctx.put_refs:
                reply["pr"] = 1
            if 0 <= ctx.run_us < TINY_US and self.actor is None:
                reply["q"] = ctx.run_us
        cw = self.cw
        # The reply goes out from this thread when nothing posted before it
        # is still on its way (a stream's items, holds on refs in the
        # results, advice for the owner) and nothing waits to be written:
        # waking the loop to send it cost each call a thread hand-off. The
        # loop's records of the answer follow lazily: they only matter to a
        # cancellation, which finds the call taken either way. They are
        # records (post_record), so the next call's reply need not wait for
        # them: as lazy posts they made every other reply go by the loop.
        if (
            not ctx.contained
            and not cw.advice.pending
            and cw.inbox_idle()
            and conn.send_now(Msg.REPLY, reply, buffers, rid=rid)
        ):
            cw.post_record(self._answered, conn, rid, ctx.task_id)
            return
        cw.post(self._answer, conn, rid, ctx.task_id, reply, buffers)

    def _answer(self, conn, rid, task_id: bytes, reply: dict, buffers: list) -> None:
        """Loop thread: a call's reply goes out."""
        self._answered(conn, rid, task_id)
        if self.cw.advice.pending:  # what its nested tasks did, before its owner's summary
            self.cw.advice.flush()
        self.cw.borrowing.reply_to_task(conn, rid, task_id, reply, buffers)

    def _answered(self, conn, rid, task_id: bytes) -> None:
        """Loop thread: an actor's call is no longer pending (nor
        cancellable before it starts), and the task's children are no
        longer its to cancel."""
        self.cw.task_manager.children.pop(task_id, None)
        if self.actor is not None:
            self.actor.answered(conn, rid, task_id)

    # -- generators --------------------------------------------------------

    def _generator_results(self, conn, ctx: TaskContext, body, result):
        """Each value is stored as soon as it is yielded, so the task never
        holds more than one of them."""
        mode = body.get("gen", "static")
        if not inspect.isgenerator(result) and not isinstance(result, Iterator):
            raise TypeError(
                f"num_returns={mode!r} requires a generator function, but {ctx.name} "
                f"returned a {type(result).__name__}"
            )
        if mode == "streaming":
            return self._stream(conn, ctx, body, result)
        if mode == "dynamic":
            return self._dynamic(ctx, result)
        return self._static(ctx, result, body["nret"])

    def _static(self, ctx: TaskContext, values, num_returns: int):
        heads, buffers, error = [], [], None
        try:
            for value in values:
                if len(heads) == num_returns:
                    # More values than declared: no ref can be trusted.
                    self._discard(ctx, heads)
                    heads, buffers = [], []
                    error = ValueError(
                        f"the generator of {ctx.name} yielded more values than its "
                        f"num_returns={num_returns}"
                    )
                    break
                head, bufs = self._store_return(ctx, len(heads), value, False)
                del value  # stored: do not hold it while the generator makes the next one
                heads.append(head)
                buffers.extend(bufs)
            else:
                if len(heads) < num_returns:
                    error = ValueError(
                        f"the generator of {ctx.name} yielded {len(heads)} value(s), but "
                        f"num_returns={num_returns}; the refs after the last yielded "
                        "value hold this error"
                    )
        except Exception as e:
            error = e
        if error is not None:
            # Values already yielded stay readable; the remaining refs hold the error.
            task_error = self._task_error(ctx.name, error)
            for index in range(len(heads), num_returns):
                head, bufs = self._store_return(ctx, index, task_error, True)
                heads.append(head)
                buffers.extend(bufs)
        return {"r": heads, "app_error": error is not None}, buffers

    def _discard(self, ctx: TaskContext, heads: list) -> None:
        for index, head in enumerate(heads):
            if head[0] == "s":
                object_id = ids.return_object_id(ctx.task_id, index)
                self.cw.post(self.cw.store.free, object_id, head[1])

    def _dynamic(self, ctx: TaskContext, values):
        """Values are items 1..k; item 0 is the DynamicObjectRefGenerator that
        lists them. An error is stored as one extra, final item."""
        heads, buffers = [], []
        try:
            for value in values:
                head, bufs = self._store_return(ctx, len(heads) + 1, value, False)
                del value  # stored: do not hold it while the generator makes the next one
                heads.append(head)
                buffers.extend(bufs)
        except Exception as e:
            head, bufs = self._store_return(
                ctx, len(heads) + 1, self._task_error(ctx.name, e), True
            )
            heads.append(head)
            buffers.extend(bufs)
        refs = [
            ObjectRef(ids.return_object_id(ctx.task_id, i + 1), ctx.owner)
            for i in range(len(heads))
        ]
        main, main_buffers = self._store_return(ctx, 0, DynamicObjectRefGenerator(refs), False)
        return {"r": [main], "dyn": heads}, main_buffers + buffers

    def _stream(self, conn, ctx: TaskContext, body, values):
        """Each value goes to the owner as soon as it is yielded. Items an
        earlier attempt delivered (`skip`) are produced again but not sent."""
        skip, backpressure = body.get("skip", 0), body.get("bp")
        count = 0
        try:
            for value in values:
                if count >= skip:
                    self._send_item(conn, ctx, count, value, False)
                del value  # sent: do not hold it while the generator makes the next one
                count += 1
                if backpressure:
                    self._wait_for_consumer(ctx.task_id, count, backpressure)
        except (Exception, KeyboardInterrupt) as e:
            self._send_item(conn, ctx, count, self._stream_error(ctx, e), True)
            count += 1
        return {"r": [], "n": count}, []

    async def _stream_async(self, conn, ctx: TaskContext, body, values):
        skip, backpressure = body.get("skip", 0), body.get("bp")
        count = 0
        try:
            async for value in values:
                if count >= skip:
                    self._send_item(conn, ctx, count, value, False)
                del value  # sent: do not hold it while the generator makes the next one
                count += 1
                while backpressure and count - self._acks.get(ctx.task_id, 0) >= backpressure:
                    await asyncio.sleep(0.005)
        except (Exception, asyncio.CancelledError) as e:
            self._send_item(conn, ctx, count, self._stream_error(ctx, e), True)
            count += 1
        return {"r": [], "n": count}, []

    def _stream_error(self, ctx: TaskContext, error: BaseException):
        if isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)):
            return self._cancelled_error(ctx)
        return self._task_error(ctx.name, error)

    def _send_item(self, conn, ctx: TaskContext, index: int, value, is_error: bool) -> None:
        head, bufs = self._store_return(ctx, index, value, is_error)
        body = {"tid": ctx.task_id, "i": index, "h": head}
        if ctx.contained:  # refs inside this item travel with it
            body["c"] = ctx.contained.pop()[1]
        self.cw.post(conn.send, Msg.GENERATOR_ITEM, body, bufs)

    def _wait_for_consumer(self, task_id: bytes, produced: int, limit: int) -> None:
        """Backpressure: pause while `limit` items are unread by the caller."""
        with self._ack_cond:
            while produced - self._acks.get(task_id, 0) >= limit:
                self.interrupts.check(task_id)
                self._ack_cond.wait(0.5)

    def on_generator_ack(self, conn, rid, body, buffers) -> None:
        """Loop thread: the caller has taken `n` items of a stream."""
        with self._ack_cond:
            task_id = body["tid"]
            self._acks[task_id] = max(self._acks.get(task_id, 0), body["n"])
            self._ack_cond.notify_all()

    # -- cancellation --------------------------------------------------------

    def cancel(self, task_id: bytes, force: bool) -> None:
        """Loop thread. An actor call not started yet is answered with
        TaskCancelledError now and never runs. A task running on the main
        thread gets KeyboardInterrupt (through SIGINT, which also interrupts
        sleeps and blocking waits); a running coroutine of an async actor is
        cancelled; a task that has not reached the point where it checks is
        failed there. `force` ends this worker process instead."""
        with self._waiting_lock:
            waiting = next(
                (key for key, (body, _) in self._waiting.items() if body["tid"] == task_id), None
            )
            pushed = None if waiting is None else self._waiting.pop(waiting)
        if pushed is not None:
            self.reply_cancelled(waiting[0], waiting[1], pushed[0])
            return
        if force:
            _flush_output()
            os._exit(1)
        if self.actor is not None and self.actor.cancel_queued(task_id):
            return
        self.interrupts.cancelled.add(task_id)
        with self._ack_cond:
            self._ack_cond.notify_all()
        if self.interrupts.running_main == task_id:
            self.interrupts.interrupt_main(task_id, self.cw.loop)
        elif self.actor is not None:
            self.actor.cancel_running(task_id)

    def is_cancelled(self, task_id: bytes) -> bool:
        """Whether cancel() has reached this running task."""
        return task_id in self.interrupts.cancelled

    def reply_cancelled(self, conn, rid, body) -> None:
        """Loop thread: answer a call that was cancelled before it started,
        shaped as if it had raised TaskCancelledError at once. The error is
        small and goes inline: the loop never waits on the store."""
        task_id = body["tid"]
        error = exceptions.TaskCancelledError(task_id.hex())
        self.record(body, ev.FAILED, error)
        head, buffers = encode_entry(error_entry(error))
        if body.get("gen") == "streaming":  # the error is the stream's next item
            index = body.get("skip", 0)
            conn.send(Msg.GENERATOR_ITEM, {"tid": task_id, "i": index, "h": head}, buffers)
            conn.reply(rid, {"r": [], "n": index + 1}, [])
            return
        count = body["nret"]
        conn.reply(rid, {"r": [head] * count, "app_error": True}, buffers * count)

    def _cancelled_error(self, ctx: TaskContext) -> exceptions.TaskCancelledError:
        ctx.error = exceptions.TaskCancelledError(ctx.task_id.hex())
        return ctx.error

    def _join_job(self, job: int) -> None:
        """Make the driver's import path ours, so functions defined in its
        modules (not only in __main__) can be unpickled here."""
        self._jobs_seen.add(job)
        found, buffers = self.cw.request(
            "control", Msg.KV_GET, {"ns": "job", "key": self.cw.job_bytes.hex()}, raw=True
        )
        if found:
            info = msgpack.unpackb(buffers[0])
            self.cw.namespace = info.get("namespace")
            for path in reversed(info["sys_path"]):
                if path not in sys.path:
                    sys.path.insert(1, path)

    def _prepare(self, body, buffers, lookup):
        cw = self.cw
        function, pos = lookup(body, buffers)
        if "a" in body:
            flags, n = body["a"]
            if n == 1 and buffers[pos] == NO_ARGUMENTS:  # most calls: nothing to unpickle
                args, kwargs = (), {}
            else:
                blob = SerializedObject.from_wire(flags, buffers[pos : pos + n])
                args, kwargs = serialization.deserialize(blob)
            pos += n
        else:  # large arguments, in the store
            object_id, head = body["ao"]
            args, kwargs = cw.reader.materialize(object_id, decode_entry(head, []), body["owner"])
        deps = []
        for object_id, head, owner in body["d"]:
            n = head[2] if head[0] == "i" else 0
            deps.append((object_id, decode_entry(head, buffers[pos : pos + n]), owner))
            pos += n
        read = cw.reader.read_stored(deps)
        values = [cw.reader.materialize(*dep, read=read.get(dep[0])) for dep in deps]
        if values:
            args, kwargs = substitute_deps(args, kwargs, values)
        # Refs nested in the arguments (or captured by the function): their
        # owners learn about us before the caller may drop its own refs.
        cw.borrowing.register_borrows()
        return function, args, kwargs

    def _task_error(self, name: str, error: Exception) -> exceptions.RayTaskError:
        ctx = self.cw.current_task
        if ctx is not None and ctx.method:
            name = f"{name}.{ctx.method}"  # Ray's "Class.method" for actor calls
        if ctx is not None:  # the call fails (task events say so)
            ctx.error = error
        if isinstance(error, exceptions.RayTaskError):
            # An error from a task this task waited on: keep the original cause.
            return error
        tb = error.__traceback__
        # Drop the executor's own frames: the user wants to see their code.
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(error), error, tb))
        cause = error if _round_trips(error) else None
        return exceptions.RayTaskError(
            name, text, cause, f"solray::{name}()", os.getpid(), self.cw.ip
        )

    def _store_return(self, ctx: TaskContext, index: int, value, is_error: bool):
        if value is None and not is_error and not serialization.custom_reducers:
            # most calls' result: what the steps below make of it, made once
            return [*_NONE_HEAD], [*_NONE_BUFFERS]
        cw = self.cw
        if is_error:
            obj = serialization.serialize_error(value)
        else:
            try:
                obj = serialization.serialize(value)
            except Exception as e:
                obj = serialization.serialize_error(
                    self._task_error(
                        ctx.name,
                        TypeError(f"could not serialize the return value of {ctx.name}: {e}"),
                    )
                )
        if obj.contained_refs:
            # Hold them until the caller has taken them over (HANDOFF_DONE).
            if not is_error and not ctx.put_refs:
                ctx.put_refs = self._made_by_put(obj.contained_refs)
            ctx.contained.append([index, [[r._id, r._owner] for r in obj.contained_refs]])
            cw.post(cw.borrowing.hold_for_handoff, ctx.task_id, obj.contained_refs)
        object_id = ids.return_object_id(ctx.task_id, index)
        try:
            entry = cw.store.store_value(object_id, obj, owner=ctx.owner)
        except exceptions.ObjectStoreFullError as e:
            entry = cw.store.store_value(
                object_id, serialization.serialize_error(e), owner=ctx.owner
            )
        return encode_entry(entry)

    def _made_by_put(self, refs: list) -> bool:
        """Whether a result holds refs this worker made with put(): Ray's
        anti-pattern, reported to the owner in the reply (advice.py)."""
        return any(
            len(r._id) == ids.OBJECT_ID_LEN and ids.is_put_id(r._id) and self.cw.refs.owns(r._id)
            for r in refs
        )

    # -- actors ------------------------------------------------------------

    def create_actor(self, conn, rid, body, buffers) -> None:
        self._keep_function(body, buffers)
        ropts = body["ropts"]
        self.actor_placement = ropts.get("pg")
        self.actor_resources = ropts.get("res") or {}
        self.actor_name = ropts.get("actor_name")
        ctx = self._task_context(body, ropts["class_name"])
        self.gpu_ids = ctx.gpu_ids
        self.actor_restarts = ctx.attempt = body.get("restarts", 0)
        self.cw.actor_id = body["aid"]
        self.cw.current_task = ctx
        runtime = None
        try:
            cls, args, kwargs = self._start(ctx, body, buffers, self._task_function)
            ctx.function = cls.__init__
            set_omp_num_threads(ctx.resources)  # for the actor's lifetime
            if inspect.iscoroutinefunction(cls.__init__):
                # `async def __init__`: it runs on the actor's own event loop,
                # where its calls will run.
                instance = cls.__new__(cls)
                runtime = ActorRuntime(self, body["aid"], instance, ropts)
                runtime.construct(instance.__init__(*args, **kwargs))
            else:
                instance = cls(*args, **kwargs)
        except Exception as e:
            if runtime is not None:
                runtime.loop.call_soon_threadsafe(runtime.loop.stop)
            error = self._task_error(f"{ctx.name}.__init__", e)
            self._record_end(ctx, error)
            head, bufs = encode_entry(
                self.cw.store.store_value(
                    ids.put_object_id(self.cw.job_bytes), serialization.serialize_error(error)
                )
            )
            self.cw.post(conn.reply, rid, {"error": head}, bufs)
            return
        finally:
            self.cw.current_task = None
        self.actor = runtime or ActorRuntime(self, body["aid"], instance, ropts)
        self.actor.owner = body["owner"]
        self._record_end(ctx, None)
        self.cw.post(conn.reply, rid, {"pid": os.getpid()})

    def record(self, body: dict, state: int, error: BaseException | None = None) -> None:
        """A call not started yet (its push `body`) reached `state`."""
        if self.cw.task_events.enabled and not body.get("ne"):
            self.cw.task_events.executed(body["tid"], body.get("at", 0), state, error)

    def _record_end(self, ctx: TaskContext, error: BaseException | None) -> None:
        if ctx.events:
            state = ev.FINISHED if error is None else ev.FAILED
            self.cw.task_events.executed(ctx.task_id, ctx.attempt, state, error)

    def run_actor_task(self, conn, rid, body, buffers) -> None:
        if self.actor_exiting:
            return  # the process exits unanswered: the caller gets ActorDiedError
        self._execute(conn, rid, body, buffers, self._call_context(body), self.actor.method)

    async def run_actor_task_async(self, conn, rid, body, buffers) -> None:
        if self.actor_exiting:
            return  # the process exits unanswered: the caller gets ActorDiedError
        ctx = self._call_context(body)
        await self._execute_async(conn, rid, body, buffers, ctx, self.actor.method)

    def _call_context(self, body) -> TaskContext:
        """An actor call's context: _context's, less what is the actor's for
        its lifetime (its GPU ids and CUDA_VISIBLE_DEVICES, its placement
        group and resources: create_actor sets them once, as Ray does)."""
        return self._context(
            body, self.actor.class_name, self.gpu_ids, self.actor_placement, self.actor_resources
        )

    def _exit_actor(self, conn, rid, ctx: TaskContext, num_returns: int) -> None:
        """exit_actor() (or __ray_terminate__) ended this call."""
        cw = self.cw
        self.actor_exiting = True
        cw.request("control", Msg.ACTOR_EXITING, {"actor_id": cw.actor_id})
        error = ctx.error = exceptions.ActorDiedError(
            actor_id=cw.actor_id.hex(),
            error_msg=f"The actor {cw.actor_id.hex()} exited: exit_actor() was called.",
        )
        self._reply(conn, rid, ctx, [error] * num_returns, True)
        self.cw.current_task = None
        self.graceful_exit()

    def on_actor_shutdown(self, conn, rid, body, buffers) -> None:
        """Loop thread: the control store asks this actor to end gracefully.
        After the calls it has received (the owner let go of it), on the main
        thread where plain actors run them; or `now` (its driver is shutting
        down), on a thread of its own."""
        if body.get("now"):
            threading.Thread(target=self.graceful_exit, name="solray-actor-exit").start()
        else:
            self.queue.put(self.graceful_exit)

    def graceful_exit(self) -> None:
        """End this actor's process through its shutdown hooks: the class's
        `__ray_shutdown__` (an exception in it is printed, as Ray logs it),
        then the atexit handlers. The control store kills the process if
        they outlast its graceful timeout."""
        self.actor_exiting = True  # calls not started yet never run
        if not self._exit_once.acquire(blocking=False):
            return  # another thread is already ending it
        instance = self.actor.instance if self.actor is not None else None
        if callable(getattr(type(instance), SHUTDOWN, None)):
            try:
                getattr(instance, SHUTDOWN)()
            except Exception:
                print(
                    f"solray: {SHUTDOWN}() of actor {self.actor.class_name} raised; "
                    "the actor exits anyway:\n" + traceback.format_exc(),
                    file=sys.stderr,
                    flush=True,
                )
        atexit._run_exitfuncs()  # prints what a handler raises, and goes on
        cw = self.cw

        def exit_process():
            cw.task_events.flush()
            _flush_output()
            os._exit(0)

        # After the replies posted before (an exit_actor() call's) go out.
        cw.post(cw.loop.call_later, 0.05, exit_process)


def _flush_output() -> None:
    """Before the process exits: what the task printed reaches the node."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


# os.environ's own table (names and values encoded, on POSIX), used directly
# on each task's path: os.environ's Mapping methods (`in` and `get` run
# several Python frames each, `in` raising a KeyError when the variable is
# unset; setting and popping encode name and value in Python) cost about 270
# bytecodes a task. A write here does what os.environ's does: the table, and
# the process's environment (putenv/unsetenv) that C libraries read.
_environ: dict[bytes, bytes] = os.environ._data


def set_omp_num_threads(resources: dict) -> bool:
    """Ray's rule: unless the user set OMP_NUM_THREADS, a task or actor runs
    with it set to its CPUs (at least 1, whole CPUs), so numerical libraries
    do not start a thread per core in every worker. True if it was set here."""
    if b"OMP_NUM_THREADS" in _environ:
        return False
    cpus = resources.get("CPU")
    if cpus is None:  # in a placement group: the bundle's CPU, renamed
        cpus = max((v for k, v in resources.items() if k.startswith("CPU_group_")), default=1)
    value = b"%d" % max(math.floor(cpus), 1)
    os.putenv(b"OMP_NUM_THREADS", value)  # what os.environ's __setitem__ does
    _environ[b"OMP_NUM_THREADS"] = value
    return True


def _round_trips(error: BaseException) -> bool:
    """Whether the caller will be able to unpickle this exception. One whose
    __init__ needs arguments pickle does not keep (say, MyError(msg, code))
    cannot be; the caller then gets a RayTaskError with the traceback text
    but without the original class."""
    try:
        pickle.loads(serialization.dumps(error))
        return True
    except Exception:
        return False


def _outputs(result, num_returns: int) -> list:
    if num_returns == 1:
        return [result]
    if num_returns == 0:
        return []
    try:
        outputs = list(result)
    except TypeError:
        raise ValueError(
            f"the task declared num_returns={num_returns} but returned a "
            f"{type(result).__name__}, which is not a sequence"
        ) from None
    if len(outputs) != num_returns:
        raise ValueError(
            f"the task declared num_returns={num_returns} but returned {len(outputs)} values"
        )
    return outputs


class WorkQueue:
    """The main thread's work (tasks, actor creation, a plain actor's
    calls), in arrival order. The I/O loop puts, the main thread gets.

    A main thread with nothing to do runs the I/O loop itself while it
    waits (event_loop.Loop.wait_running): the call that arrives is read,
    dispatched and run on one thread. Woken by the loop's thread instead,
    each call cost a thread hand-off, which on a machine whose idle CPUs
    halt is a good part of a short call's time."""

    def __init__(self, loop: event_loop.Loop):
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._idle: Wake | None = None  # the main thread waits on it
        self._wait_running = loop.wait_running

    def put(self, work) -> None:
        """Any thread."""
        self._items.put(work)
        idle = self._idle
        if idle is not None:
            idle.set()

    def get(self):
        """The main thread: the next work, once there is some."""
        items = self._items
        while items.empty():
            # Set before the check: a put either sees this Wake or left its
            # work for the check to see.
            idle = self._idle = Wake()
            if items.empty():
                self._wait_running(idle, 1.0)
        self._idle = None
        return items.get()


class ActorCall:
    """An actor call this worker has received and not answered yet."""

    __slots__ = ("conn", "rid", "body", "task", "_taken")

    def __init__(self, conn, rid: int, body: dict):
        self.conn = conn
        self.rid = rid
        self.body = body
        self.task: asyncio.Task | None = None  # async actors: its task on the actor's loop
        self._taken = threading.Lock()  # acquired once, never released

    def cancel_task(self) -> None:
        """Actor loop thread: cancel an async actor's running call."""
        if self.task is not None:
            self.task.cancel()

    def take(self) -> bool:
        """Whether the caller may have this call: the thread about to run it
        and the I/O loop about to answer it as cancelled both ask, and only
        the first one gets it. So a call runs or is cancelled, never both."""
        return self._taken.acquire(blocking=False)


class ActorRuntime:
    """Where an actor's calls run, per its concurrency settings.

    Ownership: the I/O loop thread owns `calls`, the calls received and not
    answered yet: it adds each call on arrival, and removes it when its reply
    goes out or when it is cancelled before it started. The threads that run
    calls (the main thread, a pool's threads, the actor's event loop) never
    touch `calls`: they take a call (ActorCall.take) before running it, and
    skip it if the loop took it first to cancel it. So a call cancelled while
    it waits for its turn is answered at once, never runs, and holds up none
    of the calls behind it.
    """

    def __init__(self, executor: Executor, actor_id: bytes, instance, ropts: dict):
        self.executor = executor
        self.actor_id = actor_id
        self.instance = instance
        self.class_name = ropts["class_name"]
        self.meta = ropts.get("meta") or {"class_name": self.class_name, "methods": {}}
        self.owner = ""  # the creator's address, set by create_actor
        self.is_async = ropts["is_async"]
        max_concurrency = ropts["max_concurrency"]
        groups = ropts.get("concurrency_groups") or {}
        self.groups = set(groups)
        self.calls: dict[bytes, ActorCall] = {}  # owned by the I/O loop (see above)
        # Ray's built-in methods (actor.py), unless the class defines its own.
        self._builtins = {
            TERMINATE: exit_actor,
            READY: lambda: True,
            CALL: lambda fn, *args, **kwargs: fn(self.instance, *args, **kwargs),
        }
        if self.is_async:
            self.loop = event_loop.new_loop()  # the I/O loop's kind: less Python per turn
            self._semaphores: dict = {}
            self._limits = {None: max_concurrency, **groups}
            threading.Thread(
                target=self.loop.run_forever, name="solray-actor-loop", daemon=True
            ).start()
        elif max_concurrency > 1 or groups:
            self.pools = {
                None: concurrent.futures.ThreadPoolExecutor(
                    max_concurrency, thread_name_prefix="solray-actor"
                )
            }
            for name, limit in groups.items():
                self.pools[name] = concurrent.futures.ThreadPoolExecutor(
                    limit, thread_name_prefix=f"solray-actor-{name}"
                )
        else:
            self.pools = None

    def method(self, body, buffers):
        name = body["m"]
        group = body.get("cg")
        if group is not None and group not in self.groups:
            raise ValueError(
                f"concurrency group '{group}' is not defined for actor "
                f"{self.class_name} (defined: {sorted(self.groups)})"
            )
        function = getattr(self.instance, name, None)
        if function is None:
            function = self._builtins.get(name)
        if function is None:
            raise AttributeError(f"'{self.class_name}' actor has no method '{name}'")
        return function, 0

    def construct(self, init) -> None:
        """Run an `async def __init__` coroutine on the actor's event loop;
        what it raises is raised here."""
        asyncio.run_coroutine_threadsafe(init, self.loop).result()

    def dispatch(self, conn, rid, body, buffers) -> None:
        """Loop thread: a call arrived; it waits for its turn where it runs."""
        self.executor.record(body, ev.PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY)
        call = ActorCall(conn, rid, body)
        self.calls[body["tid"]] = call
        if self.is_async:
            self.loop.call_soon_threadsafe(self._start, call, buffers)
        elif self.pools is not None:
            pool = self.pools.get(body.get("cg"), self.pools[None])
            pool.submit(self._run, call, buffers)
        else:
            self.executor.queue.put(partial(self._run, call, buffers))

    def _start(self, call: ActorCall, buffers) -> None:
        """Actor loop thread: an async actor's call becomes a task there. (A
        task of its own, not run_coroutine_threadsafe's: its concurrent
        future, and the loop turn that settled it, were of no use.)"""
        call.task = self.loop.create_task(self._bounded(call, buffers))

    def _run(self, call: ActorCall, buffers) -> None:
        if call.take():
            self.executor.run_actor_task(call.conn, call.rid, call.body, buffers)

    async def _bounded(self, call: ActorCall, buffers) -> None:
        group = call.body.get("cg")
        semaphore = self._semaphores.get(group)
        if semaphore is None:
            limit = self._limits.get(group, self._limits[None])
            semaphore = self._semaphores[group] = asyncio.Semaphore(limit)
        async with semaphore:
            if call.take():
                await self.executor.run_actor_task_async(call.conn, call.rid, call.body, buffers)

    def answered(self, conn, rid, task_id: bytes) -> None:
        """Loop thread: this call's reply is going out."""
        call = self.calls.get(task_id)
        # A call pushed again (its caller reconnected) may have replaced it.
        if call is not None and call.conn is conn and call.rid == rid:
            del self.calls[task_id]

    def cancel_queued(self, task_id: bytes) -> bool:
        """Loop thread: answer a call that has not started with
        TaskCancelledError; whether there was one."""
        call = self.calls.get(task_id)
        if call is None or not call.take():
            return False
        del self.calls[task_id]
        self.executor.reply_cancelled(call.conn, call.rid, call.body)
        return True

    def cancel_running(self, task_id: bytes) -> None:
        """Loop thread: cancel a running coroutine of an async actor. (A call
        running on the main thread got SIGINT from Executor.cancel; one on a
        pool's thread cannot be interrupted.)"""
        call = self.calls.get(task_id)
        if call is not None and self.is_async:
            # After the call's _start, posted before this: its task exists.
            self.loop.call_soon_threadsafe(call.cancel_task)


class TaskOutput(io.TextIOBase):
    """stdout/stderr of a worker: marks each line with the running task's name,
    which the node turns into the `(name pid=N)` prefix the driver prints, and
    its id, which the node writes to the worker's log file (log_files.py)."""

    def __init__(self, stream, core_worker):
        self._stream = stream
        self._cw = core_worker
        self._line_start = True

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        task = self._cw.current_task
        mark = f"{LOG_MARK}{task.name}{LOG_SEP}{task.task_id.hex()}{LOG_SEP}" if task else ""
        out = []
        for piece in s.splitlines(keepends=True):
            if self._line_start and mark:
                out.append(mark)
            out.append(piece)
            self._line_start = piece.endswith("\n")
        self._stream.write("".join(out))
        if "\n" in s:
            self._stream.flush()
        return len(s)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return self._stream.encoding
