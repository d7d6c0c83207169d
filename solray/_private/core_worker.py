"""The core worker: what every driver and worker process embeds.

It owns the objects its process creates (by submitting tasks or `put`), keeps
their values or locations in the memory store, counts references to them, and
answers other processes that borrow them. It also submits tasks
(task_submitter.py) and, in a worker, runs them (executor.py).

Threads. User code runs on user threads: the driver program and any threads
it starts; in a worker, the main thread (tasks) and an actor's thread pool or
event loop. All socket I/O runs on one asyncio loop in a background thread
(`solray-io`). The rule:

    The loop owns the core worker's state. Other threads never write it and
    never iterate it: they hand work to the loop through its inbox
    (loop_inbox.py: `post()`, run in posting order) and, when they need an
    answer, wait for it on a future (`call`, `run_on_loop`, which run after
    everything posted before them). The loop never blocks and never waits
    for a user thread.

Who owns what (CoreWorker attributes, and the parts it holds):

    loop only         tasks, children, streams, lineage, contained,
                      call_sites, handoffs, _borrowed, _borrow_messages,
                      _fetching, _store_frees, _unpins, _inbound, _peers,
                      submitter and actor_submitter (all their state but
                      one: below)
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
                      _arena: mapped once, under _arena_lock.
    set once          address, node, control, server, node_info (by start()),
                      executor, actor_id, namespace, on_node_lost; job is set
                      by the task about to run, before its user code
    per thread        current_task (a context variable), _tls (refs this
                      thread deserialized and must register as borrowed)
    append only       _creation_refs (never read: it holds refs alive)

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
import concurrent.futures
import contextvars
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial

from solray import exceptions
from solray._private import context, ids, serialization, transport
from solray._private.loop_inbox import Inbox
from solray._private.memory_store import (
    Inline,
    InStore,
    MemoryStore,
    decode_entry,
    encode_entry,
    error_entry,
)
from solray._private.object_store import ArenaMapping
from solray._private.options import (
    actor_resources,
    backpressure,
    placement_of,
    task_resources,
)
from solray._private.protocol import Msg
from solray._private.reference_counter import ReferenceCounter
from solray._private.serialization import SerializedObject
from solray._private.task_spec import END_OF_STREAM, PendingTask, StreamState, extract_deps
from solray.object_ref import ObjectRef
from solray.object_ref_generator import ObjectRefGenerator
from solray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

logger = logging.getLogger(__name__)

# The task (or actor call) running on this thread or asyncio task, in a worker.
_current_task: contextvars.ContextVar = contextvars.ContextVar("solray_task", default=None)

ACTOR_ID_LEN = 16  # actor ids share the reference counter with 28-byte object ids

# Values up to this size travel inline with task replies and stay in the
# owner's memory; larger ones go to the node's shared-memory store.
INLINE_MAX = 100 * 1024


class CoreWorker:
    def __init__(
        self,
        *,
        is_driver: bool,
        token: bytes,
        node_address: str | None = None,
        control_address: str | None = None,
        worker_id: str | None = None,
        ip: str = "127.0.0.1",
    ):
        from solray._private.actor_submitter import ActorSubmitter
        from solray._private.task_submitter import TaskSubmitter

        self.is_driver = is_driver
        self.token = token
        self.node_address = node_address
        self.control_address = control_address
        self.worker_id = worker_id or ids.random_unique_id().hex()
        self.ip = ip
        self.memory_store = MemoryStore()
        self.refs = ReferenceCounter(self._on_free)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="solray-io", daemon=True)
        # Other threads reach the loop only through its inbox (loop_inbox.py).
        inbox = Inbox(self.loop, self._thread, self.refs.remove_local)
        self.post, self.post_lazy, self.drop_ref = inbox.post, inbox.post_lazy, inbox.drop
        self.call, self.run_on_loop, self.submit = inbox.call, inbox.run, inbox.submit
        self._inbound: set[transport.Connection] = set()
        self._fetching: set[bytes] = set()
        self._store_frees: dict[str, list[bytes]] = {}  # node -> ids to free there
        self._unpins: list[bytes] = []
        self._arena: ArenaMapping | None = None
        self._arena_lock = threading.Lock()
        # Resolves ObjectRef.future()s; its thread starts on first use.
        self._future_pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="solray-futures"
        )
        self.job = 0
        self.job_bytes = ids.job_id_bytes(0)
        self.address: str | None = None
        self.node: transport.Connection | None = None
        self.control: transport.Connection | None = None
        self.node_info: dict = {}
        self.submitter = TaskSubmitter(self)
        self._peers = transport.ConnectionCache(  # other core workers and nodes
            token,
            {
                Msg.GENERATOR_ITEM: self.on_generator_item,
                Msg.LEASE_INFEASIBLE: self.submitter.on_infeasible,
                Msg.WORKER_OOM_KILLED: self.submitter.on_oom_killed,
            },
        )
        self.actor_submitter = ActorSubmitter(self)
        self.executor = None  # set by worker_main in worker processes
        self.actor_id: bytes | None = None  # set when this worker hosts an actor
        self.tasks: dict[bytes, PendingTask] = {}  # submitted and not finished
        self.children: dict[bytes, list[bytes]] = {}  # running task -> tasks it submitted
        self.streams: dict[bytes, StreamState] = {}  # streaming tasks we own
        self.contained: dict[bytes, list] = {}  # owned object -> refs inside its value
        self.handoffs: dict[bytes, list] = {}  # task -> refs in its results, until taken
        self._borrowed: dict[bytes, str] = {}  # borrowed object -> owner we registered with
        self._borrow_messages: dict[str, list] = {}  # owner -> (un)registrations to send
        self._tls = threading.local()  # per thread: refs deserialized, not registered yet
        self._creation_refs: list = []  # actor constructor arguments, kept for restarts
        self.lineage: dict[bytes, PendingTask] = {}  # stored task result -> its task
        self._handoff_waits: dict[bytes, list] = {}  # task -> borrow registrations pending
        # SOLRAY_RECORD_REF_CREATION_SITES=1: where each owned object was made.
        self.record_call_sites = os.environ.get("SOLRAY_RECORD_REF_CREATION_SITES") == "1"
        self.call_sites: dict[bytes, str] = {}
        self.namespace: str | None = None
        self.shutting_down = False
        self.on_node_lost = None
        self.print_logs = True

    @property
    def current_task(self):
        """The TaskContext running on this thread (or asyncio task), if any."""
        return _current_task.get()

    @current_task.setter
    def current_task(self, ctx) -> None:
        _current_task.set(ctx)

    # -- the event loop thread ---------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def request(self, conn_name: str, msg: Msg, body, buffers=(), raw=False, timeout=None):
        """A blocking request to the node or control store (user thread only)."""

        async def go():
            conn = getattr(self, conn_name)
            return await conn.request(msg, body, buffers, raw=raw)

        return self.call(go(), timeout)

    # -- start and stop ----------------------------------------------------

    def start(self, server_handlers: dict | None = None) -> None:
        self._thread.start()
        self.call(self._connect(server_handlers or {}), timeout=60)

    async def _connect(self, server_handlers: dict) -> None:
        if self.node_address is None:
            # Joining a running cluster: the control store says where our node is.
            self.control = await self._connect_control(self.control_address)
            self.node_address = pick_local_node(await self.control.request(Msg.GET_NODES), self.ip)
        # Our endpoint listens where our node does, so other nodes reach it.
        self.ip = transport.parse_address(self.node_address)[0]
        sock = transport.bind_socket(self.ip, 0)
        self.address = transport.socket_address(sock)
        handlers = {
            Msg.GET_OBJECT: self._serve_get_object,
            Msg.ADD_BORROWERS: self._serve_add_borrowers,
            Msg.REMOVE_BORROWERS: self._serve_remove_borrowers,
            Msg.HANDOFF_DONE: self._serve_handoff_done,
            Msg.ASSIGN_OWNER: self._serve_assign_owner,
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
                Msg.OBJECT_REPORT: self._serve_object_report,
            },
            on_close=self._node_closed,
        )
        if self.is_driver:
            self.node_info = await self.node.request(
                Msg.NODE_INFO, {"driver": True, "address": self.address}
            )
        else:
            self.node_info = await self.node.request(
                Msg.REGISTER_WORKER,
                {"worker_id": self.worker_id, "address": self.address, "pid": os.getpid()},
            )
        if self.control is None:
            self.control = await self._connect_control(self.node_info["control_address"])
        if self.is_driver:
            reply = await self.control.request(Msg.REGISTER_DRIVER, {"pid": os.getpid()})
            self.set_job(reply["job"])
            await self.control.request(Msg.SUBSCRIBE, ["logs"])

    async def _connect_control(self, address: str) -> transport.Connection:
        return await transport.connect(address, self.token, {Msg.PUBLISHED: self._on_published})

    def set_job(self, job: int) -> None:
        self.job = job
        self.job_bytes = ids.job_id_bytes(job)

    def _node_closed(self, conn) -> None:
        if not self.shutting_down and self.on_node_lost is not None:
            self.on_node_lost()

    def shutdown(self) -> None:
        self.shutting_down = True

        async def close_all():
            self._flush_store_messages()
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
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
        self._future_pool.shutdown(wait=False)
        if self._arena is not None:
            # Values still built on the mapping keep it (and its fd) until
            # they die; nothing else may.
            self._arena.close()
            self._arena = None

    # -- connections to other core workers ---------------------------------

    async def peer(self, address: str) -> transport.Connection:
        """Our connection to another core worker or node, made on first use."""
        return await self._peers.get(address)

    # -- tasks -------------------------------------------------------------

    def submit_task(self, function, args: tuple, kwargs: dict, options: dict):
        """User thread: make the task's return refs (or its ObjectRefGenerator)
        and hand the task to the loop."""
        options = self._captured(options)
        blob, args_ref, deps, contained = self.pack_arguments(args, kwargs)
        task = PendingTask(
            task_id=ids.new_task_id(self.job_bytes),
            function=function,
            num_returns=options["num_returns"],
            resources=task_resources(options),
            args_blob=blob,
            args_ref=args_ref,
            deps=deps,
            return_ids=[],
            max_retries=options["max_retries"],
            retry_exceptions=options["retry_exceptions"],
            job=self.job,
            contained=contained,
            strategy=options.get("scheduling_strategy"),
            label_selector=options.get("label_selector") or None,
            max_calls=options["max_calls"],
            task_name=options.get("name"),
        )
        result = self._prepare_returns(
            task, backpressure(options.get("_generator_backpressure_num_objects"))
        )
        self.post(self.submitter.submit, task)
        return result

    def _prepare_returns(self, task: PendingTask, backpressure):
        """User thread: make what `.remote()` gives the caller (a list of
        refs, or an ObjectRefGenerator for a stream), and post the task's
        tracking to the loop. The caller posts its submission next."""
        mode = task.num_returns
        if mode == "streaming":
            task.stream = True
            task.backpressure = backpressure
            result = ObjectRefGenerator(task.task_id, self.address)
        else:
            count = 1 if mode == "dynamic" else mode
            task.return_ids = [ids.return_object_id(task.task_id, i) for i in range(count)]
            for object_id in task.return_ids:
                self.refs.add_owned(object_id)
            result = [ObjectRef(object_id, self.address) for object_id in task.return_ids]
        parent = self.current_task
        site = _call_site() if self.record_call_sites else None
        self.post(self._track, task, parent.task_id if parent is not None else None, site)
        return result

    def _track(self, task: PendingTask, parent: bytes | None, site: str | None) -> None:
        """Loop thread: a task a user thread submitted is ours until it ends."""
        self.tasks[task.task_id] = task
        if parent is not None:  # a child, cancelled with its parent
            self.children.setdefault(parent, []).append(task.task_id)
        if task.stream:
            self.streams[task.task_id] = StreamState(task.backpressure)
        if site:
            for object_id in task.return_ids:
                self.call_sites[object_id] = site

    # -- actors ------------------------------------------------------------

    def create_actor(self, descriptor, args, kwargs, options: dict, meta: dict):
        """User thread: register the actor (its name is taken now, or the
        existing one returned), then let the loop resolve the constructor's
        arguments and ask the control store to place it."""
        options = self._captured(options)
        actor_id = ids.random_unique_id()[:ACTOR_ID_LEN]
        running, placement = actor_resources(options)
        namespace = options.get("namespace") or self.namespace
        reply = self.request(
            "control",
            Msg.REGISTER_ACTOR,
            {
                "actor_id": actor_id,
                "name": options.get("name"),
                "namespace": namespace,
                "get_if_exists": options.get("get_if_exists", False),
                "detached": options.get("lifetime") == "detached",
                "max_restarts": options["max_restarts"],
                "owner": self.address,
                "resources": running,
                "placement_resources": placement,
                "meta": meta,
                "job": self.job,
                "strategy": _actor_strategy(options.get("scheduling_strategy")),
                "label_selector": options.get("label_selector") or None,
            },
        )
        if "error" in reply:
            raise ValueError(reply["error"])
        if "existing" in reply:
            return reply["existing"], reply["meta"], reply.get("owner", "")
        blob, args_ref, deps, contained = self.pack_arguments(args, kwargs)
        # A restart runs the constructor again: keep its arguments for as long
        # as this owner lives.
        self.refs.pin([d._id for d in deps] + ([args_ref._id] if args_ref else []))
        self._creation_refs.extend([*deps, *contained])
        self.refs.add_owned(actor_id)
        task = PendingTask(
            task_id=ids.new_task_id(self.job_bytes),
            function=descriptor,
            num_returns=0,
            resources=running,
            args_blob=blob,
            args_ref=args_ref,
            deps=deps,
            return_ids=[],
            max_retries=0,
            retry_exceptions=False,
            job=self.job,
        )
        groups = options.get("concurrency_groups") or {}
        runtime = {
            "max_concurrency": options.get("max_concurrency") or (1000 if meta["is_async"] else 1),
            "concurrency_groups": groups,
            "is_async": meta["is_async"],
            "class_name": meta["class_name"],
            "pg": placement_of(options.get("scheduling_strategy")),
        }
        self.post(self.actor_submitter.create, actor_id, task, runtime)
        return actor_id, meta, self.address

    def _captured(self, options: dict) -> dict:
        """Ray's placement_group_capture_child_tasks: a task or actor made
        without a scheduling strategy inside a group that captures its
        children runs in that group too (any bundle)."""
        current = self.current_task
        placement = current.placement if current is not None else None
        if options.get("scheduling_strategy") is not None or not placement or not placement[2]:
            return options
        from solray.util.placement_group import PlacementGroup

        group = PlacementGroup(placement[0], placement[1])
        strategy = PlacementGroupSchedulingStrategy(group, -1, True)
        return dict(options, scheduling_strategy=strategy)

    def submit_actor_task(self, actor_id: bytes, method: str, args, kwargs, options: dict):
        """User thread: a call to an actor method. `options` are the method's
        (num_returns, concurrency_group, max_task_retries, retry_exceptions,
        _generator_backpressure_num_objects, name) and the actor's
        (max_pending_calls, out_of_order)."""
        limit = options["max_pending_calls"]
        if limit > 0:  # raises PendingCallsLimitExceeded when full
            self.actor_submitter.admit(actor_id, limit)
        blob, args_ref, deps, contained = self.pack_arguments(args, kwargs)
        task = PendingTask(
            task_id=ids.new_task_id(self.job_bytes),
            function=None,
            num_returns=options["num_returns"],
            resources={},
            args_blob=blob,
            args_ref=args_ref,
            deps=deps,
            return_ids=[],
            max_retries=options["max_task_retries"],
            retry_exceptions=options.get("retry_exceptions") or False,
            job=self.job,
            method=method,
            concurrency_group=options.get("concurrency_group"),
            contained=contained,
            actor_id=actor_id,
            admitted=limit > 0,
            task_name=options.get("name"),
        )
        result = self._prepare_returns(
            task, backpressure(options.get("_generator_backpressure_num_objects"))
        )
        self.post(self.actor_submitter.submit, actor_id, task, options["out_of_order"])
        return result

    def pack_arguments(self, args: tuple, kwargs: dict):
        """Pickle a call's arguments once. Returns the inline blob (or a ref to
        it in the store, if large), the top-level ref arguments, and the refs
        nested deeper, which the task must hold until it finishes."""
        args, kwargs, deps = extract_deps(args, kwargs, ObjectRef)
        blob = serialization.serialize((tuple(args), kwargs))
        contained = blob.contained_refs
        if blob.inline_size() <= INLINE_MAX:
            return blob, None, deps, contained
        # Large arguments go to the store once; the worker reads them in place.
        object_id = ids.put_object_id(self.job_bytes)
        self.refs.add_owned(object_id)
        args_ref = ObjectRef(object_id, self.address)
        self.memory_store.put(object_id, self.store_value(object_id, blob))
        return None, args_ref, deps, contained

    # -- objects: put ------------------------------------------------------

    def put(self, value, owner: bytes | None = None) -> ObjectRef:
        """Store a value; this process owns it, or the actor `owner` (an actor
        id) does."""
        if isinstance(value, ObjectRef):
            raise TypeError(
                "Calling 'put' on an ObjectRef is not allowed. If you really want to do "
                "this, you can wrap the ObjectRef in a list and call 'put' on it."
            )
        obj = serialization.serialize(value)
        object_id = ids.put_object_id(self.job_bytes)
        if owner is not None:
            address = self._actor_address(owner)
            if address != self.address:  # an actor naming itself owns it anyway
                return self._put_for(address, object_id, obj)
        self.refs.add_owned(object_id)
        ref = ObjectRef(object_id, self.address)
        site = _call_site() if self.record_call_sites else None
        if obj.contained_refs or site:
            # Posted before `ref` can die, so recorded before it is freed.
            self.post(self._note_put, object_id, obj.contained_refs, site)
        self.memory_store.put(object_id, self.store_value(object_id, obj))
        return ref

    def _note_put(self, object_id: bytes, contained: list, site: str | None) -> None:
        """Loop thread: the value of a put keeps the refs inside it alive."""
        if contained:
            self.contained[object_id] = contained
        if site:
            self.call_sites[object_id] = site

    def _put_for(self, owner: str, object_id: bytes, obj: SerializedObject) -> ObjectRef:
        """User thread: `put(_owner=actor)`. The value goes to this node's
        store whatever its size, recorded as the actor's, so it outlives this
        process and goes when the actor does (an object fate-shares with its
        owner). The actor at `owner` takes it over (ASSIGN_OWNER): it frees it
        once nobody references it, and this process is a borrower."""
        entry = self.store_value(object_id, obj, owner=owner, always_store=True)
        body = {
            "id": object_id,
            "entry": encode_entry(entry)[0],
            "contained": [[r._id, r._owner] for r in obj.contained_refs],
            "borrower": self.address,
        }

        async def assign():
            try:
                await (await self.peer(owner)).request(Msg.ASSIGN_OWNER, body)
                return True
            except (OSError, TimeoutError, transport.ConnectionLost):
                return False

        if not self.call(assign()):
            self.post(self.free_in_store, object_id, entry.node)  # nobody else ever will
            raise exceptions.OwnerDiedError(object_id.hex(), owner)
        # Registered by ASSIGN_OWNER itself; posted before the ref below
        # exists, so its own borrow registration finds it done.
        self.post(self._borrowed.__setitem__, object_id, owner)
        self.memory_store.put(object_id, entry)
        return ObjectRef(object_id, owner)

    def _actor_address(self, actor_id: bytes) -> str:
        """User thread: where an actor runs (once it is alive)."""
        reply = self.request("control", Msg.GET_ACTOR, {"actor_id": actor_id})
        if reply["state"] != "ALIVE":
            raise exceptions.ActorDiedError(
                actor_id=actor_id.hex(),
                error_msg=f"The actor {actor_id.hex()} cannot own the object passed to put("
                f"_owner=...): it is dead because {reply.get('cause') or 'it died'}",
            )
        return reply["address"]

    def _serve_assign_owner(self, conn, rid, body, buffers) -> None:
        """Loop thread: another process put an object and made us its owner.
        It borrows it from now on; refs inside the value are held while the
        object lives (answered once their owners know we hold them, so the
        putter may let go of its own)."""
        object_id = body["id"]
        self.refs.add_owned(object_id)
        self.memory_store.put(object_id, decode_entry(body["entry"], []))
        self._add_borrowers(conn, [object_id], body["borrower"])
        if not body["contained"]:
            conn.reply(rid, True)
            return
        self.contained[object_id] = [ObjectRef(i, owner) for i, owner in body["contained"]]
        self.register_borrows_async().add_done_callback(lambda _: conn.reply(rid, True))

    def store_value(
        self,
        object_id: bytes,
        obj: SerializedObject,
        owner: str | None = None,
        always_store: bool = False,
    ):
        """Where a new value should live: inline if small (unless
        `always_store`), else the node's store."""
        if obj.inline_size() <= INLINE_MAX and not always_store:
            return Inline(obj)
        size = obj.store_size()
        reply = self.request(
            "node",
            Msg.STORE_CREATE,
            {"id": object_id, "size": size, "owner": owner or self.address},
        )
        if "error" in reply:
            raise getattr(exceptions, reply["error"], exceptions.ObjectStoreFullError)(
                reply["message"]
            )
        view = self.arena().writable(reply["offset"], size)
        try:
            obj.write_to(view)
        finally:
            view.release()
        self.post(self.node.send, Msg.STORE_SEAL, {"id": object_id})
        return InStore(self.node_address, size)

    def arena(self) -> ArenaMapping:
        """Any thread: the node's arena, mapped on first use."""
        if self._arena is None:
            with self._arena_lock:
                if self._arena is None:
                    self._arena = ArenaMapping(
                        self.node_info["arena_path"], self.node_info["store_capacity"]
                    )
        return self._arena

    # -- objects: get and wait ---------------------------------------------

    def get(self, refs: list[ObjectRef], timeout: float | None = None) -> list:
        self._fetch_borrowed(refs)
        object_ids = [r._id for r in refs]
        if not self.wait_for_ids(object_ids, len(set(object_ids)), timeout):
            raise exceptions.GetTimeoutError(
                f"get timed out after {timeout} seconds: "
                f"{sum(not self.memory_store.contains(i) for i in set(object_ids))} "
                "object(s) still not ready"
            )
        return [self.materialize(r._id, self.memory_store.get(r._id), r._owner) for r in refs]

    def wait(
        self,
        object_ids: list[bytes],
        refs: list[ObjectRef],
        num_returns: int,
        timeout: float | None,
        fetch_local: bool,
        anywhere: frozenset[bytes] = frozenset(),
    ) -> Callable[[bytes], bool]:
        """Block until `num_returns` of the ids are ready, or the timeout
        passed; returns a test of which ids are. `refs` are the plain
        ObjectRefs among them, which may need fetching from their owners.
        Ready: the value exists somewhere; with `fetch_local` it must also be
        readable on this node, so a value in another node's store is pulled
        here first (as Ray's wait does), except for the ids in `anywhere` (a
        stream's next item, for which Ray ignores fetch_local)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        is_ready = self._readable_here(anywhere) if fetch_local else self.memory_store.contains
        if _at_least(object_ids, is_ready, num_returns):
            return is_ready  # on one node, values are always inline or in its store
        self._fetch_borrowed(refs)
        self.wait_for_ids(object_ids, num_returns, timeout)
        if not fetch_local or _at_least(object_ids, is_ready, num_returns):
            return is_ready
        # Some values live in other nodes' stores: follow each id until it is
        # readable here (pulls start even if the time is up, as in Ray).
        waiting = _LocalWait(object_ids, anywhere, num_returns)
        self.post(self._start_local_wait, waiting)
        self._block(
            waiting.event, None if deadline is None else max(0.0, deadline - time.monotonic())
        )
        result: concurrent.futures.Future = concurrent.futures.Future()
        self.post(self._finish_local_wait, waiting, result)
        return result.result().__contains__

    def _readable_here(self, anywhere: frozenset[bytes]) -> Callable[[bytes], bool]:
        """A test of whether an id has a value this process can read without
        a pull (or, for ids in `anywhere`, has a value at all)."""
        get, node = self.memory_store.get, self.node_address

        def readable(object_id: bytes) -> bool:
            entry = get(object_id)
            if entry is None:
                return False
            return type(entry) is not InStore or entry.node == node or object_id in anywhere

        return readable

    def _start_local_wait(self, waiting: _LocalWait) -> None:
        """Loop thread: follow each id until it is readable here."""
        for object_id in waiting.ids:
            arrived = partial(self.post, self._local_wait_arrived, waiting, object_id)
            waiter = self.memory_store.wait([object_id], 1, arrived)
            if waiter is None:
                self._local_wait_arrived(waiting, object_id)
            else:
                waiting.waiters.append((object_id, waiter))

    def _local_wait_arrived(self, waiting: _LocalWait, object_id: bytes) -> None:
        """Loop thread: the id has a value; pull it here if it lives elsewhere."""
        if waiting.done:
            return
        entry = self.memory_store.get(object_id)
        elsewhere = type(entry) is InStore and entry.node != self.node_address
        if elsewhere and object_id not in waiting.anywhere:
            self.loop.create_task(self._pull_here(waiting, object_id, entry))
        else:
            waiting.one_ready(object_id)

    async def _pull_here(self, waiting: _LocalWait, object_id: bytes, entry: InStore) -> None:
        """Have our node copy the object into its store (each object is pulled
        once per node, however many ask), then let go of the pin the pull
        gives us: nothing reads it yet."""
        owner = self.address if self.refs.owns(object_id) else self._borrowed.get(object_id, "")
        try:
            reply = await self.node.request(
                Msg.STORE_PULL, self._pull_body(object_id, entry, owner)
            )
        except transport.ConnectionLost:
            reply = None
        if reply is not None and "offset" in reply:
            self._unpin_later(object_id)
        # A pull that failed (the object is lost, or no room here) is ready
        # too: get() then recovers it or raises why it cannot.
        waiting.one_ready(object_id)

    def _finish_local_wait(self, waiting: _LocalWait, result: concurrent.futures.Future) -> None:
        """Loop thread: the caller is done waiting; hand it what is ready."""
        waiting.done = True
        for object_id, waiter in waiting.waiters:
            self.memory_store.forget_waiter([object_id], waiter)
        result.set_result(waiting.ready)

    def wait_for_ids(self, object_ids: list[bytes], needed: int, timeout: float | None) -> bool:
        """Block until `needed` of the ids have entries; False on timeout."""
        waiter = self.memory_store.wait(object_ids, needed)
        if waiter is None:
            return True
        if self._block(waiter.event, timeout):
            return True
        self.memory_store.forget_waiter(object_ids, waiter)
        return False

    def _block(self, event: threading.Event, timeout: float | None) -> bool:
        """User thread: wait for `event`; False on timeout. A worker blocked
        here lends its CPU to others (WORKER_BLOCKED)."""
        blocked = self.current_task is not None
        if blocked:
            self.post(self.node.send, Msg.WORKER_BLOCKED)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                # Wake up now and then so Ctrl-C reaches the driver promptly.
                step = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
                if event.wait(step):
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
        finally:
            if blocked:
                self.post(self.node.send, Msg.WORKER_UNBLOCKED)

    def materialize(self, object_id: bytes, entry, owner: str):
        """User thread: the value an entry holds (raising the error it holds).
        A value whose only copy was lost is rebuilt by `owner` first."""
        obj = None
        while obj is None:
            if isinstance(entry, Inline):
                obj = entry.obj
            elif isinstance(entry, InStore):
                try:
                    obj = self._read_from_store(object_id, entry, owner)
                except _Lost:
                    entry = self._recovered(object_id, entry, owner)
            else:
                raise exceptions.ObjectLostError(object_id.hex(), owner)
        value = serialization.deserialize(obj)
        self.register_borrows()
        if obj.is_error:
            raise_stored_error(value)
        return value

    def _read_from_store(self, object_id: bytes, entry: InStore, owner: str) -> SerializedObject:
        """Pin the object in this node's store (pulling it from the node that
        has it, if that is another) and view it in place."""
        if entry.node == self.node_address:
            reply = self.request("node", Msg.STORE_PIN, {"id": object_id})
        else:
            reply = self.request("node", Msg.STORE_PULL, self._pull_body(object_id, entry, owner))
        if reply is None:
            raise _Lost(object_id)
        if "error" in reply:
            raise getattr(exceptions, reply["error"], exceptions.ObjectStoreFullError)(
                reply["message"]
            )
        view = self.arena().pinned_view(
            reply["offset"], reply["size"], partial(self._unpin_later, object_id)
        )
        return SerializedObject.read_from(view)

    @staticmethod
    def _pull_body(object_id: bytes, entry: InStore, owner: str) -> dict:
        """STORE_PULL: copy the object here from the node holding it, and pin
        it (the copy is the owner's: it goes if the owner dies)."""
        return {"id": object_id, "from": entry.node, "size": entry.size, "owner": owner}

    def _recovered(self, object_id: bytes, lost: InStore, owner: str):
        """User thread: no copy of the object is left where `lost` said.
        Its owner rebuilds it (`recover`); returns its new entry (an error
        entry if it cannot be had). A worker lends its CPU meanwhile."""
        if self.refs.owns(object_id):
            self.run_on_loop(self.recover, object_id, lost.node)
            self.wait_for_ids([object_id], 1, None)
            return self.memory_store.get(object_id)
        done = threading.Event()
        asked = self.submit(self._ask_owner(object_id, owner, lost))
        asked.add_done_callback(lambda _: done.set())
        self._block(done, None)
        return asked.result()

    def recover(self, object_id: bytes, lost_at: str) -> None:
        """Loop thread: a reader found no copy of our object at node
        `lost_at`. Rebuild it, unless that is under way or done already (its
        entry is no longer the lost one): concurrent readers of one lost
        object cause one reconstruction."""
        entry = self.memory_store.get(object_id)
        if type(entry) is InStore and entry.node == lost_at:
            self.memory_store.delete(object_id)
            self._reconstruct(object_id, lost_at)

    def _reconstruct(self, object_id: bytes, lost_at: str) -> None:
        """Loop thread: run the task that made a lost object again (its
        lineage), within its retries; or store why that cannot be. Its
        arguments of ours lost with the same node are rebuilt first, the
        same way, so a chain lost with a node comes back whole; any other
        lost argument is rebuilt when the re-run reads it."""
        task = self.lineage.get(object_id)
        if task is not None and task.task_id in self.tasks:
            return  # already being re-run for another of its returns
        error = _unrebuildable(object_id, task, self.address)
        if error is not None:
            self.memory_store.put(object_id, error_entry(error))
            return
        task.attempt += 1
        task.resolved = task.cancelled = False
        task.running_on = task.dep_error = None
        for return_id in task.return_ids:  # those lost with it come back with it
            entry = self.memory_store.get(return_id)
            if type(entry) is InStore and entry.node == lost_at:
                self.memory_store.delete(return_id)
        for ref in task.deps:
            if self.refs.owns(ref._id):
                self.recover(ref._id, lost_at)
        self.tasks[task.task_id] = task
        self.submitter.submit(task)

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

    def _unpin_later(self, object_id: bytes) -> None:
        """Any thread (a weakref finalizer): nothing built on a pinned view
        of the store lives any more."""
        if not self.shutting_down:
            self.post_lazy(self._unpin, object_id)

    def _unpin(self, object_id: bytes) -> None:
        self._unpins.append(object_id)
        if len(self._unpins) == 1:
            self.post(self._flush_store_messages)

    def _flush_store_messages(self) -> None:
        if self.node is None or self.node.closed:
            return
        if self._unpins:
            unpins, self._unpins = self._unpins, []
            self.node.send(Msg.STORE_UNPIN, {"ids": unpins})
        frees, self._store_frees = self._store_frees, {}
        for node, object_ids in frees.items():
            if node == self.node_address:
                self.node.send(Msg.STORE_FREE, {"ids": object_ids})
            else:
                self.loop.create_task(self._send_to(node, Msg.STORE_FREE, {"ids": object_ids}))

    async def _send_to(self, address: str, msg: Msg, body) -> None:
        try:
            (await self.peer(address)).send(msg, body)
        except (OSError, TimeoutError, transport.ConnectionLost):
            pass  # that node is gone, and what it held with it

    def value_future(self, ref: ObjectRef) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()

        def resolve():
            try:
                future.set_result(
                    self.materialize(ref._id, self.memory_store.get(ref._id), ref._owner)
                )
            except BaseException as e:
                future.set_exception(e)

        self._fetch_borrowed([ref])
        if self.memory_store.wait([ref._id], 1, lambda: self._future_pool.submit(resolve)) is None:
            self._future_pool.submit(resolve)
        return future

    # -- streaming generators (owner side) ---------------------------------

    def on_generator_item(self, conn, rid, body, buffers) -> None:
        """Loop thread: a streaming task yielded item `i`."""
        task_id, index = body["tid"], body["i"]
        entry = decode_entry(body["h"], buffers)
        stream = self.streams.get(task_id)
        if stream is None or index < stream.received:
            if isinstance(entry, InStore):  # nobody will read it
                self.free_in_store(ids.return_object_id(task_id, index), entry.node)
            return
        stream.received = index + 1
        object_id = ids.return_object_id(task_id, index)
        self.refs.add_owned(object_id)
        if body.get("c"):  # before the item is readable (see complete_task)
            self.take_over_refs(task_id, object_id, body["c"])
        self.memory_store.put(object_id, entry)

    def end_stream(self, task_id: bytes, count: int | None = None, error=None) -> None:
        """Loop thread: the task is over, after `count` items, or failed with
        `error` (an entry), which becomes the last item."""
        stream = self.streams.get(task_id)
        if stream is None:
            return
        if error is not None:
            count = stream.received
            object_id = ids.return_object_id(task_id, count)
            self.refs.add_owned(object_id)
            self.memory_store.put(object_id, error)
            count += 1
        stream.received = max(stream.received, count)
        stream.ended = True
        self.memory_store.put(ids.return_object_id(task_id, count), END_OF_STREAM)

    def take_stream_item(self, task_id: bytes, index: int, object_id: bytes, owner: str):
        """User thread: item `index` has an entry; make it the caller's ref,
        raise the task's error, or return None at the end."""
        entry = self.memory_store.get(object_id)
        if entry is END_OF_STREAM:
            return None
        if entry.is_error:
            self.materialize(object_id, entry, owner)  # raises it
        self.post(self._stream_item_taken, task_id, index + 1)
        return ObjectRef(object_id, owner)

    def _stream_item_taken(self, task_id: bytes, taken: int) -> None:
        """Loop thread: with backpressure, the worker pauses until we ack."""
        stream = self.streams.get(task_id)
        if stream is not None and stream.backpressure and stream.conn is not None:
            stream.conn.send(Msg.GENERATOR_ACK, {"tid": task_id, "n": taken})

    def release_stream(self, task_id: bytes, first_unread: int = 0) -> None:
        """Loop thread: the caller dropped its generator. Items it never took
        are freed now; items still to come are freed as they arrive."""
        stream = self.streams.pop(task_id, None)
        if stream is None:
            return
        for index in range(stream.received + 1):
            object_id = ids.return_object_id(task_id, index)
            if self.refs.release_unreferenced(object_id):
                entry = self.memory_store.delete(object_id)
                if isinstance(entry, InStore):
                    self.free_in_store(object_id, entry.node)
        self.memory_store.delete(ids.return_object_id(task_id, stream.received))

    # -- cancellation --------------------------------------------------------

    def cancel(self, task_id: bytes, force: bool, recursive: bool) -> None:
        """User thread: `solray.cancel()` of one of our tasks."""
        self.run_on_loop(self._cancel, task_id, force, recursive)

    def _cancel(self, task_id: bytes, force: bool, recursive: bool) -> None:
        task = self.tasks.get(task_id)
        if task is not None and task.function is None and force:
            raise ValueError("force=True is not supported for actor tasks.")
        self.cancel_task(task_id, force, recursive)

    def cancel_task(self, task_id: bytes, force: bool, recursive: bool) -> None:
        """Loop thread: cancel one of our tasks, unless it already finished."""
        task = self.tasks.get(task_id)
        if task is None or task.cancelled:
            return
        task.cancelled = True
        error = error_entry(exceptions.TaskCancelledError(task_id.hex()))
        if task.running_on is not None:
            task.running_on.send(
                Msg.CANCEL_TASK, {"tid": task_id, "force": force, "recursive": recursive}
            )
        elif task.function is None:
            self.actor_submitter.cancel_queued(task, error)
        else:
            self.submitter.cancel_queued(task, error)

    def on_cancel_request(self, conn, rid, body, buffers) -> None:
        """Loop thread, in a worker: the owner cancels a task we run."""
        task_id = body["tid"]
        if body.get("recursive", True):
            for child in self.children.pop(task_id, ()):
                self.cancel_task(child, body.get("force", False), True)
        if self.executor is not None:
            self.executor.cancel(task_id, body.get("force", False))

    # -- borrowed objects: ask the owner -----------------------------------

    def _fetch_borrowed(self, refs) -> None:
        """User thread: have the loop ask the owners of the borrowed refs we
        have no value for."""
        missing = [
            r for r in refs if not self.memory_store.contains(r._id) and not self.refs.owns(r._id)
        ]
        if missing:
            self.post(self._fetch_all, missing)

    def _fetch_all(self, refs: list) -> None:
        for ref in refs:
            self.fetch_borrowed_from_loop(ref)

    def fetch_borrowed_from_loop(self, ref: ObjectRef) -> None:
        if ref._id not in self._fetching and not self.memory_store.contains(ref._id):
            self._fetching.add(ref._id)
            self.loop.create_task(self._fetch(ref._id, ref._owner))

    async def _fetch(self, object_id: bytes, owner: str) -> None:
        try:
            entry = await self._ask_owner(object_id, owner)
        finally:
            self._fetching.discard(object_id)
        self.memory_store.put(object_id, entry)

    async def _ask_owner(self, object_id: bytes, owner: str, lost: InStore | None = None):
        """Loop thread: the entry of a borrowed object, from its owner, once
        the object has a value. With `lost` (an entry whose copy is gone),
        the owner rebuilds it first; our cached entry, if it was that one,
        becomes the new one."""
        body = {"id": object_id} if lost is None else {"id": object_id, "lost": lost.node}
        try:
            conn = await self.peer(owner)
            head, bufs = await conn.request(Msg.GET_OBJECT, body, raw=True)
            entry = decode_entry(head, bufs)
            if entry is None:  # the owner does not have it (any more)
                entry = error_entry(exceptions.ObjectLostError(object_id.hex(), owner))
        except (TimeoutError, OSError, transport.ConnectionLost):
            entry = error_entry(exceptions.OwnerDiedError(object_id.hex(), owner))
        if lost is not None and self.memory_store.get(object_id) is lost:
            self.memory_store.put(object_id, entry)
        return entry

    def _serve_get_object(self, conn, rid, body, bufs) -> None:
        """A borrower asks for one of our objects (to be rebuilt first if it
        found the copy at node `lost` gone); answered once it has a value."""
        object_id = body["id"]
        if "lost" in body and self.refs.owns(object_id):
            self.recover(object_id, body["lost"])

        def answer():
            entry = self.memory_store.get(object_id)
            head, buffers = encode_entry(entry)
            conn.reply(rid, head, buffers)

        if self.memory_store.contains(object_id):
            answer()
        elif self.refs.owns(object_id):
            if self.memory_store.wait([object_id], 1, lambda: self.post(answer)) is None:
                answer()
        else:
            conn.reply(rid, None)

    # -- freeing -----------------------------------------------------------

    def _on_free(self, object_id: bytes, owned: bool) -> None:
        """Loop thread: nothing here references the object any more."""
        entry = self.memory_store.delete(object_id)
        if not owned:
            # A user thread may have made a new instance (deserializing it)
            # since the count reached zero: then we still borrow it.
            if self.shutting_down or self.refs.is_live(object_id):
                return
            owner = self._borrowed.pop(object_id, None)
            if owner is not None:
                self._queue_borrow_message(owner, Msg.REMOVE_BORROWERS, [object_id])
            return
        self.contained.pop(object_id, None)  # lets go of the refs inside it
        self.call_sites.pop(object_id, None)
        if self.shutting_down:
            return
        if len(object_id) == ACTOR_ID_LEN:
            # The last handle of an actor we created: release it.
            self.actor_submitter.release(object_id)
        self.lineage.pop(object_id, None)
        if isinstance(entry, InStore):
            self.free_in_store(object_id, entry.node)

    # -- borrowing ---------------------------------------------------------

    def add_ref(self, object_id: bytes, owner: str) -> None:
        """Any thread: a new ObjectRef instance exists in this process. The
        first instance of someone else's object is a borrow to register."""
        if (
            self.refs.add_local(object_id) == 1
            and owner != self.address
            and not self.refs.owns(object_id)
        ):
            pending = getattr(self._tls, "borrows", None)
            if pending is None:
                pending = self._tls.borrows = []
            pending.append((object_id, owner))

    def _take_new_borrows(self) -> list:
        pending = getattr(self._tls, "borrows", None)
        if not pending:
            return []
        self._tls.borrows = []
        return pending

    def _register(self, pending: list) -> list[concurrent.futures.Future]:
        """Loop thread: queue registrations for new borrows ((id, owner)
        pairs); returns futures done once the owners know."""
        by_owner: dict[str, list[bytes]] = {}
        for object_id, owner in pending:
            if object_id in self._borrowed or not self.refs.is_live(object_id):
                continue
            self._borrowed[object_id] = owner
            by_owner.setdefault(owner, []).append(object_id)
        return [
            self._queue_borrow_message(owner, Msg.ADD_BORROWERS, object_ids)
            for owner, object_ids in by_owner.items()
        ]

    def register_borrows(self) -> None:
        """User thread: tell the owners of refs this thread just deserialized
        that we hold them, and wait until they know. Call it before the
        sender of those refs may let go of them."""
        pending = self._take_new_borrows()
        if pending:
            waits = self.run_on_loop(self._register, pending)
            if threading.current_thread() is not self._thread:  # cannot wait on ourselves
                concurrent.futures.wait(waits)

    def register_borrows_async(self) -> asyncio.Future:
        """Loop thread: the same, as a future."""
        done = self._register(self._take_new_borrows())
        return asyncio.gather(*(asyncio.wrap_future(f) for f in done))

    def _queue_borrow_message(self, owner: str, msg: Msg, object_ids: list[bytes]):
        """Loop thread: queue a registration (ADD_BORROWERS) or an
        unregistration (REMOVE_BORROWERS) for `owner`. Each owner's messages
        go out in the order they were decided: an unregistration overtaking
        its registration would leave the owner counting a borrower that is
        gone, and the reverse would free an object we hold."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        queue = self._borrow_messages.setdefault(owner, [])
        queue.append((msg, object_ids, done))
        if len(queue) == 1:
            self.post(self._start_borrow_messages, owner)
        return done

    def _start_borrow_messages(self, owner: str) -> None:
        self.loop.create_task(self._send_borrow_messages(owner))

    async def _send_borrow_messages(self, owner: str) -> None:
        try:
            conn = await self.peer(owner)
        except (OSError, TimeoutError, transport.ConnectionLost):
            conn = None  # the owner is gone: getting its objects raises OwnerDiedError
        queue = self._borrow_messages.pop(owner, [])  # taken and sent at once: in order
        for msg, object_ids, done in queue:
            if conn is None or conn.closed:
                done.set_result(None)
            elif msg == Msg.ADD_BORROWERS:
                reply = conn.request(msg, {"ids": object_ids, "borrower": self.address})
                reply.add_done_callback(partial(_registered, done))
            else:
                conn.send(msg, {"ids": object_ids, "borrower": self.address})
                done.set_result(None)

    def hold_for_handoff(self, task_id: bytes, refs: list) -> None:
        """Loop thread, in a worker: hold refs inside a result of the task
        we run until its caller has taken them over (HANDOFF_DONE)."""
        self.handoffs.setdefault(task_id, []).extend(refs)

    def reply_to_task(self, conn, rid: int, task_id: bytes, reply: dict, buffers: list) -> None:
        """Loop thread, in a worker: answer the push of a task we ran."""
        if task_id in self.handoffs:
            conn.peer.setdefault("handoffs", set()).add(task_id)
            reply["hh"] = 1  # we hold refs in its results until the caller is done
        conn.reply(rid, reply, buffers)

    def take_over_refs(self, task_id: bytes, object_id: bytes, refs: list) -> asyncio.Future:
        """Loop thread: a result of one of our tasks contains these refs
        ([id, owner] pairs). Hold them while the result lives, registering as
        their borrower; the task's worker lets go once we are done
        (`finish_handoff`). Returns the registration: done once their owners
        know."""
        instances = [ObjectRef(i, owner) for i, owner in refs]
        if self.refs.owns(object_id):
            self.contained[object_id] = instances
        registered = self.register_borrows_async()
        self._handoff_waits.setdefault(task_id, []).append(registered)
        return registered

    def finish_handoff(self, task_id: bytes, conn, worker_holds: bool) -> None:
        """Loop thread: once our registrations for a task's results are done,
        tell its worker it may drop its hold on them."""
        waits = self._handoff_waits.pop(task_id, [])
        if not worker_holds or conn is None:
            return

        async def done():
            await asyncio.gather(*waits)
            conn.send(Msg.HANDOFF_DONE, {"tid": task_id})

        self.loop.create_task(done())

    def _serve_add_borrowers(self, conn, rid, body, buffers) -> None:
        conn.reply(rid, self._add_borrowers(conn, body["ids"], body["borrower"]))

    def _add_borrowers(self, conn, object_ids: list[bytes], borrower: str) -> list[bytes]:
        """`borrower` (reached through `conn`) holds these objects of ours,
        until it says otherwise or disconnects; returns those we do not own."""
        unknown = self.refs.add_borrowers(object_ids, borrower)
        conn.peer["borrower"] = borrower
        conn.peer.setdefault("borrowed", set()).update(object_ids)
        return unknown

    def _serve_remove_borrowers(self, conn, rid, body, buffers) -> None:
        conn.peer.get("borrowed", set()).difference_update(body["ids"])
        self.refs.remove_borrowers(body["ids"], body["borrower"])

    def _serve_handoff_done(self, conn, rid, body, buffers) -> None:
        self.handoffs.pop(body["tid"], None)

    def _inbound_closed(self, conn) -> None:
        """A peer disconnected: it borrows nothing any more, and results it
        never took over are let go."""
        self._inbound.discard(conn)
        borrowed = conn.peer.get("borrowed")
        if borrowed:
            self.refs.remove_borrowers(list(borrowed), conn.peer["borrower"])
        for task_id in conn.peer.get("handoffs", ()):
            self.handoffs.pop(task_id, None)

    def free_in_store(self, object_id: bytes, node: str) -> None:
        """Loop thread: free an object in the store of the node holding it
        (which frees the copies other nodes pulled)."""
        batch = self._store_frees.setdefault(node, [])
        batch.append(object_id)
        if len(batch) == 1:
            self.post(self._flush_store_messages)

    # -- the state API -----------------------------------------------------

    def _serve_object_report(self, conn, rid, body, buffers) -> None:
        conn.reply(rid, self.object_report())

    def object_report(self) -> list[dict]:
        """Loop thread: one row per object this process owns or references."""
        # Instances held by pending tasks and inside objects count as local
        # refs too; LOCAL_REFERENCE means the program holds one of its own.
        in_tasks = Counter(
            r._id
            for t in self.tasks.values()
            for r in (*t.deps, *t.contained, *([t.args_ref] if t.args_ref else ()))
        )
        in_objects = Counter(r._id for refs in self.contained.values() for r in refs)
        rows = []
        for object_id, info in self.refs.snapshot().items():
            if len(object_id) == ACTOR_ID_LEN:
                continue  # an actor handle, not an object
            entry = self.memory_store.get(object_id)
            kinds = []
            if info["local"] > in_tasks[object_id] + in_objects[object_id]:
                kinds.append("LOCAL_REFERENCE")
            if object_id in in_tasks:
                kinds.append("USED_BY_PENDING_TASK")
            if object_id in in_objects:
                kinds.append("CAPTURED_IN_OBJECT")
            if info["pinned"]:
                kinds.append("PINNED_IN_MEMORY")
            if info["borrowers"]:
                kinds.append("BORROWED")
            if isinstance(entry, Inline):
                size, location = entry.obj.inline_size(), "memory"
            elif isinstance(entry, InStore):
                size, location = entry.size, "shared_memory"
            else:
                size, location = None, None
            rows.append(
                {
                    "object_id": object_id.hex(),
                    "object_size": size,
                    "location": location,
                    "reference_type": kinds[0] if kinds else "LOCAL_REFERENCE",
                    "reference_types": kinds,
                    "is_owner": info["owned"],
                    "owner": self.address if info["owned"] else self._borrowed.get(object_id),
                    "borrowers": info["borrowers"],
                    "task_status": "PENDING" if info["owned"] and entry is None else "FINISHED",
                    "call_site": self.call_sites.get(object_id, ""),
                    "pid": os.getpid(),
                    "ip": self.ip,
                    "type": "DRIVER" if self.is_driver else "WORKER",
                    "node_id": self.node_info.get("node_id"),
                }
            )
        return rows

    # -- logs --------------------------------------------------------------

    def _on_published(self, conn, rid, body, bufs) -> None:
        if body.get("channel") != "logs" or not self.print_logs:
            return
        data = body["data"]
        for pid, is_err, name, text in data["lines"]:
            prefix = f"({name} pid={pid})" if name else f"(pid={pid})"
            if data.get("ip") and data["ip"] != self.ip:
                prefix = prefix[:-1] + f", ip={data['ip']})"
            stream = sys.stderr if is_err else sys.stdout
            try:
                stream.write(f"{prefix} {text}\n")
                stream.flush()
            except Exception:
                pass


def _actor_strategy(strategy) -> dict | None:
    """An actor's scheduling strategy as the control store understands it
    (placement groups need nothing: their bundle resources route the actor)."""
    from solray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return {
            "type": "affinity",
            "node_id": strategy.node_id,
            "soft": bool(strategy.soft),
            "when_busy": strategy.when_busy,
        }
    if strategy == "SPREAD":
        return {"type": "spread"}
    return None


def _at_least(ids: list[bytes], test: Callable[[bytes], bool], needed: int) -> bool:
    """Whether `needed` of the ids pass `test` (stops counting there)."""
    for object_id in ids:
        if test(object_id):
            needed -= 1
            if needed <= 0:
                return True
    return False


class _LocalWait:
    """A `wait(fetch_local=True)` in progress. The loop thread owns it until
    `done`; the waiting thread only waits on `event`."""

    __slots__ = ("ids", "anywhere", "needed", "ready", "event", "waiters", "done")

    def __init__(self, ids: list[bytes], anywhere: frozenset[bytes], needed: int):
        self.ids = ids
        self.anywhere = anywhere  # ids ready wherever their value is
        self.needed = needed
        self.ready: set[bytes] = set()
        self.event = threading.Event()
        self.waiters: list = []  # (id, memory store waiter) to forget when done
        self.done = False

    def one_ready(self, object_id: bytes) -> None:
        if self.done:
            return
        self.ready.add(object_id)
        if len(self.ready) >= self.needed:
            self.event.set()


class _Lost(Exception):
    """No node has this object any more."""


def _unrebuildable(object_id: bytes, task: PendingTask | None, owner: str):
    """Why a lost object of ours cannot be made again from its lineage
    `task` (None if it can), as Ray says it."""
    hex_id = object_id.hex()
    if task is None:
        if ids.is_put_id(object_id):  # put() values have no lineage
            return exceptions.ObjectLostError(hex_id, owner)
        return exceptions.ObjectReconstructionFailedError(
            hex_id,
            "OBJECT_UNRECONSTRUCTABLE",
            "it was made by an actor call or a generator, which are not re-run to rebuild "
            "their results",
            owner,
        )
    if task.max_retries == 0:
        return exceptions.ObjectReconstructionFailedError(
            hex_id,
            "OBJECT_UNRECONSTRUCTABLE_RETRIES_DISABLED",
            f"its task {task.name} has max_retries=0",
            owner,
        )
    if task.max_retries != -1 and task.attempt >= task.max_retries:
        return exceptions.ObjectReconstructionFailedMaxAttemptsExceededError(hex_id, owner)
    return None


def pick_local_node(nodes: list[dict], ip: str) -> str:
    """The node a driver on `ip` attaches to: an alive node on its machine,
    the head node first (the Cluster helper runs several on one machine)."""
    alive = [n for n in nodes if n["alive"]]
    local = [n for n in alive if n["ip"] == ip] or alive
    if not local:
        raise ConnectionError("the cluster has no alive node to attach this driver to")
    local.sort(key=lambda n: "node:__internal_head__" not in n["resources_total"])
    return local[0]["address"]


def _call_site() -> str:
    """The innermost frame outside solray: where the user made the object."""
    import traceback

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for frame in reversed(traceback.extract_stack()[:-1]):
        if not os.path.abspath(frame.filename).startswith(package):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return ""


def _registered(done: concurrent.futures.Future, reply: asyncio.Future) -> None:
    if not reply.cancelled():
        reply.exception()  # the owner may be gone: nothing to report here
    done.set_result(None)


def raise_stored_error(error: BaseException):
    if isinstance(error, exceptions.RayTaskError):
        raise error.as_instanceof_cause()
    raise error


def current() -> CoreWorker:
    return context.require_core_worker()
