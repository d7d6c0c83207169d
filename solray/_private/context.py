"""The process's current core worker, the one piece of global state.

`init()` sets it in a driver and worker_main sets it in a worker; ObjectRef
construction and the public API read it. A ray:// client has no core worker:
`init("ray://...")` sets `client` instead (client/client_worker.py), and the
public API forwards its calls there (see the client package's header).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from solray._private.client.client_worker import ClientWorker
    from solray._private.core_worker import CoreWorker

core_worker: CoreWorker | None = None
client: ClientWorker | None = None


def require_core_worker() -> CoreWorker:
    if core_worker is None:
        if client is not None:
            raise NotImplementedError(
                "this solray API is not available through a ray:// client connection: "
                "call it in a driver on a cluster node (init(address=...)) or in a task"
            )
        raise RuntimeError(
            "solray is not initialized: call solray.init() first "
            "(or run this code inside a solray task)"
        )
    return core_worker
