"""What the C++ test program (cpp/tests/api_tests.cc, run by test_cpp_api.py)
calls in Python through solray's C++ API: its code_search_path names this
directory, so the cluster's workers import this module by name."""

from __future__ import annotations

import numpy as np
from conftest import wait_for_file

from solray.util import state


def echo(value):
    return value


def add(a, b):
    return a + b


def describe(value) -> str:
    """The Python type a C++ value arrived as (a numpy array's dtype and shape)."""
    if isinstance(value, np.ndarray):
        return f"ndarray {value.dtype} {list(value.shape)}"
    if isinstance(value, dict):
        pairs = (f"{type(k).__name__}:{type(v).__name__}" for k, v in value.items())
        return "dict " + " ".join(pairs)
    if isinstance(value, list):
        return "list " + " ".join(type(v).__name__ for v in value)
    return type(value).__name__


def matrix():
    return np.arange(6, dtype=np.int64).reshape(2, 3)


def python_set():
    return {1, 2}


def divide(a, b):
    return a / b


def nothing() -> None:
    return None


def released_when(path: str) -> str:
    """Finishes once `path` exists (the C++ test makes it when it is done
    waiting)."""
    wait_for_file(path, timeout=60)
    return "released"


def held(object_id: str) -> bool:
    """Whether some process of the cluster still references the object."""
    return bool(state.get_objects(object_id))


class Counter:
    def __init__(self, start: int):
        self.value = start

    def increment(self, by: int) -> int:
        self.value += by
        return self.value

    def fail(self) -> None:
        raise RuntimeError(f"counter at {self.value} refuses")
