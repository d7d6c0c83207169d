"""RemoteFunction: what `@solray.remote` makes of a function."""

from __future__ import annotations

import inspect

from solray._private import context, worker
from solray._private import options as opts
from solray._private.signature import CallCheck
from solray._private.task_spec import FunctionDescriptor


class RemoteFunction:
    def __init__(self, function, options: dict):
        if inspect.isclass(function) or not callable(function):
            raise TypeError(f"@remote expects a function, got {function!r}")
        self._function = function
        self._options = opts.with_defaults(opts.validate_task_options(dict(options)))
        if self._options["num_gpus"] and "max_calls" not in options:
            # Ray's default for GPU functions: a fresh worker per call, so GPU
            # memory a library keeps cached is given back after each task.
            self._options["max_calls"] = 1
        if self._options["num_returns"] is None:
            self._options["num_returns"] = opts.default_num_returns(function)
        self._check_call = CallCheck.of(function)
        self._descriptor: FunctionDescriptor | None = None
        self._descriptor_owner = None
        self.__name__ = getattr(function, "__name__", "remote_function")
        self.__qualname__ = getattr(function, "__qualname__", self.__name__)
        self.__doc__ = function.__doc__
        self.__module__ = getattr(function, "__module__", None)

    def __getstate__(self):
        # A remote function captured by another one (a parent calling a child)
        # travels without its per-session cache, which holds the CoreWorker.
        state = dict(self.__dict__)
        state["_descriptor"] = None
        state["_descriptor_owner"] = None
        state["_check_call"] = None  # made again where it is first called
        return state

    def __call__(self, *args, **kwargs):
        raise TypeError(
            "Remote functions cannot be called directly. Instead of running "
            f"'{self.__module__}.{self.__name__}()', "
            f"try '{self.__module__}.{self.__name__}.remote()'."
        )

    def remote(self, *args, **kwargs):
        return self._remote(args, kwargs, self._options)

    def options(self, **options) -> _BoundOptions:
        return _BoundOptions(self, opts.merge(self._options, options))

    def bind(self, *args, **kwargs):
        """A DAG node for this call (`solray.dag`); `execute()` submits it."""
        from solray.dag import FunctionNode

        return FunctionNode(self, args, kwargs)

    def _remote(self, args, kwargs, options: dict):
        if self._check_call is None:
            self._check_call = CallCheck.of(self._function)
        self._check_call(args, kwargs)
        if context.client is not None:
            return context.client.call("remote", (self, args, kwargs, options))
        worker.auto_init()
        cw = context.require_core_worker()
        if options["num_returns"] is None:  # .options(num_returns=None)
            options = dict(options, num_returns=opts.default_num_returns(self._function))
        result = cw.submit_task(self._describe(cw), args, kwargs, options)
        return unpack_returns(result, options["num_returns"])

    def _describe(self, cw) -> FunctionDescriptor:
        # Pickled once per session.
        if self._descriptor is None or self._descriptor_owner != id(cw):
            self._descriptor = FunctionDescriptor.of(self._function, self.__name__)
            self._descriptor_owner = id(cw)
        return self._descriptor


def unpack_returns(result, num_returns):
    """What `.remote()` returns: one ref, None, a list of refs, or a generator."""
    if num_returns == "streaming":
        return result
    if num_returns == 1 or num_returns == "dynamic":
        return result[0]
    if num_returns == 0:
        return None
    return result


class _BoundOptions:
    """`f.options(...)`: the same function with some options overridden."""

    def __init__(self, function: RemoteFunction, options: dict):
        self._function = function
        self._options = options

    def remote(self, *args, **kwargs):
        return self._function._remote(args, kwargs, self._options)

    def options(self, **options) -> _BoundOptions:
        return _BoundOptions(self._function, opts.merge(self._options, options))

    def bind(self, *args, **kwargs):
        from solray.dag import FunctionNode

        return FunctionNode(self, args, kwargs)

    @property
    def __name__(self) -> str:
        return self._function.__name__
