"""ObjectRef: a future for a value that lives somewhere in the cluster.

A ref names its object and its owner's address. Creating one counts a local
reference in the current process's core worker (and, for a ref to someone
else's object, makes this process a borrower the owner must know about);
garbage-collecting it uncounts it (on the core worker's loop: `__del__` may
run on any thread, at any point, so it only posts). Pickling one is noticed by the serializer,
so whatever holds the pickled value can hold the refs inside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from solray._private import context
from solray._private.serialization import RefCollector

_logger = logging.getLogger(__name__)


class ObjectRef:
    __slots__ = ("_id", "_owner", "__weakref__")

    def __init__(self, object_id: bytes, owner: str):
        self._id = object_id
        self._owner = owner
        worker = context.core_worker or context.client
        if worker is not None:
            worker.add_ref(object_id, owner)

    def __del__(self):
        worker = context.core_worker or context.client
        if worker is not None:
            try:
                worker.drop_ref(self._id)
            except Exception:  # interpreter shutdown
                pass

    def __reduce__(self):
        RefCollector.note(self)
        return (_rebuild, (self._id, self._owner))

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def task_id(self):
        from solray._private.ids import task_id_of

        return task_id_of(self._id).hex()

    @property
    def owner_address(self) -> str:
        return self._owner

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def future(self) -> concurrent.futures.Future:
        """A concurrent.futures.Future that resolves to the value."""
        worker = context.client or context.require_core_worker()
        return worker.value_future(self)

    def __await__(self):
        return asyncio.wrap_future(self.future()).__await__()

    def as_future(self) -> asyncio.Future:
        """An asyncio.Future of the value, on the running event loop (Ray's
        deprecated spelling of `asyncio.wrap_future(ref.future())`)."""
        _logger.warning(
            "ref.as_future() is deprecated in favor of asyncio.wrap_future(ref.future())."
        )
        return asyncio.wrap_future(self.future())


def _rebuild(object_id: bytes, owner: str) -> ObjectRef:
    return ObjectRef(object_id, owner)
