"""The core worker: what every driver and worker process embeds.

It owns the objects its process creates (by submitting tasks or `put`), keeps
their values or locations in the memory store, counts references to them, and
answers other processes that borrow them. It also submits tasks and, in a
worker, runs them (executor.py). CoreWorker itself owns the I/O loop and the
connections, and wires together the parts that do the work:

    task_manager.py     the tasks it owns: `.remote()`, streams, cancellation
    task_submitter.py   tasks: arguments, leases, pushes, results
    actor_submitter.py  actor creation and calls
    ownership.py        the objects it owns: put, borrowers, freeing, reports
    borrowing.py        the objects others own that it holds
    object_reader.py    get, wait, futures; fetching values from owners
    store_client.py     its node's shared-memory store: create, read, free
    lineage.py          rebuilding lost objects by running their tasks again
    memory_store.py, reference_counter.py: the two shared tables (below)

Threads. User code runs on user threads: the driver program and any threads
it starts; in a worker, the main thread (tasks) and an actor's thread pool or
event loop. All socket I/O runs on one asyncio loop (event_loop.py), run
by a background thread (`solray-io`), or by a thread that waits on it
(`Loop.wait_running`: a get's or a worker's idle main thread runs it while
it waits, so what it waits for needs no thread hand-off). The rule:

    The loop owns the core worker's state: whichever thread runs its turn
    (`Loop.in_turn`; one at a time). Other threads never write it and
    never iterate it: they hand work to the loop through its inbox
    (loop_inbox.py: `post()`, run in posting order) and, when they need an
    answer, wait for it on a future (`call`, `run_on_loop`, `submit`, which
    run after everything posted before them). The loop's callbacks never
    block and never wait for a user thread.

Who owns what (this is the one map; each part's header says why):

    loop only         task_manager: tasks, children, streams
                      actor_submitter.resolving (actor creations whose
                      constructor arguments are not all here yet)
                      ownership: contained, call_sites
                      borrowing: borrowed, handoffs, and its message queues
                      reader: _fetching, and each wait in progress
                      store: the batches of frees and unpins
                      lineage: tasks (stored output -> its task)
                      _inbound, _peers; submitter and actor_submitter (all
                      their state but one: below); collective (the arrays
                      other ranks sent, until util.collective takes them)
    shared, locked    actor_submitter._unfinished: max_pending_calls must
                      refuse a call on the user thread, in `.remote()`, so
                      that thread counts calls in and the loop counts them
                      out, under its own lock (actor_submitter.py).
                      refs: a thread that makes an ObjectRef counts it at once
                      (it relies on the count: ownership, first borrow), under
                      the counter's lock; every decrement and every free runs
                      on the loop (reference_counter.py).
                      memory_store: values arrive on the loop (results) or
                      from put(); user threads wait for them (memory_store.py).
                      store's arena mapping: made once, under its lock.
                      store's pins and released ids: a view's death, on any
                      thread, queues its id; the loop sends the unpins
                      (store_client.py).
                      metrics_reporter's pending table: recording threads add
                      points, the loop takes them every second (its lock).
                      runtime_env_resolver: user threads resolve envs as they
                      submit, under its lock (runtime_env/resolve.py).
                      _thread_tasks: the task each thread runs, written
                      by that thread, copied by `solray stack` (its lock).
                      reader._blocked: the threads blocked in get/wait, each
                      writing its own entry (object_reader.py; its lock).
                      task_events: the owner's events are the loop's; events
                      of the calls this process runs, from any thread, are
                      under its lock (task_events.py).
    loop, posted to   advice: the anti-pattern counts; user threads post
                      theirs (get() in a loop, large arguments), and write
                      `last_task` in `.remote()` (advice.py).
    set once          address, node, control, server, node_info, driver_task_id
                      (by start()),
                      executor, actor_id, namespace, on_node_lost,
                      runtime_env (the job's, at init; a worker's, at start);
                      job is set by the task about to run, before its user code
    per thread        current_task (a context variable); borrowing's list of
                      refs this thread deserialized and must register
    append only       task_manager._creation_refs (never read: it holds the
                      constructor arguments of our actors alive)

`__del__` methods and weakref finalizers run on whatever thread the garbage
collector happens to run on, the loop included, possibly while that thread
holds a lock or iterates a table. So they only hand over to the loop
(`drop_ref`, `post_lazy`, `post`): no lock taken, no table touched. An
ObjectRef's death is a queued decrement, applied in batches on the loop
after everything posted before it; a count can thus be too high for a
moment, never too low.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import os
import threading

from solray import exceptions
from solray._private import (
    driver_output,
    event_loop,
    host,
    ids,
    metrics_reporter,
    process_probe,
    serialization,
    transport,
)
from solray._private import task_events as ev
from solray._private.advice import Advice
from solray._private.borrowing import Borrowing
from solray._private.collective_inbox import CollectiveInbox
from solray._private.control_client import RECONNECT_TIMEOUT_S, ControlClient
from solray._private.lineage import Lineage
from solray._private.loop_inbox import Inbox
from solray._private.memory_store import Inline, MemoryStore, error_entry
from solray._private.object_reader import ObjectReader
from solray._private.ownership import Ownership
from solray._private.protocol import Msg
from solray._private.reference_counter import ReferenceCounter
from solray._private.store_client import StoreClient
from solray._private.task_manager import TaskManager
from solray.object_ref import ObjectRef

logger = logging.getLogger(__name__)

# The task (or actor call) running on this thread or asyncio task, in a worker.
_current_task: contextvars.ContextVar = contextvars.ContextVar("solray_task", default=None)


class CoreWorker:
    def __init__(
        self,
        *,
        is_driver: bool,
        token: bytes,
        node_address: str | None = None,
        control_address: str | None = None,
        worker_id: str | None = None,
        ip: str | None = None,
    ):
        from solray._private.actor_submitter import ActorSubmitter
        from solray._private.task_submitter import TaskSubmitter

        self.is_driver = is_driver
        self.token = token
        self.node_address = node_address
        self.control_address = control_address
        self.worker_id = worker_id or ids.random_unique_id().hex()
        self.ip = ip
        self.job = 0
        self.job_bytes = ids.job_id_bytes(0)
        self.address: str | None = None
        self.node: transport.Connection | None = None
        self.control: transport.Connection | None = None
        self.node_info: dict = {}
        self.executor = None  # set by worker_main in worker processes
        self.actor_id: bytes | None = None  # set when this worker hosts an actor
        self.namespace: str | None = None
        # This process's runtime env (the job's in a driver, its own in a
        # worker), resolved: what its tasks and actors inherit.
        self.runtime_env: dict = {}
        self.runtime_env_resolver = None  # resolve.Resolver, made at first use
        self.setup_error: str | None = None  # a worker whose setup hook raised
        self.shutting_down = False
        self.on_node_lost = None
        self.print_logs = True
        # A driver is a task too (Ray's DRIVER_TASK): its tasks' parent.
        self.driver_task_id: bytes | None = None
        self.task_events = ev.TaskEvents(self)
        self._thread_tasks: dict[int, object] = {}
        self._thread_tasks_lock = threading.Lock()
        self.advice = Advice(self)

        # The parts (see the header), and the two shared tables.
        self.memory_store = MemoryStore()
        self.ownership = Ownership(self)
        self.borrowing = Borrowing(self)
        self.refs = ReferenceCounter(self.ownership.on_free)
        self.store = StoreClient(self)
        self.reader = ObjectReader(self)
        self.lineage = Lineage(self)
        self.task_manager = TaskManager(self)
        self.submitter = TaskSubmitter(self)
        self.actor_submitter = ActorSubmitter(self)
        self.collective = CollectiveInbox()

        self.loop = event_loop.new_loop(lendable=True)
        self.loop_thread = threading.Thread(target=self._run_loop, name="solray-io", daemon=True)
        # Other threads reach the loop only through its inbox (loop_inbox.py).
        inbox = Inbox(self.loop, self.refs.remove_local)
        self.post, self.post_lazy, self.drop_ref = inbox.post, inbox.post_lazy, inbox.drop
        self.post_with_next, self.post_quiet = inbox.post_with_next, inbox.post_quiet
        self.post_record = inbox.post_record
        self.call, self.run_on_loop, self.submit = inbox.call, inbox.run, inbox.submit
        self.apply_inbox_now, self.inbox_idle = inbox.apply_now, inbox.idle
        self._inbound: set[transport.Connection] = set()
        self._peers = transport.ConnectionCache(  # other core workers and nodes
            token,
            {
                Msg.GENERATOR_ITEM: self.task_manager.on_generator_item,
                Msg.LEASE_INFEASIBLE: self.submitter.on_infeasible,
                Msg.WORKER_OOM_KILLED: self.submitter.on_oom_killed,
            },
        )

        # The API the rest of solray calls, as the parts provide it.
        tasks, reader = self.task_manager, self.reader
        self.submit_task, self.submit_actor_task = tasks.submit_task, tasks.submit_actor_task
        self.create_actor, self.cancel = tasks.create_actor, tasks.cancel
        self.take_stream_item, self.release_stream = tasks.take_stream_item, tasks.release_stream
        self.on_cancel_request = tasks.on_cancel_request
        self.get, self.wait, self.value_future = reader.get, reader.wait, reader.value_future
        self.wait_for_ids = reader.wait_for_ids
        self.put, self.add_ref = self.ownership.put, self.borrowing.add_ref
        self.add_refs = self.borrowing.add_refs

    @property
    def current_task(self):
        """The TaskContext running on this thread (or asyncio task), if any."""
        return _current_task.get()

    @current_task.setter
    def current_task(self, ctx) -> None:
        _current_task.set(ctx)
        # For `solray stack`: the task each thread runs (the loop cannot read
        # other threads' context variables). Each thread writes its own key.
        with self._thread_tasks_lock:
            if ctx is None:
                self._thread_tasks.pop(threading.get_ident(), None)
            else:
                self._thread_tasks[threading.get_ident()] = ctx

    def thread_tasks(self) -> dict:
        """Any thread: thread ident -> the TaskContext it runs (a copy)."""
        with self._thread_tasks_lock:
            return dict(self._thread_tasks)

    # -- the event loop thread ---------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.memory_store.wake_at_turn_end(self.loop)
        try:
            self.loop.run_forever()
        finally:  # no turn ends any more: waiters are woken at once
            self.memory_store.wake_at_turn_end(None)

    def request(self, conn_name: str, msg: Msg, body, buffers=(), raw=False, timeout=None):
        """A blocking request to the node or control store (user thread only)."""

        async def go():
            conn = getattr(self, conn_name)
            return await conn.request(msg, body, buffers, raw=raw)

        return self.call(go(), timeout)

    # -- start and stop ----------------------------------------------------

    def start(self, server_handlers: dict | None = None) -> None:
        self.loop_thread.start()
        self.call(self._connect(server_handlers or {}), timeout=60)

    async def _connect(self, server_handlers: dict) -> None:
        if self.node_address is None:
            # Joining a running cluster: the control store says where our node is.
            self.control = await self._connect_control(self.control_address)
            nodes = await self.control.request(Msg.GET_NODES)
            self.node_address = host.pick_local_node(nodes, self.ip)["address"]
        # Our endpoint listens where our node does, so other nodes reach it.
        self.ip = transport.parse_address(self.node_address)[0]
        sock = transport.bind_socket(self.ip, 0)
        self.address = transport.socket_address(sock)
        handlers = {
            Msg.GET_OBJECT: self.ownership.serve_get_object,
            Msg.ADD_BORROWERS: self.ownership.serve_add_borrowers,
            Msg.REMOVE_BORROWERS: self.ownership.serve_remove_borrowers,
            Msg.HANDOFF_DONE: self.borrowing.serve_handoff_done,
            Msg.ASSIGN_OWNER: self.ownership.serve_assign_owner,
            Msg.CANCEL_OWNED: self.task_manager.on_cancel_owned,
            Msg.COLLECTIVE_DATA: self.collective.serve,
            **server_handlers,
        }
        self.server = await transport.serve(
            sock, self.token, handlers, on_ready=self._inbound.add, on_close=self._inbound_closed
        )
        self.node = await transport.connect(
            self.node_address,
            self.token,
            {
                Msg.LEASE_INFEASIBLE: self.submitter.on_infeasible,
                Msg.WORKER_OOM_KILLED: self.submitter.on_oom_killed,
                Msg.OBJECT_REPORT: self.ownership.serve_object_report,
                Msg.COLLECT_GARBAGE: self._collect_garbage,
                Msg.WHY_PROCESS: lambda conn, rid, body, bufs: conn.reply(
                    rid, process_probe.report(self)
                ),
                Msg.STACKS_PROCESS: lambda conn, rid, body, bufs: conn.reply(
                    rid, process_probe.stacks(self)
                ),
            },
            on_close=self._node_closed,
        )
        if self.is_driver:
            self.node_info = await self.node.request(
                Msg.NODE_INFO,
                {
                    "driver": True,
                    "address": self.address,
                    "worker_id": self.worker_id,
                    "pid": os.getpid(),
                },
            )
        else:
            self.node_info = await self.node.request(
                Msg.REGISTER_WORKER,
                {
                    "worker_id": self.worker_id,
                    "address": self.address,
                    "pid": os.getpid(),
                    "setup_error": self.setup_error,
                },
            )
        if self.control is None:
            self.control = await self._connect_control(self.node_info["control_address"])
        if self.is_driver:
            reply = await self.control.request(Msg.REGISTER_DRIVER, {"pid": os.getpid()})
            self.set_job(reply["job"])
            await self.control.subscribe(["logs"])
            self.driver_task_id = ids.new_task_id(self.job_bytes)
            if self.task_events.enabled:
                info = (ev.DRIVER_TASK, "driver", "", None, None, {}, None, 0)
                self.task_events.executed(self.driver_task_id, 0, ev.RUNNING, info=info)
        await self._hello(self.control)
        self.task_events.start()

    async def _connect_control(self, address: str) -> ControlClient:
        control = ControlClient(
            address, self.token, {Msg.PUBLISHED: self._on_published}, on_connect=self._hello
        )
        # A worker may start while the control store restarts: it waits.
        await control.connect(retry_for=0.0 if self.is_driver else RECONNECT_TIMEOUT_S)
        return control

    async def _hello(self, conn) -> None:
        """Who we are, on each connection to the control store: a restarted
        control store gives us back the actors and placement groups we own
        (by our address), so they fate-share with us again."""
        job = self.job if self.is_driver else None
        await conn.request(Msg.CONTROL_HELLO, {"address": self.address, "job": job})

    def set_job(self, job: int) -> None:
        self.job = job
        self.job_bytes = ids.job_id_bytes(job)

    def _collect_garbage(self, conn, rid, body, buffers) -> None:
        """Loop thread: the node's store is full (Ray's global GC). Refs that
        only reference cycles held die here; their frees go to the node
        before the answer, so the node sees the room when it has it."""
        gc.collect()
        self.apply_inbox_now()  # the dead refs' decrements, and the frees they make
        self.store.flush()
        conn.reply(rid, True)

    def _node_closed(self, conn) -> None:
        if not self.shutting_down and self.on_node_lost is not None:
            self.on_node_lost()

    def _inbound_closed(self, conn) -> None:
        """A peer disconnected: it borrows nothing any more, and results it
        never took over are let go."""
        self._inbound.discard(conn)
        self.ownership.peer_gone(conn)
        self.borrowing.peer_gone(conn)

    def shutdown(self) -> None:
        self.shutting_down = True

        async def close_all():
            self.store.flush()
            metrics_reporter.report(self)  # the last metric updates
            if self.driver_task_id is not None and self.task_events.enabled:
                self.task_events.executed(self.driver_task_id, 0, ev.FINISHED)
            self.task_events.flush()  # the last task events
            self.advice.flush()  # the last anti-pattern counts
            await self._peers.close()
            for conn in (self.node, self.control):
                if conn is not None:
                    conn.close()
            self.server.close()
            # Server.close() leaves accepted connections (borrowers fetching
            # our objects) open; their sockets would outlive shutdown.
            for conn in list(self._inbound):
                conn.close()
            await asyncio.sleep(0)

        try:
            self.call(close_all(), timeout=5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.loop_thread.join(timeout=5)
        if not self.loop_thread.is_alive():
            self.loop.close()
        self.reader.close()
        self.store.close()

    # -- connections to other core workers ---------------------------------

    async def peer(self, address: str) -> transport.Connection:
        """Our connection to another core worker or node, made on first use."""
        return await self._peers.get(address)

    # -- placement groups and nodes ------------------------------------------

    def placement_group_ready(self, group) -> ObjectRef:
        """User thread: a ref set to `group` once the control store has
        reserved all its bundles (an error if it is removed first)."""
        object_id = ids.put_object_id(self.job_bytes)
        self.refs.add_owned(object_id)
        ref = ObjectRef(object_id, self.address)

        async def wait():
            try:
                created = await self.control.request(Msg.WAIT_PG, {"pg_id": group.id})
            except transport.ConnectionLost:
                created = False
            if created:
                entry = Inline(serialization.serialize(group))
            else:
                entry = error_entry(
                    exceptions.RayError(
                        f"placement group {group.id} was removed before it was created"
                    )
                )
            self.memory_store.put(object_id, entry)

        self.post(lambda: self.loop.create_task(wait()))
        return ref

    async def find_node(self, node_id: str) -> dict | None:
        """Loop thread: an alive node's info, by id (hex)."""
        for info in await self.control.request(Msg.GET_NODES):
            if info["node_id"] == node_id and info["alive"]:
                return info
        return None

    # -- logs --------------------------------------------------------------

    def _on_published(self, conn, rid, body, bufs) -> None:
        if body.get("channel") != "logs" or not self.print_logs:
            return
        driver_output.print_worker_lines(body["data"], self.ip)
