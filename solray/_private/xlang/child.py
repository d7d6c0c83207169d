"""A Python worker's foreign child process: where Java tasks and actors (a
JVM, jvm.py) and C++ tasks (the C++ executor, cpp_executor.py) run.

The node leases Python workers only; a worker that gets a foreign task
starts the child the first time and keeps it for its own life (a JVM costs
about a second to start, a call on a warm one a fraction of a millisecond),
one per distinct setting of the job's (its code_search_path, for a JVM its
jvm_options, in the job's entry in the control store), so a worker that
serves two jobs never runs one's code with the other's.

The child protocol (docs/protocol.md, "JVM child protocol") is solray's
framing over the child's stdin and stdout, without a handshake: the pipes
are private to the two processes. Requests carry ids; the child answers
each (a JVM may answer static calls out of order, from its own threads), so
calls from several of this worker's threads share one child.

No orphans. The child exits when its stdin closes, which happens when this
process exits however it exits; PR_SET_PDEATHSIG (SIGKILL) is the backstop
for a child that does not read. The death signal fires when the *thread*
that started the child ends, so the child is started by its reader thread,
which lives as long as the child does. The child's stderr (where it points
the user's prints) is the worker's: user output lands in the worker's log,
as a Python task's does.

State: each Child's `_pending` (request id -> future) and `_next_id` are
guarded by its `_lock`, which also serialises writes to the pipe; the reader
thread resolves the futures. The module's table of children and of job
entries is guarded by `_children_lock`.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import threading
from collections.abc import Callable

import msgpack

from solray._private import context, protocol, services
from solray._private.protocol import PREFIX, Msg
from solray._private.xlang import values
from solray._private.xlang.errors import raised_from

# Requests to the child (its own numbering: these frames never meet solray's).
CALL_STATIC = 1
NEW_ACTOR = 2
CALL_METHOD = 3
DROP_ACTOR = 4


class ChildError(RuntimeError):
    """The child could not be started, or exited."""


class Child:
    error: type[ChildError] = ChildError  # what its failures raise (JvmError for a JVM)

    def __init__(self, command: list[str], what: str):
        self.command = command
        self.what = what  # "the JVM", for messages
        self._lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._next_id = 1
        self._exit: str | None = None  # why it is gone, once it is
        # Run (on the reader thread) when the child exits: an actor's worker
        # ends with it (ChildActor).
        self.exit_hooks: list = []
        self._proc: subprocess.Popen | None = None
        started = concurrent.futures.Future()
        threading.Thread(
            target=self._serve, args=(started,), name="solray-xlang-child", daemon=True
        ).start()
        started.result()  # raises if it could not start

    @property
    def alive(self) -> bool:
        return self._exit is None

    def call(self, kind: int, body: dict, args=()):
        """Run one request; its value, or the exception the child's error record says."""
        buffers = [values.encode(arg) for arg in args]
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._exit is not None:
                raise self.error(self._exit)
            rid = self._next_id
            self._next_id += 1
            self._pending[rid] = future
            try:
                self._proc.stdin.write(b"".join(protocol.encode(kind, rid, body, buffers)))
                self._proc.stdin.flush()
            except OSError:
                del self._pending[rid]
                raise self.error(f"{self.what} ({self._proc.pid}) closed its input") from None
        reply, out = future.result()
        if not isinstance(reply, dict) or reply.get("status") not in ("ok", "error"):
            raise self.error(f"{self.what} answered {reply!r}, not a status")
        if reply["status"] == "error":
            raise raised_from(reply.get("error") or {})
        return values.decode(out[0]) if out else None

    # -- the reader thread ----------------------------------------------------

    def _serve(self, started: concurrent.futures.Future) -> None:
        try:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=services.child_env(),
                close_fds=True,
                preexec_fn=services.die_with_parent,
            )
        except OSError as e:
            started.set_exception(
                self.error(f"could not start {self.what} ({self.command[0]}): {e}")
            )
            return
        started.set_result(None)
        why = f"{self.what} closed its output"
        try:
            self._read(self._proc.stdout)
        except (OSError, ValueError, protocol.ProtocolError) as e:
            why = f"the output of {self.what} is not frames: {e}"
            self._proc.kill()
        code = self._proc.wait()
        with self._lock:
            self._exit = f"{why}; it exited with code {code} (its stderr is in this worker's log)"
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(self.error(self._exit))
        for hook in self.exit_hooks:
            hook(self._exit)

    def _read(self, stream) -> None:
        while True:
            prefix = stream.read(PREFIX.size)
            if len(prefix) < PREFIX.size:
                return
            header_len, payload_len = PREFIX.unpack(prefix)
            if header_len > protocol.MAX_HEADER or payload_len > protocol.MAX_PAYLOAD:
                raise protocol.ProtocolError(f"frame too large ({header_len}, {payload_len})")
            msg_type, rid, body, lengths = protocol.decode_header(stream.read(header_len))
            payload = stream.read(payload_len)
            if len(payload) < payload_len or sum(lengths) != payload_len:
                return
            buffers, at = [], 0
            for n in lengths:
                buffers.append(payload[at : at + n])
                at += n
            if msg_type != Msg.REPLY:
                raise protocol.ProtocolError(
                    f"{self.what} sent message type {msg_type}, not a reply"
                )
            with self._lock:
                future = self._pending.pop(rid, None)
            if future is not None:
                future.set_result((body, buffers))


_children: dict[tuple, Child] = {}
_job_entries: dict[bytes, dict] = {}  # job id -> its entry in the control store
_children_lock = threading.Lock()


def job_entry() -> dict:
    """The entry of the job of the task running on this thread (its
    code_search_path and jvm_options), read once per job."""
    cw = context.require_core_worker()
    job = cw.job_bytes
    with _children_lock:
        entry = _job_entries.get(job)
    if entry is None:
        found, buffers = cw.request(
            "control", Msg.KV_GET, {"ns": "job", "key": job.hex()}, raw=True
        )
        entry = msgpack.unpackb(buffers[0]) if found else {}
        with _children_lock:
            _job_entries[job] = entry
    return entry


def child_for(key: tuple, start: Callable[[], Child]) -> Child:
    """This worker's child for `key`: started on first use, started again if
    it exited."""
    with _children_lock:
        child = _children.get(key)
        if child is None or not child.alive:
            child = _children[key] = start()
    return child


class ChildActor:
    """A Python actor holding one instance in the worker's child (a Java
    object in the JVM, a C++ object in the C++ executor); `child_for_job`
    gives the child, `NEW_ACTOR`'s class_name is the constructor's first
    argument (a Java class, a C++ factory's name).

    Any method name the handle is called with (dunder names aside) reaches
    the instance; the child answers one call of an instance at a time, and
    the actor runs one call at a time (max_concurrency 1, checked where the
    class is made)."""

    child_for_job: Callable[[], Child]

    def __init__(self, class_name: str, *args):
        self._solray_child = type(self).child_for_job()
        self._solray_instance = self._solray_child.call(NEW_ACTOR, {"class_name": class_name}, args)
        self._solray_child.exit_hooks.append(_end_actor)
        if not self._solray_child.alive:  # it exited before the hook was there
            _end_actor("it exited while the actor was made")

    def __getattr__(self, name: str):
        if name.startswith("__") or "_solray_instance" not in self.__dict__:
            raise AttributeError(name)

        def call(*args):
            return self._solray_child.call(
                CALL_METHOD, {"instance": self._solray_instance, "name": name}, args
            )

        call.__name__ = name
        return call

    def __ray_shutdown__(self) -> None:
        """The actor ends gracefully: the child lets go of the instance."""
        if self._solray_child.alive:
            self._solray_child.call(DROP_ACTOR, {"instance": self._solray_instance})


def _end_actor(why: str) -> None:
    """The child holding this worker's actor exited: the actor's state is
    gone, so the actor is too. Its worker exits, and the actor is restarted
    if max_restarts allows, as when any actor's process dies."""
    sys.stderr.write(f"the actor's child process is gone ({why}): this actor's worker exits\n")
    sys.stderr.flush()
    os._exit(1)
