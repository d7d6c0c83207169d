"""Ray's `ray.runtime_env`: RuntimeEnv and RuntimeEnvConfig.

Both are dicts (as Ray's), checked when made; `runtime_env=` anywhere takes
them or plain dicts alike. What each field does is in
`solray/_private/runtime_env/spec.py`.
"""

from __future__ import annotations

import json
from typing import Any

from solray._private.runtime_env import spec


class RuntimeEnvConfig(dict):
    """`config` of a runtime env: `setup_timeout_seconds` (600; -1 waits
    forever) and `eager_install` (True)."""

    def __init__(self, setup_timeout_seconds: int = 600, eager_install: bool = True, **unknown):
        if unknown:
            raise ValueError(
                f"RuntimeEnvConfig: unknown field(s) {sorted(unknown)} (known: "
                "setup_timeout_seconds, eager_install)"
            )
        super().__init__(
            spec.check_config(
                {"setup_timeout_seconds": setup_timeout_seconds, "eager_install": eager_install}
            )
        )


class RuntimeEnv(dict):
    """A runtime environment: `RuntimeEnv(env_vars={...}, pip=[...], ...)`."""

    def __init__(
        self,
        *,
        py_modules: list | None = None,
        working_dir: str | None = None,
        pip: Any = None,
        uv: Any = None,
        env_vars: dict[str, str] | None = None,
        worker_process_setup_hook: Any = None,
        config: dict | RuntimeEnvConfig | None = None,
        _validate: bool = True,
        **other: Any,
    ):
        fields = {
            "py_modules": py_modules,
            "working_dir": working_dir,
            "pip": pip,
            "uv": uv,
            "env_vars": env_vars,
            "worker_process_setup_hook": worker_process_setup_hook,
            "config": config,
            **other,
        }
        given = {k: v for k, v in fields.items() if v is not None}
        super().__init__(spec.validate(given, "RuntimeEnv") if _validate else given)

    def to_dict(self) -> dict:
        return dict(self)

    def serialize(self) -> str:
        return json.dumps(spec.public_view(self), sort_keys=True)

    @classmethod
    def deserialize(cls, serialized: str) -> RuntimeEnv:
        return cls(**json.loads(serialized))

    def env_vars(self) -> dict[str, str]:
        return dict(self.get("env_vars") or {})

    def working_dir(self) -> str:
        return self.get("working_dir") or ""

    def py_modules(self) -> list:
        return list(self.get("py_modules") or [])

    def pip_config(self) -> dict:
        return dict(self.get("pip") or {})

    def uv_config(self) -> dict:
        return dict(self.get("uv") or {})

    def runtime_env_config(self) -> dict:
        return dict(self.get("config") or {})


__all__ = ["RuntimeEnv", "RuntimeEnvConfig"]
