"""`ray.util.pass_by_reference(ref)`: pass an ObjectRef to a task as the ref
itself, not its value.

A ref given as a top-level argument is resolved to its value before the task
runs; a ref nested in another object is not. The wrapper is such an object,
which unpickles to the ref it holds, so the task receives the ref (borrowed,
as nested refs always are).
"""

from __future__ import annotations

from solray.object_ref import ObjectRef


def _the_ref(ref: ObjectRef) -> ObjectRef:
    return ref


class _ObjectRefWrapper:
    """Pickles as the ref inside it; what the task gets is that ref."""

    def __init__(self, ref: ObjectRef):
        self._ref = ref

    def __reduce__(self):
        return _the_ref, (self._ref,)


def pass_by_reference(object_ref: ObjectRef) -> _ObjectRefWrapper:
    """Give `object_ref` to a task or actor call as the ref, unresolved."""
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"pass_by_reference() takes an ObjectRef, got {type(object_ref).__name__}")
    return _ObjectRefWrapper(object_ref)
