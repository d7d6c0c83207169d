"""ObjectRef: a future for a value that lives somewhere in the cluster.

A ref names its object and its owner's address. Creating one counts a local
reference in the current process's core worker (and, for a ref to someone
else's object, makes this process a borrower the owner must know about);
garbage-collecting it uncounts it (on the core worker's loop: `__del__` may
run on any thread, at any point, so it only posts). Pickling one is noticed by the serializer,
so whatever holds the pickled value can hold the refs inside it; the refs
one deserialize() makes are counted together when it is done (a value may
hold thousands).

Out of band: `ObjectRef(ref.binary())` (or `bytes.fromhex(ref.hex())`)
rebuilds a ref from its id alone, as in Ray. In the process that owns the
object it is an ordinary ref (counted, so it keeps the object alive from then
on). Anywhere else its owner is unknown: it is not counted, nobody is told
it exists, and the owner may free the object whenever its own references are
gone, as Ray documents for out-of-band references; reading it (or passing it
to a task) raises ReferenceCountingAssertionError saying to pass the ref
itself instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from solray._private import context
from solray._private.serialization import RefCollector, unpickling

_logger = logging.getLogger(__name__)


class ObjectRef:
    __slots__ = ("_id", "_owner", "__weakref__")

    def __init__(self, object_id: bytes, owner: str | None = None):
        if owner is None:  # rebuilt from its id by the user (out of band)
            owner = _owner_here(object_id)
        self._id = object_id
        self._owner = owner
        worker = context.core_worker or context.client
        if worker is not None and owner:
            worker.add_ref(object_id, owner)

    def __del__(self):
        worker = context.core_worker or context.client
        # No owner: not counted (out of band), or the constructor raised.
        if worker is not None and getattr(self, "_owner", None):
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


# An ObjectRef's id through the `_id` slot's own getter: in C, and a
# TypeError for anything that is not an ObjectRef (map() it over a list).
ref_id = ObjectRef._id.__get__


def _owner_here(object_id) -> str:
    """The owner of an id given out of band: this process if it owns the
    object, else unknown ("")."""
    from solray._private.ids import OBJECT_ID_LEN

    if not isinstance(object_id, bytes):
        raise TypeError(
            f"ObjectRef() takes the object's id as bytes (ref.binary()), "
            f"got {type(object_id).__name__}"
        )
    if len(object_id) != OBJECT_ID_LEN:
        raise ValueError(
            f"ID string needs to have length {OBJECT_ID_LEN}, got {len(object_id)} "
            "(ObjectRef() takes ref.binary() or bytes.fromhex(ref.hex()))"
        )
    cw = context.core_worker
    if cw is not None and cw.refs.owns(object_id):
        return cw.address
    return ""


_new = object.__new__


def _rebuild(object_id: bytes, owner: str) -> ObjectRef:
    made = getattr(unpickling, "refs", None)
    if made is None or not owner:
        # An out-of-band ref back in its owner's process is an ordinary ref there.
        return ObjectRef(object_id, owner or None)
    # In a deserialize(): counted with the others it makes, once it is done.
    ref = _new(ObjectRef)
    ref._id = object_id
    ref._owner = owner
    made.append(ref)
    return ref
