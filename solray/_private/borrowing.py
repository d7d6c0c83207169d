"""Borrowing: holding refs to objects other processes own, so that their
owners count us (the borrower side of reference_counter.py's protocol).

A process that deserializes a ref it does not own (its first live instance)
registers with the owner (ADD_BORROWERS) before the value is used, and
unregisters (REMOVE_BORROWERS) once its last instance is gone. The rule that
makes this safe: whoever sent the ref holds it until the receiver has
registered. Two places apply it:

    arguments  a task's refs nested in its arguments: the worker registers
               before running it (`register_borrows`), the caller holds them
               until the task ends
    results    refs inside a task's results: the worker holds them
               (`handoffs`) until the caller has taken them over
               (`take_over_refs`: its instances, its registrations) and says
               so (HANDOFF_DONE, `finish_handoff`)

Messages to one owner go out in the order they were decided (an
unregistration overtaking its registration would leave the owner counting a
borrower that is gone; the reverse would free an object we hold), batched per
owner per loop turn.

Threads: a thread that makes a ref counts it at once (`add_ref`) and notes a
first borrow in a per-thread list, since it relies on the count right away;
it then has the loop register them (`register_borrows`) and waits for the
owners to know. The tables here are the loop's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from functools import partial

from solray._private import transport
from solray._private.protocol import Msg
from solray.object_ref import ObjectRef, ref_id


class Borrowing:
    def __init__(self, core_worker):
        self.cw = core_worker
        self.borrowed: dict[bytes, str] = {}  # borrowed object -> owner we registered with
        self._messages: dict[str, list] = {}  # owner -> (un)registrations to send
        self._tls = threading.local()  # per thread: refs deserialized, not registered yet
        self.handoffs: dict[bytes, list] = {}  # task we ran -> refs in its results, until taken
        self._handoff_waits: dict[bytes, list] = {}  # task -> our registrations pending

    # -- registering -------------------------------------------------------

    def add_ref(self, object_id: bytes, owner: str) -> None:
        """Any thread: a new ObjectRef instance exists in this process. The
        first instance of someone else's object is a borrow to register."""
        cw = self.cw
        if (
            cw.refs.add_local(object_id) == 1
            and owner != cw.address
            and not cw.refs.owns(object_id)
        ):
            self._pending().append((object_id, owner))

    def add_refs(self, refs: list[ObjectRef]) -> None:
        """Any thread: `add_ref` for the instances one deserialize made."""
        cw = self.cw
        first = cw.refs.add_locals(list(map(ref_id, refs)))
        if first:
            had_none, address = set(first), cw.address
            self._pending().extend(
                (r._id, r._owner)
                for r in cw.refs.not_owned(refs)
                if r._id in had_none and r._owner != address
            )

    def _pending(self) -> list:
        """This thread's new borrows, to register."""
        pending = getattr(self._tls, "borrows", None)
        if pending is None:
            pending = self._tls.borrows = []
        return pending

    def _take_new_borrows(self) -> list:
        pending = getattr(self._tls, "borrows", None)
        if not pending:
            return []
        self._tls.borrows = []
        return pending

    def _register(self, pending: list) -> list[concurrent.futures.Future]:
        """Loop thread: queue registrations for new borrows ((id, owner)
        pairs); returns futures done once the owners know."""
        by_owner: dict[str, list[bytes]] = {}
        for object_id, owner in pending:
            if object_id in self.borrowed or not self.cw.refs.is_live(object_id):
                continue
            self.borrowed[object_id] = owner
            by_owner.setdefault(owner, []).append(object_id)
        return [
            self._queue(owner, Msg.ADD_BORROWERS, object_ids)
            for owner, object_ids in by_owner.items()
        ]

    def register_borrows(self) -> None:
        """User thread: tell the owners of refs this thread just deserialized
        that we hold them, and wait until they know. Call it before the
        sender of those refs may let go of them."""
        pending = self._take_new_borrows()
        if pending:
            waits = self.cw.run_on_loop(self._register, pending)
            if not self.cw.loop.in_turn():  # cannot wait on ourselves
                concurrent.futures.wait(waits)

    def register_borrows_async(self) -> asyncio.Future:
        """Loop thread: the same, as a future."""
        done = self._register(self._take_new_borrows())
        return asyncio.gather(*(asyncio.wrap_future(f) for f in done))

    def unregister(self, object_id: bytes) -> None:
        """Loop thread: our last instance of a borrowed object is gone."""
        owner = self.borrowed.pop(object_id, None)
        if owner is not None:
            self._queue(owner, Msg.REMOVE_BORROWERS, [object_id])

    def _queue(self, owner: str, msg: Msg, object_ids: list[bytes]):
        """Loop thread: queue an ADD_BORROWERS or REMOVE_BORROWERS for
        `owner`, after those decided before it."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        queue = self._messages.setdefault(owner, [])
        queue.append((msg, object_ids, done))
        if len(queue) == 1:
            self.cw.post(self._start_sending, owner)
        return done

    def _start_sending(self, owner: str) -> None:
        self.cw.loop.create_task(self._send(owner))

    async def _send(self, owner: str) -> None:
        try:
            conn = await self.cw.peer(owner)
        except (OSError, TimeoutError, transport.ConnectionLost):
            conn = None  # the owner is gone: getting its objects raises OwnerDiedError
        queue = self._messages.pop(owner, [])  # taken and sent at once: in order
        address = self.cw.address
        for msg, object_ids, done in queue:
            if conn is None or conn.closed:
                done.set_result(None)
            elif msg == Msg.ADD_BORROWERS:
                reply = conn.request(msg, {"ids": object_ids, "borrower": address})
                reply.add_done_callback(partial(_registered, done))
            else:
                conn.send(msg, {"ids": object_ids, "borrower": address})
                done.set_result(None)

    # -- refs inside task results --------------------------------------------

    def hold_for_handoff(self, task_id: bytes, refs: list) -> None:
        """Loop thread, in a worker: hold refs inside a result of the task
        we run until its caller has taken them over (HANDOFF_DONE)."""
        self.handoffs.setdefault(task_id, []).extend(refs)

    def reply_to_task(self, conn, rid: int, task_id: bytes, reply: dict, buffers: list) -> None:
        """Loop thread, in a worker: answer the push of a task we ran."""
        if task_id in self.handoffs:
            conn.peer.setdefault("handoffs", set()).add(task_id)
            reply["hh"] = 1  # we hold refs in its results until the caller is done
        conn.reply(rid, reply, buffers)

    def serve_handoff_done(self, conn, rid, body, buffers) -> None:
        self.handoffs.pop(body["tid"], None)

    def peer_gone(self, conn) -> None:
        """Loop thread: a caller disconnected; results it never took over
        are let go."""
        for task_id in conn.peer.get("handoffs", ()):
            self.handoffs.pop(task_id, None)

    def take_over_refs(self, task_id: bytes, object_id: bytes, refs: list) -> asyncio.Future:
        """Loop thread: a result of one of our tasks contains these refs
        ([id, owner] pairs). Hold them while the result lives, registering as
        their borrower; the task's worker lets go once we are done
        (`finish_handoff`). Returns the registration: done once their owners
        know."""
        instances = [ObjectRef(i, owner) for i, owner in refs]
        if self.cw.refs.owns(object_id):
            self.cw.ownership.contained[object_id] = instances
        registered = self.register_borrows_async()
        self._handoff_waits.setdefault(task_id, []).append(registered)
        return registered

    def finish_handoff(self, task_id: bytes, conn, worker_holds: bool) -> None:
        """Loop thread: once our registrations for a task's results are done,
        tell its worker it may drop its hold on them."""
        waits = self._handoff_waits.pop(task_id, [])
        if not worker_holds or conn is None:
            return

        async def done():
            await asyncio.gather(*waits)
            conn.send(Msg.HANDOFF_DONE, {"tid": task_id})

        self.cw.loop.create_task(done())


def _registered(done: concurrent.futures.Future, reply: asyncio.Future) -> None:
    if not reply.cancelled():
        reply.exception()  # the owner may be gone: nothing to report here
    done.set_result(None)
