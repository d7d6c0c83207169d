"""What a runtime_env may hold, and how envs combine (Ray's rules).

Checked where the user gives it (`init`, `@remote`, `.options`), so a wrong
field fails at that line, not later in a worker. The checked env is a plain
dict in a canonical form: `pip`/`uv` always `{"packages": [...], ...}`,
paths absolute, module objects turned into their folders. Fields Ray has and
solray does not (conda, containers, Java) are refused by name; unknown
fields are a ValueError, as in Ray.

Effective env of a task or actor: its parent's (the job's for a driver's
calls, the running task's inside a worker) updated with its own, field by
field, except `env_vars`, which merge key by key (Ray's rule). The resolved
form (`packages.resolve`) replaces local paths with package URIs, and its
hash keys the worker pools: workers of different envs never share a process.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from typing import Any

KNOWN = (
    "env_vars",
    "working_dir",
    "py_modules",
    "excludes",
    "pip",
    "uv",
    "config",
    "worker_process_setup_hook",
)
# Ray's fields solray does not have: refused by name, never ignored.
NOT_SUPPORTED = {
    "conda": "conda environments",
    "container": "containers",
    "image_uri": "container images",
    "java_jars": "Java",
    "py_executable": "a custom Python executable",
    "nsight": "Nsight profiling",
    "mpi": "MPI",
    "rocprof_sys": "ROCm profiling",
}
REMOTE_SCHEMES = ("s3://", "gs://", "https://", "http://", "gcs://", "file://")
DEFAULT_CONFIG = {"setup_timeout_seconds": 600, "eager_install": True}
PACKAGE_URI = "pkg://"
# How a worker of a runtime env learns, before it registers, its import path,
# setup hook and env (worker_pool.launch_json): nothing secret in it.
RUNTIME_ENV_VARIABLE = "SOLRAY_RUNTIME_ENV"


def check_config(config: Any) -> dict:
    if not isinstance(config, dict):
        raise TypeError(f"runtime_env config must be a dict, got {config!r}")
    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(
            f"runtime_env config: unknown field(s) {sorted(unknown)} (known: "
            "setup_timeout_seconds, eager_install)"
        )
    merged = {**DEFAULT_CONFIG, **config}
    timeout = merged["setup_timeout_seconds"]
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int)
        or not (timeout > 0 or timeout == -1)
    ):
        raise ValueError(
            "runtime_env config: setup_timeout_seconds must be a positive int or -1 (no "
            f"limit), got {timeout!r}"
        )
    if not isinstance(merged["eager_install"], bool):
        raise TypeError(
            f"runtime_env config: eager_install must be a bool, got {merged['eager_install']!r}"
        )
    return merged


def validate(runtime_env: Any, where: str) -> dict:
    """The canonical form of a user's runtime_env; TypeError / ValueError /
    NotImplementedError naming the field otherwise."""
    if runtime_env is None:
        return {}
    if not isinstance(runtime_env, dict):
        raise TypeError(f"{where}: runtime_env must be a dict or RuntimeEnv, got {runtime_env!r}")
    for field in runtime_env:
        if field in NOT_SUPPORTED:
            raise NotImplementedError(
                f"{where}: runtime_env field {field!r} ({NOT_SUPPORTED[field]}) is not "
                "supported by solray; use pip or uv for Python packages"
            )
        if field not in KNOWN:
            raise ValueError(
                f"{where}: unknown runtime_env field {field!r} (known: {', '.join(KNOWN)})"
            )
    env: dict = {}
    for field, value in runtime_env.items():
        if value is None:
            continue
        env[field] = _CHECKS[field](value, f"{where}: runtime_env[{field!r}]")
    if "pip" in env and "uv" in env:
        raise ValueError(f"{where}: runtime_env takes pip or uv, not both")
    if "excludes" in env and "working_dir" not in env:
        raise ValueError(f"{where}: runtime_env 'excludes' applies to a working_dir; none given")
    return env


def _env_vars(value, name: str) -> dict:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError(f"{name} must be a dict of str to str, got {value!r}")
    return dict(value)


def _local_path(value, name: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a path, got {value!r}")
    if value.startswith(PACKAGE_URI):
        return value  # already resolved (an env inherited from a parent)
    if value.startswith(REMOTE_SCHEMES):
        raise NotImplementedError(
            f"{name}: remote URIs ({value}) are not supported by solray; give a local folder "
            "or .zip file, which solray uploads to the cluster"
        )
    path = os.path.abspath(os.path.expanduser(value))
    if os.path.isdir(path):
        return path
    if os.path.isfile(path) and path.endswith((".zip", ".whl")):
        return path
    raise ValueError(f"{name}: {value!r} is not an existing folder or .zip file")


def _working_dir(value, name: str) -> str:
    path = _local_path(value, name)
    if path.endswith(".whl"):
        raise ValueError(f"{name}: a working_dir is a folder or a .zip file, not a wheel")
    return path


def _py_modules(value, name: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of folders, .zip/.whl files or modules")
    paths = []
    for item in value:
        if isinstance(item, types.ModuleType):
            file = getattr(item, "__file__", None)
            if file is None:
                raise ValueError(f"{name}: module {item.__name__} has no file to upload")
            is_package = os.path.basename(file) == "__init__.py"
            item = os.path.dirname(file) if is_package else file
            if not is_package:
                raise ValueError(
                    f"{name}: module {item} is a single file; give its package's folder"
                )
        paths.append(_local_path(item, name))
    return paths


def _excludes(value, name: str) -> list:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a list of gitignore-style patterns")
    return list(value)


def _packages(value, name: str, tool: str) -> dict:
    """pip / uv: a list of requirements, a requirements file, or a dict."""
    options_key = f"{tool}_install_options" if tool == "pip" else "uv_pip_install_options"
    check_key = f"{tool}_check"
    if isinstance(value, (str, os.PathLike)):
        value = {"packages": os.fspath(value)}
    elif isinstance(value, (list, tuple)):
        value = {"packages": list(value)}
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a list of requirements, a requirements file, or a dict")
    unknown = set(value) - {"packages", options_key, check_key, f"{tool}_version"}
    if unknown:
        raise ValueError(f"{name}: unknown field(s) {sorted(unknown)}")
    if value.get(f"{tool}_version"):
        raise NotImplementedError(
            f"{name}: {tool}_version is not supported: solray installs with the {tool} of the "
            "cluster's Python"
        )
    packages = value.get("packages")
    if isinstance(packages, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(packages))
        try:
            with open(path) as f:
                packages = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as e:
            raise ValueError(f"{name}: cannot read the requirements file {path}: {e}") from None
    if not isinstance(packages, (list, tuple)) or not all(isinstance(p, str) for p in packages):
        raise TypeError(f"{name}: packages must be a list of requirement strings")
    options = value.get(options_key) or []
    if not isinstance(options, (list, tuple)) or not all(isinstance(o, str) for o in options):
        raise TypeError(f"{name}: {options_key} must be a list of strings")
    check = value.get(check_key, False)
    if not isinstance(check, bool):
        raise TypeError(f"{name}: {check_key} must be a bool")
    return {"packages": list(packages), check_key: check, options_key: list(options)}


def _hook(value, name: str):
    if isinstance(value, str):
        if "." not in value:
            raise ValueError(f"{name} must be a callable or 'module.function', got {value!r}")
        return value
    if callable(value):
        return value
    raise TypeError(f"{name} must be a callable or 'module.function', got {value!r}")


_CHECKS = {
    "env_vars": _env_vars,
    "working_dir": _working_dir,
    "py_modules": _py_modules,
    "excludes": _excludes,
    "pip": lambda v, n: _packages(v, n, "pip"),
    "uv": lambda v, n: _packages(v, n, "uv"),
    "config": lambda v, n: check_config(dict(v)),
    "worker_process_setup_hook": _hook,
}


def merge(parent: dict, child: dict) -> dict:
    """Ray's rule: the child's fields replace the parent's, except env_vars,
    which merge (the child's value wins for a key both set)."""
    if not child:
        return dict(parent)
    merged = {**parent, **child}
    if "env_vars" in parent and "env_vars" in child:
        merged["env_vars"] = {**parent["env_vars"], **child["env_vars"]}
    if "pip" in child:
        merged.pop("uv", None)
    if "uv" in child:
        merged.pop("pip", None)
    if "working_dir" in child and "excludes" not in child:
        merged.pop("excludes", None)
    return merged


_hashes: dict[int, tuple[dict, str]] = {}  # id -> (env, its hash): owners reuse env objects


def env_hash(resolved: dict) -> str:
    """The key of a resolved env's worker pool: "" for the default env.
    `config` does not change a worker, so it is not part of it. Remembered
    per env object (the entry keeps the object, so its id is not reused)."""
    cached = _hashes.get(id(resolved))
    if cached is not None and cached[0] is resolved:
        return cached[1]
    shaping = {k: v for k, v in resolved.items() if k != "config"}
    key = ""
    if shaping:
        text = json.dumps(shaping, sort_keys=True, separators=(",", ":"))
        key = hashlib.sha256(text.encode()).hexdigest()[:32]
    if len(_hashes) < 4096:
        _hashes[id(resolved)] = (resolved, key)
    return key


def public_view(env: dict) -> dict:
    """The env as `get_runtime_context().runtime_env` shows it (JSON-able)."""
    view = dict(env)
    hook = view.get("worker_process_setup_hook")
    if callable(hook):
        view["worker_process_setup_hook"] = f"{hook.__module__}.{hook.__qualname__}"
    elif isinstance(hook, dict):  # resolved: its pickle's URI and its name
        view["worker_process_setup_hook"] = hook["name"]
    return view
