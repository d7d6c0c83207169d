"""A Python worker's JVM child: where its Java tasks and actors run.

The node leases Python workers only; a worker that gets a Java task (or
hosts a Java actor) starts `java [jvm_options] -cp CLASSPATH
io.solray.runtime.JavaExecutor` the first time, and keeps it for its own
life: a JVM costs about a second to start, a call on a warm one a fraction
of a millisecond. The classpath and options are the job's
(JobConfig.code_search_path and jvm_options, in the job's entry in the
control store): one JVM per distinct pair, so a worker that serves two jobs
never runs one's Java code on the other's classpath.

The child protocol (docs/protocol.md, "JVM child protocol") is solray's
framing over the child's stdin and stdout, without a handshake: the pipes
are private to the two processes. Requests carry ids; the JVM answers each
(static calls may be answered out of order, from its own threads), so calls
from several of this worker's threads share one JVM.

No orphans. The JVM exits when its stdin closes, which happens when this
process exits however it exits; PR_SET_PDEATHSIG (SIGKILL) is the backstop
for a JVM that does not read. The death signal fires when the *thread* that
started the child ends, so the child is started by its reader thread, which
lives as long as the child does. The JVM's stderr (and its System.out, which
the executor points there) is the worker's: user output lands in the
worker's log, as a Python task's does.

State: each Jvm's `_pending` (request id -> future) and `_next_id` are
guarded by its `_lock`, which also serialises writes to the pipe; the reader
thread resolves the futures. The module's table of JVMs is guarded by
`_jvms_lock`.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import threading
import zipfile

import msgpack

from solray._private import context, protocol, services
from solray._private.protocol import PREFIX, Msg
from solray._private.xlang import values
from solray._private.xlang.errors import raised_from

EXECUTOR_CLASS = "io.solray.runtime.JavaExecutor"
_EXECUTOR_FILE = EXECUTOR_CLASS.replace(".", "/") + ".class"

# Requests to the JVM (its own numbering: these frames never meet solray's).
CALL_STATIC = 1
NEW_ACTOR = 2
CALL_METHOD = 3
DROP_ACTOR = 4


class JvmError(RuntimeError):
    """The JVM could not be started, or exited."""


def classpath(code_search_path: list[str]) -> list[str]:
    """The JVM classpath a job's code_search_path makes: a folder gives
    itself and every *.jar directly in it; a .jar file gives itself."""
    entries = []
    for path in code_search_path:
        if os.path.isdir(path):
            entries.append(path)
            entries += sorted(
                os.path.join(path, name) for name in os.listdir(path) if name.endswith(".jar")
            )
        elif path.endswith(".jar") and os.path.isfile(path):
            entries.append(path)
    return list(dict.fromkeys(entries))


def _has_executor(entries: list[str]) -> bool:
    for entry in entries:
        if os.path.isdir(entry):
            if os.path.isfile(os.path.join(entry, _EXECUTOR_FILE)):
                return True
            continue
        try:
            with zipfile.ZipFile(entry) as jar:
                jar.getinfo(_EXECUTOR_FILE)
            return True
        except (KeyError, OSError, zipfile.BadZipFile):
            continue
    return False


class Jvm:
    def __init__(self, entries: list[str], options: list[str]):
        if not _has_executor(entries):
            raise JvmError(
                f"the solray Java runtime ({EXECUTOR_CLASS}) is not on the job's "
                f"code_search_path (classpath {os.pathsep.join(entries) or 'empty'}): add the "
                "solray runtime jar (or its classes folder) to JobConfig(code_search_path=[...])"
            )
        java = _java()
        self.command = [java, *options, "-cp", os.pathsep.join(entries), EXECUTOR_CLASS]
        self._lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._next_id = 1
        self._exit: str | None = None  # why it is gone, once it is
        # Run (on the reader thread) when the JVM exits: a Java actor's
        # worker ends with it (java_calls.JavaActor).
        self.exit_hooks: list = []
        self._proc: subprocess.Popen | None = None
        started = concurrent.futures.Future()
        threading.Thread(
            target=self._serve, args=(started,), name="solray-jvm", daemon=True
        ).start()
        started.result()  # raises if it could not start

    @property
    def alive(self) -> bool:
        return self._exit is None

    def call(self, kind: int, body: dict, args=()):
        """Run one request; its value, or the exception the JVM's error record says."""
        buffers = [values.encode(arg) for arg in args]
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._exit is not None:
                raise JvmError(self._exit)
            rid = self._next_id
            self._next_id += 1
            self._pending[rid] = future
            try:
                self._proc.stdin.write(b"".join(protocol.encode(kind, rid, body, buffers)))
                self._proc.stdin.flush()
            except OSError:
                del self._pending[rid]
                raise JvmError(f"the JVM ({self._proc.pid}) closed its input") from None
        reply, out = future.result()
        if not isinstance(reply, dict) or reply.get("status") not in ("ok", "error"):
            raise JvmError(f"the JVM answered {reply!r}, not a status")
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
            started.set_exception(JvmError(f"could not start the JVM ({self.command[0]}): {e}"))
            return
        started.set_result(None)
        why = "the JVM closed its output"
        try:
            self._read(self._proc.stdout)
        except (OSError, ValueError, protocol.ProtocolError) as e:
            why = f"the JVM's output is not frames: {e}"
            self._proc.kill()
        code = self._proc.wait()
        with self._lock:
            self._exit = f"{why}; it exited with code {code} (its stderr is in this worker's log)"
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(JvmError(self._exit))
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
                raise protocol.ProtocolError(f"the JVM sent message type {msg_type}, not a reply")
            with self._lock:
                future = self._pending.pop(rid, None)
            if future is not None:
                future.set_result((body, buffers))


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise JvmError("no java executable on this worker's node (install a JDK, or set JAVA_HOME)")
    return java


_jvms: dict[tuple, Jvm] = {}
_jvms_lock = threading.Lock()
_job_settings: dict[bytes, tuple[tuple, tuple]] = {}  # job id -> (classpath, options)


def for_current_job() -> Jvm:
    """This worker's JVM for the job of the task running on this thread:
    started on first use, started again if it exited."""
    cw = context.require_core_worker()
    job = cw.job_bytes
    settings = _job_settings.get(job)
    if settings is None:
        found, buffers = cw.request(
            "control", Msg.KV_GET, {"ns": "job", "key": job.hex()}, raw=True
        )
        info = msgpack.unpackb(buffers[0]) if found else {}
        settings = (
            tuple(classpath(info.get("code_search_path") or [])),
            tuple(info.get("jvm_options") or []),
        )
        _job_settings[job] = settings
    with _jvms_lock:
        jvm = _jvms.get(settings)
        if jvm is None or not jvm.alive:
            jvm = _jvms[settings] = Jvm(list(settings[0]), list(settings[1]))
    return jvm
