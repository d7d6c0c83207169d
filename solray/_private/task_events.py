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

An event is a row of flat columns (`Columns`): task id, attempt, state,
time in microseconds; `info` on the first event of each attempt the owner
records (what the task is: type, name, function, actor, parent, resources,
placement group, argument bytes), (error_type, error_message) on a failure.

Ownership: the owner's events are recorded on the I/O loop only
(`_owned` is the loop's); executor events come from whatever thread runs
the call, so `_executed` and the drop count are under `_lock`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from array import array

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

_time_ns = time.time_ns

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


class Columns:
    """Events not shipped yet, one row per event in flat columns: recording
    creates no object for the garbage collector to walk (a list per event
    cost more in collections than the recording itself), and the control
    store decodes a batch into a handful of byte strings.

    On the wire: t = task ids, 24 bytes each, back to back; a = attempts
    (int64), s = states (int8), us = times (int64, microseconds), all
    little-endian; i = {row: msgpack of info}; x = {row: [error_type,
    error_message]}."""

    __slots__ = ("task_ids", "attempts", "states", "times", "infos", "errors")

    def __init__(self):
        self.task_ids = bytearray()
        self.attempts = array("q")
        self.states = array("b")
        self.times = array("q")
        self.infos: dict[int, tuple] = {}
        self.errors: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.states)

    def add(self, row: int, task_id: bytes, attempt: int, state: int, info, error) -> None:
        """Append event `row` (the number of events so far: the callers
        have it already, and __len__ would be a frame more per event)."""
        self.task_ids += task_id
        self.attempts.append(attempt)
        self.states.append(state)
        self.times.append(_time_ns() // 1000)
        if info is not None:
            self.infos[row] = info
        if error is not None:
            self.errors[row] = error_of(error)

    def wire(self) -> dict:
        return {
            "t": bytes(self.task_ids),
            "a": _little(self.attempts),
            "s": self.states.tobytes(),
            "us": _little(self.times),
            "i": {row: msgpack.packb(info, use_bin_type=True) for row, info in self.infos.items()},
            "x": self.errors,
        }


def _little(values: array) -> bytes:
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def from_little(typecode: str, data: bytes) -> array:
    values = array(typecode)
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


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
        self._owned = Columns()  # the loop's
        self._executed = Columns()  # under _lock
        self._dropped = 0  # under _lock
        self._lock = threading.Lock()
        self._flush_posted = False

    # -- recording ---------------------------------------------------------

    def owner(self, task, state: int, error: BaseException | None = None) -> None:
        """Loop thread: one of our tasks (a PendingTask) reached `state`."""
        info = task.event_info
        if info is None:  # enable_task_events=False, or recording is off
            return
        owned = self._owned
        row = len(owned.states)
        if row >= self.max_buffered:
            with self._lock:
                self._dropped += 1
            return
        attempt = task.attempt
        first = task.events_attempt != attempt  # the store learns what it is
        task.events_attempt = attempt
        owned.add(row, task.task_id, attempt, state, info if first else None, error)
        if row + 1 >= self.batch_size:
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
        with self._lock:
            executed = self._executed
            row = len(executed.states)
            if row >= self.max_buffered:
                self._dropped += 1
                return
            executed.add(row, task_id, attempt, state, info, error)
            full = row + 1 >= self.batch_size and not self._flush_posted
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
            executed, self._executed = self._executed, Columns()
            dropped, self._dropped = self._dropped, 0
            self._flush_posted = False
        owned, self._owned = self._owned, Columns()
        if not (owned or executed or dropped) or cw.control is None or cw.control.closed:
            return
        body = {"own": owned.wire(), "exe": executed.wire(), "drop": dropped}
        if executed:  # where they ran
            body["node"] = cw.node_info.get("node_id")
            body["wid"] = cw.worker_id
            body["pid"] = os.getpid()
        cw.control.send(Msg.TASK_EVENTS, body)
