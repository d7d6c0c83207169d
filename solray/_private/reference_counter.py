"""Reference counting for the objects a process owns or borrows.

Counted per object id:

    local      live ObjectRef instances in this process (a pending task
               keeps the ObjectRefs of its arguments, so they count here)
    escaped    the ref was serialized into something (an argument, a value,
               a return value, a closure), so copies may live elsewhere

An owned object is freed when `local` is zero and it has not
escaped. Escaped objects stay pinned for the owner's lifetime for now: that
never frees anything reachable, at the cost of keeping some objects longer
than needed. Precise borrower tracking (borrowers report back to the owner)
replaces this in the memory-management work; see docs/architecture.md.

`__del__` of an ObjectRef may run on any thread, so counts change under a lock
and the free callback runs outside it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable


class ReferenceCounter:
    def __init__(self, on_free: Callable[[bytes, bool], None]):
        # on_free(object_id, owned) is called once nothing references it.
        self._lock = threading.Lock()
        self._local: dict[bytes, int] = {}
        self._owned: set[bytes] = set()
        self._escaped: set[bytes] = set()
        self._on_free = on_free

    def add_owned(self, object_id: bytes) -> None:
        with self._lock:
            self._owned.add(object_id)

    def owns(self, object_id: bytes) -> bool:
        return object_id in self._owned

    def is_live(self, object_id: bytes) -> bool:
        return object_id in self._local or object_id in self._escaped

    def add_local(self, object_id: bytes) -> None:
        with self._lock:
            self._local[object_id] = self._local.get(object_id, 0) + 1

    def remove_local(self, object_id: bytes) -> None:
        with self._lock:
            n = self._local.get(object_id, 0) - 1
            if n > 0:
                self._local[object_id] = n
                return
            self._local.pop(object_id, None)
            free = self._collectable(object_id)
        if free is not None:
            self._on_free(object_id, free)

    def mark_escaped(self, object_ids: Iterable[bytes]) -> None:
        with self._lock:
            for i in object_ids:
                if i in self._owned:
                    self._escaped.add(i)

    def release_unreferenced(self, object_id: bytes) -> bool:
        """Stop owning an object nobody holds a ref to; False if someone does."""
        with self._lock:
            if object_id in self._local or object_id in self._escaped:
                return False
            if object_id not in self._owned:
                return False
            self._owned.discard(object_id)
            return True

    def _collectable(self, object_id: bytes) -> bool | None:
        """Under the lock: None if still referenced, else whether it was owned."""
        if object_id in self._local or object_id in self._escaped:
            return None
        owned = object_id in self._owned
        self._owned.discard(object_id)
        return owned

    def stats(self) -> dict:
        return {
            "local": len(self._local),
            "owned": len(self._owned),
            "escaped": len(self._escaped),
        }
