"""Refusing remote functions and actor classes whose pickled definition is
too large, with Ray's thresholds and message.

A definition travels with the first call to each worker and is cached there,
so a large array captured by accident (a closure variable, a global of the
driver's script, a class attribute) costs memory and time everywhere. Ray
warns above 10 MB and raises ValueError above FUNCTION_SIZE_ERROR_THRESHOLD
(100 MB unless that environment variable says otherwise). solray does the
same and adds to Ray's message the name of the largest thing the definition
captures, the likely culprit.
"""

from __future__ import annotations

import inspect
import logging
import os
import types

from solray._private.serialization import dumps

logger = logging.getLogger("solray")

WARN_THRESHOLD = 10**7
_DEFAULT_ERROR_THRESHOLD = 10**8
_MIB = 1024 * 1024


def error_threshold() -> int:
    return int(os.environ.get("FUNCTION_SIZE_ERROR_THRESHOLD", _DEFAULT_ERROR_THRESHOLD))


def check(pickled: bytes, target) -> None:
    """Raise ValueError if `target`'s pickled definition is too large; warn
    if it is large."""
    size, limit = len(pickled), error_threshold()
    if size <= min(WARN_THRESHOLD, limit):
        return
    if inspect.isclass(target):
        what = f"actor {target.__name__}"
    else:
        what = f"remote function {target.__module__}.{target.__qualname__}"
    advice = (
        "Check that its definition is not implicitly capturing a large array or other "
        "object in scope. Tip: use solray.put() to put large objects in the object store."
    )
    culprit = _largest_capture(target)
    if culprit is not None:
        name, culprit_size = culprit
        advice += f" The largest object it captures is {name} ({culprit_size // _MIB} MiB)."
    if size > limit:
        raise ValueError(
            f"The {what} is too large ({size // _MIB} MiB > FUNCTION_SIZE_ERROR_THRESHOLD="
            f"{limit // _MIB} MiB). {advice}"
        )
    logger.warning("The %s is very large (%d MiB). %s", what, size // _MIB, advice)


def _largest_capture(target) -> tuple[str, int] | None:
    """(description, pickled size) of the largest value `target` captures:
    its closures' variables, the globals its code reads, a class's
    attributes. None if it captures nothing that pickles."""
    sizes = []
    for name, value in _captures(target):
        try:
            sizes.append((len(dumps(value)), name))
        except Exception:
            continue
    if not sizes:
        return None
    size, name = max(sizes)
    return name, size


def _captures(target):
    functions = [target]
    if inspect.isclass(target):
        functions = []
        for cls in target.__mro__[:-1]:
            for attr, value in vars(cls).items():
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if isinstance(value, types.FunctionType):
                    functions.append(value)
                elif not (attr.startswith("__") and attr.endswith("__")):
                    yield f"the class attribute '{cls.__name__}.{attr}'", value
    for function in functions:
        code = function.__code__
        for var, cell in zip(code.co_freevars, function.__closure__ or (), strict=True):
            try:
                yield f"the closure variable '{var}' of {function.__qualname__}", cell.cell_contents
            except ValueError:  # an empty cell
                continue
        for var in _global_names(code):
            if var in function.__globals__:
                value = function.__globals__[var]
                if not isinstance(value, types.ModuleType):
                    yield f"the global '{var}' read by {function.__qualname__}", value


def _global_names(code: types.CodeType):
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _global_names(const)
