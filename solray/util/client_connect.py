"""`ray.util.connect` / `disconnect`: Ray Client's older entry points
(deprecated in Ray in favour of `init("ray://HOST:PORT")`), kept with Ray's
signatures and return values on solray's one ray:// client
(`_private/client/`): `connect` is `init("ray://" + conn_str)` plus Ray's
retries, and returns Ray's connection-info dict.

Ray's gRPC-only options (`secure`, `metadata`, `_credentials`) have no
counterpart on solray's authenticated socket, and `ignore_version` cannot be
honoured (the handshake refuses another version before anything else): each
raises NotImplementedError when given, rather than being ignored.
"""

from __future__ import annotations

import time
from typing import Any

from solray._private import context
from solray.job_config import JobConfig

# Between failed attempts: Ray Client backs off too; short, then capped.
_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 5.0


def connect(
    conn_str: str,
    secure: bool = False,
    metadata: list[tuple[str, str]] | None = None,
    connection_retries: int = 3,
    job_config: JobConfig | None = None,
    namespace: str | None = None,
    *,
    ignore_version: bool = False,
    _credentials: Any = None,
    ray_init_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Connect this process as a ray:// client to the client server at
    `conn_str` ("HOST:PORT"; a "ray://" prefix is accepted too). Returns
    Ray's connection info: `num_clients`, `python_version`, `ray_version`,
    `ray_commit`, `protocol_version`. A server that cannot be reached is
    tried `connection_retries` more times, backing off, before a
    ConnectionError; a refused token is not retried. `ray_init_kwargs` are
    further `init()` keywords (those a client may give)."""
    from solray._private import worker  # not at import: workers import solray.util first

    if context.client is not None:
        raise RuntimeError(
            "Ray Client is already connected. Maybe you called "
            'ray.init("ray://<address>") twice by accident?'
        )
    if not isinstance(conn_str, str) or not conn_str:
        raise TypeError(f"connect(): conn_str must be 'HOST:PORT', got {conn_str!r}")
    if isinstance(connection_retries, bool) or not isinstance(connection_retries, int):
        raise TypeError(f"connect(): connection_retries must be an int, got {connection_retries!r}")
    if connection_retries < 0:
        raise ValueError(f"connect(): connection_retries must be >= 0, got {connection_retries}")
    for name, value, off in (
        ("secure", secure, False),
        ("metadata", metadata, None),
        ("_credentials", _credentials, None),
        ("ignore_version", ignore_version, False),
    ):
        if value != off and not (name == "metadata" and value == []):
            raise NotImplementedError(
                f"connect(): {name}={value!r} is not supported: solray's ray:// connection is "
                "a socket authenticated with the cluster token, not gRPC, and a server of "
                "another version is always refused"
            )
    extra = dict(ray_init_kwargs or {})
    clash = sorted({"address", "namespace", "job_config"} & extra.keys())
    if clash:
        raise ValueError(
            f"connect(): give {', '.join(clash)} as connect()'s own arguments, not in "
            "ray_init_kwargs"
        )
    address = conn_str if conn_str.startswith(worker.CLIENT_SCHEME) else "ray://" + conn_str
    backoff = _FIRST_BACKOFF_S
    for attempt in range(connection_retries + 1):
        try:
            worker.init(address, namespace=namespace, job_config=job_config, **extra)
            break
        except (ConnectionRefusedError, TimeoutError) as e:
            if attempt == connection_retries:
                raise ConnectionError(
                    f"Could not reach the ray:// server at {conn_str} after "
                    f"{connection_retries + 1} attempts: {e}"
                ) from e
            time.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
    return dict(context.client.connection_info)


def disconnect() -> None:
    """End this process's ray:// connection (its driver on the head ends
    with it). Idempotent; a process that is not a ray:// client is left as
    it is, as in Ray."""
    from solray._private import worker

    if context.client is not None:
        worker.shutdown()
