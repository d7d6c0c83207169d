"""Reading objects: `get`, `wait`, `ObjectRef.future()`, and a task's
arguments in a worker.

A value is read from its entry in the memory store: inline bytes, or a place
in a node's store (store_client.py). What this process does not own it asks
the owner for (GET_OBJECT), once; the answer is cached in the memory store.
A value whose only copy is lost is rebuilt by its owner first (lineage.py):
this process's own objects through `Lineage.recover`, others' by asking
their owner with GET_OBJECT `lost`.

`wait(fetch_local=True)` (the default) counts a value as ready once it is
readable on this node; one in another node's store is pulled here first. The
loop owns the wait in progress (`_LocalWait`): it follows each id as it
arrives and starts its pull; the caller only waits on an event and takes the
ready set from the loop at the end.

Threads: get, wait and materialize run on user threads and wait on events;
a worker blocked so lends its CPU to others (WORKER_BLOCKED). Fetches and
pulls run on the loop, which owns `_fetching`.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from itertools import compress, count, islice

from solray import exceptions
from solray._private import serialization, transport
from solray._private.memory_store import Inline, InStore, Wake, decode_entry, error_entry
from solray._private.protocol import Msg
from solray._private.serialization import SerializedObject
from solray._private.store_client import Lost
from solray.object_ref import ObjectRef, ref_id


class ObjectReader:
    def __init__(self, core_worker):
        self.cw = core_worker
        self._fetching: set[bytes] = set()  # loop: borrowed ids asked of their owners
        # `solray why`: each user thread blocked in get/wait, by ident: (kind,
        # [(id, owner)], since, (task id, task name) or None). Each thread
        # writes its own entry; the loop copies the table (blocked_now).
        self._blocked: dict[int, tuple] = {}
        self._blocked_lock = threading.Lock()
        # Resolves ObjectRef.future()s; its thread starts on first use.
        self._future_pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="solray-futures"
        )

    def close(self) -> None:
        self._future_pool.shutdown(wait=False)

    # -- get -----------------------------------------------------------------

    def get(self, refs: list[ObjectRef], timeout: float | None = None) -> list:
        if len(refs) == 1:
            return [self._get_one(refs[0], timeout)]
        memory_store = self.cw.memory_store
        deadline = None if timeout is None else time.monotonic() + timeout
        # Usually every value is here already: no waiting, no asking owners.
        entries = [memory_store.get(r._id) for r in refs]
        if any(entry is None for entry in entries):
            self._fetch_borrowed(refs)
            object_ids = [r._id for r in refs]
            with _Blocked(self, "get", refs):
                ready = self.wait_for_ids(object_ids, len(set(object_ids)), timeout, on_error=True)
            if not ready:
                raise exceptions.GetTimeoutError(
                    f"get timed out after {timeout} seconds: "
                    f"{sum(not memory_store.contains(i) for i in set(object_ids))} "
                    "object(s) still not ready"
                )
            entries = [memory_store.get(i) for i in object_ids]
        # As in Ray, the first error raises without waiting for the others.
        for ref, entry in zip(refs, entries, strict=True):
            if entry is not None and entry.is_error:
                self.materialize(ref._id, entry, ref._owner)
        read = self.read_stored([(r._id, e, r._owner) for r, e in zip(refs, entries, strict=True)])
        # A plain numpy array comes out of the store ready (StoreClient._view);
        # the rest is materialized. The refs inside the values are registered
        # once, after all are read (the refs given keep the values, hence the
        # refs inside, alive until then): a thread-local look-up per value
        # was a tenth of its cost.
        ready = getattr(sys.modules.get("numpy"), "ndarray", None)
        try:
            return [
                value
                if type(value := read.get(r._id)) is ready
                else self.materialize(r._id, e, r._owner, deadline, value, register=False)
                for r, e in zip(refs, entries, strict=True)
            ]
        finally:
            self.cw.borrowing.register_borrows()

    def _get_one(self, ref: ObjectRef, timeout: float | None):
        """`get` of one ref: a sync call's path (`get(f.remote())`), so it
        does only what one ref needs (no lists, no batched read)."""
        object_id = ref._id
        # The deadline bounds a rebuild too, when the value is there but lost.
        deadline = None if timeout is None else time.monotonic() + timeout
        entry = self.cw.memory_store.get(object_id)
        if entry is not None:
            return self.materialize(object_id, entry, ref._owner, deadline)
        self._fetch_borrowed((ref,))
        with _Blocked(self, "get", (ref,)):
            ready = self.wait_for_ids((object_id,), 1, timeout)
        if not ready:
            raise exceptions.GetTimeoutError(
                f"get timed out after {timeout} seconds: 1 object(s) still not ready"
            )
        entry = self.cw.memory_store.get(object_id)
        return self.materialize(object_id, entry, ref._owner, deadline)

    def read_stored(self, items: list[tuple[bytes, object, str]]) -> dict:
        """User thread: of the (id, entry, owner) items about to be
        materialized, read those that live in a store in one round trip to
        our node however many there are: {id: view, or the exception reading
        it raised}, for `materialize`. A single one is left to it."""
        wanted = [item for item in items if type(item[1]) is InStore]
        return self.cw.store.read_many(wanted) if len(wanted) > 1 else {}

    def blocked_now(self) -> dict[int, tuple]:
        """Any thread: the threads blocked in get or wait now: {ident: (kind,
        [(id, owner)] of the refs still without a value, since, task)}."""
        with self._blocked_lock:
            blocked = dict(self._blocked)
        address = self.cw.address
        return {
            ident: (
                kind,
                [(r._id, r._owner or address) for r in self.cw.memory_store.absent(refs)],
                since,
                task,
            )
            for ident, (kind, refs, since, task) in blocked.items()
        }

    def value_future(self, ref: ObjectRef) -> concurrent.futures.Future:
        memory_store = self.cw.memory_store
        future: concurrent.futures.Future = concurrent.futures.Future()

        def resolve():
            try:
                future.set_result(self.materialize(ref._id, memory_store.get(ref._id), ref._owner))
            except BaseException as e:
                future.set_exception(e)

        self._fetch_borrowed([ref])
        if memory_store.wait([ref._id], 1, lambda: self._future_pool.submit(resolve)) is None:
            self._future_pool.submit(resolve)
        elif self.cw.executor is not None and self.cw.current_task is not None:
            self.cw.executor.hand_back()  # the task may wait on this future
        return future

    def materialize(
        self,
        object_id: bytes,
        entry,
        owner: str,
        deadline: float | None = None,
        read=None,
        register: bool = True,
    ):
        """User thread: the value an entry holds (raising the error it holds).
        A value whose only copy was lost is rebuilt by `owner` first, by the
        `deadline` (time.monotonic()) if one is given. `read` is what reading
        a stored entry gave already (StoreClient.read_many: its view, or
        the exception reading it raised), if it was read. Without `register`
        the caller registers the borrowed refs deserialized (register_borrows)."""
        obj = None
        while obj is None:
            if isinstance(entry, Inline):
                obj = entry.obj
            elif isinstance(entry, InStore):
                try:
                    if read is None:
                        read = self.cw.store.read(object_id, entry, owner)
                    elif isinstance(read, Exception):
                        raise read
                except Lost:
                    read = None  # what a read after the rebuild finds
                    entry = self._recovered(object_id, entry, owner, deadline)
                    continue
                if type(read) is not memoryview:
                    return read  # a plain numpy array, made in place (no refs, no error)
                obj = SerializedObject.read_from(read)
            else:
                raise exceptions.ObjectLostError(object_id.hex(), owner)
        value = serialization.deserialize(obj)
        if register:
            self.cw.borrowing.register_borrows()
        if obj.is_error:
            raise_stored_error(value)
        return value

    def _recovered(self, object_id: bytes, lost: InStore, owner: str, deadline: float | None):
        """User thread: no copy of the object is left where `lost` said.
        Its owner rebuilds it; returns its new entry (an error entry if it
        cannot be had)."""
        cw = self.cw
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if cw.refs.owns(object_id):
            cw.run_on_loop(cw.lineage.recover, object_id, lost.node)
            if self.wait_for_ids([object_id], 1, timeout):
                return cw.memory_store.get(object_id)
        else:
            done = Wake()
            asked = cw.submit(self._ask_owner(object_id, owner, lost))
            asked.add_done_callback(lambda _: done.set())
            if self.block(done, timeout):
                return asked.result()
        # Out of time; the rebuild goes on, for later readers.
        raise exceptions.GetTimeoutError(
            f"get timed out: object {object_id.hex()} was lost with its node and is still "
            "being rebuilt from its lineage"
        )

    # -- wait ----------------------------------------------------------------

    def wait(
        self,
        object_ids: list[bytes],
        unique: set[bytes],
        refs: list[ObjectRef],
        num_returns: int,
        timeout: float | None,
        fetch_local: bool,
        anywhere: frozenset[bytes] = frozenset(),
    ) -> list[int]:
        """Block until `num_returns` of the ids are ready, or the timeout
        passed; returns the indexes of the first `num_returns` ready ids, in
        order. `unique` is the set of the ids, `refs` the plain ObjectRefs
        among them, which may need fetching from their owners.
        Ready: the value exists somewhere; with `fetch_local` it must also be
        readable on this node, so a value in another node's store is pulled
        here first (as Ray's wait does), except for the ids in `anywhere` (a
        stream's next item, for which Ray ignores fetch_local)."""
        cw = self.cw
        deadline = None if timeout is None else time.monotonic() + timeout
        present = cw.memory_store.contains
        test = self._readable_here(anywhere) if fetch_local else None
        taken = _first_ready(object_ids, num_returns, present, test)
        if len(taken) == num_returns:
            return taken  # on one node, values are always inline or in its store
        # Stream items' ids may be others' (not among `refs` to fetch).
        if anywhere or not cw.refs.owns_all(unique):
            self._fetch_borrowed(refs)
        with _Blocked(self, "wait", refs):
            self.wait_for_ids(unique, num_returns, timeout)
        taken = _first_ready(object_ids, num_returns, present, test)
        if not fetch_local or len(taken) == num_returns:
            return taken
        # Some values live in other nodes' stores: follow each id until it is
        # readable here (pulls start even if the time is up, as in Ray).
        waiting = _LocalWait(object_ids, anywhere, num_returns)
        cw.post(self._start_local_wait, waiting)
        self.block(
            waiting.event, None if deadline is None else max(0.0, deadline - time.monotonic())
        )
        result: concurrent.futures.Future = concurrent.futures.Future()
        cw.post(self._finish_local_wait, waiting, result)
        return _first_ready(object_ids, num_returns, result.result().__contains__)

    def _readable_here(self, anywhere: frozenset[bytes]) -> Callable[[bytes], bool]:
        """A test of whether an id has a value this process can read without
        a pull (or, for ids in `anywhere`, has a value at all)."""
        get, node = self.cw.memory_store.get, self.cw.node_address

        def readable(object_id: bytes) -> bool:
            entry = get(object_id)
            if entry is None:
                return False
            return type(entry) is not InStore or entry.node == node or object_id in anywhere

        return readable

    def _start_local_wait(self, waiting: _LocalWait) -> None:
        """Loop thread: follow each id until it is readable here."""
        for object_id in waiting.ids:
            arrived = partial(self.cw.post, self._local_wait_arrived, waiting, object_id)
            waiter = self.cw.memory_store.wait([object_id], 1, arrived)
            if waiter is None:
                self._local_wait_arrived(waiting, object_id)
            else:
                waiting.waiters.append((object_id, waiter))

    def _local_wait_arrived(self, waiting: _LocalWait, object_id: bytes) -> None:
        """Loop thread: the id has a value; pull it here if it lives elsewhere."""
        if waiting.done:
            return
        cw = self.cw
        entry = cw.memory_store.get(object_id)
        elsewhere = type(entry) is InStore and entry.node != cw.node_address
        if elsewhere and object_id not in waiting.anywhere:
            cw.loop.create_task(self._pull_here(waiting, object_id, entry))
        else:
            waiting.one_ready(object_id)

    async def _pull_here(self, waiting: _LocalWait, object_id: bytes, entry: InStore) -> None:
        """Loop thread: copy the value to this node's store. A pull that
        fails (the object is lost, or no room here) is ready too: get() then
        recovers it or raises why it cannot."""
        cw = self.cw
        owner = cw.address if cw.refs.owns(object_id) else cw.borrowing.borrowed.get(object_id)
        await cw.store.prefetch(object_id, entry, owner or "")
        waiting.one_ready(object_id)

    def _finish_local_wait(self, waiting: _LocalWait, result: concurrent.futures.Future) -> None:
        """Loop thread: the caller is done waiting; hand it what is ready."""
        waiting.done = True
        for object_id, waiter in waiting.waiters:
            self.cw.memory_store.forget_waiter([object_id], waiter)
        result.set_result(waiting.ready)

    def wait_for_ids(
        self, object_ids: list[bytes], needed: int, timeout: float | None, on_error=False
    ) -> bool:
        """User thread: block until `needed` of the ids have entries (or,
        with `on_error`, one has an error); False on timeout."""
        memory_store = self.cw.memory_store
        waiter = memory_store.wait(object_ids, needed, on_error=on_error)
        if waiter is None:
            return True
        woken = self.block(waiter.event, timeout)
        if not woken or on_error:  # an error may have woken it before the rest came
            memory_store.forget_waiter(object_ids, waiter)
        return woken

    def block(self, event: Wake, timeout: float | None) -> bool:
        """User thread: wait for `event`; False on timeout. A worker blocked
        here lends its CPU to others (WORKER_BLOCKED)."""
        cw = self.cw
        blocked = cw.current_task is not None
        if blocked:
            cw.post(cw.node.send, Msg.WORKER_BLOCKED)
            if cw.executor is not None:
                cw.executor.blocking(True)
        wait_running = cw.loop.wait_running  # runs the loop while it waits, if it may
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                # Wake up now and then so Ctrl-C reaches the driver promptly.
                step = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
                if wait_running(event, step):
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
        finally:
            if blocked:
                if cw.executor is not None:
                    cw.executor.blocking(False)
                cw.post(cw.node.send, Msg.WORKER_UNBLOCKED)

    # -- borrowed objects: ask the owner -------------------------------------

    def _fetch_borrowed(self, refs) -> None:
        """User thread: have the loop ask the owners of the borrowed refs we
        have no value for. A ref rebuilt out of band names no owner to ask
        (object_ref.py): its reader gets the error now."""
        cw = self.cw
        if cw.refs.owns_all(map(ref_id, refs)):
            return
        missing = cw.refs.not_owned(cw.memory_store.absent(refs))
        for ref in missing:
            if not ref._owner:
                raise exceptions.ReferenceCountingAssertionError(ref._id.hex())
        if missing:
            cw.post(self._fetch_all, missing)

    def _fetch_all(self, refs: list) -> None:
        for ref in refs:
            self.fetch_borrowed_from_loop(ref)

    def fetch_borrowed_from_loop(self, ref: ObjectRef) -> None:
        """Loop thread: ask the owner of a borrowed ref for its value, unless
        we have it or asked already."""
        if ref._id not in self._fetching and not self.cw.memory_store.contains(ref._id):
            self._fetching.add(ref._id)
            self.cw.loop.create_task(self._fetch(ref._id, ref._owner))

    async def _fetch(self, object_id: bytes, owner: str) -> None:
        try:
            entry = await self._ask_owner(object_id, owner)
        finally:
            self._fetching.discard(object_id)
        self.cw.memory_store.put(object_id, entry)

    async def _ask_owner(self, object_id: bytes, owner: str, lost: InStore | None = None):
        """Loop thread: the entry of a borrowed object, from its owner, once
        the object has a value. With `lost` (an entry whose copy is gone),
        the owner rebuilds it first; our cached entry, if it was that one,
        becomes the new one."""
        cw = self.cw
        body = {"id": object_id} if lost is None else {"id": object_id, "lost": lost.node}
        try:
            conn = await cw.peer(owner)
            head, bufs = await conn.request(Msg.GET_OBJECT, body, raw=True)
            entry = decode_entry(head, bufs)
            if entry is None:  # the owner does not have it (any more)
                entry = error_entry(exceptions.ObjectLostError(object_id.hex(), owner))
        except (TimeoutError, OSError, transport.ConnectionLost):
            entry = error_entry(exceptions.OwnerDiedError(object_id.hex(), owner))
        if lost is not None and cw.memory_store.get(object_id) is lost:
            cw.memory_store.put(object_id, entry)
        return entry


def _first_ready(
    ids: list[bytes],
    needed: int,
    present: Callable[[bytes], bool],
    test: Callable[[bytes], bool] | None = None,
) -> list[int]:
    """The indexes of the first `needed` ids that are `present` (a test in
    C: the memory store's membership, or a set's) and pass `test`, in order.
    The look for present ids runs in C: a wait over a long list mostly meets
    ids without a value, and a loop of waits over a shrinking list would be
    quadratic in Python steps."""
    found = compress(count(), map(present, ids))
    if test is None:
        return list(islice(found, needed))
    taken = []
    for index in found:
        if test(ids[index]):
            taken.append(index)
            if len(taken) == needed:
                break
    return taken


class _LocalWait:
    """A `wait(fetch_local=True)` in progress. The loop thread owns it until
    `done`; the waiting thread only waits on `event`."""

    __slots__ = ("ids", "anywhere", "needed", "ready", "event", "waiters", "done")

    def __init__(self, ids: list[bytes], anywhere: frozenset[bytes], needed: int):
        self.ids = ids
        self.anywhere = anywhere  # ids ready wherever their value is
        self.needed = needed
        self.ready: set[bytes] = set()
        self.event = Wake()
        self.waiters: list = []  # (id, memory store waiter) to forget when done
        self.done = False

    def one_ready(self, object_id: bytes) -> None:
        if self.done:
            return
        self.ready.add(object_id)
        if len(self.ready) >= self.needed:
            self.event.set()


class _Blocked:
    """While its `with` block runs, `blocked_now` shows this thread waiting
    for those of `refs` still without a value. (A class, not a contextlib
    generator, and the refs kept as given: it is on every sync call's path,
    and on every wait's over a list however long.)"""

    __slots__ = ("reader", "entry")

    def __init__(self, reader: ObjectReader, kind: str, refs):
        ctx = reader.cw.current_task
        task = (ctx.task_id, ctx.task_name or ctx.name) if ctx is not None else None
        self.reader = reader
        self.entry = (kind, refs, time.time(), task)

    def __enter__(self) -> None:
        reader = self.reader
        with reader._blocked_lock:
            reader._blocked[threading.get_ident()] = self.entry

    def __exit__(self, *exc) -> None:
        reader = self.reader
        with reader._blocked_lock:
            reader._blocked.pop(threading.get_ident(), None)


def raise_stored_error(error: BaseException):
    if isinstance(error, exceptions.RayTaskError):
        raise error.as_instanceof_cause()
    raise error
