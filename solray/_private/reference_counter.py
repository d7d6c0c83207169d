"""Reference counting for the objects a process owns or borrows.

Per object id this process counts:

    local      live ObjectRef instances here. Whatever must keep an object
               alive holds instances: a pending task holds its argument refs
               and the refs nested in its arguments, an owned object holds the
               refs contained in its value, a remote function holds the refs
               its closure captured, a worker holds the refs in its return
               values until the caller took them over.
    borrowers  (owner side) other processes holding refs to it. A process
               that deserializes a ref it does not own registers with the
               owner before using it (borrowing.py: `register_borrows`), and tells
               the owner when its own count drops to zero. The sender of a
               ref holds its instance until the receiver has registered, so
               there is no moment when nobody is counted.
    pinned     (owner side) kept for the owner's lifetime whatever the counts:
               an actor's constructor arguments, for restarts.

An owned object is freed when it has no local refs, no borrowers and no pin.
A borrowed object's local count reaching zero unregisters us at its owner.

Threads. Counting up happens on the thread that makes a ref, at once: that
thread relies on the count right away (`owns` decides whether a get fetches
from another process; a first instance of a borrowed ref must be
registered). Everything that counts down, and so may free, runs on the core
worker's loop thread: `remove_local` (an ObjectRef's `__del__` queues it
there), `remove_borrowers`, `release_unreferenced`. So `on_free` runs only on
the loop, which owns what freeing touches. The lock guards the tables for
the two sides; it is held for dict and set operations only (for a batch of
decrements at most), never while calling out. `__del__` never takes it: a
garbage collection can run a `__del__` on a thread that holds it.

Because decrements are applied late, a count can only be too high for a
while, never too low: a decrement is posted after its increment was made.
So a count of zero means no instance is left (unless a thread deserializes a
new one from bytes, which `on_free` checks for with `is_live`). `owns` and
`is_live` read without the lock: single membership tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable


class ReferenceCounter:
    def __init__(self, on_free: Callable[[bytes, bool], None]):
        # on_free(object_id, owned) is called once nothing here references it.
        self._lock = threading.Lock()
        self._local: dict[bytes, int] = {}
        self._owned: set[bytes] = set()
        self._pinned: set[bytes] = set()
        self._borrowers: dict[bytes, set[str]] = {}
        self._on_free = on_free

    def add_owned(self, object_id: bytes) -> None:
        with self._lock:
            self._owned.add(object_id)

    def owns(self, object_id: bytes) -> bool:
        return object_id in self._owned

    def owns_all(self, object_ids: Iterable[bytes]) -> bool:
        """Whether every id is ours: one pass in C, stopping at the first
        that is not (a wait over a long list of our own refs asks this)."""
        return self._owned.issuperset(object_ids)

    def not_owned(self, refs: list) -> list:
        """The refs (ObjectRefs) to objects we do not own: `owns` for many."""
        owned = self._owned
        return [r for r in refs if r._id not in owned]

    def owns_any(self) -> bool:
        return bool(self._owned)

    def is_live(self, object_id: bytes) -> bool:
        return object_id in self._local or object_id in self._pinned or object_id in self._borrowers

    def add_local(self, object_id: bytes) -> int:
        """Count one more instance; returns the new count."""
        with self._lock:
            n = self._local.get(object_id, 0) + 1
            self._local[object_id] = n
            return n

    def add_locals(self, object_ids: list[bytes]) -> list[bytes]:
        """`add_local` for many, under one lock; returns those that had no
        instance before."""
        first = []
        with self._lock:
            local = self._local
            for i in object_ids:
                n = local.get(i)
                if n is None:
                    local[i] = 1
                    first.append(i)
                else:
                    local[i] = n + 1
        return first

    def remove_local(self, object_ids: list[bytes]) -> None:
        """Loop thread: one instance of each of these is gone."""
        freed = []
        with self._lock:
            local = self._local
            for i in object_ids:
                n = local.get(i)
                if n is None:  # a ref made in an earlier session of this process
                    continue
                if n > 1:
                    local[i] = n - 1
                    continue
                del local[i]
                owned = self._collectable(i)
                if owned is not None:
                    freed.append((i, owned))
        for i, owned in freed:
            self._on_free(i, owned)

    def pin(self, object_ids: Iterable[bytes]) -> None:
        with self._lock:
            for i in object_ids:
                if i in self._owned:
                    self._pinned.add(i)

    def add_borrowers(self, object_ids: Iterable[bytes], borrower: str) -> list[bytes]:
        """Register `borrower` for the ids we own; returns the ids we do not
        own (any more), which the borrower cannot count on."""
        unknown = []
        with self._lock:
            for i in object_ids:
                if i in self._owned:
                    self._borrowers.setdefault(i, set()).add(borrower)
                else:
                    unknown.append(i)
        return unknown

    def remove_borrowers(self, object_ids: Iterable[bytes], borrower: str) -> None:
        """Loop thread: `borrower` holds none of these any more."""
        freed = []
        with self._lock:
            for i in object_ids:
                borrowers = self._borrowers.get(i)
                if borrowers is None:
                    continue
                borrowers.discard(borrower)
                if not borrowers:
                    del self._borrowers[i]
                    free = self._collectable(i)
                    if free is not None:
                        freed.append((i, free))
        for i, owned in freed:
            self._on_free(i, owned)

    def release_unreferenced(self, object_id: bytes) -> bool:
        """Loop thread: stop owning an object nobody holds a ref to; False if
        someone does."""
        with self._lock:
            if self.is_live(object_id) or object_id not in self._owned:
                return False
            self._owned.discard(object_id)
            return True

    def _collectable(self, object_id: bytes) -> bool | None:
        """Under the lock: None if still referenced, else whether it was owned."""
        if self.is_live(object_id):
            return None
        owned = object_id in self._owned
        self._owned.discard(object_id)
        return owned

    def stats(self) -> dict:
        return {
            "local": len(self._local),
            "owned": len(self._owned),
            "pinned": len(self._pinned),
            "borrowed_by_others": len(self._borrowers),
        }

    def snapshot(self) -> dict[bytes, dict]:
        """Per owned or referenced object: its counts (for the state API)."""
        with self._lock:
            ids = set(self._owned) | set(self._local)
            return {
                i: {
                    "owned": i in self._owned,
                    "local": self._local.get(i, 0),
                    "borrowers": sorted(self._borrowers.get(i, ())),
                    "pinned": i in self._pinned,
                }
                for i in ids
            }
