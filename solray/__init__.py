"""solray: a distributed task and object runtime with Ray Core's API.

import solray as ray
ray.init()

@ray.remote
def f(x):
    return x * 2

assert ray.get([f.remote(i) for i in range(4)]) == [0, 2, 4, 6]
"""

from solray import (
    actor,
    exceptions,
    util,  # noqa: E402  (ray.util.* as in Ray; imports the names above)
)
from solray._private.worker import (
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
from solray.actor import method
from solray.object_ref import ObjectRef
from solray.object_ref_generator import DynamicObjectRefGenerator, ObjectRefGenerator
from solray.runtime_context import get_runtime_context

__version__ = "0.1.0"

__all__ = [
    "DynamicObjectRefGenerator",
    "ObjectRef",
    "ObjectRefGenerator",
    "available_resources",
    "cancel",
    "cluster_resources",
    "actor",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "util",
    "wait",
]
