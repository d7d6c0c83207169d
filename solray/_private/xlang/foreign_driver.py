"""The proxy's side of a foreign (Java, C++) driver: messages 210-219.

A foreign driver connects to the client server like a ray:// client, and its
first message (XLANG_CONNECT instead of CLIENT_CONNECT) makes its proxy
(client/proxy.py) serve it with this module: the proxy joins the cluster as
a driver of a job whose code_search_path and jvm_options the client sent,
and runs the client's puts, gets, tasks and actor calls as a Python driver
would (the public API, so options, scheduling and errors are a Python
driver's). So the proxy owns everything the client makes: Java and C++ never
implement leases, ownership, borrowing or the object store.

What the client holds. Every object id the proxy hands out is fresh (a put,
a task's returns), so the proxy keeps one ObjectRef per id in `objects`
until the client releases it (XLANG_RELEASE, sent once per id when its last
handle is gone) or disconnects; actors made by XLANG_CREATE_ACTOR likewise
in `actors` (releasing one ends a non-detached actor, as dropping its last
handle does in Python). Handles from XLANG_GET_ACTOR are weak, as
get_actor's are (they keep nothing alive), and an id may come back again
from another lookup, so they stay in `looked_up` until the client
disconnects: a release crossing a lookup's reply never leaves the client
with an actor id the proxy cannot call.

Values cross as xlang values (values.py); a value with no xlang form is an
error naming its Python type, in the result where it was met. Errors in
results are error records (errors.py).

Threads: the proxy's asyncio loop owns the connection and the three tables
above: handlers look up ids there and register new ones before the reply
goes out. The blocking part of each request (join, import, get, wait,
submit) runs on the proxy's pool and hands an Answer back to the loop.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import solray
from solray import exceptions
from solray._private.protocol import Msg
from solray._private.xlang import values
from solray._private.xlang.errors import error_record
from solray.actor import ActorClass, ActorHandle
from solray.job_config import JobConfig
from solray.object_ref import ObjectRef
from solray.remote_function import RemoteFunction

logger = logging.getLogger(__name__)

LANGUAGES = ("java", "cpp")
CONNECT_KEYS = {"language", "namespace", "code_search_path", "jvm_options"}
# The options each message takes (docs/protocol.md): Ray's names, passed to
# `.options()`; any other key is refused by name.
TASK_OPTIONS = {
    "num_returns",
    "num_cpus",
    "num_gpus",
    "memory",
    "resources",
    "max_retries",
    "name",
}
ACTOR_OPTIONS = {
    "name",
    "namespace",
    "lifetime",
    "num_cpus",
    "resources",
    "max_restarts",
    "max_concurrency",
}
METHOD_OPTIONS = {"num_returns"}


@dataclass
class Answer:
    """A request's result, for the loop to register and send."""

    body: object
    buffers: list = field(default_factory=list)
    objects: list = field(default_factory=list)  # ObjectRefs the client now holds
    actors: list = field(default_factory=list)  # handles the client now holds
    looked_up: list = field(default_factory=list)  # weak handles from get_actor


class ForeignDriver:
    def __init__(self, proxy):
        self.proxy = proxy
        self.connected = False
        self.objects: dict[bytes, ObjectRef] = {}
        self.actors: dict[bytes, ActorHandle] = {}
        self.looked_up: dict[bytes, ActorHandle] = {}

    def handlers(self) -> dict[int, Callable]:
        return {
            Msg.XLANG_CONNECT: self._on_connect,
            Msg.XLANG_PUT: self._request(self._put),
            Msg.XLANG_GET: self._request(self._get),
            Msg.XLANG_WAIT: self._request(self._wait),
            Msg.XLANG_SUBMIT_TASK: self._request(self._submit_task),
            Msg.XLANG_CREATE_ACTOR: self._request(self._create_actor),
            Msg.XLANG_CALL_ACTOR: self._request(self._call_actor),
            Msg.XLANG_GET_ACTOR: self._request(self._get_actor),
            Msg.XLANG_KILL_ACTOR: self._request(self._kill_actor),
            Msg.XLANG_RELEASE: self._on_release,
        }

    def release_all(self) -> None:
        """Loop thread, the client is gone: let go of everything it held."""
        self.objects.clear()
        self.actors.clear()
        self.looked_up.clear()

    # -- plumbing (loop thread) ---------------------------------------------

    def _request(self, prepare: Callable) -> Callable:
        """A handler: `prepare(body, buffers)` runs on the loop (it reads the
        tables) and returns the blocking rest as a callable for the pool."""

        def handle(conn, rid, body, buffers) -> None:
            try:
                if not self.connected:
                    raise ValueError("not connected: the first message must be XLANG_CONNECT")
                if not isinstance(body, dict):
                    raise ValueError(f"the body must be a map, got {type(body).__name__}")
                work = prepare(body, buffers)
            except (ValueError, TypeError) as e:
                conn.reply_error(rid, f"{type(e).__name__}: {e}")
                return
            self.proxy.pool.submit(self._run, rid, work)

        return handle

    def _run(self, rid: int, work: Callable[[], Answer]) -> None:
        """Pool thread: every request is answered, or its client waits forever."""
        try:
            answer = work()
        except BaseException as e:
            message = f"{type(e).__name__}: {e}"
            self.proxy.loop.call_soon_threadsafe(self.proxy.conn.reply_error, rid, message)
            return
        self.proxy.loop.call_soon_threadsafe(self._answer, rid, answer)

    def _answer(self, rid: int, answer: Answer) -> None:
        if self.proxy.conn.closed:
            return
        for ref in answer.objects:
            self.objects[ref._id] = ref
        for handle in answer.actors:
            self.actors[handle._actor_id] = handle
        for handle in answer.looked_up:
            self.looked_up.setdefault(handle._actor_id, handle)
        self.proxy.conn.reply(rid, answer.body, answer.buffers)

    def _refs(self, ids) -> list[ObjectRef]:
        if not isinstance(ids, list):
            raise ValueError(f"ids must be an array of object ids, got {type(ids).__name__}")
        refs = []
        for object_id in ids:
            ref = self.objects.get(object_id) if isinstance(object_id, bytes) else None
            if ref is None:
                raise ValueError(f"unknown object id {_hex(object_id)}: not held for this client")
            refs.append(ref)
        return refs

    def _actor(self, actor_id) -> ActorHandle:
        handle = None
        if isinstance(actor_id, bytes):
            handle = self.actors.get(actor_id) or self.looked_up.get(actor_id)
        if handle is None:
            raise ValueError(f"unknown actor id {_hex(actor_id)}: not held for this client")
        return handle

    def _args(self, args, buffers: list) -> Callable[[], list]:
        """Loop thread: check ARGs and look their refs up; the returned
        callable decodes the values (on the pool: arrays may be large)."""
        if not isinstance(args, list):
            raise ValueError(f"args must be an array, got {type(args).__name__}")
        slots = []
        for arg in args:
            if isinstance(arg, dict) and arg.keys() == {"ref"}:
                slots.append(self._refs([arg["ref"]])[0])
            elif (
                isinstance(arg, dict)
                and arg.keys() == {"value"}
                and isinstance(arg["value"], int)
                and 0 <= arg["value"] < len(buffers)
            ):
                slots.append(_Value(arg["value"]))
            else:
                raise ValueError(
                    f'an argument must be {{"ref": id}} or {{"value": buffer index}} with an '
                    f"index below {len(buffers)}, got {arg!r}"
                )
        return lambda: [
            values.decode(buffers[s.index]) if isinstance(s, _Value) else s for s in slots
        ]

    # -- connect -------------------------------------------------------------

    def _on_connect(self, conn, rid, body, buffers) -> None:
        try:
            if self.connected or self.proxy.connected:
                raise ValueError("this client is already connected")
            job_config, namespace = _connect_options(body)
        except (ValueError, TypeError) as e:
            conn.reply_error(rid, f"{type(e).__name__}: {e}")
            return
        self.connected = True
        self.proxy.pool.submit(self._run, rid, lambda: self._join(job_config, namespace))

    def _join(self, job_config: JobConfig, namespace: str | None) -> Answer:
        try:
            cw = self.proxy.join(namespace, False, job_config)
        except BaseException:
            logger.exception("could not join the cluster for a foreign client")
            self.proxy.loop.call_soon_threadsafe(self.proxy.stop.set)
            raise
        return Answer(
            {
                "job_id": cw.job_bytes.hex(),
                "namespace": cw.namespace,
                "node_id": cw.node_info["node_id"],
                "solray_version": solray.__version__,
            }
        )

    # -- objects -------------------------------------------------------------

    def _put(self, body, buffers):
        if len(buffers) != 1:
            raise ValueError(f"XLANG_PUT carries one buffer (the value), got {len(buffers)}")

        def put() -> Answer:
            ref = solray.put(values.decode(buffers[0]))
            return Answer({"id": ref._id}, objects=[ref])

        return put

    def _get(self, body, buffers):
        refs = self._refs(body.get("ids"))
        timeout = _timeout(body)

        def get() -> Answer:
            deadline = None if timeout is None else time.monotonic() + timeout
            results, out = [], []
            for ref in refs:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    value = solray.get(ref, timeout=left)
                except exceptions.GetTimeoutError:
                    return Answer({"timed_out": True, "results": []})
                except Exception as e:
                    results.append({"status": "error", "error": error_record(e)})
                    continue
                try:
                    out.append(values.encode(value))
                except TypeError as e:  # no xlang form: this result's error
                    results.append({"status": "error", "error": error_record(e)})
                    continue
                results.append({"status": "ok"})
            return Answer({"timed_out": False, "results": results}, out)

        return get

    def _wait(self, body, buffers):
        refs = self._refs(body.get("ids"))
        num_returns = body.get("num_returns", 1)
        timeout = _timeout(body)
        fetch_local = body.get("fetch_local", True)
        if not isinstance(fetch_local, bool):
            raise ValueError(f"fetch_local must be a bool, got {fetch_local!r}")

        def wait() -> Answer:
            ready, not_ready = solray.wait(
                refs, num_returns=num_returns, timeout=timeout, fetch_local=fetch_local
            )
            return Answer(
                {"ready": [r._id for r in ready], "not_ready": [r._id for r in not_ready]}
            )

        return wait

    # -- tasks and actors ----------------------------------------------------

    def _submit_task(self, body, buffers):
        function = _described(body.get("function"), "function")
        options = _options(body.get("options"), TASK_OPTIONS, "XLANG_SUBMIT_TASK")
        args = self._args(body.get("args", []), buffers)

        def submit() -> Answer:
            remote = _remote_function(*_key(function))
            return _returned(remote.options(**options).remote(*args()))

        return submit

    def _create_actor(self, body, buffers):
        cls = _described(body.get("class"), "class")
        options = _options(body.get("options"), ACTOR_OPTIONS, "XLANG_CREATE_ACTOR")
        if options.get("lifetime", "") is None:
            del options["lifetime"]  # nil: the default, owned by this client
        args = self._args(body.get("args", []), buffers)

        def create() -> Answer:
            handle = _actor_class(*_key(cls)).options(**options).remote(*args())
            return Answer({"actor_id": handle._actor_id}, actors=[handle])

        return create

    def _call_actor(self, body, buffers):
        handle = self._actor(body.get("actor_id"))
        name = body.get("method")
        if not isinstance(name, str) or not name:
            raise ValueError(f"method must be a method's name, got {name!r}")
        options = _options(body.get("options"), METHOD_OPTIONS, "XLANG_CALL_ACTOR")
        args = self._args(body.get("args", []), buffers)

        def call() -> Answer:
            return _returned(getattr(handle, name).options(**options).remote(*args()))

        return call

    def _get_actor(self, body, buffers):
        name, namespace = body.get("name"), body.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise ValueError(f"namespace must be a string or nil, got {namespace!r}")

        def look_up() -> Answer:
            handle = solray.get_actor(name, namespace=namespace)
            meta = handle._meta
            if meta.get("language") == "java":
                described = {"language": "java", "class_name": meta["class_name"]}
            elif meta.get("language") == "cpp":
                described = {
                    "language": "cpp",
                    "class_name": meta["class_name"],
                    "name": meta["create_function"],
                }
            else:
                described = {
                    "language": "python",
                    "module": meta.get("module"),
                    "name": meta["class_name"],
                }
            return Answer({"actor_id": handle._actor_id, "class": described}, looked_up=[handle])

        return look_up

    def _kill_actor(self, body, buffers):
        handle = self._actor(body.get("actor_id"))
        no_restart = body.get("no_restart", True)
        if not isinstance(no_restart, bool):
            raise ValueError(f"no_restart must be a bool, got {no_restart!r}")

        def kill() -> Answer:
            solray.kill(handle, no_restart=no_restart)
            return Answer({})

        return kill

    def _on_release(self, conn, rid, body, buffers) -> None:
        if not isinstance(body, dict):
            return  # one-way: nothing to answer; a garbled release frees nothing
        for object_id in body.get("ids") or []:
            if isinstance(object_id, bytes):
                self.objects.pop(object_id, None)
        for actor_id in body.get("actor_ids") or []:
            if isinstance(actor_id, bytes):
                self.actors.pop(actor_id, None)


@dataclass
class _Value:
    index: int  # of a frame buffer holding an xlang value


def _hex(value) -> str:
    return value.hex() if isinstance(value, bytes) else repr(value)


def _connect_options(body) -> tuple[JobConfig, str | None]:
    if not isinstance(body, dict):
        raise ValueError(f"the body must be a map, got {type(body).__name__}")
    unknown = sorted(set(body) - CONNECT_KEYS, key=str)
    if unknown:
        raise ValueError(
            f"unknown XLANG_CONNECT key {unknown[0]!r} (known: {sorted(CONNECT_KEYS)})"
        )
    if body.get("language") not in LANGUAGES:
        raise ValueError(f"language must be one of {list(LANGUAGES)}, got {body.get('language')!r}")
    namespace = body.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise ValueError(f"namespace must be a non-empty string or nil, got {namespace!r}")
    paths = body.get("code_search_path") or []
    jvm_options = body.get("jvm_options") or []
    for name, items in (("code_search_path", paths), ("jvm_options", jvm_options)):
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise ValueError(f"{name} must be an array of non-empty strings, got {items!r}")
    for path in paths:
        if not os.path.isabs(path):
            raise ValueError(
                f"code_search_path entries must be absolute paths (they name files on the "
                f"cluster's machines), got {path!r}"
            )
    return JobConfig(code_search_path=paths, jvm_options=jvm_options), namespace


def _timeout(body: dict) -> float | None:
    timeout_ms = body.get("timeout_ms")
    if timeout_ms is None:
        return None
    if not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool) or timeout_ms < 0:
        raise ValueError(f"timeout_ms must be a non-negative int or nil, got {timeout_ms!r}")
    return timeout_ms / 1000


def _options(options, known: set[str], message: str) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"options must be a map, got {type(options).__name__}")
    unknown = sorted(set(options) - known, key=str)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for {message} (known: {sorted(known)})")
    num_returns = options.get("num_returns", 1)
    if not isinstance(num_returns, int) or isinstance(num_returns, bool) or num_returns < 0:
        raise ValueError(f"num_returns must be a non-negative int, got {num_returns!r}")
    return dict(options)


def _described(described, what: str) -> dict:
    """Check a FUNC or CLASS map (the pool imports what it names)."""
    if not isinstance(described, dict):
        raise ValueError(f"{what} must be a map, got {type(described).__name__}")
    language = described.get("language")
    if language == "python":
        keys = {"language", "module", "name"}
    elif language == "java":
        keys = (
            {"language", "class_name", "name"}
            if what == "function"
            else {
                "language",
                "class_name",
            }
        )
    elif language == "cpp":  # what RAY_REMOTE registered (a class: by its factory)
        keys = {"language", "name"} if what == "function" else {"language", "class_name", "name"}
    else:
        raise ValueError(f"{what} language must be 'python', 'java' or 'cpp', got {language!r}")
    if described.keys() != keys or not all(
        isinstance(described[k], str) and described[k] for k in keys
    ):
        raise ValueError(
            f"a {language} {what} is a map of {sorted(keys)} (strings), got {described!r}"
        )
    return described


def _key(described: dict) -> tuple:
    """(language, module or Java class, name or None): what the caches key on."""
    if described["language"] == "java":
        return "java", described["class_name"], described.get("name")
    if described["language"] == "cpp":
        return "cpp", described.get("class_name", ""), described["name"]
    return "python", described["module"], described["name"]


def _imported(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except AttributeError:
        raise AttributeError(f"module {module!r} has no attribute {name!r}") from None


# Made once per name: a remote function or actor class pickles itself once.
@functools.cache
def _remote_function(language: str, where: str, name: str) -> RemoteFunction:
    """Pool thread: the remote function a FUNC names. A Python one is
    imported here (the job's code_search_path is on this driver's sys.path)
    and pickled by reference, so the worker imports it by module and name."""
    if language == "java":
        from solray import cross_language

        return cross_language.java_function(where, name)
    if language == "cpp":
        from solray import cross_language

        return cross_language.cpp_function(name)
    target = _imported(where, name)
    if isinstance(target, RemoteFunction):
        return target
    if callable(target) and not isinstance(target, type):
        return solray.remote(target)
    raise TypeError(f"{where}.{name} is a {type(target).__name__}, not a function")


@functools.cache
def _actor_class(language: str, where: str, name: str | None) -> ActorClass:
    if language == "java":
        from solray import cross_language

        return cross_language.java_actor_class(where)
    if language == "cpp":
        from solray import cross_language

        return cross_language.cpp_actor_class(name, where)
    target = _imported(where, name)
    if isinstance(target, ActorClass):
        return target
    if isinstance(target, type):
        return solray.remote(target)
    raise TypeError(f"{where}.{name} is a {type(target).__name__}, not a class")


def _returned(result) -> Answer:
    """The reply to a submit or a call: what `.remote()` returned, as ids."""
    refs = [] if result is None else [result] if isinstance(result, ObjectRef) else list(result)
    return Answer({"ids": [r._id for r in refs]}, objects=refs)
