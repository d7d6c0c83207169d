"""Actors: `@remote` on a class, handles, method calls, `exit_actor`.

An ActorHandle names an actor and knows its methods (name -> options), so any
process holding one can call it without asking anyone but the control store
for the actor's address. The process that created the actor owns it: when
the owner's last handle is gone (and no handle escaped into a value or an
argument) a non-detached actor is terminated once its pending calls finish,
as in Ray.
"""

from __future__ import annotations

import inspect
import pickle

from solray._private import context
from solray._private import options as opts
from solray._private.serialization import RefCollector, dumps
from solray._private.signature import CallCheck
from solray._private.task_spec import FunctionDescriptor
from solray.remote_function import unpack_returns

_METHOD_OPTIONS = "__solray_method_options__"


def method(*args, **kwargs):
    """`@solray.method(num_returns=N, concurrency_group="g", max_task_retries=N,
    retry_exceptions=...)` on an actor method."""

    def decorate(function):
        options = dict(opts.validate_method_options(kwargs, "@method"))
        # On a staticmethod or classmethod (whichever order the decorators
        # come in), the table reads the function inside it.
        wrapped = isinstance(function, (staticmethod, classmethod))
        setattr(function.__func__ if wrapped else function, _METHOD_OPTIONS, options)
        return function

    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    if args:
        raise TypeError("@method takes keyword arguments only, e.g. @method(num_returns=2)")
    return decorate


# Ray's built-in methods, which every actor has (the worker runs them,
# executor.ActorRuntime.method):
#   __ray_terminate__  a graceful exit queued like any call, so the calls
#                      submitted before it finish first (as exit_actor())
#   __ray_ready__      True once the constructor has run
#   __ray_call__       `handle.__ray_call__.remote(fn, *args)` runs
#                      fn(the actor's instance, *args) in the actor
TERMINATE, READY, CALL = "__ray_terminate__", "__ray_ready__", "__ray_call__"
# A user-defined method the worker runs when the actor ends gracefully.
SHUTDOWN = "__ray_shutdown__"


def _builtin(self, *args, **kwargs) -> None:
    """The method table's entry for each built-in method."""


def _method_table(cls) -> dict:
    """Per method: its @method options, with num_returns filled in.
    Methods are functions, staticmethods and classmethods, inherited ones
    included, as in Ray."""
    methods = {}
    builtins = [(name, _builtin) for name in (TERMINATE, READY, CALL)]
    for name, member in [*inspect.getmembers(cls), *builtins]:
        if not (
            inspect.isfunction(member)
            or inspect.ismethod(member)  # a classmethod, bound to the class
            or inspect.ismethoddescriptor(member)
        ):
            continue
        if name.startswith("__") and name not in ("__call__", TERMINATE, READY, CALL):
            continue
        options = dict(getattr(member, _METHOD_OPTIONS, {}))
        if options.get("num_returns") is None:
            # `is None`, not `or`: @method(num_returns=0) means no return value.
            options["num_returns"] = opts.default_num_returns(member)
        options["is_async"] = inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(
            member
        )
        # Static methods take no instance; classmethods come bound to the
        # class (their signature has no `cls`); plain methods drop `self`.
        static = isinstance(inspect.getattr_static(cls, name, None), staticmethod)
        bound = inspect.ismethod(member)
        options["signature"] = CallCheck.of(member, drop_first=not (static or bound)).to_table()
        if isinstance(options.get("retry_exceptions"), (list, tuple)):
            # The table travels in msgpack (the control store keeps it for
            # get_actor): exception classes go as a pickle.
            options["retry_exceptions"] = dumps(tuple(options["retry_exceptions"]))
        methods[name] = options
    return methods


class ActorClass:
    """What `@remote` makes of a class.

    It behaves as the class does for everything but making instances: class
    attributes (inherited ones too), classmethods and staticmethods are
    reached through it (`__getattr__` reads them from the class), and `dir()`
    lists them, so autocompletion sees them. `__ray_actor_class__` is the
    undecorated class. As in Ray, a class cannot inherit from an actor class
    (TypeError at the class statement): it inherits from the undecorated one.
    """

    def __init__(self, cls: type, options: dict):
        if inspect.iscoroutinefunction(getattr(cls, SHUTDOWN, None)):
            raise TypeError(
                f"{cls.__name__}.{SHUTDOWN} must be a synchronous method (def, not async "
                "def), in async actors too, as in Ray: it is called as a plain function, "
                "outside the actor's event loop."
            )
        self._cls = cls
        self._options = opts.actor_options(options)
        self._methods = _method_table(cls)
        self._check_call = CallCheck.of(cls)
        self._descriptor: FunctionDescriptor | None = None
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def __getattr__(self, name: str):
        # Only what the instance and ActorClass lack gets here. Dunder names
        # stay unanswered: pickle and copy probe for __setstate__ and the
        # like before __init__ has run.
        cls = self.__dict__.get("_cls")
        if cls is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        try:
            return getattr(cls, name)
        except AttributeError:
            raise AttributeError(
                f"actor class '{cls.__name__}' has no attribute '{name}'"
            ) from None

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._cls)) | set(object.__dir__(self)))

    @property
    def __ray_actor_class__(self) -> type:
        """The undecorated class (Ray's name for it)."""
        return self._cls

    def __mro_entries__(self, bases):
        # `class Derived(ActorClassObject)`: this object is not a type, so
        # Python asks it for the real bases; Ray's rule is to refuse.
        raise TypeError(
            f"Attempted to define a subclass of actor class '{self.__name__}'. "
            "Inheriting from actor classes is not currently supported. You can instead "
            "inherit from a non-actor base class and make the derived class an actor class "
            f"(with @ray.remote): the undecorated class is {self.__name__}.__ray_actor_class__."
        )

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self.__name__}()', "
            f"use '{self.__name__}.remote()'."
        )

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_descriptor"] = None
        state["_check_call"] = None  # made again where it is first called
        return state

    def remote(self, *args, **kwargs) -> ActorHandle:
        return self._remote(args, kwargs, self._options)

    def options(self, **options) -> _BoundActorClass:
        return _BoundActorClass(self, opts.actor_options({**self._options, **options}))

    def bind(self, *args, **kwargs):
        """A DAG node for this actor (`solray.dag`): created at the DAG's
        first execute() and reused by the later ones."""
        from solray.dag import ClassNode

        return ClassNode(self, args, kwargs)

    def _remote(self, args, kwargs, options: dict) -> ActorHandle:
        from solray._private import worker

        if self._check_call is None:
            self._check_call = CallCheck.of(self._cls)
        self._check_call(args, kwargs)
        if context.client is not None:
            return context.client.call("remote", (self, args, kwargs, options))
        worker.auto_init()
        cw = context.require_core_worker()
        meta = {
            **self._described(),
            "methods": self._methods,
            # `async def __init__` too: it runs on the actor's event loop.
            "is_async": any(m["is_async"] for m in self._methods.values())
            or inspect.iscoroutinefunction(self._cls.__init__),
            "max_task_retries": options["max_task_retries"],
            "max_pending_calls": options["max_pending_calls"],
            "allow_out_of_order_execution": options["allow_out_of_order_execution"],
            "enable_task_events": options["enable_task_events"],
        }
        actor_id, meta, owner, existing = cw.create_actor(
            self._describe(cw), args, kwargs, options, meta
        )
        # An existing actor (get_if_exists) is looked up, as get_actor does.
        return ActorHandle(actor_id, meta, owned=owner == cw.address, owner=owner, weak=existing)

    def _describe(self, cw) -> FunctionDescriptor:
        if self._descriptor is None:
            self._descriptor = FunctionDescriptor.of(self._cls, self.__name__)
        return self._descriptor

    def _described(self) -> dict:
        """What the actor's handles say its class is (foreign drivers read
        it: XLANG_GET_ACTOR)."""
        return {"class_name": self.__name__, "module": self.__module__, "language": "python"}


class _BoundActorClass:
    def __init__(self, actor_class: ActorClass, options: dict):
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args, **kwargs) -> ActorHandle:
        return self._actor_class._remote(args, kwargs, self._options)

    def options(self, **options) -> _BoundActorClass:
        return _BoundActorClass(self._actor_class, opts.actor_options({**self._options, **options}))

    def bind(self, *args, **kwargs):
        from solray.dag import ClassNode

        return ClassNode(self, args, kwargs)


class ActorHandle:
    """A reference to an actor; picklable, so it can be passed anywhere.

    Handles are counted like ObjectRefs, in the same reference counter (an
    actor id is 16 bytes, an object id 28): a process holding a handle it did
    not create is a borrower its owner knows about, and handles inside values,
    arguments and results are held the same way. When the owner's count drops
    to zero, a non-detached actor is released (after its pending calls).

    A *weak* handle is not counted: `get_actor()` and `get_if_exists=True`
    give weak handles, as Ray does, so looking an actor up by name never
    keeps it alive once the handles from its creation are gone. Copies of a
    weak handle (pickled into arguments, results, values) are weak too."""

    def __init__(
        self,
        actor_id: bytes,
        meta: dict,
        owned: bool = False,
        owner: str = "",
        weak: bool = False,
    ):
        self._actor_id = actor_id
        self._meta = meta
        self._owned = owned
        self._owner = owner
        self._weak = weak
        self._call_checks: dict[str, CallCheck] = {}  # per method, made at its first call
        self._call_options: dict[str, dict] = {}  # per method, made at its first call
        if not weak:
            cw = context.core_worker or context.client
            if cw is not None:
                cw.add_ref(actor_id, owner or cw.address)

    def __del__(self):
        if self.__dict__.get("_weak", True):
            return
        cw = context.core_worker or context.client
        if cw is not None:
            try:
                cw.drop_ref(self._actor_id)
            except Exception:  # interpreter shutdown
                pass

    @property
    def _id(self) -> bytes:
        return self._actor_id

    def __getattr__(self, name: str) -> ActorMethod:
        meta = self.__dict__.get("_meta", {})
        methods = meta.get("methods", {})
        if (
            name not in methods
            and meta.get("language") in ("java", "cpp")
            and not name.startswith("__")
        ):
            # A Java or C++ actor's methods are not listed: its process finds them by name.
            return ActorMethod(self, name, {"num_returns": 1})
        if name not in methods:
            raise AttributeError(
                f"'{self.__dict__.get('_meta', {}).get('class_name', 'Actor')}' actor has "
                f"no method '{name}'"
            )
        return ActorMethod(self, name, methods[name])

    def __dir__(self) -> list[str]:
        # The actor's methods, so autocompletion offers them (as in Ray).
        return sorted(set(self._meta.get("methods", {})) | set(object.__dir__(self)))

    def __reduce__(self):
        if self._weak:
            return (_rebuild_handle, (self._actor_id, self._meta, self._owner, True))
        RefCollector.note(self)
        return (_rebuild_handle, (self._actor_id, self._meta, self._owner))

    def __repr__(self) -> str:
        return f"Actor({self._meta['class_name']}, {self._actor_id.hex()})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    @property
    def _ray_actor_id(self):
        return self._actor_id.hex()


def _rebuild_handle(actor_id: bytes, meta: dict, owner: str = "", weak: bool = False):
    return ActorHandle(actor_id, meta, owner=owner, weak=weak)


class ActorMethod:
    def __init__(self, handle: ActorHandle, name: str, options: dict):
        self._handle = handle
        self._name = name
        self._options = options  # from @method

    def __call__(self, *args, **kwargs):
        raise TypeError(
            "Actor methods cannot be called directly. Instead of running "
            f"'object.{self._name}()', try 'object.{self._name}.remote()'."
        )

    def remote(self, *args, **kwargs):
        return self._remote(args, kwargs, self._options)

    def options(self, **options) -> _BoundActorMethod:
        opts.validate_method_options(options, f"actor method {self._name}")
        return _BoundActorMethod(self, {**self._options, **options})

    def bind(self, *args, **kwargs):
        """A DAG node for a call of this method on this actor (`solray.dag`)."""
        from solray.dag import ClassMethodNode

        return ClassMethodNode(self, self._name, args, kwargs, {}, None)

    def _remote(self, args, kwargs, options: dict):
        handle = self._handle
        check = handle._call_checks.get(self._name)
        if check is None:
            check = CallCheck.from_table(self._options.get("signature"))
            handle._call_checks[self._name] = check
        check(args, kwargs)
        if context.client is not None:
            return context.client.call("remote", (self, args, kwargs, options))
        cw = context.require_core_worker()
        if options is self._options:  # no .options(): completed once per handle
            full = handle._call_options.get(self._name)
            if full is None:
                full = handle._call_options[self._name] = self._with_actor_options(options)
        else:
            full = self._with_actor_options(options)
        result = cw.submit_actor_task(handle._actor_id, self._name, args, kwargs, full)
        return unpack_returns(result, full["num_returns"])

    def _with_actor_options(self, options: dict) -> dict:
        """The call's options, completed with the actor's (which the
        submission only reads)."""
        meta = self._handle._meta
        options = dict(options)
        if options.get("max_task_retries") is None:  # the actor's own setting
            options["max_task_retries"] = meta.get("max_task_retries", 0)
        options["max_pending_calls"] = meta.get("max_pending_calls", -1)
        options["out_of_order"] = meta.get("allow_out_of_order_execution", False)
        options["class_name"] = meta.get("class_name")
        if options.get("enable_task_events") is None:  # the actor's own setting
            options["enable_task_events"] = meta.get("enable_task_events", True)
        if isinstance(options.get("retry_exceptions"), bytes):
            options["retry_exceptions"] = pickle.loads(options["retry_exceptions"])
        return options


class _BoundActorMethod:
    def __init__(self, method: ActorMethod, options: dict):
        self._method = method
        self._options = options

    def remote(self, *args, **kwargs):
        return self._method._remote(args, kwargs, self._options)

    def options(self, **options) -> _BoundActorMethod:
        opts.validate_method_options(options, f"actor method {self._method._name}")
        return _BoundActorMethod(self._method, {**self._options, **options})

    def bind(self, *args, **kwargs):
        from solray.dag import ClassMethodNode

        return ClassMethodNode(self, self._method._name, args, kwargs, {}, None)


class ActorExit(SystemExit):
    """Raised by exit_actor(); the worker ends the actor after replying."""


def exit_actor() -> None:
    """End the current actor, from inside one of its methods. It is not
    restarted, and calls still queued fail with ActorDiedError."""
    cw = context.require_core_worker()
    if cw.actor_id is None:
        raise TypeError("exit_actor API is called on a non-actor worker")
    raise ActorExit(0)


__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor", "method"]
