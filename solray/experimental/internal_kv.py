"""Ray's internal key-value store API (`ray.experimental.internal_kv`), over
the control store's key-value store.

Keys and values are bytes (str is encoded as UTF-8). Each `namespace` (None
is a namespace of its own) is kept apart from the others and from solray's
own entries.
"""

from __future__ import annotations

from solray._private import context
from solray._private.protocol import Msg

_PREFIX = "internal_kv:"  # control store namespaces of this API


def _bytes(value: str | bytes, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise TypeError(f"internal_kv: {what} must be str or bytes, got {type(value).__name__}")


def _ns(namespace: str | bytes | None) -> str:
    if namespace is None:
        return _PREFIX
    return _PREFIX + _bytes(namespace, "namespace").hex()


def _request(msg: Msg, body: dict, buffers=(), raw: bool = False):
    return context.require_core_worker().request("control", msg, body, buffers, raw=raw)


def _internal_kv_initialized() -> bool:
    """Whether this process is connected to a cluster (so the store can be used)."""
    return context.core_worker is not None


def _internal_kv_get(key: str | bytes, *, namespace: str | bytes | None = None) -> bytes | None:
    """The value stored under `key`, or None."""
    found, buffers = _request(
        Msg.KV_GET, {"ns": _ns(namespace), "key": _bytes(key, "key")}, raw=True
    )
    return bytes(buffers[0]) if found else None


def _internal_kv_exists(key: str | bytes, *, namespace: str | bytes | None = None) -> bool:
    return _internal_kv_get(key, namespace=namespace) is not None


def _internal_kv_put(
    key: str | bytes,
    value: str | bytes,
    overwrite: bool = True,
    *,
    namespace: str | bytes | None = None,
) -> bool:
    """Store `value` under `key` (if `overwrite`, or if the key is new).
    Returns whether the key already existed, as in Ray."""
    if not isinstance(overwrite, bool):
        raise TypeError(f"internal_kv: overwrite must be True or False, got {overwrite!r}")
    body = {"ns": _ns(namespace), "key": _bytes(key, "key"), "overwrite": overwrite}
    value = _bytes(value, "value")
    if not overwrite:  # the control store refuses it if the key exists
        return not _request(Msg.KV_PUT, body, [value])
    existed = _internal_kv_exists(key, namespace=namespace)
    _request(Msg.KV_PUT, body, [value])
    return existed


def _internal_kv_del(
    key: str | bytes, *, del_by_prefix: bool = False, namespace: str | bytes | None = None
) -> int:
    """Delete `key` (or, with `del_by_prefix`, every key starting with it);
    returns how many keys were deleted."""
    keys = _internal_kv_list(key, namespace=namespace) if del_by_prefix else [_bytes(key, "key")]
    ns = _ns(namespace)
    return sum(bool(_request(Msg.KV_DEL, {"ns": ns, "key": k})) for k in keys)


def _internal_kv_list(prefix: str | bytes, *, namespace: str | bytes | None = None) -> list[bytes]:
    """The keys that start with `prefix`."""
    return list(_request(Msg.KV_KEYS, {"ns": _ns(namespace), "prefix": _bytes(prefix, "prefix")}))


__all__ = [
    "_internal_kv_del",
    "_internal_kv_exists",
    "_internal_kv_get",
    "_internal_kv_initialized",
    "_internal_kv_list",
    "_internal_kv_put",
]
