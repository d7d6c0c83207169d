"""What a task is, as its owner keeps it and as it travels to a worker.

Arguments are pickled once, together, as `(args, kwargs)` in which every
top-level ObjectRef is replaced by a `Dep(i)` placeholder. The owner resolves
those refs before pushing the task, and sends their values (inline bytes, or
where they are in the node's store) alongside; the worker substitutes them
back. Refs nested deeper stay refs, as in Ray.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from solray._private import oversized
from solray._private.memory_store import Inline, decode_entry, encode_entry
from solray._private.serialization import RefCollector, SerializedObject, dumps


class Dep:
    """Stands for the i-th top-level ObjectRef argument."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self):
        return (Dep, (self.index,))


def extract_deps(args: tuple, kwargs: dict, ref_type) -> tuple[list, dict, list]:
    deps: list = []

    def swap(value):
        if type(value) is ref_type:
            deps.append(value)
            return Dep(len(deps) - 1)
        return value

    return [swap(a) for a in args], {k: swap(v) for k, v in kwargs.items()}, deps


def substitute_deps(args: list, kwargs: dict, values: list) -> tuple[list, dict]:
    def swap(value):
        return values[value.index] if type(value) is Dep else value

    return [swap(a) for a in args], {k: swap(v) for k, v in kwargs.items()}


@dataclass
class FunctionDescriptor:
    """A remote function as shipped to workers: pickled once, cached by id."""

    function_id: bytes
    name: str
    pickled: bytes
    captured: list = field(default_factory=list)  # refs its closure holds

    @classmethod
    def of(cls, target, name: str) -> FunctionDescriptor:
        """Pickle a function or actor class once. The refs its closure
        captured are held as long as the descriptor (seed 002: closure capture
        pins them)."""
        with RefCollector() as collector:
            pickled = dumps(target)
        oversized.check(pickled, target)
        return cls(hashlib.sha1(pickled).digest(), name, pickled, collector.refs)


@dataclass
class PendingTask:
    """A task or actor call, as its owner keeps it until it finishes."""

    task_id: bytes
    function: FunctionDescriptor | None  # None for actor method calls
    num_returns: int
    resources: dict
    args_blob: SerializedObject | None  # inline (args, kwargs)
    args_ref: object | None  # or an ObjectRef to them in the store, if large
    deps: list  # top-level ObjectRef arguments
    return_ids: list
    max_retries: int
    retry_exceptions: object
    job: int
    attempt: int = 0
    dep_entries: list = field(default_factory=list)
    method: str | None = None  # actor calls: the method's name
    actor_id: bytes | None = None  # actor calls: whose method
    admitted: bool = False  # actor calls: counted against max_pending_calls until done
    seq: int = 0  # actor calls: submission order per caller
    concurrency_group: str | None = None  # actor calls
    resolved: bool = False
    dep_error: object = None
    stream: bool = False  # a streaming generator task
    backpressure: int | None = None
    cancelled: bool = False
    running_on: object = None  # the connection it was pushed on, while it runs
    contained: list = field(default_factory=list)  # refs nested in its arguments
    strategy: object = None  # scheduling_strategy
    label_selector: dict | None = None  # the labels its node must match
    fallback_selectors: tuple = ()  # fallback_strategy's selectors, in order
    task_name: str | None = None  # the `name` option
    max_calls: int = 0  # tasks: its worker exits after this many calls of the function
    runtime_env: dict | None = None  # tasks: the resolved env its worker must have
    # What task events say it is (task_events.py), None if it records none.
    event_info: tuple | None = None
    events_attempt: int = -1  # the attempt whose first event was recorded
    site: tuple | None = None  # (file, line) of its `.remote()`, for advice.py

    @property
    def name(self) -> str:
        return self.method if self.function is None else self.function.name


class StreamState:
    """The owner's view of a streaming task: items received so far, and the
    connection to send consumption acks on (for backpressure)."""

    __slots__ = ("received", "ended", "conn", "backpressure")

    def __init__(self, backpressure: int | None = None):
        self.received = 0
        self.ended = False
        self.conn = None
        self.backpressure = backpressure


# Stored under the id after a stream's last item.
END_OF_STREAM = Inline(SerializedObject(b"", [], 0))


def encode_arguments(task: PendingTask, memory_store, body: dict, buffers: list) -> None:
    """Add the task's arguments and resolved dependencies to a push message."""
    if task.args_blob is not None:
        wire = task.args_blob.wire_buffers()
        body["a"] = [task.args_blob.flags, len(wire)]
        buffers.extend(wire)
    else:
        head, _ = encode_entry(memory_store.get(task.args_ref._id))
        body["ao"] = [task.args_ref._id, head]
    deps = []
    for ref, entry in zip(task.deps, task.dep_entries, strict=True):
        head, bufs = encode_entry(entry)
        deps.append([ref._id, head, ref._owner])  # the owner rebuilds it, if lost
        buffers.extend(bufs)
    body["d"] = deps


def decode_returns(heads, buffers: list, pos: int = 0) -> tuple[list, int]:
    """Entries for `heads`, reading their buffers from `pos`; and the position
    after them."""
    entries = []
    for head in heads:
        n = head[2] if head[0] == "i" else 0
        entries.append(decode_entry(head, buffers[pos : pos + n]))
        pos += n
    return entries, pos
