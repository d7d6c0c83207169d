"""Where the control store keeps its tables, so that it can be killed and
started again without the cluster forgetting its nodes, actors, placement
groups, jobs and key-value store.

One small interface, a module per backend:

    sqlite_backend.py  the default: a SQLite file in the session directory
                       (stdlib, WAL mode; nothing to install)
    redis_backend.py   a Redis server (`--storage redis://HOST:PORT`, or
                       Ray's RAY_REDIS_ADDRESS), for a head that moves
                       between machines

A backend holds tables of key -> value (both bytes). `load()` reads them all
once at start-up, before any `write()`, which applies one batch of puts and
deletes atomically. Both are blocking; the control store calls them from one thread of its own
(Persistence, below), never from its loop. `drop()` deletes the tables: a
cluster started by init() does so when it shuts down (services.Launcher).

A Redis server may hold several clusters' tables: each cluster's are under
its namespace, by default its session's name (so a new cluster never reads
an old one's), or Ray's RAY_external_storage_namespace, which a head that
moves to another machine sets to find its tables there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger("solray.control_store")

# The tables, by what the control store keeps in them (key: value, msgpack).
NODES, ACTORS, GROUPS, KV, META = "nodes", "actors", "groups", "kv", "meta"
TABLES = (NODES, ACTORS, GROUPS, KV, META)

# The exit status of a control store whose storage cannot be read: the head
# node does not start it again (it would only fail the same way).
EXIT_STORAGE_UNREADABLE = 78

# How long a failed write waits before it is tried again (the batch and
# every acknowledgement waiting on it wait too).
RETRY_S = 1.0


class StorageError(Exception):
    """The storage cannot be opened or read; the message names it and says why."""


class StorageUnavailable(StorageError):
    """The storage cannot be reached now (a Redis server down): trying again
    later may work, unlike an unreadable file."""


class Storage(Protocol):
    description: str  # for messages: the file, or the server

    def load(self) -> dict[str, dict[bytes, bytes]]: ...

    def write(self, batch: dict[tuple[str, bytes], bytes | None]) -> None: ...

    def close(self) -> None: ...

    def drop(self) -> None: ...


def open_storage(url: str, namespace: str = "default") -> Storage:
    """`sqlite:///PATH` or `redis://HOST:PORT[/DB]` (rediss:// for TLS);
    `namespace` separates clusters sharing a Redis server."""
    if url.startswith("sqlite://"):
        from solray._private.control_storage.sqlite_backend import SQLiteStorage

        return SQLiteStorage(url[len("sqlite://") :])
    if url.startswith(("redis://", "rediss://")):
        from solray._private.control_storage.redis_backend import RedisStorage

        return RedisStorage(url, namespace)
    raise StorageError(
        f"unknown control store storage {url!r}: give sqlite:///PATH or redis://HOST:PORT"
    )


def redis_url(address: str) -> str:
    """Ray's RAY_REDIS_ADDRESS is HOST:PORT; a URL is taken as it is."""
    return address if "://" in address else f"redis://{address}"


class Persistence:
    """Writes staged on the loop, applied in batches on one writer thread.

    Puts and deletes made in one loop turn (or while a batch is being
    written) go out together, the latest value of each key winning, so the
    store's loop never waits for the disk or the network. Where a lost write
    would lose what a user was told (a named actor registered, a KV entry
    stored), the handler replies through `after_commit`: the reply leaves
    once that write is durable."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._staged: dict[tuple[str, bytes], bytes | None] = {}
        self._callbacks: list[Callable[[], None]] = []
        self._writing = False
        self._flushing: asyncio.Task | None = None
        self._closing = False  # a failed write is not retried
        self._closed = False  # the storage is closed: later changes are the shutdown's own
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "solray-storage")

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._stage(table, key, value)

    def delete(self, table: str, key: bytes) -> None:
        self._stage(table, key, None)

    def _stage(self, table: str, key: bytes, value: bytes | None) -> None:
        if self._closed:
            # Connections closing as the control store stops (a node's, a
            # driver's) change its tables after the last write; what a
            # restarted store must know was written before.
            logger.debug("control store stopping: %s change not written", table)
            return
        self._staged[(table, key)] = value
        self._schedule()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the loop once everything staged so far is written."""
        if not self._staged and not self._writing:
            callback()
            return
        self._callbacks.append(callback)
        self._schedule()

    def _schedule(self) -> None:
        if not self._writing:
            self._writing = True
            # Started next turn, so this turn's writes join the batch; held
            # here (asyncio holds tasks weakly).
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the rest of this loop turn's writes
        loop = asyncio.get_running_loop()
        delay = RETRY_S
        while self._staged or self._callbacks:
            batch, self._staged = self._staged, {}
            callbacks, self._callbacks = self._callbacks, []
            try:
                if batch:
                    await loop.run_in_executor(self._thread, self.storage.write, batch)
            except Exception as e:
                if self._closing:
                    logger.error(
                        "could not write to %s (%s) while stopping: %d change(s) lost",
                        self.storage.description,
                        e,
                        len(batch),
                    )
                    continue
                logger.error(
                    "could not write to %s (%s); trying again in %.0f s",
                    self.storage.description,
                    e,
                    delay,
                )
                # Newer values staged meanwhile win over the failed batch's.
                self._staged = {**batch, **self._staged}
                self._callbacks = callbacks + self._callbacks
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = RETRY_S
            for callback in callbacks:
                callback()
        self._writing = False

    async def close(self) -> None:
        """Write what is staged (once more only, if writes fail: the control
        store is stopping), then close the storage."""
        self._closing = True
        if self._flushing is not None and not self._flushing.done():
            self._flushing.cancel()  # wakes a retry's backoff; the flush below writes
            await asyncio.gather(self._flushing, return_exceptions=True)
        # Changes made while this last flush runs join it (no other flush
        # starts: one could reach the storage after it is closed); later
        # ones are dropped.
        self._writing = True
        await self._flush()
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self.storage.close)
        self._thread.shutdown()
