"""Identifiers, laid out as Ray's so that `hex()` strings look familiar.

    JobID     4 bytes
    TaskID   24 bytes = JobID + 12-byte process prefix + 8-byte counter
    ObjectID 28 bytes = TaskID + 4-byte index (task returns count from 1;
                        `put` objects set the top bit)
    NodeID, WorkerID, ActorID: random bytes

Task ids are unique without coordination: every process draws a random prefix
once and counts from there, which is much cheaper than a random draw per id.
"""

from __future__ import annotations

import itertools
import os
import struct

JOB_ID_LEN = 4
TASK_ID_LEN = 24
OBJECT_ID_LEN = 28
UNIQUE_ID_LEN = 28
PUT_INDEX_FLAG = 0x80000000

_prefix = os.urandom(12)
_counter = itertools.count(1)
_INDEX = struct.Struct(">I")


def _reset_after_fork() -> None:
    global _prefix, _counter
    _prefix = os.urandom(12)
    _counter = itertools.count(1)


os.register_at_fork(after_in_child=_reset_after_fork)


def job_id_bytes(job: int) -> bytes:
    return job.to_bytes(JOB_ID_LEN, "little")


def new_task_id(job: bytes) -> bytes:
    return job + _prefix + next(_counter).to_bytes(8, "big")


def return_object_id(task_id: bytes, index: int) -> bytes:
    """The id of return value `index` (0-based) of a task."""
    return task_id + _INDEX.pack(index + 1)


def put_object_id(job: bytes) -> bytes:
    return new_task_id(job) + _INDEX.pack(PUT_INDEX_FLAG)


def is_put_id(object_id: bytes) -> bool:
    return bool(_INDEX.unpack_from(object_id, TASK_ID_LEN)[0] & PUT_INDEX_FLAG)


def task_id_of(object_id: bytes) -> bytes:
    return object_id[:TASK_ID_LEN]


def random_unique_id() -> bytes:
    return os.urandom(UNIQUE_ID_LEN)
