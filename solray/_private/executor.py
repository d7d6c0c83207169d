"""Running pushed tasks inside a worker process.

Tasks arrive on the event loop thread and are queued for the worker's main
thread, which runs them one at a time: user code never runs on the loop, so a
task that blocks (in `get`, in C code, in a sleep) never stalls the worker's
I/O, and a task can itself submit tasks and wait for them.

The result of a task is one entry per return value: inline bytes when small,
or a location in this node's store. A task that raises produces its error
(a RayTaskError carrying the user's exception and the remote traceback) as
every one of its return values.
"""

from __future__ import annotations

import inspect
import io
import os
import queue
import socket
import sys
import traceback
from dataclasses import dataclass

import cloudpickle
import msgpack

from solray import exceptions
from solray._private import ids, serialization
from solray._private.memory_store import decode_entry, encode_entry
from solray._private.protocol import LOG_MARK, LOG_SEP, Msg
from solray._private.serialization import SerializedObject
from solray._private.task_spec import substitute_deps


@dataclass
class TaskContext:
    task_id: bytes
    name: str
    job: int
    gpu_ids: list
    owner: str


class Executor:
    def __init__(self, core_worker):
        self.cw = core_worker
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.functions: dict[bytes, object] = {}
        self.hostname = socket.gethostname()
        self._jobs_seen: set[int] = set()

    def on_push(self, conn, rid, body, buffers) -> None:
        """Loop thread: hand the task to the main thread."""
        self.queue.put((conn, rid, body, buffers))

    def run_forever(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            self.execute(*item)

    def execute(self, conn, rid, body, buffers) -> None:
        cw = self.cw
        ctx = TaskContext(body["tid"], body["name"], body["job"], body["gpu"], body["owner"])
        cw.set_job(ctx.job)
        if ctx.job not in self._jobs_seen:
            self._join_job(ctx.job)
        if ctx.gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in ctx.gpu_ids)
        cw.current_task = ctx
        num_returns = body["nret"]
        app_error = False
        try:
            function, args, kwargs = self._prepare(body, buffers)
            outputs = self._call(function, args, kwargs, num_returns)
        except Exception as e:
            app_error = True
            error = self._task_error(ctx.name, e)
            outputs = [error] * max(num_returns, 1)
        finally:
            cw.current_task = None
        heads, reply_buffers = [], []
        for i, value in enumerate(outputs[: max(num_returns, 0)] if num_returns else []):
            head, bufs = self._store_return(ctx, i, value, app_error)
            heads.append(head)
            reply_buffers.extend(bufs)
        cw.post(conn.reply, rid, {"r": heads, "app_error": app_error}, reply_buffers)

    def _join_job(self, job: int) -> None:
        """Make the driver's import path ours, so functions defined in its
        modules (not only in __main__) can be unpickled here."""
        self._jobs_seen.add(job)
        found, buffers = self.cw.request(
            "control", Msg.KV_GET, {"ns": "job", "key": self.cw.job_bytes.hex()}, raw=True
        )
        if found:
            info = msgpack.unpackb(buffers[0])
            for path in reversed(info["sys_path"]):
                if path not in sys.path:
                    sys.path.insert(1, path)

    def _prepare(self, body, buffers):
        cw = self.cw
        pos = 0
        function_id = body["fn"]
        if body.get("fnb"):
            if function_id not in self.functions:
                self.functions[function_id] = cloudpickle.loads(buffers[0])
            pos = 1
        function = self.functions[function_id]
        if "a" in body:
            flags, n = body["a"]
            blob = SerializedObject.from_wire(flags, buffers[pos : pos + n])
            pos += n
        else:
            object_id, head = body["ao"]
            blob = cw._read_from_store(object_id, decode_entry(head, []))
        args, kwargs = serialization.deserialize(blob)
        values = []
        for object_id, head in body["d"]:
            n = head[2] if head[0] == "i" else 0
            values.append(cw._materialize(object_id, decode_entry(head, buffers[pos : pos + n])))
            pos += n
        if values:
            args, kwargs = substitute_deps(args, kwargs, values)
        return function, args, kwargs

    def _call(self, function, args, kwargs, num_returns: int) -> list:
        result = function(*args, **kwargs)
        if inspect.isgenerator(result):
            result = tuple(result)
            if num_returns != len(result) and num_returns != 1:
                raise ValueError(
                    f"the generator yielded {len(result)} values, but the task was "
                    f"declared with num_returns={num_returns}"
                )
        if num_returns == 1:
            return [result]
        if num_returns == 0:
            return []
        try:
            outputs = list(result)
        except TypeError:
            raise ValueError(
                f"the task declared num_returns={num_returns} but returned a "
                f"{type(result).__name__}, which is not a sequence"
            ) from None
        if len(outputs) != num_returns:
            raise ValueError(
                f"the task declared num_returns={num_returns} but returned {len(outputs)} values"
            )
        return outputs

    def _task_error(self, name: str, error: Exception) -> exceptions.RayTaskError:
        if isinstance(error, exceptions.RayTaskError):
            # An error from a task this task waited on: keep the original cause.
            return error
        tb = error.__traceback__
        # Drop the executor's own frames: the user wants to see their code.
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(error), error, tb))
        return exceptions.RayTaskError(
            name, text, error, f"solray::{name}()", os.getpid(), self.cw.ip
        )

    def _store_return(self, ctx: TaskContext, index: int, value, is_error: bool):
        cw = self.cw
        if is_error:
            obj = serialization.serialize_error(value)
        else:
            try:
                obj = serialization.serialize(value)
            except Exception as e:
                obj = serialization.serialize_error(
                    self._task_error(
                        ctx.name,
                        TypeError(f"could not serialize the return value of {ctx.name}: {e}"),
                    )
                )
        cw.note_serialized(obj)
        object_id = ids.return_object_id(ctx.task_id, index)
        try:
            entry = cw.store_value(object_id, obj, owner=ctx.owner)
        except exceptions.ObjectStoreFullError as e:
            entry = cw.store_value(object_id, serialization.serialize_error(e), owner=ctx.owner)
        return encode_entry(entry)


class TaskOutput(io.TextIOBase):
    """stdout/stderr of a worker: marks each line with the running task's name,
    which the node turns into the `(name pid=N)` prefix the driver prints."""

    def __init__(self, stream, core_worker):
        self._stream = stream
        self._cw = core_worker
        self._line_start = True

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        task = self._cw.current_task
        mark = f"{LOG_MARK}{task.name}{LOG_SEP}" if task is not None else ""
        out = []
        for piece in s.splitlines(keepends=True):
            if self._line_start and mark:
                out.append(mark)
            out.append(piece)
            self._line_start = piece.endswith("\n")
        self._stream.write("".join(out))
        if "\n" in s:
            self._stream.flush()
        return len(s)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return self._stream.encoding
