"""Lineage reconstruction: an owner rebuilds its lost objects by running
again the tasks that made them.

A task output kept in a node's store has one copy; when that node dies, the
copy is gone. Its owner keeps the task that made it (`tasks`: output -> its
task, which holds its arguments alive) for as long as the output lives.

Whoever reads a lost object (a `get` here or in a borrower, a task or actor
call taking it as an argument, at the top level or nested) finds no copy
when it pins or pulls it, and tells the owner: the owner's own reads call
`recover` (object_reader.py), other processes send GET_OBJECT with `lost`
(ownership.py). `recover` rebuilds the object only while its entry is still
the lost copy, so any number of concurrent readers cause one re-run; the
others wait for the entry the re-run stores.

Recursion: before resubmitting a task, the owner rebuilds the same way the
task's arguments of its own that were lost with the same node (they come
first: the re-run waits for its arguments), so a chain of tasks lost with a
node comes back whole. An argument lost anywhere else, or owned by another
process, is rebuilt when the re-run reads it, by the rule above.

Each re-run counts against the task's `max_retries`. What cannot be rebuilt
gets Ray's error as its value (`unrebuildable`). Everything here runs on
the loop, which owns the table.
"""

from __future__ import annotations

from solray import exceptions
from solray._private import ids
from solray._private.memory_store import InStore, error_entry
from solray._private.task_spec import PendingTask


class Lineage:
    def __init__(self, core_worker):
        self.cw = core_worker
        self.tasks: dict[bytes, PendingTask] = {}  # stored output -> the task that made it

    def keep(self, object_id: bytes, task: PendingTask) -> None:
        """Loop thread: only a node's store has this output of `task`: if
        that node dies, run the task again."""
        self.tasks[object_id] = task

    def forget(self, object_id: bytes) -> None:
        """Loop thread: the object is freed; its task may go (and with it
        the task's hold on its arguments)."""
        self.tasks.pop(object_id, None)

    def recover(self, object_id: bytes, lost_at: str) -> None:
        """Loop thread: a reader found no copy of our object at node
        `lost_at`. Rebuild it, unless that is under way or done (its entry
        is no longer the lost copy)."""
        memory_store = self.cw.memory_store
        entry = memory_store.get(object_id)
        if type(entry) is InStore and entry.node == lost_at:
            memory_store.delete(object_id)
            self._reconstruct(object_id, lost_at)

    def _reconstruct(self, object_id: bytes, lost_at: str) -> None:
        """Loop thread: run the task that made a lost object again, within
        its retries, after its own lost arguments; or store why it cannot."""
        cw = self.cw
        task = self.tasks.get(object_id)
        if task is not None and task.task_id in cw.task_manager.tasks:
            return  # already being re-run for another of its returns
        error = unrebuildable(object_id, task, cw.address)
        if error is not None:
            cw.memory_store.put(object_id, error_entry(error))
            return
        task.attempt += 1
        task.resolved = task.cancelled = False
        task.running_on = task.dep_error = None
        for return_id in task.return_ids:  # those lost with it come back with it
            entry = cw.memory_store.get(return_id)
            if type(entry) is InStore and entry.node == lost_at:
                cw.memory_store.delete(return_id)
        for ref in task.deps:
            if cw.refs.owns(ref._id):
                self.recover(ref._id, lost_at)
        cw.task_manager.tasks[task.task_id] = task
        cw.submitter.submit(task)


def unrebuildable(object_id: bytes, task: PendingTask | None, owner: str):
    """Why a lost object cannot be made again from its lineage `task` (None
    if it can), as Ray says it."""
    hex_id = object_id.hex()
    if task is None:
        if ids.is_put_id(object_id):  # put() values have no lineage
            return exceptions.ObjectLostError(hex_id, owner)
        return exceptions.ObjectReconstructionFailedError(
            hex_id,
            "OBJECT_UNRECONSTRUCTABLE",
            "it was made by an actor call or a generator, which are not re-run to rebuild "
            "their results",
            owner,
        )
    if task.max_retries == 0:
        return exceptions.ObjectReconstructionFailedError(
            hex_id,
            "OBJECT_UNRECONSTRUCTABLE_RETRIES_DISABLED",
            f"its task {task.name} has max_retries=0",
            owner,
        )
    if task.max_retries != -1 and task.attempt >= task.max_retries:
        return exceptions.ObjectReconstructionFailedMaxAttemptsExceededError(hex_id, owner)
    return None
