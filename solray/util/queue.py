"""A first-in first-out queue shared by tasks and actors (`ray.util.queue`).

The queue lives in an async actor, so blocked `put`s and `get`s wait there
without holding a thread; the Queue object itself only holds the actor's
handle and can be passed to any task or actor.
"""

from __future__ import annotations

import asyncio
import queue as _queue
from collections.abc import Iterable
from typing import Any

import solray


class Empty(_queue.Empty):
    pass


class Full(_queue.Full):
    pass


class Queue:
    def __init__(self, maxsize: int = 0, actor_options: dict | None = None):
        self.maxsize = maxsize
        self.actor = solray.remote(_QueueActor).options(**(actor_options or {})).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        return solray.get(self.actor.qsize.remote())

    def qsize(self) -> int:
        return self.size()

    def empty(self) -> bool:
        return solray.get(self.actor.empty.remote())

    def full(self) -> bool:
        return solray.get(self.actor.full.remote())

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if not block:
            return self.put_nowait(item)
        try:
            solray.get(self.actor.put.remote(item, timeout))
        except Full:
            raise Full from None

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not block:
            return self.put_nowait(item)
        try:
            await self.actor.put.remote(item, timeout)
        except Full:
            raise Full from None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if not block:
            return self.get_nowait()
        try:
            return solray.get(self.actor.get.remote(timeout))
        except Empty:
            raise Empty from None

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block:
            return self.get_nowait()
        try:
            return await self.actor.get.remote(timeout)
        except Empty:
            raise Empty from None

    def put_nowait(self, item: Any) -> None:
        try:
            solray.get(self.actor.put_nowait.remote(item))
        except Full:
            raise Full from None

    def put_nowait_batch(self, items: Iterable) -> None:
        items = list(items)
        try:
            solray.get(self.actor.put_nowait_batch.remote(items))
        except Full:
            raise Full(
                f"Cannot add {len(items)} items to queue of size "
                f"{self.size()} and maxsize {self.maxsize}."
            ) from None

    def get_nowait(self) -> Any:
        try:
            return solray.get(self.actor.get_nowait.remote())
        except Empty:
            raise Empty from None

    def get_nowait_batch(self, num_items: int) -> list:
        if not isinstance(num_items, int) or num_items < 0:
            raise ValueError("'num_items' must be a nonnegative integer")
        try:
            return solray.get(self.actor.get_nowait_batch.remote(num_items))
        except Empty:
            raise Empty(f"Cannot get {num_items} items from queue of size {self.size()}.") from None

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """End the queue's actor. `force=False`: it exits gracefully (after the
        calls already queued to it), or is killed if it has not within
        `grace_period_s`; `force=True`: it is killed at once. Blocked `get`s
        and `put`s then fail with ActorDiedError."""
        if (
            isinstance(grace_period_s, bool)
            or not isinstance(grace_period_s, (int, float))
            or not grace_period_s >= 0
        ):
            raise ValueError(
                f"'grace_period_s' must be a non-negative number, got {grace_period_s!r}"
            )
        if self.actor is None:
            return
        if force:
            solray.kill(self.actor, no_restart=True)
        else:
            done = self.actor.__ray_terminate__.remote()
            _, not_done = solray.wait([done], timeout=grace_period_s)
            if not_done:
                solray.kill(self.actor, no_restart=True)
        self.actor = None


class _QueueActor:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    async def put(self, item, timeout=None) -> None:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except TimeoutError:
            raise Full from None

    async def get(self, timeout=None):
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise Empty from None

    def put_nowait(self, item) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise Full from None

    def put_nowait_batch(self, items) -> None:
        if self.maxsize > 0 and len(items) + self.qsize() > self.maxsize:
            raise Full
        for item in items:
            self.queue.put_nowait(item)

    def get_nowait(self):
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            raise Empty from None

    def get_nowait_batch(self, num_items: int) -> list:
        if num_items > self.qsize():
            raise Empty
        return [self.queue.get_nowait() for _ in range(num_items)]
