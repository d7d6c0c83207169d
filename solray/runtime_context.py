"""`solray.get_runtime_context()`: who and where the calling code is."""

from __future__ import annotations

from solray._private import context


class RuntimeContext:
    def __init__(self, core_worker, namespace: str | None):
        self._cw = core_worker
        self._namespace = namespace

    def get_job_id(self) -> str:
        return self._cw.job_bytes.hex()

    def get_node_id(self) -> str:
        return self._cw.node_info["node_id"]

    def get_node_labels(self) -> dict[str, str]:
        """The labels of the node this code runs on (ray.io/node-id included)."""
        return dict(self._cw.node_info.get("labels", {}))

    def get_worker_id(self) -> str:
        return self._cw.worker_id

    def get_task_id(self) -> str | None:
        task = self._cw.current_task
        return task.task_id.hex() if task is not None else None

    def get_task_name(self) -> str | None:
        """The `name` option of the running task or actor call, else its
        function's name ("Class.method" for actor calls); None in a driver."""
        task = self._cw.current_task
        return task.task_name if task is not None else None

    def get_actor_id(self) -> str | None:
        actor_id = self._cw.actor_id
        return actor_id.hex() if actor_id is not None else None

    @property
    def current_actor(self):
        """The handle of the actor this code runs in (a weak one, as Ray's:
        it does not keep the actor alive). RuntimeError outside an actor."""
        from solray.actor import ActorHandle

        executor = getattr(self._cw, "executor", None)
        runtime = executor.actor if executor is not None else None
        if runtime is None:
            raise RuntimeError("This method is only available in an actor.")
        return ActorHandle(runtime.actor_id, runtime.meta, owner=runtime.owner, weak=True)

    def is_canceled(self) -> bool:
        """Whether `cancel()` was called on the running task or actor call,
        as Ray's: RuntimeError in a driver or an async actor (whose
        coroutines are cancelled with asyncio.CancelledError instead)."""
        executor = getattr(self._cw, "executor", None)
        task = self._cw.current_task
        if executor is None or task is None:
            raise RuntimeError("This method is only available in a task or actor call.")
        if executor.actor is not None and executor.actor.is_async:
            raise RuntimeError(
                "This method is not available in async actors: a cancelled call's coroutine "
                "gets asyncio.CancelledError."
            )
        return executor.is_cancelled(task.task_id)

    @property
    def was_current_actor_reconstructed(self) -> bool:
        executor = self._cw.executor
        return bool(executor is not None and executor.actor_restarts > 0)

    @property
    def namespace(self) -> str | None:
        return self._namespace

    @property
    def runtime_env(self):
        """The runtime env this code runs in (the job's in a driver), as a
        RuntimeEnv: local folders show as the URIs of their packages."""
        from solray._private.runtime_env.spec import public_view
        from solray.runtime_env import RuntimeEnv

        return RuntimeEnv(_validate=False, **public_view(self._cw.runtime_env))

    def get_runtime_env_string(self) -> str:
        return self.runtime_env.serialize()

    @property
    def job_id(self) -> str:
        return self.get_job_id()

    @property
    def node_id(self) -> str:
        return self.get_node_id()

    @property
    def task_id(self) -> str | None:
        return self.get_task_id()

    @property
    def gcs_address(self) -> str:
        return self._cw.node_info["control_address"]

    @property
    def actor_id(self) -> str | None:
        return self.get_actor_id()

    def _worker_only(self, what: str) -> None:
        if getattr(self._cw, "is_driver", True):  # a ray:// client is a driver's
            # Ray's check (and its exception type).
            raise AssertionError(
                f"{what} is only available when the process is a worker. Current mode: driver."
            )

    def get_assigned_resources(self) -> dict[str, float]:
        """The resources the running task or actor holds: {"CPU": 1.0} for a
        task by default, {} for an actor without num_cpus (as in Ray); in a
        placement group, the bundle's resource names."""
        self._worker_only("get_assigned_resources()")
        task = self._cw.current_task
        resources = task.resources if task is not None else self._cw.executor.actor_resources
        return {name: float(amount) for name, amount in resources.items()}

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        """The accelerator ids visible to the running task or actor, per
        accelerator resource, as strings (solray knows GPUs only)."""
        from solray._private import worker

        return {"GPU": [str(i) for i in worker.get_gpu_ids()]}

    def get_actor_name(self) -> str | None:
        """The current actor's name: "" for an unnamed actor, None outside
        an actor (Ray's convention)."""
        if getattr(self._cw, "actor_id", None) is None:
            return None
        return self._cw.executor.actor_name or ""

    def get_task_function_name(self) -> str | None:
        """`module.function` of the running task (`module.Class.method` for
        an actor call, `module.Class.__init__` while constructing); None in
        a driver."""
        task = self._cw.current_task
        function = getattr(task, "function", None)
        if function is None:
            return None
        function = getattr(function, "__func__", function)  # a bound method
        return f"{function.__module__}.{function.__qualname__}"

    def get_placement_group_id(self) -> str | None:
        task = self._cw.current_task
        placement = task.placement if task is not None else None
        return placement[0] if placement else None

    @property
    def current_placement_group_id(self) -> str | None:
        return self.get_placement_group_id()

    @property
    def should_capture_child_tasks_in_placement_group(self) -> bool:
        task = self._cw.current_task
        placement = task.placement if task is not None else None
        return bool(placement and placement[2])

    def get(self) -> dict:
        return {
            "job_id": self.get_job_id(),
            "node_id": self.get_node_id(),
            "task_id": self.get_task_id(),
            "namespace": self._namespace,
        }


def get_runtime_context() -> RuntimeContext:
    from solray._private import worker

    # A ray:// client describes its proxy driver, as Ray Client does.
    backend = context.client or context.require_core_worker()
    # In a worker, the namespace of the job it runs for (from the job's entry).
    namespace = worker.current_namespace() or getattr(backend, "namespace", None)
    return RuntimeContext(backend, namespace)
