"""The process's current core worker, the one piece of global state.

`init()` sets it in a driver and worker_main sets it in a worker; ObjectRef
construction and the public API read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from solray._private.core_worker import CoreWorker

core_worker: CoreWorker | None = None


def require_core_worker() -> CoreWorker:
    if core_worker is None:
        raise RuntimeError(
            "solray is not initialized: call solray.init() first "
            "(or run this code inside a solray task)"
        )
    return core_worker
