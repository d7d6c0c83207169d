"""Task events: the state changes of every task, recorded where they happen.

Each task and actor call moves through Ray's TaskStatus states. The process
that owns it records the submission states (PENDING_ARGS_AVAIL,
PENDING_NODE_ASSIGNMENT, SUBMITTED_TO_WORKER, and FAILED when it fails
without an answer from a worker: cancelled before it ran, its worker died,
no node could take it); the process that runs it records the rest
(PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY while an actor call waits for
its turn, GETTING_AND_PINNING_ARGS / PENDING_ACTOR_TASK_ARGS_FETCH while it
reads arguments from a store, RUNNING, FINISHED or FAILED). Each retry is a
new attempt number. The control store merges both sides per (task, attempt)
(task_event_store.py).

Why buffered: a task costs well under a millisecond here, so recording must
not cost a message. A record is a tuple appended to a list; the I/O loop
ships what accumulated once per `task_events_report_interval_ms` (Ray's
setting, 1000 ms), or as soon as `task_events_send_batch_size` events wait,
as one fire-and-forget TASK_EVENTS message. A buffer holds at most
`task_events_max_num_status_events_buffer_on_worker` events; past that,
events are dropped and counted, and the count travels with the next batch.
Every setting is read from SOLRAY_<name> or, failing that, RAY_<name>;
`task_events_report_interval_ms=0` turns recording off in that process.

Entries: [task_id, attempt, [state, time_us, state, time_us, ...], info,
error]: the states a task reached since the last batch, in order (the
task's PendingTask or TaskContext keeps its entry until it is shipped, so a
task that starts and ends between two batches is one entry), shipped as
columns (`columns`).
`info` is on the first entry of each attempt the owner records (what the task
is: type, name, function, actor, parent, resources, placement group,
argument bytes), `error` (error_type, error_message) on a failure.

Ownership: the owner's events are recorded on the I/O loop only
(`_owned` is the loop's); executor events come from whatever thread runs
the call, so `_executed` and the drop count are under `_lock`.
"""

from __future__ import annotations

import os
import threading
import time

import msgpack

from solray import exceptions
from solray._private.protocol import Msg

# Ray's TaskStatus names; the index is the wire code, and the order is the
# order a task moves through them (FINISHED and FAILED end it).
STATES = (
    "PENDING_ARGS_AVAIL",
    "PENDING_NODE_ASSIGNMENT",
    "SUBMITTED_TO_WORKER",
    "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY",
    "PENDING_ACTOR_TASK_ARGS_FETCH",
    "GETTING_AND_PINNING_ARGS",
    "RUNNING",
    "FINISHED",
    "FAILED",
)
(
    PENDING_ARGS_AVAIL,
    PENDING_NODE_ASSIGNMENT,
    SUBMITTED_TO_WORKER,
    PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY,
    PENDING_ACTOR_TASK_ARGS_FETCH,
    GETTING_AND_PINNING_ARGS,
    RUNNING,
    FINISHED,
    FAILED,
) = range(len(STATES))
TERMINAL = (FINISHED, FAILED)

TYPES = ("NORMAL_TASK", "ACTOR_TASK", "ACTOR_CREATION_TASK", "DRIVER_TASK")
NORMAL_TASK, ACTOR_TASK, ACTOR_CREATION_TASK, DRIVER_TASK = range(len(TYPES))

# An error message is kept up to this long (a traceback can be huge).
MAX_ERROR_MESSAGE = 10_000


def setting(name: str, default: int) -> int:
    """An integer setting from SOLRAY_<name>, else RAY_<name>, else `default`."""
    for prefix in ("SOLRAY_", "RAY_"):
        value = os.environ.get(prefix + name)
        if value is not None and value.strip():
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{prefix}{name} must be an integer, got {value!r}") from None
    return default


def now_us() -> int:
    return time.time_ns() // 1000


# Ray's ErrorType names for the errors a task can end with.
_ERROR_TYPES = (
    (exceptions.TaskCancelledError, "TASK_CANCELLED"),
    (exceptions.OutOfMemoryError, "OUT_OF_MEMORY"),
    (exceptions.WorkerCrashedError, "WORKER_DIED"),
    (exceptions.ActorUnschedulableError, "ACTOR_UNSCHEDULABLE_ERROR"),
    (exceptions.ActorDiedError, "ACTOR_DIED"),
    (exceptions.TaskUnschedulableError, "TASK_UNSCHEDULABLE_ERROR"),
    (exceptions.RuntimeEnvSetupError, "RUNTIME_ENV_SETUP_FAILED"),
    (exceptions.LocalRayletDiedError, "LOCAL_RAYLET_DIED"),
    (exceptions.OwnerDiedError, "OWNER_DIED"),
    (exceptions.ObjectReconstructionFailedError, "OBJECT_UNRECONSTRUCTABLE"),
    (exceptions.ObjectLostError, "OBJECT_LOST"),
    (exceptions.RayTaskError, "TASK_EXECUTION_EXCEPTION"),
)


def error_of(error: BaseException) -> tuple[str, str]:
    """(Ray's error_type, the message) for what a task failed with."""
    kind = next((name for cls, name in _ERROR_TYPES if isinstance(error, cls)), None)
    if kind is None:
        kind = "TASK_EXECUTION_EXCEPTION"
    return kind, str(error)[:MAX_ERROR_MESSAGE]


def columns(entries: list) -> dict:
    """Entries as the wire carries them: a few flat columns, however many
    entries. Why: the control store decodes a batch into a handful of
    objects instead of several per task (decoding lists by the thousand
    costs more in garbage collection than in decoding), and keeps `info`
    as the bytes it came in until a query reads it.

        t  the task ids, 24 bytes each, back to back
        a  their attempt numbers
        e  per entry: the number of values n, then n values (state, time_us, ...)
        i  {index: msgpack of info}, x  {index: [error_type, error_message]}
    """
    events: list[int] = []
    infos, errors = {}, {}
    for index, (_, _, pairs, info, error) in enumerate(entries):
        events.append(len(pairs))
        events += pairs
        if info is not None:
            infos[index] = msgpack.packb(info, use_bin_type=True)
        if error is not None:
            errors[index] = error
    return {
        "t": b"".join(entry[0] for entry in entries),
        "a": [entry[1] for entry in entries],
        "e": events,
        "i": infos,
        "x": errors,
    }


class TaskEvents:
    """This process's buffer of task events, and their shipping."""

    def __init__(self, core_worker):
        self.cw = core_worker
        self.interval_s = setting("task_events_report_interval_ms", 1000) / 1000
        self.enabled = self.interval_s > 0
        self.batch_size = max(1, setting("task_events_send_batch_size", 10_000))
        self.max_buffered = max(
            1, setting("task_events_max_num_status_events_buffer_on_worker", 100_000)
        )
        # Entries not shipped yet, and the generation each list belongs to:
        # an entry of an older generation has been shipped, never touch it.
        self._owned: list = []  # the loop's
        self._owned_gen = 0
        self._executed: list = []  # under _lock
        self._executed_gen = 0
        self._dropped = 0  # under _lock
        self._lock = threading.Lock()
        self._flush_posted = False

    # -- recording ---------------------------------------------------------

    def owner(self, task, state: int, error: BaseException | None = None) -> None:
        """Loop thread: one of our tasks (a PendingTask) reached `state`."""
        info = task.event_info
        if info is None:  # enable_task_events=False, or recording is off
            return
        entry = task.ev_entry
        if entry is not None and task.ev_gen == self._owned_gen and entry[1] == task.attempt:
            entry[2] += (state, now_us())  # not shipped yet: one entry per task
            if error is not None:
                entry[4] = error_of(error)
            return
        owned = self._owned
        if len(owned) >= self.max_buffered:
            with self._lock:
                self._dropped += 1
            return
        first = task.events_attempt != task.attempt  # the store learns what it is
        task.events_attempt = task.attempt
        entry = [
            task.task_id,
            task.attempt,
            [state, now_us()],
            info if first else None,
            error_of(error) if error is not None else None,
        ]
        task.ev_entry, task.ev_gen = entry, self._owned_gen
        owned.append(entry)
        if len(owned) >= self.batch_size:
            self.flush()

    def executed(
        self,
        holder,
        task_id: bytes,
        attempt: int,
        state: int,
        error: BaseException | None = None,
        info: tuple | None = None,
    ) -> None:
        """Any thread: a task this process runs (or, for DRIVER_TASK, is)
        reached `state`. `holder` (the call's TaskContext, or None) keeps the
        entry not shipped yet, so a call's states travel as one entry."""
        at = now_us()
        with self._lock:
            if holder is not None:
                entry = holder.ev_entry
                if entry is not None and holder.ev_gen == self._executed_gen:
                    entry[2] += (state, at)
                    if error is not None:
                        entry[4] = error_of(error)
                    return
            if len(self._executed) >= self.max_buffered:
                self._dropped += 1
                return
            entry = [task_id, attempt, [state, at], info, error_of(error) if error else None]
            if holder is not None:
                holder.ev_entry, holder.ev_gen = entry, self._executed_gen
            self._executed.append(entry)
            full = len(self._executed) >= self.batch_size and not self._flush_posted
            if full:
                self._flush_posted = True
        if full:
            self.cw.post(self.flush)

    # -- shipping (loop thread) ----------------------------------------------

    def start(self) -> None:
        """Loop thread, once connected: ship a batch every interval."""
        if self.enabled:
            self.cw.loop.call_later(self.interval_s, self._tick)

    def _tick(self) -> None:
        if self.cw.shutting_down:
            return
        self.flush()
        self.cw.loop.call_later(self.interval_s, self._tick)

    def flush(self) -> None:
        """Loop thread: send what accumulated to the control store."""
        cw = self.cw
        with self._lock:
            executed, self._executed = self._executed, []
            self._executed_gen += 1
            dropped, self._dropped = self._dropped, 0
            self._flush_posted = False
        owned, self._owned = self._owned, []
        self._owned_gen += 1
        if not (owned or executed or dropped) or cw.control is None or cw.control.closed:
            return
        body = {"own": columns(owned), "exe": columns(executed), "drop": dropped}
        if executed:  # where they ran
            body["node"] = cw.node_info.get("node_id")
            body["wid"] = cw.worker_id
            body["pid"] = os.getpid()
        cw.control.send(Msg.TASK_EVENTS, body)
