"""Storage on a Redis server, for a head that moves between machines: the
new head reads what the old one wrote. One hash per table, named
`solray:<namespace>:<table>`; a batch is one MULTI/EXEC transaction."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from solray._private.control_storage import TABLES, StorageError, StorageUnavailable


class RedisStorage:
    def __init__(self, url: str, namespace: str):
        import redis

        self.url = url
        self.prefix = f"solray:{namespace}:"
        parts = urlsplit(url)  # named without its credentials, for messages
        where = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self.description = f"the control store's Redis server at {where} (namespace {namespace})"
        self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
        self._unreachable = (redis.ConnectionError, redis.TimeoutError)
        self._errors = redis.RedisError

    def load(self) -> dict[str, dict[bytes, bytes]]:
        try:
            return {t: dict(self._redis.hgetall(self.prefix + t)) for t in TABLES}
        except self._unreachable as e:
            raise StorageUnavailable(f"{self.description} cannot be reached: {e}") from None
        except self._errors as e:
            raise StorageError(f"{self.description} cannot be read: {e}") from None

    def write(self, batch: dict[tuple[str, bytes], bytes | None]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        for (table, key), value in batch.items():
            if value is None:
                pipe.hdel(self.prefix + table, key)
            else:
                pipe.hset(self.prefix + table, key, value)
        pipe.execute()

    def close(self) -> None:
        self._redis.close()

    def drop(self) -> None:
        self._redis.delete(*(self.prefix + t for t in TABLES))
        self._redis.close()
