"""Arrays that other ranks of a `util.collective` group sent to this process.

A rank's array travels to another rank as one COLLECTIVE_DATA request on the
core workers' authenticated connections (the same ones that carry objects),
so collectives need no socket, port or handshake of their own and work
across nodes. The receiver may not have reached the matching call yet (a
fast rank sends before a slow one asks): the array waits here, keyed by
(group, sending rank, kind, sequence number), until the receiving rank's
call takes it. The reply to the request tells the sender it arrived.

The loop owns this table (`serve` runs on it, `take` is awaited on it); user
threads reach it through `CoreWorker.call` (util/collective/group.py).
"""

from __future__ import annotations

import asyncio

Key = tuple  # (group name, source rank, kind, sequence number)


class CollectiveInbox:
    def __init__(self) -> None:
        self._arrived: dict[Key, tuple[dict, list]] = {}
        self._waiting: dict[Key, asyncio.Future] = {}

    def serve(self, conn, rid: int, body: dict, buffers: list) -> None:
        """Loop: COLLECTIVE_DATA from another rank."""
        key = (body["group"], body["src"], body["kind"], body["seq"])
        fut = self._waiting.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result((body, buffers))
        else:
            self._arrived[key] = (body, buffers)
        conn.reply(rid, True)

    async def take(self, key: Key) -> tuple[dict, list]:
        """Loop: the message sent under `key`, once it is here."""
        if key in self._arrived:
            return self._arrived.pop(key)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        try:
            return await fut
        finally:
            if self._waiting.get(key) is fut:
                del self._waiting[key]

    def drop_group(self, group: str) -> None:
        """Loop: forget what arrived for a destroyed group."""
        for key in [k for k in self._arrived if k[0] == group]:
            del self._arrived[key]
