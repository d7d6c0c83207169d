"""What a driver or worker tells its node when a user asks why something
waits (`solray why`) or what its threads are doing (`solray stack`).

Both answers are made on the core worker's I/O loop thread, so a process
whose user threads are busy (sleeping, in C code, in a long loop, blocked
in get) still answers: the loop never runs user code.

`report` is the submission side's truth, which only the owner has: its
unfinished tasks and actor creations (waiting for which arguments, queued
for a lease, or running where), and the user threads blocked in get() or
wait() (on which objects, owned by whom, since when). `stacks` formats
`sys._current_frames()` with each thread's name and the task it runs (for
an async actor's event loop thread, the call that started there last).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

from solray._private import ids


def _unresolved(cw, refs) -> list[list[str]]:
    """[object id hex, owner address] of the refs with no value here yet."""
    return [
        [ref._id.hex(), ref._owner or cw.address]
        for ref in refs
        if not cw.memory_store.contains(ref._id)
    ]


def _pushed_to(cw, task) -> tuple[str | None, bool]:
    """The node of the leased worker a task was pushed to, and whether it
    waits there behind the task that worker runs (pipelined)."""
    for queue in cw.submitter.queues.values():
        for leased in queue.workers:
            if task in leased.pushed:
                return leased.node_id, leased.pushed[0] is not task
    return None, False


def _task_row(cw, task) -> dict:
    deps = list(task.deps) + ([task.args_ref] if task.args_ref is not None else [])
    node_id = None
    if not task.resolved:
        state = "args"
    elif task.running_on is not None:
        node_id, behind = _pushed_to(cw, task)
        state = "behind" if behind else "running"
    else:
        state = "queued"
    return {
        "task_id": task.task_id.hex(),
        "name": task.task_name or task.name,
        "actor_id": task.actor_id.hex() if task.actor_id else None,
        "state": state,
        "resources": task.resources,
        "label_selector": task.label_selector,
        "runtime_env": bool(task.runtime_env),
        "node_id": node_id,
        "unresolved": _unresolved(cw, deps) if state == "args" else [],
    }


def report(cw) -> dict:
    """Loop thread: this process's unfinished tasks, actor creations still
    resolving their constructor arguments, and threads blocked reading."""
    now = time.time()
    names = {t.ident: t.name for t in threading.enumerate()}
    gets = []
    for ident, (kind, refs, since, task) in cw.reader.blocked_now().items():
        gets.append(
            {
                "thread": names.get(ident, str(ident)),
                "task_id": task[0].hex() if task else None,
                "task": task[1] if task else None,
                "kind": kind,
                "for_s": round(now - since, 1),
                "objects": [[object_id.hex(), owner] for object_id, owner in refs],
            }
        )
    creating = [
        {
            "actor_id": actor_id.hex(),
            "name": task.function.name if task.function else "",
            "unresolved": _unresolved(
                cw, list(task.deps) + ([task.args_ref] if task.args_ref is not None else [])
            ),
        }
        for actor_id, task in cw.actor_submitter.resolving.items()
    ]
    return {
        "pid": os.getpid(),
        "address": cw.address,
        "worker_id": cw.worker_id,
        "is_driver": cw.is_driver,
        "node_id": cw.node_info.get("node_id"),
        "tasks": [_task_row(cw, task) for task in cw.task_manager.tasks.values()],
        "creating_actors": creating,
        "gets": gets,
    }


def stacks(cw) -> dict:
    """Loop thread: every thread's Python stack, innermost frame last, with
    its name and the task it runs (if any)."""
    frames = sys._current_frames()
    running = cw.thread_tasks()
    threads = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident)
        if frame is None:
            continue
        ctx = running.get(thread.ident)
        threads.append(
            {
                "name": thread.name,
                "ident": thread.ident,
                "daemon": thread.daemon,
                "task": _task_of(ctx),
                "frames": [
                    [f.filename, f.lineno, f.name, f.line or ""]
                    for f in traceback.extract_stack(frame)
                ],
            }
        )
    return {
        "pid": os.getpid(),
        "worker_id": cw.worker_id,
        "is_driver": cw.is_driver,
        "node_id": cw.node_info.get("node_id"),
        "actor_id": cw.actor_id.hex() if cw.actor_id else None,
        "threads": threads,
    }


def _task_of(ctx) -> dict | None:
    if ctx is None:
        return None
    return {"task_id": ctx.task_id.hex(), "name": ctx.task_name or ctx.name}


def producing_task(object_id_hex: str) -> str:
    """The id (hex) of the task whose return the object is."""
    return ids.task_id_of(bytes.fromhex(object_id_hex)).hex()
