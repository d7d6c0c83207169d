"""Running pushed tasks and actor calls inside a worker process.

Work arrives on the event loop thread and is handed to where it runs:

    tasks, actor constructors, and calls   the worker's main thread, one at a
    to a plain actor                       time, in arrival order
    threaded actors (max_concurrency > 1)  a thread pool per concurrency group
    async actors (any `async def` method)  an event loop of the actor's own,
                                           concurrency bounded per group

User code never runs on the I/O loop, so a call that blocks (in `get`, in C
code, in a sleep) never stalls the worker's I/O, and calls may themselves
submit tasks and wait for them.

The result of a call is one entry per return value: inline bytes when small,
or a location in this node's store. A call that raises produces its error (a
RayTaskError carrying the user's exception and the remote traceback) as every
one of its return values. An actor that calls exit_actor() answers that call
with ActorDiedError, tells the control store not to restart it, and exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import io
import os
import pickle
import queue
import sys
import threading
import traceback
from dataclasses import dataclass
from functools import partial

import cloudpickle
import msgpack

from solray import exceptions
from solray._private import ids, serialization
from solray._private.memory_store import decode_entry, encode_entry
from solray._private.protocol import LOG_MARK, LOG_SEP, Msg
from solray._private.serialization import SerializedObject
from solray._private.task_spec import substitute_deps
from solray.actor import ActorExit


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
        self.actor: ActorRuntime | None = None
        self.actor_restarts = 0
        self.gpu_ids: list = []
        self._jobs_seen: set[int] = set()

    # -- entry points, called on the I/O loop ------------------------------

    def on_push(self, conn, rid, body, buffers) -> None:
        self.queue.put(partial(self.run_task, conn, rid, body, buffers))

    def on_actor_create(self, conn, rid, body, buffers) -> None:
        self.queue.put(partial(self.create_actor, conn, rid, body, buffers))

    def on_actor_task(self, conn, rid, body, buffers) -> None:
        if self.actor is None or self.actor.actor_id != body["aid"]:
            conn.reply_error(rid, "this worker does not host that actor")
            return
        self.actor.dispatch(conn, rid, body, buffers)

    def run_forever(self) -> None:
        while True:
            work = self.queue.get()
            if work is None:
                return
            work()

    # -- tasks -------------------------------------------------------------

    def _context(self, body, name: str) -> TaskContext:
        ctx = TaskContext(
            body["tid"], name, body["job"], body.get("gpu", self.gpu_ids), body["owner"]
        )
        self.cw.set_job(ctx.job)
        if ctx.job not in self._jobs_seen:
            self._join_job(ctx.job)
        # Every task sets it, so a task without GPUs never inherits the ids of
        # the task that ran before it on this worker (as in Ray).
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in ctx.gpu_ids)
        return ctx

    def run_task(self, conn, rid, body, buffers) -> None:
        ctx = self._context(body, body["name"])
        self._execute(conn, rid, body, buffers, ctx, self._task_function)

    def _task_function(self, body, buffers):
        function_id = body["fn"]
        if body.get("fnb"):
            if function_id not in self.functions:
                self.functions[function_id] = cloudpickle.loads(buffers[0])
            return self.functions[function_id], 1
        return self.functions[function_id], 0

    def _execute(self, conn, rid, body, buffers, ctx: TaskContext, lookup) -> None:
        self.cw.current_task = ctx
        num_returns = body["nret"]
        try:
            function, args, kwargs = self._prepare(body, buffers, lookup)
            outputs, app_error = _outputs(function(*args, **kwargs), num_returns), False
        except ActorExit:
            self._exit_actor(conn, rid, ctx, num_returns)
            return
        except Exception as e:
            outputs, app_error = [self._task_error(ctx.name, e)] * num_returns, True
        finally:
            self.cw.current_task = None
        self._reply(conn, rid, ctx, outputs, app_error)

    async def _execute_async(self, conn, rid, body, buffers, ctx: TaskContext, lookup) -> None:
        self.cw.current_task = ctx
        num_returns = body["nret"]
        try:
            function, args, kwargs = self._prepare(body, buffers, lookup)
            result = function(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            outputs, app_error = _outputs(result, num_returns), False
        except ActorExit:
            self._exit_actor(conn, rid, ctx, num_returns)
            return
        except Exception as e:
            outputs, app_error = [self._task_error(ctx.name, e)] * num_returns, True
        except asyncio.CancelledError:
            cancelled = exceptions.TaskCancelledError(ctx.task_id.hex())
            outputs, app_error = [cancelled] * num_returns, True
        self._reply(conn, rid, ctx, outputs, app_error)

    def _reply(self, conn, rid, ctx: TaskContext, outputs: list, app_error: bool) -> None:
        heads, reply_buffers = [], []
        for i, value in enumerate(outputs):
            head, bufs = self._store_return(ctx, i, value, app_error)
            heads.append(head)
            reply_buffers.extend(bufs)
        self.cw.post(conn.reply, rid, {"r": heads, "app_error": app_error}, reply_buffers)

    def _join_job(self, job: int) -> None:
        """Make the driver's import path ours, so functions defined in its
        modules (not only in __main__) can be unpickled here."""
        self._jobs_seen.add(job)
        found, buffers = self.cw.request(
            "control", Msg.KV_GET, {"ns": "job", "key": self.cw.job_bytes.hex()}, raw=True
        )
        if found:
            info = msgpack.unpackb(buffers[0])
            self.cw.namespace = info.get("namespace")
            for path in reversed(info["sys_path"]):
                if path not in sys.path:
                    sys.path.insert(1, path)

    def _prepare(self, body, buffers, lookup):
        cw = self.cw
        function, pos = lookup(body, buffers)
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

    def _task_error(self, name: str, error: Exception) -> exceptions.RayTaskError:
        if isinstance(error, exceptions.RayTaskError):
            # An error from a task this task waited on: keep the original cause.
            return error
        tb = error.__traceback__
        # Drop the executor's own frames: the user wants to see their code.
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(error), error, tb))
        cause = error if _round_trips(error) else None
        return exceptions.RayTaskError(
            name, text, cause, f"solray::{name}()", os.getpid(), self.cw.ip
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

    # -- actors ------------------------------------------------------------

    def create_actor(self, conn, rid, body, buffers) -> None:
        ropts = body["ropts"]
        ctx = self._context(body, ropts["class_name"])
        self.gpu_ids = ctx.gpu_ids
        self.actor_restarts = body.get("restarts", 0)
        self.cw.actor_id = body["aid"]
        self.cw.current_task = ctx
        try:
            cls, args, kwargs = self._prepare(body, buffers, self._task_function)
            instance = cls(*args, **kwargs)
        except Exception as e:
            head, bufs = encode_entry(
                self.cw.store_value(
                    ids.put_object_id(self.cw.job_bytes),
                    serialization.serialize_error(self._task_error(f"{ctx.name}.__init__", e)),
                )
            )
            self.cw.post(conn.reply, rid, {"error": head}, bufs)
            return
        finally:
            self.cw.current_task = None
        self.actor = ActorRuntime(self, body["aid"], instance, ropts)
        self.cw.post(conn.reply, rid, {"pid": os.getpid()})

    def run_actor_task(self, conn, rid, body, buffers) -> None:
        ctx = self._context(body, self.actor.class_name)
        self._execute(conn, rid, body, buffers, ctx, self.actor.method)

    async def run_actor_task_async(self, conn, rid, body, buffers) -> None:
        ctx = self._context(body, self.actor.class_name)
        await self._execute_async(conn, rid, body, buffers, ctx, self.actor.method)

    def _exit_actor(self, conn, rid, ctx: TaskContext, num_returns: int) -> None:
        cw = self.cw
        cw.request("control", Msg.ACTOR_EXITING, {"actor_id": cw.actor_id})
        error = exceptions.ActorDiedError(
            actor_id=cw.actor_id.hex(),
            error_msg=f"The actor {cw.actor_id.hex()} exited: exit_actor() was called.",
        )
        self._reply(conn, rid, ctx, [error] * num_returns, True)

        def exit_process():
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(0)

        cw.post(cw.loop.call_later, 0.05, exit_process)


def _round_trips(error: BaseException) -> bool:
    """Whether the caller will be able to unpickle this exception. One whose
    __init__ needs arguments pickle does not keep (say, MyError(msg, code))
    cannot be; the caller then gets a RayTaskError with the traceback text
    but without the original class."""
    try:
        pickle.loads(cloudpickle.dumps(error))
        return True
    except Exception:
        return False


def _outputs(result, num_returns: int) -> list:
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


class ActorRuntime:
    """Where an actor's calls run, per its concurrency settings."""

    def __init__(self, executor: Executor, actor_id: bytes, instance, ropts: dict):
        self.executor = executor
        self.actor_id = actor_id
        self.instance = instance
        self.class_name = ropts["class_name"]
        self.is_async = ropts["is_async"]
        max_concurrency = ropts["max_concurrency"]
        groups = ropts.get("concurrency_groups") or {}
        self.groups = set(groups)
        if self.is_async:
            self.loop = asyncio.new_event_loop()
            self._semaphores: dict = {}
            self._limits = {None: max_concurrency, **groups}
            threading.Thread(
                target=self.loop.run_forever, name="solray-actor-loop", daemon=True
            ).start()
        elif max_concurrency > 1 or groups:
            self.pools = {
                None: concurrent.futures.ThreadPoolExecutor(
                    max_concurrency, thread_name_prefix="solray-actor"
                )
            }
            for name, limit in groups.items():
                self.pools[name] = concurrent.futures.ThreadPoolExecutor(
                    limit, thread_name_prefix=f"solray-actor-{name}"
                )
        else:
            self.pools = None

    def method(self, body, buffers):
        name = body["m"]
        group = body.get("cg")
        if group is not None and group not in self.groups:
            raise ValueError(
                f"concurrency group '{group}' is not defined for actor "
                f"{self.class_name} (defined: {sorted(self.groups)})"
            )
        function = getattr(self.instance, name, None)
        if function is None:
            raise AttributeError(f"'{self.class_name}' actor has no method '{name}'")
        return function, 0

    def dispatch(self, conn, rid, body, buffers) -> None:
        executor = self.executor
        if self.is_async:
            asyncio.run_coroutine_threadsafe(
                self._bounded(body.get("cg"), conn, rid, body, buffers), self.loop
            )
        elif self.pools is not None:
            pool = self.pools.get(body.get("cg"), self.pools[None])
            pool.submit(executor.run_actor_task, conn, rid, body, buffers)
        else:
            executor.queue.put(partial(executor.run_actor_task, conn, rid, body, buffers))

    async def _bounded(self, group, conn, rid, body, buffers) -> None:
        semaphore = self._semaphores.get(group)
        if semaphore is None:
            limit = self._limits.get(group, self._limits[None])
            semaphore = self._semaphores[group] = asyncio.Semaphore(limit)
        async with semaphore:
            await self.executor.run_actor_task_async(conn, rid, body, buffers)


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
