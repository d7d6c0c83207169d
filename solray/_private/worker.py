"""The public API's implementation: init, shutdown, get, put, wait, ...

`init()` with no address starts a one-node cluster (a control store and a
node, separate processes) as children of this driver, connects this process's
core worker to it, and stops it all at `shutdown()` or interpreter exit.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import shutil
import sys
import uuid
from typing import Any

import msgpack

from solray import exceptions
from solray._private import context, ids, services, transport
from solray._private.core_worker import CoreWorker
from solray._private.protocol import Msg
from solray.object_ref import ObjectRef
from solray.object_ref_generator import ObjectRefGenerator

logger = logging.getLogger(__name__)

_cluster: services.Launcher | None = None  # the cluster init() started, if it did
_namespace: str | None = None
_atexit_registered = False


class RayContext(dict):
    """What `init()` returns: the cluster's addresses, dict-like as in Ray."""

    def __init__(self, info: dict):
        super().__init__(info)
        self.address_info = info

    @property
    def address(self) -> str:
        return self["address"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()


def is_initialized() -> bool:
    return context.core_worker is not None


def current_namespace() -> str | None:
    return _namespace


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    namespace: str | None = None,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    log_to_driver: bool = True,
    logging_level: int | str = logging.WARNING,
    runtime_env: dict | None = None,
    _temp_dir: str | None = None,
    **kwargs: Any,
) -> RayContext:
    """Start a local cluster (or connect to one) and connect this driver."""
    global _cluster, _namespace, _atexit_registered
    if is_initialized():
        if ignore_reinit_error:
            return RayContext(_context_info())
        raise RuntimeError(
            "Maybe you called solray.init twice by accident? This error can be suppressed "
            "by passing in 'ignore_reinit_error=True' or by calling 'solray.shutdown()' "
            "prior to 'solray.init()'."
        )
    unknown = set(kwargs) - {
        "configure_logging",
        "log_to_driver",
        "dashboard_host",
        "dashboard_port",
        "local_mode",
        "_system_config",
    }
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {sorted(unknown)}")
    _validate_init_resources(num_cpus, num_gpus, resources, object_store_memory)
    address = address or os.environ.get("SOLRAY_ADDRESS")
    if address is not None:
        if num_cpus is not None or num_gpus is not None or resources or object_store_memory:
            raise ValueError(
                "When connecting to an existing cluster, num_cpus, num_gpus, resources and "
                "object_store_memory must not be given: the cluster's nodes have theirs."
            )
        control_address, token = services.resolve_cluster(address, _temp_dir)
        cw = CoreWorker(is_driver=True, token=token, control_address=control_address)
        launcher = None
    else:
        launcher, control_address, node_address = _start_cluster(
            num_cpus, num_gpus, resources, object_store_memory, kwargs, logging_level, _temp_dir
        )
        cw = CoreWorker(is_driver=True, token=launcher.token, node_address=node_address)
    try:
        cw.start()
    except BaseException as e:
        cw.shutdown()  # its I/O thread and sockets are already running
        if launcher is not None:
            launcher.stop()
            shutil.rmtree(launcher.session_dir, ignore_errors=True)
        if isinstance(e, transport.ConnectionLost) and launcher is None:
            raise ConnectionError(
                f"Could not connect to the cluster at {address!r}: it closed the connection "
                "during authentication. Is the cluster token right? (SOLRAY_TOKEN, "
                "SOLRAY_TOKEN_FILE, or the token file `solray start` printed)"
            ) from None
        raise
    if launcher is not None:
        services.write_session_file(
            launcher.session_dir, node_address, control_address, launcher.token
        )
    cw.print_logs = log_to_driver
    _cluster = launcher
    _namespace = namespace or f"anonymous_{uuid.uuid4().hex[:12]}"
    cw.namespace = _namespace
    context.core_worker = cw
    cw.on_node_lost = _on_node_lost
    job_info = {"sys_path": [p for p in sys.path if p], "cwd": os.getcwd(), "namespace": _namespace}
    cw.request(
        "control", Msg.KV_PUT, {"ns": "job", "key": cw.job_bytes.hex()}, [msgpack.packb(job_info)]
    )
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True
    return RayContext(_context_info())


def _start_cluster(
    num_cpus, num_gpus, resources, object_store_memory, kwargs, logging_level, temp_dir
):
    level = logging.getLevelName(logging_level) if isinstance(logging_level, int) else logging_level
    node_args = node_arguments(
        num_cpus, num_gpus, resources, object_store_memory, kwargs.get("_system_config") or {}
    )
    return services.start_local_cluster(
        services.new_session_dir(temp_dir),
        node_args,
        log_level=str(level),
        control_args=control_store_arguments(kwargs.get("_system_config") or {}),
    )


def node_arguments(
    num_cpus, num_gpus, resources, object_store_memory, system_config: dict
) -> list[str]:
    """The node command line for init()-style resource arguments."""
    node_args = []
    if num_cpus is not None:
        node_args += ["--num-cpus", str(num_cpus)]
    if num_gpus:
        node_args += ["--num-gpus", str(num_gpus)]
    if resources:
        node_args += ["--resources", json.dumps(resources)]
    if object_store_memory:
        node_args += ["--object-store-memory", str(int(object_store_memory))]
    spill_dir = _spill_directory(system_config)
    if spill_dir:
        node_args += ["--spill-dir", spill_dir]
    if "memory_usage_threshold" in system_config:
        node_args += [
            "--memory-usage-threshold",
            str(float(system_config["memory_usage_threshold"])),
        ]
    if "memory_monitor_refresh_ms" in system_config:
        node_args += [
            "--memory-monitor-refresh-ms",
            str(int(system_config["memory_monitor_refresh_ms"])),
        ]
    return node_args


def control_store_arguments(system_config: dict) -> list[str]:
    """The control store command line for `_system_config` settings."""
    if "heartbeat_timeout_s" in system_config:
        return ["--heartbeat-timeout-s", str(float(system_config["heartbeat_timeout_s"]))]
    return []


def _spill_directory(system_config: dict) -> str | None:
    """Where full stores spill: `_system_config={"object_spilling_directory":
    path}`, or Ray's `object_spilling_config` JSON of type "filesystem"."""
    if "object_spilling_directory" in system_config:
        return str(system_config["object_spilling_directory"])
    config = system_config.get("object_spilling_config")
    if config:
        spec = json.loads(config) if isinstance(config, str) else config
        if spec.get("type") != "filesystem":
            raise ValueError(
                f"object_spilling_config type {spec.get('type')!r} is not supported; "
                "use 'filesystem'"
            )
        path = spec.get("params", {}).get("directory_path")
        if isinstance(path, list):
            path = path[0]
        return path
    return None


def _validate_init_resources(num_cpus, num_gpus, resources, object_store_memory) -> None:
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"init(): {name} must be a non-negative number, got {value!r}")
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError(f"init(): resources must be a dict, got {type(resources).__name__}")
        if "CPU" in resources or "GPU" in resources:
            raise ValueError("init(): use num_cpus and num_gpus instead of resources['CPU'/'GPU']")
        for key, amount in resources.items():
            if not isinstance(key, str):
                raise TypeError(f"init(): resource names must be strings, got {key!r}")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)):
                raise TypeError(f"init(): resources[{key!r}] must be a number, got {amount!r}")
            if not math.isfinite(amount) or amount < 0:
                raise ValueError(
                    f"init(): resources[{key!r}] must be a non-negative number, got {amount!r}"
                )
    if object_store_memory is not None and (
        isinstance(object_store_memory, bool)
        or not isinstance(object_store_memory, int)
        or object_store_memory <= 0
    ):
        raise ValueError(
            f"init(): object_store_memory must be a positive int (bytes), got "
            f"{object_store_memory!r}"
        )
    if object_store_memory is not None:
        shm_size = shutil.disk_usage(services.SHM_ROOT).total
        if object_store_memory > shm_size:
            raise ValueError(
                f"init(): object_store_memory={object_store_memory} bytes is more than "
                f"{services.SHM_ROOT} can hold ({shm_size} bytes)"
            )


def _context_info() -> dict:
    cw = context.require_core_worker()
    return {
        "address": cw.node_info["control_address"],
        "node_id": cw.node_info["node_id"],
        "node_ip_address": cw.node_info["ip"],
        "session_dir": cw.node_info["session_dir"],
        "namespace": _namespace,
    }


def _on_node_lost() -> None:
    logger.error("the local node has died; solray calls will fail until shutdown()")
    print("solray: error: the local node process died", file=sys.stderr, flush=True)


def auto_init() -> None:
    """Ray starts a cluster on the first `.remote()` or `put` without `init()`."""
    if not is_initialized():
        init()


def shutdown(_exiting_interpreter: bool = False) -> None:
    global _cluster
    cw = context.core_worker
    if cw is None:
        return
    context.core_worker = None
    cw.shutdown()
    launcher, _cluster = _cluster, None
    if launcher is not None:
        launcher.stop()
        shutil.rmtree(launcher.session_dir, ignore_errors=True)


def get(object_refs, *, timeout: float | None = None):
    cw = context.require_core_worker()
    if isinstance(object_refs, ObjectRef):
        return cw.get([object_refs], timeout)[0]
    if isinstance(object_refs, (list, tuple)):
        for ref in object_refs:
            if not isinstance(ref, ObjectRef):
                raise ValueError(
                    f"'object_refs' must either be an ObjectRef or a list of ObjectRefs, "
                    f"but the list holds a {type(ref).__name__}"
                )
        return cw.get(list(object_refs), timeout)
    raise ValueError(
        "'object_refs' must either be an ObjectRef or a list of ObjectRefs, "
        f"got {type(object_refs).__name__}"
    )


def put(value, *, _owner=None) -> ObjectRef:
    auto_init()
    return context.require_core_worker().put(value)


def wait(
    object_refs, *, num_returns: int = 1, timeout: float | None = None, fetch_local: bool = True
):
    """(ready, not_ready), each in the order given. A streaming generator is
    ready when its next item (or its end) is there."""
    cw = context.require_core_worker()
    if isinstance(object_refs, (ObjectRef, ObjectRefGenerator)):
        raise TypeError(
            "wait() expected a list of ObjectRef, got a single ObjectRef. "
            "Wrap it in a list: solray.wait([ref])"
        )
    if not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() expected a list of ObjectRef, got {type(object_refs).__name__}")
    items = list(object_refs)
    keys = []
    for item in items:
        if type(item) is ObjectRef:
            keys.append(item._id)
        elif isinstance(item, (ObjectRef, ObjectRefGenerator)):
            keys.append(item._id if isinstance(item, ObjectRef) else item.next_object_id())
        else:
            raise TypeError(f"wait() expected a list of ObjectRef, but it holds {item!r}")
    if len(set(keys)) != len(keys):
        raise ValueError("Wait requires a list of unique object refs.")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns!r}.")
    if num_returns > len(items):
        raise ValueError("num_returns cannot be greater than the number of objects provided.")
    if timeout is not None and timeout < 0:
        raise ValueError(f"The 'timeout' argument must be nonnegative. Received {timeout}")
    present = cw.memory_store.contains
    if sum(1 for key in keys if present(key)) < num_returns:
        refs = [i for i in items if isinstance(i, ObjectRef)]
        cw.wait(keys, refs, num_returns, timeout)
    ready, not_ready = [], []
    for item, key in zip(items, keys, strict=True):
        if len(ready) < num_returns and present(key):
            ready.append(item)
        else:
            not_ready.append(item)
    return ready, not_ready


def cancel(object_ref, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that produces `object_ref` (or a streaming generator).

    A queued task is dropped; a running one gets KeyboardInterrupt (force=True
    kills its worker instead); with `recursive`, tasks it submitted are
    cancelled too. `get` then raises TaskCancelledError; cancelled tasks are
    never retried; a finished task is left alone."""
    cw = context.require_core_worker()
    if isinstance(object_ref, ObjectRefGenerator):
        task_id = object_ref._task_id
    elif isinstance(object_ref, ObjectRef):
        task_id = ids.task_id_of(object_ref._id)
    else:
        raise TypeError(
            f"solray.cancel() only supports ObjectRef and ObjectRefGenerator, got "
            f"{type(object_ref).__name__}. To end an actor, use solray.kill()."
        )
    cw.cancel(task_id, force, recursive)


def get_gpu_ids() -> list[int]:
    cw = context.require_core_worker()
    task = cw.current_task
    return list(task.gpu_ids) if task is not None else []


def nodes() -> list[dict]:
    cw = context.require_core_worker()
    result = []
    for info in cw.request("control", Msg.GET_NODES, None):
        host, _, port = info["address"].rpartition(":")
        result.append(
            {
                "NodeID": info["node_id"],
                "Alive": info["alive"],
                "alive": info["alive"],
                "NodeManagerAddress": info["ip"],
                "NodeManagerHostname": host,
                "NodeManagerPort": int(port),
                "ObjectManagerPort": int(port),
                "ObjectStoreSocketName": info["arena_path"],
                "RayletSocketName": info["address"],
                "NodeName": info["ip"],
                "Resources": info["resources_total"] if info["alive"] else {},
                "Labels": {},
            }
        )
    return result


def cluster_resources() -> dict[str, float]:
    return _sum_resources("resources_total")


def available_resources() -> dict[str, float]:
    return {k: v for k, v in _sum_resources("resources_available").items() if v > 0}


def _sum_resources(field: str) -> dict[str, float]:
    cw = context.require_core_worker()
    total: dict[str, float] = {}
    for info in cw.request("control", Msg.GET_NODES, None):
        if info["alive"]:
            for k, v in info[field].items():
                total[k] = total.get(k, 0.0) + v
    return total


def remote(*args, **kwargs):
    """`@remote` or `@remote(**options)` on a function."""
    from solray.actor import ActorClass
    from solray.remote_function import RemoteFunction

    def make(target, options):
        if isinstance(target, type):
            return ActorClass(target, options)
        return RemoteFunction(target, options)

    if len(args) == 1 and not kwargs and callable(args[0]):
        return make(args[0], {})
    if args:
        raise TypeError(
            "The @remote decorator must be applied either with no arguments and no "
            "parentheses, for example '@remote', or it must be applied using some of "
            "the arguments in the list ['num_cpus', 'num_gpus', 'resources', ...], for "
            "example '@remote(num_returns=2, resources={\"CustomResource\": 1})'."
        )

    def decorator(target):
        return make(target, kwargs)

    return decorator


def get_actor(name: str, namespace: str | None = None):
    """The handle of the named actor; ValueError if there is none."""
    from solray.actor import ActorHandle

    if not isinstance(name, str) or not name:
        raise ValueError(f"Please supply a non-empty name, got {name!r}")
    cw = context.require_core_worker()
    namespace = namespace or cw.namespace
    reply = cw.request("control", Msg.GET_NAMED_ACTOR, {"name": name, "namespace": namespace})
    if reply is None:
        raise ValueError(
            f"Failed to look up actor with name '{name}' in namespace "
            f"'{namespace}'. This could be because 1. You are trying to look up "
            "a named actor you didn't create. 2. The named actor died. "
            "3. You did not use a namespace matching the namespace of the actor."
        )
    return ActorHandle(reply["actor_id"], reply["meta"], owner=reply.get("owner", ""))


def kill(actor, *, no_restart: bool = True) -> None:
    """Forcefully end an actor's process. Calls in flight fail with
    ActorDiedError; with no_restart=False it restarts if max_restarts allows."""
    from solray.actor import ActorHandle

    if not isinstance(actor, ActorHandle):
        raise ValueError(
            f"solray.kill() only supports actors; got {type(actor).__name__}. "
            "For tasks, use solray.cancel()."
        )
    cw = context.require_core_worker()
    cw.request("control", Msg.KILL_ACTOR, {"actor_id": actor._actor_id, "no_restart": no_restart})
    if no_restart:
        cw.post(cw.actor_submitter.mark_killed, actor._actor_id)


__all__ = ["exceptions"]
