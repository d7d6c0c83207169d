"""`inspect_serializability`: find what stops a value from pickling.

It tries the value with solray's pickler; on failure it walks into what the
value refers to (a function's globals and closure variables, an object's
methods and attributes), `depth` levels down, and reports the innermost
members that fail, in the report format Ray prints.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from solray._private.serialization import dumps

_RULE_MAX = 80


class FailureTuple:
    """One value that failed to pickle: `obj`, the `path` of names that led
    to it from the inspected value, and the `parent` that holds it."""

    def __init__(self, obj: Any, path: tuple, parent: Any):
        self.obj = obj
        self.path = path
        self.parent = parent

    @property
    def name(self) -> str | None:
        return self.path[-1] if self.path else None

    def __repr__(self) -> str:
        names = [str(p) if p is not None else "unknown" for p in self.path]
        last = names[-1] if names else "unknown"
        return (
            f"FailTuple({last} [path={' -> '.join(names)}, obj={self.obj}, parent={self.parent}])"
        )


class _Report:
    def __init__(self, file):
        self.file = file
        self.level = 0

    def line(self, text: str) -> None:
        print("    " * self.level + text, file=self.file or sys.stdout)


def inspect_serializability(
    base_obj: Any, name: str | None = None, depth: int = 3, print_file: Any = None
) -> tuple[bool, set[FailureTuple]]:
    """Whether `base_obj` pickles, and the set of members found to stop it
    (empty if it pickles). Prints a report to `print_file` (stdout)."""
    report = _Report(print_file)
    title = f"Checking Serializability of {base_obj}"
    rule = "=" * min(len(title), _RULE_MAX)
    report.line(rule)
    report.line(title)
    report.line(rule)
    failures: set[FailureTuple] = set()
    path = (name,) if name is not None else ()
    ok = _inspect(base_obj, path, depth, None, failures, report)
    if ok:
        return True, failures
    report.line(rule)
    listing = "\n".join(str(f) for f in failures)
    report.line(
        f"Variable: \n\n\t{listing}\n\nwas found to be non-serializable. There may be "
        "multiple other undetected variables that were non-serializable. "
    )
    report.line(
        "Consider either removing the instantiation/imports of these variables or moving "
        "the instantiation into the scope of the function/class. "
    )
    report.line(rule)
    report.line(
        "Check https://docs.ray.io/en/master/ray-core/objects/serialization.html#troubleshooting "
        "for more information."
    )
    report.line(rule)
    return False, failures


def _pickles(obj: Any, report: _Report) -> bool:
    try:
        dumps(obj)
        return True
    except Exception as e:
        report.line(f"!!! FAIL serialization: {e}")
        return False


def _inspect(obj, path: tuple, depth: int, parent, failures: set, report: _Report) -> bool:
    """Whether `obj` pickles; if not, adds the failing members found within
    `depth` levels (or `obj` itself, if none is found) to `failures`."""
    if path and parent is not None:
        report.line(f"Serializing '{path[-1]}' {obj}...")
    if _pickles(obj, report):
        return True
    before = len(failures)
    if depth > 0:
        report.level += 1
        members = _members(obj, report)
        for member_name, member in members:
            if not _inspect(member, (*path, member_name), depth - 1, obj, failures, report):
                break  # the first failing member is enough, as in Ray
        else:
            report.line(
                f"WARNING: Did not find non-serializable object in {obj}. This may be an oversight."
            )
        report.level -= 1
    if len(failures) == before:
        failures.add(FailureTuple(obj, path, parent))
    return False


def _members(obj, report: _Report) -> list[tuple[str, Any]]:
    """What `obj` refers to that may be what fails: a function's globals and
    closure variables; an object's functions, then its other non-dunder
    attributes."""
    if inspect.isfunction(obj):
        found = inspect.getclosurevars(obj)
        members = []
        for kind, variables in (("global", found.globals), ("nonlocal", found.nonlocals)):
            if variables:
                report.line(
                    f"Detected {len(variables)} {kind} variables. Checking serializability..."
                )
                members.extend(variables.items())
        return members
    try:
        attributes = inspect.getmembers(obj)
    except Exception:
        return []
    functions = [(n, v) for n, v in attributes if inspect.isfunction(v)]
    others = [
        (n, v)
        for n, v in attributes
        if not (n.startswith("__") and n.endswith("__"))
        and not inspect.isbuiltin(v)
        and not inspect.isfunction(v)
    ]
    return functions + others


__all__ = ["FailureTuple", "inspect_serializability"]
