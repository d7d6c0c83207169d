"""Message types and framing.

Every connection carries length-prefixed frames after the authentication
handshake (see transport.py):

    prefix   12 bytes: header length (u32, little endian), payload length (u64)
    header   msgpack array [msg_type, request_id, body, buffer_lengths]
    payload  the bulk buffers, back to back

Bulk data (pickled values, numpy buffers) travels as separate buffers so that
it is never re-encoded into msgpack. `request_id` is 0 for one-way messages;
a reply carries the id of the request it answers.

The limits below are sanity bounds: a frame that exceeds them, or whose header
does not decode to the shape above, is malformed and closes the connection.
"""

from __future__ import annotations

import struct
from enum import IntEnum, unique

import msgpack

# Raise it with any change to messages or framing that an older peer would
# misread: the handshake (transport.py) refuses a peer of another version.
PROTOCOL_VERSION = 4

PREFIX = struct.Struct("<IQ")
MAX_HEADER = 64 * 1024 * 1024
MAX_PAYLOAD = 64 * 1024 * 1024 * 1024

# Worker output lines carry the running task's name as LOG_MARK name LOG_SEP;
# the node strips it and the driver prints it as the "(name pid=N)" prefix.
LOG_MARK = "\x1e"
LOG_SEP = "\x1f"
# An output line that starts with BAR_MARK (after the task's name) is a
# progress bar's state (experimental/tqdm_ray.py), drawn by the driver.
BAR_MARK = "\x1d"


# unique: message numbers are allocated by hand across branches, and an
# IntEnum would quietly make a second name with a taken number an alias of
# the first, so two messages would be dispatched as one.
@unique
class Msg(IntEnum):
    # Replies.
    REPLY = 1
    ERROR_REPLY = 2

    # Control store.
    REGISTER_NODE = 10
    REGISTER_DRIVER = 11
    NODE_RESOURCES = 12
    GET_NODES = 13
    KV_PUT = 14
    KV_GET = 15
    KV_DEL = 16
    SUBSCRIBE = 17
    PUBLISH = 18
    PUBLISHED = 19
    KV_KEYS = 20

    # Control store: actors.
    REGISTER_ACTOR = 21
    CREATE_ACTOR = 22
    GET_ACTOR = 23
    GET_NAMED_ACTOR = 24
    KILL_ACTOR = 25
    RELEASE_ACTOR = 26
    ACTOR_EXITING = 27
    LIST_ACTORS = 28
    SHUTDOWN_OWNED_ACTORS = 29  # a driver's shutdown(): end its actors gracefully first

    # Control store: placement groups.
    CREATE_PG = 50
    REMOVE_PG = 51
    WAIT_PG = 52
    PG_TABLE = 53

    # Node: leases and workers.
    REQUEST_LEASE = 30
    RETURN_LEASE = 31
    REGISTER_WORKER = 32
    WORKER_BLOCKED = 33
    WORKER_UNBLOCKED = 34
    NODE_INFO = 35
    LEASE_INFEASIBLE = 36
    RESIZE_LEASE = 37
    WORKER_OOM_KILLED = 38
    RESERVE_BUNDLES = 39
    RELEASE_BUNDLES = 54
    END_ACTOR_LEASE = 55
    COLLECT_GARBAGE = 56  # node -> its drivers and workers: gc.collect(), free, answer

    # Node: object store.
    STORE_CREATE = 40
    STORE_SEAL = 41
    STORE_PIN = 42
    STORE_UNPIN = 43
    STORE_FREE = 44
    STORE_STATS = 45
    LIST_OBJECTS = 46
    OBJECT_REPORT = 47
    STORE_PULL = 48
    STORE_READ_MANY = 130  # pin (pulling first where needed) many objects: one answer
    SEND_OBJECT = 131  # node -> node: send a stripe; the bytes follow raw (object_manager.py)
    STORE_HOLDERS = 230  # -> the node an object was made on: the nodes holding whole copies
    STORE_HOLDING = 231  # node -> that node: "I hold a whole copy now" (it may serve pulls)

    # Core worker to core worker (owners, borrowers and executors).
    PUSH_TASK = 60
    GET_OBJECT = 61
    PUSH_ACTOR_CREATE = 63
    PUSH_ACTOR_TASK = 64
    GENERATOR_ITEM = 65
    GENERATOR_ACK = 66
    CANCEL_TASK = 67
    ADD_BORROWERS = 68
    REMOVE_BORROWERS = 69
    HANDOFF_DONE = 70
    ACTOR_SHUTDOWN = 76  # control store -> an actor's worker: end gracefully
    CANCEL_OWNED = 71  # a borrower cancels the task that makes a ref (to its owner)
    STEAL_TASKS = 72  # owner -> a leased worker: hand back the tasks queued behind the running one
    ASSIGN_OWNER = 78  # put(_owner=actor): the actor takes over an object

    # A ray:// client and its proxy driver (client/).
    CLIENT_CONNECT = 80  # client -> proxy, first: init options; reply: the driver's context
    CLIENT_CALL = 81  # client -> proxy: run a public API function; reply: its result
    CLIENT_RELEASE = 82  # client -> proxy: refs and streams the client no longer holds
    PREPARE_RUNTIME_ENV = 91  # driver -> node: set up the job's env now (eager_install)
    CLIENT_OUTPUT = 83  # proxy -> client: worker output lines, for log_to_driver

    # Observability.
    METRICS_REPORT = 90  # core worker -> its node: util.metrics updates (metrics_reporter.py)
    TASK_EVENTS = 100  # core worker -> control store: a batch of task events (task_events.py)
    LIST_TASKS = 101  # -> control store: task attempts, filtered there (task_event_store.py)
    ADVICE_REPORT = 190  # core worker -> control store: anti-pattern counts (advice.py)
    GET_ADVICE = 191  # -> control store: a job's anti-pattern counts (advice_store.py)

    # The state API (state_client.py) asking a node.
    LIST_WORKERS = 110  # -> node: its workers and drivers, alive and recently exited
    LIST_LOGS = 111  # -> node: the files in its log directory (log_files.py)
    GET_LOG = 112  # -> node: lines of one log file (a tail, or from an offset on)
    NODE_STATS = 200  # -> node: its host's CPU and memory use, and its object store's stats

    # `solray why` and `solray stack` (why.py): the state client asks each
    # node, which asks its drivers and workers on their connections to it.
    WHY_NODE = 180  # -> node: its queued lease requests, env builds, and its processes' reports
    WHY_PROCESS = 181  # node -> core worker: its unfinished tasks and blocked get()s
    STACKS_NODE = 182  # -> node: the Python stacks of its processes (or of one pid)
    STACKS_PROCESS = 183  # node -> core worker: every thread's stack, from the I/O loop

    # Control store restarts (control_client.py, control_store.py).
    CONTROL_HELLO = 140  # core worker -> control store, each (re)connect: who it is
    ADOPT_ACTOR_LEASE = 141  # restarted control store -> node: the actor's lease is mine now

    # util.collective: one rank's array for another (collective_inbox.py).
    COLLECTIVE_DATA = 150

    # A foreign (Java, C++) driver and its proxy (xlang/foreign_driver.py;
    # docs/protocol.md says each body). Values are xlang values (xlang/values.py).
    XLANG_CONNECT = 210  # client -> proxy, first: language, namespace, code search path
    XLANG_PUT = 211
    XLANG_GET = 212
    XLANG_WAIT = 213
    XLANG_SUBMIT_TASK = 214  # a Python function by module and name, or a Java static method
    XLANG_CREATE_ACTOR = 215
    XLANG_CALL_ACTOR = 216
    XLANG_RELEASE = 217  # one-way: ids the client holds no more
    XLANG_GET_ACTOR = 218
    XLANG_KILL_ACTOR = 219


class ProtocolError(Exception):
    """A peer sent bytes that do not form a valid frame."""


def encode(msg_type: int, request_id: int, body, buffers=()) -> list:
    """Return the pieces of one frame, ready for a vectored write."""
    lengths = [memoryview(b).nbytes for b in buffers]
    header = msgpack.packb([msg_type, request_id, body, lengths], use_bin_type=True)
    prefix = PREFIX.pack(len(header), sum(lengths))
    return [prefix, header, *buffers]


def decode_header(data) -> tuple[int, int, object, list[int]]:
    try:
        header = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types
        raise ProtocolError(f"undecodable header: {e}") from None
    # Checked without a generator or indexing: every message goes through here.
    if isinstance(header, list) and len(header) == 4:
        msg_type, rid, body, lengths = header
        if isinstance(msg_type, int) and isinstance(rid, int) and isinstance(lengths, list):
            for n in lengths:
                if not isinstance(n, int) or n < 0:
                    break
            else:
                return msg_type, rid, body, lengths
    raise ProtocolError("header is not [type, request_id, body, buffer_lengths]")
