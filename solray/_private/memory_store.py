"""A core worker's in-process memory store.

It maps object ids to what this process knows of the object's value:

    Inline(obj)         the serialized value itself (small values, errors)
    InStore(node, ...)  the value lives in the shared-memory store of `node`

For objects this process owns, an absent id means "not produced yet". For
borrowed objects it is a cache of what the owner told us.

It is where the core worker's loop thread hands values to user threads, so
unlike the rest of the core worker's state it is shared: the loop stores
results and fetched values and deletes freed objects; user threads store
their puts and wait for values. The lock guards the two dicts for writes and
waiter registration; lookups (`get`, `contains`) are single dict reads.
Waiters are notified outside the lock, on the thread that stored the value,
so a waiter's callback may take other locks or call back into the store (the
core worker's callbacks only post to the loop or to a thread pool).
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable, Iterable

from solray._private import serialization
from solray._private.serialization import SerializedObject


class Inline:
    __slots__ = ("obj",)

    def __init__(self, obj: SerializedObject):
        self.obj = obj

    @property
    def is_error(self) -> bool:
        return self.obj.is_error


class InStore:
    # is_error: a stored error (one too large to travel inline) still makes
    # `get` of several refs raise at once, without reading it first.
    __slots__ = ("node", "size", "is_error")

    def __init__(self, node: str, size: int, is_error: bool = False):
        self.node = node
        self.size = size
        self.is_error = is_error


Entry = Inline | InStore


WIDE = 32  # see MemoryStore._wide


class Wake:
    """What a waiting thread needs of threading.Event (`wait`, `set`), on
    one lock held until set. An Event is a Condition: a lock and a deque to
    make, a waiter lock per wait, and a notify; about 200 bytecodes per
    blocking get, which a sync call does once.

    A thread that runs the loop while it waits (event_loop.Loop.wait_running)
    sits in epoll, not on the lock: `poller` is that loop then, and a set
    from another thread writes the loop's wake-up byte too."""

    __slots__ = ("_lock", "poller", "poller_ident")

    def __init__(self):
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self.poller = None  # the loop the waiting thread runs, while it does
        self.poller_ident = 0  # that thread

    def is_set(self) -> bool:
        return not self._lock.locked()

    def set(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # set already (an on_error waiter fires per error)
            pass
        poller = self.poller
        if poller is not None and self.poller_ident != _thread.get_ident():
            poller._write_to_self()

    def wait(self, timeout: float | None = None) -> bool:
        """True once set; False when `timeout` passes first."""
        if not self._lock.acquire(True, -1 if timeout is None else timeout):
            return False
        self.set()  # set for good: later waits return at once
        return True


class Waiter:
    """Wakes its thread (or runs `callback`) once `needed` ids are ready, or
    with `on_error` as soon as one of them holds an error (`get` of several
    refs raises the first error without waiting for the rest, as in Ray)."""

    __slots__ = ("needed", "event", "callback", "on_error", "ids")

    def __init__(
        self, needed: int, callback: Callable[[], None] | None = None, on_error: bool = False
    ):
        self.needed = needed
        self.callback = callback
        self.on_error = on_error
        self.event = None if callback else Wake()
        self.ids: set[bytes] | None = None  # a wide waiter's ids still missing

    def _one_ready(self, entry: Entry) -> bool:
        self.needed -= 1
        return self.needed == 0 or (self.on_error and entry.is_error)

    def _fire(self) -> None:
        if self.callback is not None:
            self.callback()
        else:
            self.event.set()


class MemoryStore:
    def __init__(self):
        self._lock = threading.Lock()
        self._objects: dict[bytes, Entry] = {}
        # Reads take no lock (one dict lookup is atomic), and are the dict's
        # own methods: `get` runs per ref in every get and wait, and a Python
        # frame per look cost more than the look.
        self.get: Callable[[bytes], Entry | None] = self._objects.get
        self.contains: Callable[[bytes], bool] = self._objects.__contains__
        self._waiters: dict[bytes, list[Waiter]] = {}  # id -> waiters for it
        # Waiters for more than WIDE missing ids watch them as one set, which
        # every put looks into, instead of an entry per id registered and
        # forgotten: `wait` over a long list, one result at a time, blocked
        # once per result, and paid for the whole list each time.
        self._wide: list[Waiter] = []
        # A user thread waiting for a value the loop stores is woken at the
        # end of the loop's turn (`event_loop.Loop.turn_end`), not at once:
        # a turn often stores several results (a burst of replies read
        # together), and a thread woken at the first would wait for the GIL
        # the loop still holds, then take it from the loop for each of the
        # rest. `_to_wake` is the loop's (only a thread in its turn appends
        # or wakes).
        self._loop = None
        self._to_wake: list[Wake] = []

    def wake_at_turn_end(self, loop) -> None:
        """Loop thread: wake waiters at the end of each turn of `loop` (an
        event_loop.Loop); None (once the loop has stopped): at once."""
        self._loop = loop
        if loop is None:
            self._wake_all()

    def put(self, object_id: bytes, entry: Entry) -> None:
        with self._lock:
            self._objects[object_id] = entry
            waiters = self._waiters.pop(object_id, None)
            fire = [w for w in waiters if w._one_ready(entry)] if waiters else []
            if self._wide:
                for w in self._wide:
                    if object_id in w.ids:
                        w.ids.discard(object_id)
                        if w._one_ready(entry):
                            fire.append(w)
                if fire:
                    self._wide = [w for w in self._wide if w not in fire]
        if not fire:
            return
        loop = self._loop
        if loop is not None and loop.in_turn():
            to_wake = self._to_wake
            for w in fire:
                if w.callback is None:
                    if not to_wake:
                        loop.turn_end.append(self._wake_all)
                    to_wake.append(w.event)
                else:
                    w.callback()
            return
        for w in fire:
            w._fire()

    def _wake_all(self) -> None:
        to_wake, self._to_wake = self._to_wake, []
        for event in to_wake:
            event.set()

    def absent(self, refs: list) -> list:
        """The refs (ObjectRefs) without an entry: `contains` for many, one
        frame for all."""
        objects = self._objects
        return [r for r in refs if r._id not in objects]

    def delete(self, object_id: bytes) -> Entry | None:
        with self._lock:
            return self._objects.pop(object_id, None)

    def wait(
        self, object_ids: Iterable[bytes], needed: int, waiter_callback=None, on_error=False
    ) -> Waiter | None:
        """Register a waiter for `needed` of the ids that are missing.

        Returns None if enough are present already (or, with `on_error`, one
        present holds an error); otherwise a Waiter whose event is set (or
        callback run) when enough have arrived (or an error has).
        """
        # Set operations, so the work per id runs in C (`wait` over a long
        # list blocks once per result, and would pay a Python step per id).
        ids = object_ids if type(object_ids) is set else set(object_ids)
        with self._lock:
            missing = ids.difference(self._objects)
            present = len(ids) - len(missing)
            still = needed - present
            if still <= 0:
                return None
            if on_error and present and any(self._objects[i].is_error for i in ids - missing):
                return None
            waiter = Waiter(still, waiter_callback, on_error)
            if len(missing) > WIDE:
                waiter.ids = missing
                self._wide.append(waiter)
                return waiter
            for i in missing:
                self._waiters.setdefault(i, []).append(waiter)
            return waiter

    def forget_waiter(self, object_ids: Iterable[bytes], waiter: Waiter) -> None:
        with self._lock:
            if waiter.ids is not None:
                if waiter in self._wide:
                    self._wide.remove(waiter)
                return
            for i in set(object_ids):
                lst = self._waiters.get(i)
                if lst and waiter in lst:
                    lst.remove(waiter)
                    if not lst:
                        del self._waiters[i]

    def __len__(self) -> int:
        return len(self._objects)


def error_entry(error: BaseException) -> Inline:
    return Inline(serialization.serialize_error(error))


def encode_entry(entry) -> tuple[list, list]:
    """An entry as a message head and buffers (for replies and pushes)."""
    if isinstance(entry, Inline):
        buffers = entry.obj.wire_buffers()
        return ["i", entry.obj.flags, len(buffers)], buffers
    return ["s", entry.node, entry.size, entry.is_error], []


def decode_entry(head, buffers: list):
    if head is None:
        return None
    if head[0] == "i":
        return Inline(SerializedObject.from_wire(head[1], buffers))
    return InStore(head[1], head[2], len(head) > 3 and head[3])
