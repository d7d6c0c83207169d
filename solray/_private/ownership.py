"""Ownership: the objects this process owns (the owner side of
reference_counter.py's protocol).

A process owns the objects it creates: the returns of the tasks it submits
and its `put`s (or, with `put(_owner=actor)`, the actor owns a put). As owner
it keeps the value or its location (memory_store.py), answers borrowers
(GET_OBJECT: once the value exists; rebuilt first if the borrower found it
lost, lineage.py), counts them (ADD_BORROWERS / REMOVE_BORROWERS; a borrower
that disconnects borrows nothing any more), and frees the object once nothing
references it: no instance here, no borrower, no pin.

An owned value holds the refs inside it (`contained`) for as long as it
lives, so what it references outlives it. With
SOLRAY_RECORD_REF_CREATION_SITES=1 it remembers where each object was made
(`call_sites`), for the state API (`object_report`, OBJECT_REPORT).

Threads: `put` runs on user threads and writes only what is shared (the
reference counter, the memory store); everything else here is the loop's:
the tables, the handlers, `on_free`.
"""

from __future__ import annotations

import os
from collections import Counter

from solray import exceptions
from solray._private import ids, serialization, transport
from solray._private.advice import user_frame
from solray._private.memory_store import Inline, InStore, decode_entry, encode_entry, error_entry
from solray._private.protocol import Msg
from solray._private.serialization import SerializedObject
from solray.object_ref import ObjectRef

ACTOR_ID_LEN = 16  # actor ids share the reference counter with 28-byte object ids


class Ownership:
    def __init__(self, core_worker):
        self.cw = core_worker
        self.contained: dict[bytes, list] = {}  # owned object -> refs inside its value
        self.record_call_sites = os.environ.get("SOLRAY_RECORD_REF_CREATION_SITES") == "1"
        self.call_sites: dict[bytes, str] = {}  # owned object -> where it was made

    # -- put -----------------------------------------------------------------

    def put(self, value, owner: bytes | None = None) -> ObjectRef:
        """User thread: store a value; this process owns it, or the actor
        `owner` (an actor id) does."""
        if isinstance(value, ObjectRef):
            raise TypeError(
                "Calling 'put' on an ObjectRef is not allowed. If you really want to do "
                "this, you can wrap the ObjectRef in a list and call 'put' on it."
            )
        cw = self.cw
        obj = serialization.serialize(value)
        object_id = ids.put_object_id(cw.job_bytes)
        if owner is not None:
            address = self._actor_address(owner)
            if address != cw.address:  # an actor naming itself owns it anyway
                return self._put_for(address, object_id, obj)
        cw.refs.add_owned(object_id)
        ref = ObjectRef(object_id, cw.address)
        site = call_site() if self.record_call_sites else None
        if obj.contained_refs or site:
            # Posted before `ref` can die, so recorded before it is freed.
            cw.post(self._note_put, object_id, obj.contained_refs, site)
        cw.memory_store.put(object_id, cw.store.store_value(object_id, obj))
        return ref

    def _note_put(self, object_id: bytes, contained: list, site: str | None) -> None:
        """Loop thread: the value of a put keeps the refs inside it alive."""
        if contained:
            self.contained[object_id] = contained
        if site:
            self.call_sites[object_id] = site

    def _put_for(self, owner: str, object_id: bytes, obj: SerializedObject) -> ObjectRef:
        """User thread: `put(_owner=actor)`. The value goes to this node's
        store whatever its size, recorded as the actor's, so it outlives this
        process and goes when the actor does (an object fate-shares with its
        owner). The actor at `owner` takes it over (ASSIGN_OWNER): it frees it
        once nobody references it, and this process is a borrower."""
        cw = self.cw
        entry = cw.store.store_value(object_id, obj, owner=owner, always_store=True)
        body = {
            "id": object_id,
            "entry": encode_entry(entry)[0],
            "contained": [[r._id, r._owner] for r in obj.contained_refs],
            "borrower": cw.address,
        }

        async def assign():
            try:
                await (await cw.peer(owner)).request(Msg.ASSIGN_OWNER, body)
                return True
            except (OSError, TimeoutError, transport.ConnectionLost):
                return False

        if not cw.call(assign()):
            cw.post(cw.store.free, object_id, entry.node)  # nobody else ever will
            raise exceptions.OwnerDiedError(object_id.hex(), owner)
        # Registered by ASSIGN_OWNER itself; posted before the ref below
        # exists, so its own borrow registration finds it done.
        cw.post(cw.borrowing.borrowed.__setitem__, object_id, owner)
        cw.memory_store.put(object_id, entry)
        return ObjectRef(object_id, owner)

    def _actor_address(self, actor_id: bytes) -> str:
        """User thread: where an actor runs (once it is alive)."""
        reply = self.cw.request("control", Msg.GET_ACTOR, {"actor_id": actor_id})
        if reply["state"] != "ALIVE":
            raise exceptions.ActorDiedError(
                actor_id=actor_id.hex(),
                error_msg=f"The actor {actor_id.hex()} cannot own the object passed to put("
                f"_owner=...): it is dead because {reply.get('cause') or 'it died'}",
            )
        return reply["address"]

    def serve_assign_owner(self, conn, rid, body, buffers) -> None:
        """Loop thread: another process put an object and made us its owner.
        It borrows it from now on; refs inside the value are held while the
        object lives (answered once their owners know we hold them, so the
        putter may let go of its own)."""
        cw = self.cw
        object_id = body["id"]
        cw.refs.add_owned(object_id)
        cw.memory_store.put(object_id, decode_entry(body["entry"], []))
        self._add_borrowers(conn, [object_id], body["borrower"])
        if not body["contained"]:
            conn.reply(rid, True)
            return
        self.contained[object_id] = [ObjectRef(i, owner) for i, owner in body["contained"]]
        cw.borrowing.register_borrows_async().add_done_callback(lambda _: conn.reply(rid, True))

    # -- borrowers -----------------------------------------------------------

    def serve_get_object(self, conn, rid, body, bufs) -> None:
        """A borrower asks for one of our objects (to be rebuilt first if it
        found the copy at node `lost` gone); answered once it has a value."""
        cw = self.cw
        object_id = body["id"]
        if "lost" in body and cw.refs.owns(object_id):
            cw.lineage.recover(object_id, body["lost"])

        def answer():
            head, buffers = encode_entry(cw.memory_store.get(object_id))
            conn.reply(rid, head, buffers)

        if cw.memory_store.contains(object_id):
            answer()
        elif cw.refs.owns(object_id):
            if cw.memory_store.wait([object_id], 1, lambda: cw.post(answer)) is None:
                answer()
        else:
            conn.reply(rid, None)

    def serve_add_borrowers(self, conn, rid, body, buffers) -> None:
        conn.reply(rid, self._add_borrowers(conn, body["ids"], body["borrower"]))

    def _add_borrowers(self, conn, object_ids: list[bytes], borrower: str) -> list[bytes]:
        """`borrower` (reached through `conn`) holds these objects of ours,
        until it says otherwise or disconnects; returns those we do not own."""
        unknown = self.cw.refs.add_borrowers(object_ids, borrower)
        conn.peer["borrower"] = borrower
        conn.peer.setdefault("borrowed", set()).update(object_ids)
        return unknown

    def serve_remove_borrowers(self, conn, rid, body, buffers) -> None:
        conn.peer.get("borrowed", set()).difference_update(body["ids"])
        self.cw.refs.remove_borrowers(body["ids"], body["borrower"])

    def peer_gone(self, conn) -> None:
        """Loop thread: a peer disconnected: it borrows nothing any more."""
        borrowed = conn.peer.get("borrowed")
        if borrowed:
            self.cw.refs.remove_borrowers(list(borrowed), conn.peer["borrower"])

    # -- freeing -------------------------------------------------------------

    def on_free(self, object_id: bytes, owned: bool) -> None:
        """Loop thread (the reference counter's callback): nothing here
        references the object any more."""
        cw = self.cw
        entry = cw.memory_store.delete(object_id)
        if not owned:
            # A user thread may have made a new instance (deserializing it)
            # since the count reached zero: then we still borrow it.
            if not cw.shutting_down and not cw.refs.is_live(object_id):
                cw.borrowing.unregister(object_id)
            return
        self.contained.pop(object_id, None)  # lets go of the refs inside it
        self.call_sites.pop(object_id, None)
        if cw.shutting_down:
            return
        if len(object_id) == ACTOR_ID_LEN:
            # The last handle of an actor we created: release it.
            cw.actor_submitter.release(object_id)
        cw.lineage.forget(object_id)
        if isinstance(entry, InStore):
            cw.store.free(object_id, entry.node)

    def free_now(self, object_ids: list[bytes], local_only: bool) -> list[bytes]:
        """Loop thread: `internal_api.free`: free the objects this process
        owns now, whatever references them (their entries become
        ObjectFreedError); returns the ids it does not own. A result not
        produced yet is freed when it arrives."""
        cw = self.cw
        not_owned = []
        for object_id in object_ids:
            if not cw.refs.owns(object_id):
                not_owned.append(object_id)
                continue
            entry = cw.memory_store.get(object_id)
            if entry is None:

                def produced(object_id=object_id):
                    cw.post(self.free_now, [object_id], local_only)

                if cw.memory_store.wait([object_id], 1, produced) is None:
                    produced()
                continue
            if isinstance(entry, InStore) and local_only and entry.node != cw.node_address:
                continue
            cw.memory_store.put(
                object_id, error_entry(exceptions.ObjectFreedError(object_id.hex(), cw.address))
            )
            cw.lineage.forget(object_id)
            self.contained.pop(object_id, None)
            if isinstance(entry, InStore):
                cw.store.free(object_id, entry.node)
        return not_owned

    # -- the state API -------------------------------------------------------

    def serve_object_report(self, conn, rid, body, buffers) -> None:
        conn.reply(rid, self.object_report())

    def object_report(self) -> list[dict]:
        """Loop thread: one row per object this process owns or references."""
        cw = self.cw
        # Instances held by pending tasks and inside objects count as local
        # refs too; LOCAL_REFERENCE means the program holds one of its own.
        in_tasks = Counter(
            r._id
            for t in cw.task_manager.tasks.values()
            for r in (*t.deps, *t.contained, *([t.args_ref] if t.args_ref else ()))
        )
        in_objects = Counter(r._id for refs in self.contained.values() for r in refs)
        rows = []
        for object_id, info in cw.refs.snapshot().items():
            if len(object_id) == ACTOR_ID_LEN:
                continue  # an actor handle, not an object
            entry = cw.memory_store.get(object_id)
            kinds = []
            if info["local"] > in_tasks[object_id] + in_objects[object_id]:
                kinds.append("LOCAL_REFERENCE")
            if object_id in in_tasks:
                kinds.append("USED_BY_PENDING_TASK")
            if object_id in in_objects:
                kinds.append("CAPTURED_IN_OBJECT")
            if info["pinned"]:
                kinds.append("PINNED_IN_MEMORY")
            if info["borrowers"]:
                kinds.append("BORROWED")
            if isinstance(entry, Inline):
                size, location = entry.obj.inline_size(), "memory"
            elif isinstance(entry, InStore):
                size, location = entry.size, "shared_memory"
            else:
                size, location = None, None
            owner = cw.address if info["owned"] else cw.borrowing.borrowed.get(object_id)
            rows.append(
                {
                    "object_id": object_id.hex(),
                    "object_size": size,
                    "location": location,
                    "reference_type": kinds[0] if kinds else "LOCAL_REFERENCE",
                    "reference_types": kinds,
                    "is_owner": info["owned"],
                    "owner": owner,
                    "borrowers": info["borrowers"],
                    "task_status": "PENDING" if info["owned"] and entry is None else "FINISHED",
                    "call_site": self.call_sites.get(object_id, ""),
                    "pid": os.getpid(),
                    "ip": cw.ip,
                    "type": "DRIVER" if cw.is_driver else "WORKER",
                    "node_id": cw.node_info.get("node_id"),
                }
            )
        return rows


def call_site() -> str:
    """Where the user made the object (advice.user_frame: the innermost frame
    outside solray), as "file:line in function"."""
    frame = user_frame()
    if frame is None:
        return ""
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
