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
    return RuntimeContext(backend, worker.current_namespace())
