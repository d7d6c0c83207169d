"""Generator returns: ObjectRefGenerator (streaming) and DynamicObjectRefGenerator.

Streaming. The task's worker sends each value to the owner as soon as it is
yielded; the owner stores it under the id of item k and, when the task ends,
stores an END marker under the id of the next item. So "the next item" is
always an id that will get an entry: a value, an error, or END. Iterating
waits for that id; `ray.wait` on a generator waits for it too.

An error raised by the generator is the last item: `next()` raises it (the
user's exception class, as `get` would), then the stream is over. Dropping the
generator frees the values it never handed out.
"""

from __future__ import annotations

import asyncio

from solray._private import context, ids


class ObjectRefGenerator:
    def __init__(self, task_id: bytes, owner: str):
        self._task_id = task_id
        self._owner = owner
        self._next = 0
        self._done = False

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        cw = context.require_core_worker()
        object_id = self.next_object_id()
        cw.wait_for_ids([object_id], 1, None)
        return self._take(cw, object_id)

    def _take(self, cw, object_id: bytes):
        try:
            ref = cw.take_stream_item(self._task_id, self._next, object_id, self._owner)
        except Exception:
            # The task's error is its last item: raised once, then the end.
            self._next += 1
            raise
        if ref is None:
            self._done = True
            raise StopIteration
        self._next += 1
        return ref

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._done:
            raise StopAsyncIteration
        cw = context.require_core_worker()
        object_id = self.next_object_id()
        loop = asyncio.get_running_loop()
        ready = loop.create_future()

        def wake():
            loop.call_soon_threadsafe(lambda: ready.done() or ready.set_result(None))

        if cw.memory_store.wait([object_id], 1, wake) is not None:
            await ready
        try:
            return self._take(cw, object_id)
        except StopIteration:
            raise StopAsyncIteration from None

    def next_object_id(self) -> bytes:
        """The id whose entry decides what `next()` returns."""
        return ids.return_object_id(self._task_id, self._next)

    def completed(self) -> bool:
        return self._done

    def task_id(self) -> str:
        return self._task_id.hex()

    def __del__(self):
        cw = context.core_worker
        if cw is not None:
            try:
                cw.post(cw.release_stream, self._task_id)
            except Exception:  # interpreter shutdown
                pass

    def __reduce__(self):
        raise TypeError(
            "An ObjectRefGenerator cannot be passed to another task or actor. Pass the "
            "ObjectRefs it yields instead."
        )

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._task_id.hex()})"


class DynamicObjectRefGenerator:
    """What a `num_returns="dynamic"` task's ref resolves to: its values' refs."""

    def __init__(self, refs: list):
        self._refs = list(refs)

    def __iter__(self):
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"
