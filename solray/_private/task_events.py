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

Event tuples on the wire: (task_id, attempt, state, time_us), plus `info`
on the first event of each attempt the owner records (what the task is:
type, name, function, actor, parent, resources, placement group, argument
bytes), plus (error_type, error_message) on a FAILED event.

Ownership: the owner's events are recorded on the I/O loop only
(`_owned` is the loop's); executor events come from whatever thread runs
the call, so `_executed` and the drop count are under `_lock`.
"""

from __future__ import annotations

import os
import threading
import time

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
        self._owned: list = []  # the loop's
        self._executed: list = []  # under _lock
        self._dropped = 0  # under _lock
        self._lock = threading.Lock()
        self._flush_posted = False

    # -- recording ---------------------------------------------------------

    def owner(self, task, state: int, error: BaseException | None = None) -> None:
        """Loop thread: one of our tasks (a PendingTask) reached `state`."""
        info = task.event_info
        if info is None:  # enable_task_events=False, or recording is off
            return
        first = task.events_attempt != task.attempt  # the store learns what it is
        if first:
            task.events_attempt = task.attempt
        if error is not None:
            event = (task.task_id, task.attempt, state, now_us(), info if first else None,
                     error_of(error))  # fmt: skip
        elif first:
            event = (task.task_id, task.attempt, state, now_us(), info)
        else:
            event = (task.task_id, task.attempt, state, now_us())
        owned = self._owned
        if len(owned) >= self.max_buffered:
            with self._lock:
                self._dropped += 1
            return
        owned.append(event)
        if len(owned) >= self.batch_size:
            self.flush()

    def executed(
        self,
        task_id: bytes,
        attempt: int,
        state: int,
        error: BaseException | None = None,
        info: tuple | None = None,
    ) -> None:
        """Any thread: a task this process runs (or, for DRIVER_TASK, is)
        reached `state`."""
        if error is not None:
            event = (task_id, attempt, state, now_us(), info, error_of(error))
        elif info is not None:
            event = (task_id, attempt, state, now_us(), info)
        else:
            event = (task_id, attempt, state, now_us())
        with self._lock:
            if len(self._executed) >= self.max_buffered:
                self._dropped += 1
                return
            self._executed.append(event)
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
            dropped, self._dropped = self._dropped, 0
            self._flush_posted = False
        owned, self._owned = self._owned, []
        if not (owned or executed or dropped) or cw.control is None or cw.control.closed:
            return
        body = {"own": owned, "exe": executed, "drop": dropped}
        if executed:  # where they ran
            body["node"] = cw.node_info.get("node_id")
            body["wid"] = cw.worker_id
            body["pid"] = os.getpid()
        cw.control.send(Msg.TASK_EVENTS, body)
