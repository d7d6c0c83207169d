"""The tasks this process owns, from `.remote()` until they end.

`.remote()` runs on a user thread: it pickles the arguments once
(`pack_arguments`), makes the return refs (or the ObjectRefGenerator of a
stream) and hands the task to the loop, where the submitters take over:
task_submitter.py for tasks (leases, pushes), actor_submitter.py for actor
creation and calls. The loop keeps every unfinished task (`tasks`), so it
can be cancelled, retried, rebuilt (lineage.py) and reported; in a worker,
the tasks each running task submitted (`children`), for recursive
cancellation; and the owner's side of each streaming generator (`streams`):
items arriving, the end marker, consumption acks for backpressure.

Threads: the submitting calls run on user threads and only count refs and
post to the loop; the tables and everything else here are the loop's.
"""

from __future__ import annotations

from solray import exceptions
from solray._private import ids, serialization, transport
from solray._private import task_events as ev
from solray._private.advice import user_site
from solray._private.memory_store import InStore, decode_entry, error_entry
from solray._private.options import actor_resources, backpressure, placement_of, task_resources
from solray._private.ownership import ACTOR_ID_LEN, call_site
from solray._private.protocol import Msg
from solray._private.runtime_env import resolve as runtime_env
from solray._private.store_client import INLINE_MAX
from solray._private.task_spec import END_OF_STREAM, PendingTask, StreamState, extract_deps
from solray.object_ref import ObjectRef
from solray.object_ref_generator import ObjectRefGenerator
from solray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


class TaskManager:
    def __init__(self, core_worker):
        self.cw = core_worker
        self.tasks: dict[bytes, PendingTask] = {}  # submitted and not finished
        self.children: dict[bytes, list[bytes]] = {}  # running task -> tasks it submitted
        self.streams: dict[bytes, StreamState] = {}  # streaming tasks we own
        self._creation_refs: list = []  # actor constructor arguments, kept for restarts
        # The last options a task was submitted with and their resource shape:
        # a loop of `.remote()` calls of one function passes the same options
        # dict (never changed once made) every time. Shared by the tasks, the
        # shape is only read. One tuple, replaced whole: user threads race
        # on it harmlessly.
        self._last_shape: tuple[dict | None, dict] = (None, {})

    # -- submitting (user threads) -------------------------------------------

    def submit_task(self, function, args: tuple, kwargs: dict, options: dict):
        """User thread: make the task's return refs (or its ObjectRefGenerator)
        and hand the task to the loop."""
        cw = self.cw
        options = self._captured(options)
        blob, args_ref, deps, contained, args_bytes = self.pack_arguments(args, kwargs)
        site = user_site() if cw.advice.enabled else None
        last_options, resources = self._last_shape
        if last_options is not options:
            resources = task_resources(options)
            self._last_shape = (options, resources)
        task = PendingTask(
            task_id=ids.new_task_id(cw.job_bytes),
            function=function,
            num_returns=options["num_returns"],
            resources=resources,
            args_blob=blob,
            args_ref=args_ref,
            deps=deps,
            return_ids=[],
            max_retries=options["max_retries"],
            retry_exceptions=options["retry_exceptions"],
            job=cw.job,
            contained=contained,
            strategy=options.get("scheduling_strategy"),
            label_selector=options.get("label_selector") or None,
            fallback_selectors=_fallbacks(options),
            max_calls=options["max_calls"],
            task_name=options.get("name"),
            runtime_env=runtime_env.effective(cw, options.get("runtime_env")),
            event_info=self._event_info(
                options,
                ev.NORMAL_TASK,
                options.get("name") or function.name,
                function.name,
                None,
                resources,
                args_bytes,
            ),
            site=site,
        )
        if site is not None:
            self._advise(site, function.name, args, kwargs, args_bytes)
            cw.advice.last_task, cw.advice.last_name = task.task_id, function.name
        result = self._prepare_returns(
            task, backpressure(options.get("_generator_backpressure_num_objects"))
        )
        cw.post(cw.submitter.submit, task)
        return result

    def create_actor(self, descriptor, args, kwargs, options: dict, meta: dict):
        """User thread: register the actor (its name is taken now, or the
        existing one returned), then let the loop resolve the constructor's
        arguments and ask the control store to place it."""
        cw = self.cw
        options = self._captured(options)
        actor_id = ids.random_unique_id()[:ACTOR_ID_LEN]
        running, placement = actor_resources(options)
        namespace = options.get("namespace") or cw.namespace
        reply = cw.request(
            "control",
            Msg.REGISTER_ACTOR,
            {
                "actor_id": actor_id,
                "name": options.get("name"),
                "namespace": namespace,
                "get_if_exists": options.get("get_if_exists", False),
                "detached": options.get("lifetime") == "detached",
                "max_restarts": options["max_restarts"],
                "owner": cw.address,
                "resources": running,
                "placement_resources": placement,
                "meta": meta,
                "job": cw.job,
                "strategy": _actor_strategy(options.get("scheduling_strategy")),
                "label_selector": options.get("label_selector") or None,
                "fallback": list(_fallbacks(options)),
                "runtime_env": runtime_env.effective(cw, options.get("runtime_env")),
            },
        )
        if "error" in reply:
            raise ValueError(reply["error"])
        if "existing" in reply:
            return reply["existing"], reply["meta"], reply.get("owner", ""), True
        blob, args_ref, deps, contained, args_bytes = self.pack_arguments(args, kwargs)
        # A restart runs the constructor again: keep its arguments for as long
        # as this owner lives.
        cw.refs.pin([d._id for d in deps] + ([args_ref._id] if args_ref else []))
        self._creation_refs.extend([*deps, *contained])
        cw.refs.add_owned(actor_id)
        task = PendingTask(
            task_id=ids.new_task_id(cw.job_bytes),
            function=descriptor,
            num_returns=0,
            resources=running,
            args_blob=blob,
            args_ref=args_ref,
            deps=deps,
            return_ids=[],
            max_retries=0,
            retry_exceptions=False,
            job=cw.job,
        )
        constructor = f"{meta['class_name']}.__init__"
        task.event_info = self._event_info(
            options, ev.ACTOR_CREATION_TASK, constructor, constructor, actor_id, running, args_bytes
        )
        groups = options.get("concurrency_groups") or {}
        runtime = {
            "max_concurrency": options.get("max_concurrency") or (1000 if meta["is_async"] else 1),
            "concurrency_groups": groups,
            "is_async": meta["is_async"],
            "class_name": meta["class_name"],
            "pg": placement_of(options.get("scheduling_strategy")),
            "meta": meta,  # for the actor's own handle (get_runtime_context().current_actor)
            "actor_name": options.get("name"),
            "res": running,  # get_runtime_context().get_assigned_resources()
        }
        cw.post(cw.actor_submitter.create, actor_id, task, runtime)
        return actor_id, meta, cw.address, False

    def submit_actor_task(self, actor_id: bytes, method: str, args, kwargs, options: dict):
        """User thread: a call to an actor method. `options` are the method's
        (num_returns, concurrency_group, max_task_retries, retry_exceptions,
        _generator_backpressure_num_objects, name) and the actor's
        (max_pending_calls, out_of_order)."""
        cw = self.cw
        limit = options["max_pending_calls"]
        if limit > 0:  # raises PendingCallsLimitExceeded when full
            cw.actor_submitter.admit(actor_id, limit)
        blob, args_ref, deps, contained, args_bytes = self.pack_arguments(args, kwargs)
        qualified = f"{options.get('class_name')}.{method}"
        site = user_site() if cw.advice.enabled else None
        if site is not None:
            self._advise(site, qualified, args, kwargs, args_bytes)
            cw.advice.last_task = None  # a get() after this call is not one "right after" a task
        task = PendingTask(
            task_id=ids.new_task_id(cw.job_bytes),
            function=None,
            num_returns=options["num_returns"],
            resources={},
            args_blob=blob,
            args_ref=args_ref,
            deps=deps,
            return_ids=[],
            max_retries=options["max_task_retries"],
            retry_exceptions=options.get("retry_exceptions") or False,
            job=cw.job,
            method=method,
            concurrency_group=options.get("concurrency_group"),
            contained=contained,
            actor_id=actor_id,
            admitted=limit > 0,
            task_name=options.get("name"),
            event_info=self._event_info(
                options,
                ev.ACTOR_TASK,
                options.get("name") or qualified,
                qualified,
                actor_id,
                {},
                args_bytes,
            ),
            site=site,
        )
        result = self._prepare_returns(
            task, backpressure(options.get("_generator_backpressure_num_objects"))
        )
        cw.actor_submitter.post_submit(actor_id, task, options["out_of_order"])
        return result

    def pack_arguments(self, args: tuple, kwargs: dict):
        """Pickle a call's arguments once. Returns the inline blob (or a ref to
        it in the store, if large), the top-level ref arguments, the refs
        nested deeper, which the task must hold until it finishes, and the
        pickle's size."""
        if not args and not kwargs:  # most calls: nothing to look through or pickle
            blob = serialization.SerializedObject(serialization.NO_ARGUMENTS)
            return blob, None, [], blob.contained_refs, len(serialization.NO_ARGUMENTS)
        cw = self.cw
        args, kwargs, deps = extract_deps(args, kwargs, ObjectRef)
        for dep in deps:
            if not dep._owner:  # rebuilt out of band here: no owner to read it from
                raise exceptions.ReferenceCountingAssertionError(dep._id.hex())
        blob = serialization.serialize((tuple(args), kwargs))
        contained = blob.contained_refs
        size = blob.inline_size()
        if size <= INLINE_MAX:
            return blob, None, deps, contained, size
        # Large arguments go to the store once; the worker reads them in place.
        object_id = ids.put_object_id(cw.job_bytes)
        cw.refs.add_owned(object_id)
        args_ref = ObjectRef(object_id, cw.address)
        cw.memory_store.put(object_id, cw.store.store_value(object_id, blob))
        return None, args_ref, deps, contained, size

    def _advise(self, site: tuple, label: str, args: tuple, kwargs: dict, size: int) -> None:
        """User thread: a call whose arguments went to the store (over 100
        KiB) may be passing a large object it passed before (advice.py)."""
        if size > INLINE_MAX:
            self.cw.advice.large_arguments(site, label, args, kwargs)

    def _event_info(
        self,
        options: dict,
        kind: int,
        name: str,
        func_or_class_name: str,
        actor_id: bytes | None,
        resources: dict,
        args_bytes: int,
    ) -> tuple | None:
        """User thread: what this process's task events say the task is
        (task_events.py), or None if it records none (Ray's
        enable_task_events=False, or task events off here)."""
        cw = self.cw
        if not cw.task_events.enabled or options.get("enable_task_events") is False:
            return None
        parent = cw.current_task
        placement = placement_of(options.get("scheduling_strategy"))
        return (
            kind,
            name,
            func_or_class_name,
            actor_id,
            parent.task_id if parent is not None else cw.driver_task_id,
            resources,
            placement[0] if placement else None,
            args_bytes,
        )

    def _captured(self, options: dict) -> dict:
        """Ray's placement_group_capture_child_tasks: a task or actor made
        without a scheduling strategy inside a group that captures its
        children runs in that group too (any bundle)."""
        current = self.cw.current_task
        placement = current.placement if current is not None else None
        if options.get("scheduling_strategy") is not None or not placement or not placement[2]:
            return options
        from solray.util.placement_group import PlacementGroup

        group = PlacementGroup(placement[0], placement[1])
        strategy = PlacementGroupSchedulingStrategy(group, -1, True)
        return dict(options, scheduling_strategy=strategy)

    def _prepare_returns(self, task: PendingTask, backpressure):
        """User thread: make what `.remote()` gives the caller (a list of
        refs, or an ObjectRefGenerator for a stream), and queue the task's
        tracking for the loop: it goes with the submission, which the caller
        posts next."""
        cw = self.cw
        mode = task.num_returns
        if mode == "streaming":
            task.stream = True
            task.backpressure = backpressure
            result = ObjectRefGenerator(task.task_id, cw.address)
        else:
            count = 1 if mode == "dynamic" else mode
            task.return_ids = [ids.return_object_id(task.task_id, i) for i in range(count)]
            for object_id in task.return_ids:
                cw.refs.add_owned(object_id)
            result = [ObjectRef(object_id, cw.address) for object_id in task.return_ids]
        parent = cw.current_task
        site = call_site() if cw.ownership.record_call_sites else None
        cw.post_with_next(self._track, task, parent.task_id if parent is not None else None, site)
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
                self.cw.ownership.call_sites[object_id] = site

    # -- streaming generators (owner side) -----------------------------------

    def on_generator_item(self, conn, rid, body, buffers) -> None:
        """Loop thread: a streaming task yielded item `i`."""
        cw = self.cw
        task_id, index = body["tid"], body["i"]
        entry = decode_entry(body["h"], buffers)
        stream = self.streams.get(task_id)
        if stream is None or index < stream.received:
            if isinstance(entry, InStore):  # nobody will read it
                cw.store.free(ids.return_object_id(task_id, index), entry.node)
            return
        stream.received = index + 1
        object_id = ids.return_object_id(task_id, index)
        cw.refs.add_owned(object_id)
        if body.get("c"):  # before the item is readable (see complete_task)
            cw.borrowing.take_over_refs(task_id, object_id, body["c"])
        cw.memory_store.put(object_id, entry)

    def end_stream(self, task_id: bytes, count: int | None = None, error=None) -> None:
        """Loop thread: the task is over, after `count` items, or failed with
        `error` (an entry), which becomes the last item."""
        cw = self.cw
        stream = self.streams.get(task_id)
        if stream is None:
            return
        if error is not None:
            count = stream.received
            object_id = ids.return_object_id(task_id, count)
            cw.refs.add_owned(object_id)
            cw.memory_store.put(object_id, error)
            count += 1
        stream.received = max(stream.received, count)
        stream.ended = True
        cw.memory_store.put(ids.return_object_id(task_id, count), END_OF_STREAM)

    def take_stream_item(self, task_id: bytes, index: int, object_id: bytes, owner: str):
        """User thread: item `index` has an entry; make it the caller's ref,
        raise the task's error, or return None at the end."""
        cw = self.cw
        entry = cw.memory_store.get(object_id)
        if entry is END_OF_STREAM:
            return None
        if entry.is_error:
            cw.reader.materialize(object_id, entry, owner)  # raises it
        cw.post(self._stream_item_taken, task_id, index + 1)
        return ObjectRef(object_id, owner)

    def _stream_item_taken(self, task_id: bytes, taken: int) -> None:
        """Loop thread: with backpressure, the worker pauses until we ack."""
        stream = self.streams.get(task_id)
        if stream is not None and stream.backpressure and stream.conn is not None:
            stream.conn.send(Msg.GENERATOR_ACK, {"tid": task_id, "n": taken})

    def release_stream(self, task_id: bytes, first_unread: int = 0) -> None:
        """Loop thread: the caller dropped its generator. Items it never took
        are freed now; items still to come are freed as they arrive."""
        cw = self.cw
        stream = self.streams.pop(task_id, None)
        if stream is None:
            return
        for index in range(stream.received + 1):
            object_id = ids.return_object_id(task_id, index)
            if cw.refs.release_unreferenced(object_id):
                entry = cw.memory_store.delete(object_id)
                if isinstance(entry, InStore):
                    cw.store.free(object_id, entry.node)
        cw.memory_store.delete(ids.return_object_id(task_id, stream.received))

    # -- cancellation ----------------------------------------------------------

    def cancel(self, task_id: bytes, force: bool, recursive: bool, owner: str) -> None:
        """User thread: `solray.cancel()` of a task whose ref `owner` owns.
        A task another process owns (its ref was returned from inside a
        task) is cancelled by that owner, as in Ray."""
        cw = self.cw
        if owner == cw.address:
            cw.run_on_loop(self._cancel, task_id, force, recursive)
            return

        async def ask_owner():
            try:
                conn = await cw.peer(owner)
                body = {"tid": task_id, "force": force, "recursive": recursive}
                return await conn.request(Msg.CANCEL_OWNED, body)
            except (OSError, transport.ConnectionLost):
                return {}  # the owner is gone, and its tasks with it

        error = cw.call(ask_owner()).get("error")
        if error:
            raise ValueError(error)

    def on_cancel_owned(self, conn, rid, body, buffers) -> None:
        """Loop thread: a process holding a ref to one of our tasks' results
        cancels that task."""
        try:
            self._cancel(body["tid"], body["force"], body["recursive"])
        except ValueError as e:
            conn.reply(rid, {"error": str(e)})
            return
        conn.reply(rid, {})

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
            self.cw.actor_submitter.cancel_queued(task, error)
        else:
            self.cw.submitter.cancel_queued(task, error)

    def on_cancel_request(self, conn, rid, body, buffers) -> None:
        """Loop thread, in a worker: the owner cancels a task we run."""
        task_id = body["tid"]
        if body.get("recursive", True):
            for child in self.children.pop(task_id, ()):
                self.cancel_task(child, body.get("force", False), True)
        if self.cw.executor is not None:
            self.cw.executor.cancel(task_id, body.get("force", False))


def _fallbacks(options: dict) -> tuple:
    """The selectors of Ray's fallback_strategy (validated with the options)."""
    fallback = options.get("fallback_strategy")
    return tuple(option["label_selector"] for option in fallback) if fallback else ()


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
