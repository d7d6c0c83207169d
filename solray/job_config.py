"""`JobConfig` (Ray's `ray.job_config.JobConfig`): a driver's job settings,
given to `init(job_config=...)`.

solray implements `code_search_path` (folders, or files whose folder is
meant, put first on the driver's `sys.path` and so on its workers', which
learn the driver's path: modules and the functions in them load from there;
for Java tasks, the classpath of the worker's JVM: folders with the jars in
them, and jar files), `jvm_options` (that JVM's options), `ray_namespace`
and `metadata` (kept with the job: `util.state.list_jobs()`).
Any other field with a value other than its default makes `init()` raise
NotImplementedError naming it: the object itself accepts everything Ray's
does, so code that builds one for Ray still runs until it asks for more.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# Ray's variable: in a driver that a submitted job started, the job's
# runtime_env and metadata as JSON (solray/dashboard/jobs.py sets it;
# init() applies it).
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


class JobConfig:
    def __init__(
        self,
        jvm_options: list[str] | None = None,
        code_search_path: list[str] | None = None,
        runtime_env: dict | None = None,
        _client_job: bool = False,
        metadata: dict | None = None,
        ray_namespace: str | None = None,
        default_actor_lifetime: str = "non_detached",
        _disable_job_level_lineage_reconstruction: bool = False,
        _py_driver_sys_path: list[str] | None = None,
    ):
        self.jvm_options = jvm_options or []
        self.code_search_path = code_search_path or []
        if not isinstance(self.code_search_path, (list, tuple)):
            raise TypeError(
                f"The type of code search path is incorrect: {type(code_search_path)} "
                "(it must be a list of paths)"
            )
        self.set_runtime_env(runtime_env)
        self._client_job = _client_job
        self.metadata = dict(metadata or {})
        self.ray_namespace = ray_namespace
        self.set_default_actor_lifetime(default_actor_lifetime)
        self._disable_job_level_lineage_reconstruction = _disable_job_level_lineage_reconstruction
        self._py_driver_sys_path = _py_driver_sys_path
        self.py_logging_config = None

    def set_metadata(self, key: str, value: str) -> None:
        """Add a key-value pair to the metadata dictionary."""
        self.metadata[key] = value

    def set_ray_namespace(self, ray_namespace: str) -> None:
        self.ray_namespace = ray_namespace

    def set_runtime_env(self, runtime_env: dict | None, validate: bool = False) -> None:
        self.runtime_env = runtime_env if runtime_env is not None else {}

    def set_py_logging_config(self, logging_config: Any = None) -> None:
        self.py_logging_config = logging_config

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        if default_actor_lifetime not in ("detached", "non_detached"):
            raise ValueError("Default actor lifetime must be one of `detached`, `non_detached`")
        self.default_actor_lifetime = default_actor_lifetime

    @classmethod
    def from_json(cls, job_config_json: dict | str) -> JobConfig:
        """A JobConfig from its fields as a dict (or a JSON text of one)."""
        fields = (
            json.loads(job_config_json) if isinstance(job_config_json, str) else job_config_json
        )
        return cls(
            jvm_options=fields.get("jvm_options"),
            code_search_path=fields.get("code_search_path"),
            runtime_env=fields.get("runtime_env"),
            metadata=fields.get("metadata"),
            ray_namespace=fields.get("ray_namespace"),
            default_actor_lifetime=fields.get("default_actor_lifetime", "non_detached"),
        )

    # -- what init() uses --------------------------------------------------------

    def _unsupported(self) -> list[str]:
        """The fields set to something solray does not do."""
        asked = {
            "_client_job": self._client_job is not False,
            "default_actor_lifetime": self.default_actor_lifetime != "non_detached",
            "_disable_job_level_lineage_reconstruction": (
                self._disable_job_level_lineage_reconstruction is not False
            ),
            "_py_driver_sys_path": self._py_driver_sys_path is not None,
            "py_logging_config": self.py_logging_config is not None,
        }
        return [name for name, given in asked.items() if given]

    def _check(self) -> None:
        """NotImplementedError naming the first field solray does not do;
        TypeError/ValueError for malformed fields it does."""
        unsupported = self._unsupported()
        if unsupported:
            name = unsupported[0]
            why = {
                "default_actor_lifetime": "give actors lifetime='detached' one by one",
            }.get(name, "solray does not support it")
            raise NotImplementedError(
                f"JobConfig({name}={getattr(self, name)!r}) is not supported: {why}."
            )
        for path in self.code_search_path:
            if not isinstance(path, (str, os.PathLike)) or not str(path):
                raise TypeError(f"JobConfig code_search_path entries must be paths, got {path!r}")
        if not isinstance(self.jvm_options, (list, tuple)) or not all(
            isinstance(option, str) for option in self.jvm_options
        ):
            raise TypeError(
                f"JobConfig jvm_options must be a list of str, got {self.jvm_options!r}"
            )
        if not isinstance(self.metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()
        ):
            raise TypeError(
                f"JobConfig metadata must be a dict of str to str, got {self.metadata!r}"
            )
        if self.ray_namespace is not None and (
            not isinstance(self.ray_namespace, str) or not self.ray_namespace
        ):
            raise ValueError(
                f"JobConfig ray_namespace must be a non-empty string, got {self.ray_namespace!r}"
            )

    def search_path(self) -> list[str]:
        """code_search_path as absolute paths (a JVM's classpath is made of them)."""
        return [os.path.abspath(str(path)) for path in self.code_search_path]

    def _put_search_path_first(self) -> None:
        """Put code_search_path first on this driver's sys.path, as absolute
        folders (a file stands for its folder); workers take the driver's."""
        folders = []
        for path in self.search_path():
            folders.append(os.path.dirname(path) if os.path.isfile(path) else path)
        sys.path[:0] = [f for f in dict.fromkeys(folders) if f not in sys.path]

    def __repr__(self) -> str:
        return (
            f"JobConfig(code_search_path={self.code_search_path!r}, "
            f"metadata={self.metadata!r}, ray_namespace={self.ray_namespace!r})"
        )


def checked(job_config: JobConfig | None) -> JobConfig:
    """init()'s `job_config`, checked; a default one for None."""
    if job_config is None:
        return JobConfig()
    if not isinstance(job_config, JobConfig):
        raise TypeError(
            f"init(): job_config must be a solray.job_config.JobConfig, got "
            f"{type(job_config).__name__}"
        )
    job_config._check()
    return job_config


__all__ = ["JobConfig"]
