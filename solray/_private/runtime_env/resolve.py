"""Owner side: a checked runtime_env made ready to ship (see __init__.py).

`Resolver.resolve(env)` returns the env with every local path replaced by
the URI of its package (uploaded if the cluster does not have it yet) and a
callable setup hook replaced by its uploaded pickle, so the env is small,
JSON-able, and the same on every node. The result is remembered per
distinct env for the life of the process (a folder is packed at its first
use in a job; the next job packs it again, so it sees changes), and shared
by the user threads that submit work, under a lock.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable

from solray._private.protocol import Msg
from solray._private.runtime_env import packages, spec
from solray._private.runtime_env.spec import PACKAGE_URI


class Resolver:
    def __init__(self, has: Callable[[str], bool], upload: Callable[[str, bytes], None]):
        self._has = has  # sha256 -> whether the cluster holds that package
        self._upload = upload
        self._resolved: dict[str, dict] = {}
        self._lock = threading.Lock()

    def resolve(self, env: dict) -> dict:
        if not env:
            return {}
        key = _key(env)
        with self._lock:
            resolved = self._resolved.get(key)
            if resolved is None:
                resolved = self._resolved[key] = self._resolve(env)
        return resolved

    def _resolve(self, env: dict) -> dict:
        resolved = {k: v for k, v in env.items() if k != "excludes"}
        if "working_dir" in env:
            resolved["working_dir"] = self._ship(
                env["working_dir"], "working_dir", env.get("excludes", [])
            )
        if "py_modules" in env:
            resolved["py_modules"] = [self._ship(p, "py_modules", []) for p in env["py_modules"]]
        hook = env.get("worker_process_setup_hook")
        if callable(hook):
            data = _pickle_by_value(hook)
            digest = hashlib.sha256(data).hexdigest()
            self._store(digest, data)
            resolved["worker_process_setup_hook"] = {
                "pickled": PACKAGE_URI + digest,
                "name": f"{getattr(hook, '__module__', '?')}.{getattr(hook, '__qualname__', hook)}",
            }
        return resolved

    def _ship(self, path: str, field: str, excludes: list[str]) -> str:
        if path.startswith(PACKAGE_URI):
            return path  # inherited from a parent env: already in the cluster
        uri, data = packages.package(path, field, excludes)
        self._store(packages.split_uri(uri)[0], data)
        return uri

    def _store(self, digest: str, data: bytes) -> None:
        if not self._has(digest):
            self._upload(digest, data)


def _pickle_by_value(hook) -> bytes:
    """The hook with its module's code inside: it runs in a worker before
    that worker knows any job's import path."""
    import sys

    import cloudpickle

    from solray._private.serialization import dumps

    module = sys.modules.get(getattr(hook, "__module__", None) or "")
    if module is None or module.__name__ in ("__main__", "builtins"):
        return dumps(hook)
    cloudpickle.register_pickle_by_value(module)
    try:
        return dumps(hook)
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def _key(env: dict) -> str:
    """Tells envs apart; a callable counts by identity."""
    return json.dumps(env, sort_keys=True, default=lambda v: f"<callable {id(v)}>")


def effective(cw, given) -> dict:
    """The resolved env of a task or actor made by this process with the
    `runtime_env` option `given`: this process's own env (inherited), with
    `given` merged over it by Ray's rules."""
    if given is None:
        return cw.runtime_env
    env = spec.merge(cw.runtime_env, spec.validate(given, "runtime_env"))
    return resolver_of(cw).resolve(env)


def resolver_of(cw) -> Resolver:
    """The process's Resolver, made at first use (most processes never need one)."""
    resolver = cw.runtime_env_resolver
    if resolver is None:

        def has(digest: str) -> bool:
            keys = cw.request("control", Msg.KV_KEYS, {"ns": packages.NAMESPACE, "prefix": digest})
            return digest in keys

        def upload(digest: str, data: bytes) -> None:
            cw.request(
                "control",
                Msg.KV_PUT,
                {"ns": packages.NAMESPACE, "key": digest, "overwrite": False},
                [data],
            )

        resolver = cw.runtime_env_resolver = Resolver(has, upload)
    return resolver
