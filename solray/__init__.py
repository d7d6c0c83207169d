"""solray: a distributed task and object runtime with Ray Core's API.

    import solray as ray
    ray.init()

    @ray.remote
    def f(x):
        return x * 2

    assert ray.get([f.remote(i) for i in range(4)]) == [0, 2, 4, 6]

The public names load on first use (PEP 562): every solray process imports
this package, and the node and control store need none of the API, so they
start faster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_NAMES = {
    "available_resources": "solray._private.worker",
    "cancel": "solray._private.worker",
    "cluster_resources": "solray._private.worker",
    "get": "solray._private.worker",
    "get_actor": "solray._private.worker",
    "get_gpu_ids": "solray._private.worker",
    "init": "solray._private.worker",
    "is_initialized": "solray._private.worker",
    "kill": "solray._private.worker",
    "nodes": "solray._private.worker",
    "put": "solray._private.worker",
    "remote": "solray._private.worker",
    "shutdown": "solray._private.worker",
    "wait": "solray._private.worker",
    "method": "solray.actor",
    "ObjectRef": "solray.object_ref",
    "ObjectID": "solray._raylet",  # Ray's old name for ObjectRef
    "ObjectRefGenerator": "solray.object_ref_generator",
    "DynamicObjectRefGenerator": "solray.object_ref_generator",
    "get_runtime_context": "solray.runtime_context",
    "timeline": "solray._private.timeline",
}
_SUBMODULES = {
    "actor",
    "exceptions",
    "util",
    "cluster_utils",
    "runtime_context",
    "cloudpickle",
    "experimental",
    "job_config",
    "cross_language",
}

__all__ = sorted([*_NAMES, "actor", "exceptions", "util"])


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"solray.{name}")
    else:
        raise AttributeError(f"module 'solray' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from solray import actor, exceptions, util  # noqa: F401
    from solray._private.timeline import timeline  # noqa: F401
    from solray._private.worker import (  # noqa: F401
        available_resources,
        cancel,
        cluster_resources,
        get,
        get_actor,
        get_gpu_ids,
        init,
        is_initialized,
        kill,
        nodes,
        put,
        remote,
        shutdown,
        wait,
    )
    from solray._raylet import ObjectID  # noqa: F401
    from solray.actor import method  # noqa: F401
    from solray.object_ref import ObjectRef  # noqa: F401
    from solray.object_ref_generator import (  # noqa: F401
        DynamicObjectRefGenerator,
        ObjectRefGenerator,
    )
    from solray.runtime_context import get_runtime_context  # noqa: F401
