"""Ray's collective types (`ray.util.collective.types`): the reduce
operations and the backend names.

`Backend(name)` accepts Ray's names, case-insensitively, and returns the
name; an unknown one is a ValueError and "mpi" a RuntimeError, as in Ray.
Which backends can actually run here is collective.py's business.
"""

from __future__ import annotations

from enum import Enum


class Backend:
    NCCL = "nccl"
    MPI = "mpi"
    GLOO = "gloo"
    TORCH_GLOO = "torch_gloo"
    NIXL = "nixl"
    UNRECOGNIZED = "unrecognized"

    def __new__(cls, name: str) -> str:  # type: ignore[misc]
        if not isinstance(name, str):
            raise ValueError(f"Unrecognized backend: {name!r}. Backends are names (str).")
        backend = getattr(Backend, name.upper(), Backend.UNRECOGNIZED)
        if backend == Backend.UNRECOGNIZED or not isinstance(backend, str):
            raise ValueError(
                f"Unrecognized backend: '{name}'. Known backends: "
                f"{', '.join(repr(b) for b in _NAMES)}."
            )
        if backend == Backend.MPI:
            raise RuntimeError("Ray does not support MPI backend.")
        return backend


_NAMES = (Backend.NCCL, Backend.GLOO, Backend.TORCH_GLOO, Backend.NIXL)


class ReduceOp(Enum):
    SUM = 0
    PRODUCT = 1
    MIN = 2
    MAX = 3
