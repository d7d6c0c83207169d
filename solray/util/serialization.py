"""Custom serializers for a class (`ray.util.register_serializer`).

As in Ray, a registration applies to the process that makes it: values this
process puts, passes as arguments or returns are pickled as
`deserializer(serializer(value))`, the deserializer travelling with them
(pickled by value if it is defined in `__main__`), so the process that reads
them needs nothing registered. A worker that returns such values must
register too (in the task, or in an actor's constructor).
"""

from __future__ import annotations

from collections.abc import Callable

from solray._private.serialization import custom_reducers


def register_serializer(cls: type, *, serializer: Callable, deserializer: Callable) -> None:
    """Serialize instances of `cls` as `serializer(instance)` (which must be
    picklable, e.g. a dict of plain values) and rebuild them with
    `deserializer(that)`, which must itself be picklable."""
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer() needs a class, got {cls!r}")
    for name, fn in (("serializer", serializer), ("deserializer", deserializer)):
        if not callable(fn):
            raise TypeError(f"register_serializer(): {name} must be callable, got {fn!r}")
    custom_reducers[cls] = lambda obj: (deserializer, (serializer(obj),))


def deregister_serializer(cls: type) -> None:
    """Forget the serializer of `cls` in this process; nothing happens if it
    has none."""
    custom_reducers.pop(cls, None)


__all__ = ["deregister_serializer", "register_serializer"]
