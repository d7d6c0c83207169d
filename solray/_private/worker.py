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
import shlex
import shutil
import sys
import time
import uuid
from typing import Any

import msgpack

from solray import exceptions
from solray._private import advice, context, ids, init_options, services, tls, transport
from solray._private.core_worker import CoreWorker
from solray._private.labels import validate_labels
from solray._private.protocol import Msg
from solray._private.runtime_env import resolve, spec
from solray.job_config import JOB_CONFIG_ENV, JobConfig
from solray.job_config import checked as checked_job_config
from solray.object_ref import ObjectRef, ref_id
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

    @property
    def dashboard_url(self) -> str | None:
        """HOST:PORT of the cluster's dashboard (None without one), as Ray's."""
        return self["webui_url"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()


def is_initialized() -> bool:
    return context.core_worker is not None or context.client is not None


def current_namespace() -> str | None:
    return _namespace


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    ignore_reinit_error: bool = False,
    configure_logging: bool = True,
    logging_level: int | str = logging.WARNING,
    logging_format: str | None = None,
    log_to_driver: bool | None = None,
    namespace: str | None = None,
    object_spilling_directory: str | None = None,
    labels: dict[str, str] | None = None,
    job_config: JobConfig | None = None,
    runtime_env: dict | None = None,
    include_dashboard: bool | None = None,
    dashboard_host: str = init_options.DEFAULT_DASHBOARD_HOST,
    dashboard_port: int | None = None,
    _temp_dir: str | None = None,
    _system_config: dict | None = None,
    _node_ip_address: str | None = None,
    _node_name: str | None = None,
    _memory: int | None = None,
    _metrics_export_port: int | None = None,
    _enable_object_reconstruction: bool = False,
    _skip_env_hook: bool = False,
    **unsupported: Any,
) -> RayContext:
    """Start a local cluster (or connect to one) and connect this driver.

    `address`: None starts a new cluster (unless SOLRAY_ADDRESS, or Ray's
    RAY_ADDRESS, names one),
    "local" always starts one, "auto" joins the newest running cluster of this
    user, "HOST:PORT" joins the cluster whose control store is there,
    "ray://HOST:PORT" connects as a thin client to the client server there
    (`solray start --head` runs one, port 10001; see _private/client/). Ray
    options solray does not have (`unsupported`, see init_options.py) raise
    NotImplementedError naming them unless given their "off" value.
    `_enable_object_reconstruction` is accepted either way: as in Ray 2, lost
    task outputs are always reconstructed. `_skip_env_hook` is accepted: solray
    has no runtime-env hook to skip. `_metrics_export_port`: the port of the
    node's Prometheus endpoint (util.metrics), on loopback; default a free
    port (`ray.nodes()[i]["MetricsExportPort"]`, and in what init returns).
    `include_dashboard` (None: yes, as in Ray), `dashboard_host`,
    `dashboard_port` (None: 8265, or a free port if 8265 is taken): the web
    dashboard of a new cluster (solray/dashboard/); what init returns holds
    its address (`dashboard_url`), also when joining a cluster."""
    init_options.refuse_unsupported(unsupported)
    system_config = init_options.check_system_config(_system_config)
    advice.enabled_from_environment()  # a bad SOLRAY_ANTI_PATTERN_ADVICE fails here
    level = init_options.log_level(logging_level)
    for name, flag in (
        ("ignore_reinit_error", ignore_reinit_error),
        ("configure_logging", configure_logging),
        ("_enable_object_reconstruction", _enable_object_reconstruction),
        ("_skip_env_hook", _skip_env_hook),
    ):
        init_options.check_flag(name, flag)
    if log_to_driver is not None:
        init_options.check_flag("log_to_driver", log_to_driver)
    job_config = checked_job_config(job_config)
    # The job's env: init's runtime_env, else its JobConfig's (Ray's order).
    job_env = spec.validate(
        runtime_env if runtime_env is not None else job_config.runtime_env, "init()"
    )
    namespace = namespace if namespace is not None else job_config.ray_namespace
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise ValueError(f"init(): namespace must be a non-empty string, got {namespace!r}")
    if _node_name is not None and (not isinstance(_node_name, str) or not _node_name):
        raise ValueError(f"init(): _node_name must be a non-empty string, got {_node_name!r}")
    ip = init_options.check_node_ip_address(_node_ip_address)
    memory = init_options.check_memory(_memory)
    metrics_port = init_options.check_port("_metrics_export_port", _metrics_export_port)
    dashboard = init_options.check_dashboard(include_dashboard, dashboard_host, dashboard_port)
    if configure_logging:
        init_options.configure_driver_logging(level, logging_format)
    if is_initialized():
        if ignore_reinit_error:
            return RayContext(_context_info())
        raise RuntimeError(
            "Maybe you called solray.init twice by accident? This error can be suppressed "
            "by passing in 'ignore_reinit_error=True' or by calling 'solray.shutdown()' "
            "prior to 'solray.init()'."
        )
    _validate_init_resources(num_cpus, num_gpus, resources, object_store_memory)
    labels = validate_labels(labels, "init(labels=...)")
    tls.client_context()  # TLS settings that cannot work fail here, before anything starts
    if address is None:
        address = os.environ.get("SOLRAY_ADDRESS") or os.environ.get("RAY_ADDRESS") or None
    elif address == "local":
        address = None
    if address is not None:
        client_mode = address.startswith(CLIENT_SCHEME)
        new_node_options = {
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "resources": resources,
            "object_store_memory": object_store_memory,
            "object_spilling_directory": object_spilling_directory,
            "labels": labels,
            "_system_config": system_config,
            "_memory": memory,
            "_node_name": _node_name,
            "_metrics_export_port": metrics_port,
            "include_dashboard": include_dashboard,
            "dashboard_host": (
                None if dashboard_host == init_options.DEFAULT_DASHBOARD_HOST else dashboard_host
            ),
            "dashboard_port": dashboard_port,
        }
        if client_mode:
            new_node_options["_node_ip_address"] = ip
        given = [name for name, value in new_node_options.items() if value not in (None, {})]
        if given:
            raise ValueError(
                f"When connecting to an existing cluster, {', '.join(given)} must not be "
                "given: they configure a new cluster's node, and the cluster's nodes have "
                "theirs."
            )
        if client_mode:
            given = job_config.code_search_path or job_config.jvm_options or job_config.metadata
            if given or job_env:
                raise NotImplementedError(
                    "init(): runtime_env and job_config code_search_path, jvm_options and "
                    "metadata are not available through a ray:// connection (the client's "
                    "driver runs on the head, where the client's files are not)"
                )
            _connect_client(address[len(CLIENT_SCHEME) :], namespace, log_to_driver, _temp_dir)
            return RayContext(_context_info())
        control_address, token = services.resolve_cluster(address, _temp_dir)
        job_env = _with_submitted_job(job_config, job_env)
        join_cluster(
            control_address,
            token,
            ip=ip,
            namespace=namespace,
            log_to_driver=log_to_driver,
            job_config=job_config,
            runtime_env=job_env,
        )
        return RayContext(_context_info())
    else:
        if memory is not None:
            resources = {**(resources or {}), "memory": memory}
        system_config = with_spilling_directory(system_config, object_spilling_directory)
        node_args = node_arguments(
            num_cpus, num_gpus, resources, object_store_memory, system_config, labels=labels
        )
        if _node_name is not None:
            node_args += ["--node-name", _node_name]
        try:
            launcher, control_address, node_address = services.start_local_cluster(
                services.new_session_dir(_temp_dir),
                node_args,
                host=ip or "127.0.0.1",
                log_level=logging.getLevelName(level),
                control_args=control_store_arguments(system_config),
                metrics_export_port=metrics_port or 0,
                dashboard=dashboard,
            )
        except OSError as e:
            port_errors = (services.MetricsPortError, services.DashboardPortError)
            if ip is None or isinstance(e, port_errors):
                raise
            raise ValueError(f"init(): cannot listen on _node_ip_address={ip!r}: {e}") from None
        cw = CoreWorker(is_driver=True, token=launcher.token, node_address=node_address)
    _start_driver(cw, launcher, namespace, log_to_driver, job_config, job_env)
    services.write_session_file(
        launcher.session_dir,
        node_address,
        control_address,
        launcher.token,
        dashboard_url=launcher.dashboard_url,
    )
    if launcher.dashboard_url is not None:
        logger.info(
            "Started a local solray instance. View the dashboard at %s://%s (log in with "
            "the token in %s)",
            "https" if tls.enabled() else "http",
            launcher.dashboard_url,
            os.path.join(launcher.session_dir, "token"),
        )
    return RayContext(_context_info())


CLIENT_SCHEME = "ray://"


def _with_submitted_job(job_config: JobConfig, job_env: dict) -> dict:
    """In a driver a job started (solray/dashboard/jobs.py): the job's
    runtime_env, with init()'s merged over it (Ray's rule: its fields win,
    env_vars merge), and the job's metadata (its submission id) added to the
    JobConfig's. Elsewhere, `job_env` as it is."""
    text = os.environ.get(JOB_CONFIG_ENV)
    if not text:
        return job_env
    submitted = json.loads(text)
    job_config.metadata = {**submitted.get("metadata", {}), **job_config.metadata}
    return spec.merge(spec.validate(submitted.get("runtime_env"), "the submitted job"), job_env)


def join_cluster(
    control_address: str,
    token: bytes,
    *,
    ip: str | None = None,
    namespace: str | None = None,
    log_to_driver: bool | None = None,
    job_config: JobConfig | None = None,
    runtime_env: dict | None = None,
) -> None:
    """Connect this process as a driver of the running cluster whose control
    store is at `control_address` (init(address=...), and a ray:// client's
    proxy driver)."""
    cw = CoreWorker(is_driver=True, token=token, control_address=control_address, ip=ip)
    try:
        _start_driver(
            cw, None, namespace, log_to_driver, job_config or JobConfig(), runtime_env or {}
        )
    except transport.ConnectionLost:
        raise ConnectionError(
            f"Could not connect to the cluster at {control_address!r}: it closed the "
            "connection during authentication. Is the cluster token right? (SOLRAY_TOKEN, "
            "SOLRAY_TOKEN_FILE, or the token file `solray start` printed)"
        ) from None


def _connect_client(
    address: str, namespace: str | None, log_to_driver: bool | None, temp_dir: str | None
) -> None:
    """init("ray://HOST:PORT"): this process becomes a thin client."""
    global _namespace, _atexit_registered
    from solray._private.client.client_worker import connect

    context.client = connect(address, namespace, log_to_driver is not False, temp_dir)
    _namespace = context.client.namespace
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True


def _start_driver(
    cw: CoreWorker,
    launcher: services.Launcher | None,
    namespace: str | None,
    log_to_driver: bool | None,
    job_config: JobConfig,
    job_env: dict,
) -> None:
    """Start `cw` as this process's driver: connected, with a job, a
    namespace and the job's runtime env (its packages uploaded). On failure,
    stops what was started (the cluster too, if this driver launched it)."""
    global _cluster, _namespace, _atexit_registered
    try:
        cw.start()
        if job_env:
            cw.runtime_env = resolve.resolver_of(cw).resolve(job_env)
            if cw.runtime_env.get("config", spec.DEFAULT_CONFIG)["eager_install"]:
                cw.request("node", Msg.PREPARE_RUNTIME_ENV, {"runtime_env": cw.runtime_env})
    except BaseException:
        cw.shutdown()  # its I/O thread and sockets are already running
        if launcher is not None:
            launcher.stop()
            shutil.rmtree(launcher.session_dir, ignore_errors=True)
        raise
    cw.print_logs = log_to_driver is not False
    _cluster = launcher
    _namespace = namespace or f"anonymous_{uuid.uuid4().hex[:12]}"
    cw.namespace = _namespace
    context.core_worker = cw
    cw.on_node_lost = _on_node_lost
    job_config._put_search_path_first()
    job_info = {"sys_path": [p for p in sys.path if p], "cwd": os.getcwd(), "namespace": _namespace}
    job_info["metadata"] = job_config.metadata
    # A worker running this job's Java tasks starts its JVM with these (xlang/jvm.py).
    job_info["code_search_path"] = job_config.search_path()
    job_info["jvm_options"] = list(job_config.jvm_options)
    job_info["runtime_env"] = spec.public_view(cw.runtime_env)
    # Ray's driver job fields (state_client.StateClient.jobs): who runs it, where, since when.
    job_info["entrypoint"] = shlex.join([os.path.basename(sys.executable), *filter(None, sys.argv)])
    job_info["driver"] = {
        "id": cw.worker_id,
        "node_ip_address": cw.node_info["ip"],
        "pid": str(os.getpid()),
    }
    job_info["driver_node_id"] = cw.node_info["node_id"]
    job_info["start_time"] = int(time.time() * 1000)
    cw.request(
        "control", Msg.KV_PUT, {"ns": "job", "key": cw.job_bytes.hex()}, [msgpack.packb(job_info)]
    )
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True


def node_arguments(
    num_cpus, num_gpus, resources, object_store_memory, system_config: dict, labels=None
) -> list[str]:
    """The node command line for init()-style resource arguments."""
    node_args = []
    if labels:
        node_args += ["--labels", json.dumps(labels)]
    if num_cpus is not None:
        node_args += ["--num-cpus", str(num_cpus)]
    if num_gpus:
        node_args += ["--num-gpus", str(num_gpus)]
    if resources:
        node_args += ["--resources", json.dumps(resources)]
    if object_store_memory:
        node_args += ["--object-store-memory", str(int(object_store_memory))]
    node_args += spilling_arguments(system_config)
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
    args = []
    if "heartbeat_timeout_s" in system_config:
        args += ["--heartbeat-timeout-s", str(float(system_config["heartbeat_timeout_s"]))]
    if "actor_graceful_shutdown_timeout_ms" in system_config:
        timeout = system_config["actor_graceful_shutdown_timeout_ms"]
        args += ["--actor-graceful-shutdown-timeout-ms", str(float(timeout))]
    return args


def with_spilling_directory(system_config: dict | None, directory: str | None) -> dict:
    """`_system_config` with the `object_spilling_directory` argument of
    init(), Cluster.add_node() or `solray start` added."""
    config = dict(system_config or {})
    if directory is not None:
        given = {"object_spilling_directory", "object_spilling_config"} & set(config)
        if given:
            raise ValueError(
                f"object_spilling_directory is given both as an argument and in "
                f"_system_config ({sorted(given)[0]}): give it once"
            )
        config["object_spilling_directory"] = directory
    return config


def spilling_arguments(system_config: dict) -> list[str]:
    """The node command line for where and how full stores spill, from
    `_system_config`: Ray's "object_spilling_directory", or its
    "object_spilling_config" JSON of type "filesystem" (params
    "directory_path", one path or a list to spread files over, and
    "buffer_size", the bytes moved per system call), and "max_io_workers"
    (the threads doing that I/O)."""
    directory = system_config.get("object_spilling_directory")
    config = system_config.get("object_spilling_config")
    args: list[str] = []
    if directory is not None and config:
        raise ValueError(
            "_system_config: give object_spilling_directory or object_spilling_config, not both"
        )
    if directory is not None:
        if not isinstance(directory, (str, os.PathLike)) or not str(directory):
            raise ValueError(
                f"object_spilling_directory must be a directory path, got {directory!r}"
            )
        args += ["--spill-dir", os.path.abspath(directory)]
    elif config:
        try:
            spec = json.loads(config) if isinstance(config, str) else dict(config)
        except (TypeError, ValueError) as e:
            raise ValueError(f"object_spilling_config is not a JSON object: {e}") from None
        kind = spec.get("type")
        if kind != "filesystem":
            raise ValueError(
                f"object_spilling_config type {kind!r} is not supported: solray spills only "
                "to local directories (type 'filesystem')"
            )
        params = dict(spec.get("params") or {})
        unknown = set(params) - {"directory_path", "buffer_size"}
        if unknown:
            raise ValueError(
                f"object_spilling_config params {sorted(unknown)} are not supported "
                "(known: directory_path, buffer_size)"
            )
        paths = params.get("directory_path")
        paths = paths if isinstance(paths, list) else [paths]
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise ValueError(
                "object_spilling_config params.directory_path must be a directory path or "
                f"a list of them, got {params.get('directory_path')!r}"
            )
        for path in paths:
            args += ["--spill-dir", os.path.abspath(path)]
        if "buffer_size" in params:
            size = params["buffer_size"]
            if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
                raise ValueError(
                    f"object_spilling_config params.buffer_size must be a positive int, "
                    f"got {size!r}"
                )
            args += ["--spill-buffer-size", str(size)]
    if "max_io_workers" in system_config:  # checked by init_options.check_system_config
        args += ["--spill-io-threads", str(system_config["max_io_workers"])]
    return args


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
    if context.client is not None:
        return context.client.context_info()
    cw = context.require_core_worker()
    return {
        "address": cw.node_info["control_address"],
        "node_id": cw.node_info["node_id"],
        "node_ip_address": cw.node_info["ip"],
        "session_dir": cw.node_info["session_dir"],
        "metrics_export_port": cw.node_info.get("metrics_export_port"),
        "namespace": _namespace,
        "webui_url": dashboard_url(cw),
    }


def dashboard_url(cw: CoreWorker) -> str | None:
    """The dashboard's HOST:PORT. A cluster this driver started: as its
    launcher bound it (the dashboard may not have recorded it yet); else as
    the dashboard recorded it in the control store."""
    if _cluster is not None:
        return _cluster.dashboard_url
    from solray.dashboard.data import URL_KEY

    found, buffers = cw.request("control", Msg.KV_GET, URL_KEY, raw=True)
    return bytes(buffers[0]).decode() if found else None


def _on_node_lost() -> None:
    logger.error("the local node has died; solray calls will fail until shutdown()")


def auto_init() -> None:
    """Ray starts a cluster on the first `.remote()` or `put` without `init()`."""
    if not is_initialized():
        init()


def shutdown(_exiting_interpreter: bool = False) -> None:
    global _cluster
    client = context.client
    if client is not None:  # a ray:// client: its proxy driver ends with the connection
        context.client = None
        client.disconnect()
        return
    cw = context.core_worker
    if cw is None:
        return
    if cw.is_driver:
        _end_owned_actors(cw)
        _print_advice(cw)
    context.core_worker = None
    cw.shutdown()
    launcher, _cluster = _cluster, None
    if launcher is not None:
        launcher.stop()
        shutil.rmtree(launcher.session_dir, ignore_errors=True)


def _print_advice(cw) -> None:
    """The job's anti-patterns, once, to stderr (advice.py)."""
    if not cw.advice.enabled:
        return
    try:
        connected = cw.control is not None and cw.control.connected
        summary = cw.advice.job_summary(_ADVICE_WAIT_S if connected else None)
    except Exception as e:  # advice must never break a shutdown
        logger.debug("no anti-pattern summary: %s", e)
        return
    if summary:
        print(summary, file=sys.stderr, flush=True)


_ADVICE_WAIT_S = 2.0


def _end_owned_actors(cw) -> None:
    """Before a driver goes: its non-detached actors end gracefully (their
    `__ray_shutdown__` and atexit handlers run), each within the graceful
    timeout, after which the control store kills it. With the control
    store away (restarting), it ends them itself: their owner does not come
    back."""
    if cw.control is None or not cw.control.connected:
        return
    try:
        cw.request("control", Msg.SHUTDOWN_OWNED_ACTORS, {}, timeout=_GRACEFUL_WAIT_S)
    except Exception:  # the cluster is already gone, or too slow: it ends them anyway
        pass


# How long shutdown() waits for its actors to end gracefully: longer than the
# control store's own bound (its actor_graceful_shutdown_timeout_ms, 30 s by
# default), after which it has killed them.
_GRACEFUL_WAIT_S = 35.0


# In a ray:// client (context.client set), the functions below that a client
# can use run in its proxy driver instead: `context.client.call(name, args,
# kwargs)` sends their name and arguments there (see _private/client/).


def get(object_refs, *, timeout: float | None = None):
    if context.client is not None:
        return context.client.call("get", (object_refs,), {"timeout": timeout})
    cw = context.require_core_worker()
    if isinstance(object_refs, ObjectRef):
        value = cw.get([object_refs], timeout)[0]
        if cw.advice.last_task is not None:  # get() in a loop right after remote()?
            cw.advice.after_get(object_refs._id)
        return value
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
    """Store `value`; this process owns it. `_owner=actor_handle` makes that
    actor its owner instead: the object outlives this process (while someone
    references it) and is lost with the actor."""
    from solray.actor import ActorHandle

    if context.client is not None:
        return context.client.call("put", (value,), {"_owner": _owner})
    if _owner is not None and not isinstance(_owner, ActorHandle):
        raise TypeError(f"put(): _owner must be an actor handle, got {type(_owner).__name__}")
    auto_init()
    return context.require_core_worker().put(value, None if _owner is None else _owner._actor_id)


def wait(
    object_refs, *, num_returns: int = 1, timeout: float | None = None, fetch_local: bool = True
):
    """(ready, not_ready), each in the order given. With `fetch_local` (the
    default) a ref is ready once its value can be read on this node: a value
    in another node's store is pulled here first. With fetch_local=False it is
    ready as soon as the value exists anywhere. A streaming generator is ready
    when its next item (or its end) is there."""
    if context.client is not None:
        ready = set(
            context.client.call(
                "wait_indices",
                (object_refs,),
                {"num_returns": num_returns, "timeout": timeout, "fetch_local": fetch_local},
            )
        )
        items = list(object_refs)
        return (
            [item for i, item in enumerate(items) if i in ready],
            [item for i, item in enumerate(items) if i not in ready],
        )
    cw = context.require_core_worker()
    if isinstance(object_refs, (ObjectRef, ObjectRefGenerator)):
        raise TypeError(
            "wait() expected a list of ObjectRef, got a single ObjectRef. "
            "Wrap it in a list: solray.wait([ref])"
        )
    if not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() expected a list of ObjectRef, got {type(object_refs).__name__}")
    items = list(object_refs)
    # Per item, only what runs in C when every item is a plain ref: a loop of
    # wait() calls over a shrinking list (the usual way to process results as
    # they come) is quadratic in the list's length. The not_ready list the
    # last wait returned knows its ids already (Pending); otherwise the `_id`
    # slot's own getter reads each id and checks the item is an ObjectRef
    # (TypeError if not) in one pass.
    streams = []  # a stream's next item: ready wherever it is (Ray ignores fetch_local)
    known = object_refs.take_ids() if type(object_refs) is Pending else None
    if known is not None:
        keys, unique = known
        refs = items
    else:
        try:
            keys = list(map(ref_id, items))
            refs = items
        except TypeError:
            keys = []
            for item in items:
                if isinstance(item, ObjectRef):
                    keys.append(item._id)
                elif isinstance(item, ObjectRefGenerator):
                    keys.append(item.next_object_id())
                    streams.append(keys[-1])
                else:
                    raise TypeError(
                        f"wait() expected a list of ObjectRef, but it holds {item!r}"
                    ) from None
            refs = [i for i in items if isinstance(i, ObjectRef)]
        unique = set(keys)
        if len(unique) != len(keys):
            raise ValueError("Wait requires a list of unique object refs.")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns!r}.")
    if num_returns > len(items):
        raise ValueError("num_returns cannot be greater than the number of objects provided.")
    if timeout is not None and timeout < 0:
        raise ValueError(f"The 'timeout' argument must be nonnegative. Received {timeout}")
    if not isinstance(fetch_local, bool):
        raise TypeError(f"wait(): fetch_local must be True or False, got {fetch_local!r}")
    taken = cw.wait(keys, unique, refs, num_returns, timeout, fetch_local, frozenset(streams))
    # The first num_returns ready items, in order; the rest, in order.
    ready = [items[i] for i in taken]
    not_ready = _without(items, taken)
    if streams:  # a stream's id changes as it is read: nothing to remember
        return ready, not_ready
    # `unique` is this call's own (built here, or taken from the list given).
    unique.difference_update([keys[i] for i in taken])
    return ready, Pending(not_ready, _without(keys, taken), unique)


def _without(values: list, taken: list[int]) -> list:
    """`values` less the (ascending) indexes `taken`, in order: a few taken
    are deleted from a copy (a memmove each), many are filtered out."""
    if len(taken) <= 8:
        rest = values.copy()
        for index in reversed(taken):
            del rest[index]
        return rest
    chosen = set(taken)
    return [value for index, value in enumerate(values) if index not in chosen]


class Pending(list):
    """The not_ready list wait() returns: a list, which also remembers the
    ids of its refs, in order and as a set, for the next wait() over it (a
    loop of waits over what the last one left would otherwise read every
    id again, and build their set, per call). Any change to the list
    forgets them; so does a wait() over it, which hands them on to the
    list it returns. Pickled or copied, it is a plain list."""

    __slots__ = ("_ids",)

    def __init__(self, refs: list, keys: list[bytes], unique: set[bytes]):
        super().__init__(refs)
        self._ids: tuple[list[bytes], set[bytes]] | None = (keys, unique)

    def take_ids(self) -> tuple[list[bytes], set[bytes]] | None:
        ids, self._ids = self._ids, None
        return ids

    def __reduce__(self):
        return list, (list(self),)

    def __setitem__(self, index, value):
        self._ids = None
        list.__setitem__(self, index, value)

    def __delitem__(self, index):
        self._ids = None
        list.__delitem__(self, index)

    def __iadd__(self, other):
        self._ids = None
        return list.__iadd__(self, other)

    def __imul__(self, n):
        self._ids = None
        return list.__imul__(self, n)

    def append(self, item):
        self._ids = None
        list.append(self, item)

    def extend(self, items):
        self._ids = None
        list.extend(self, items)

    def insert(self, index, item):
        self._ids = None
        list.insert(self, index, item)

    def pop(self, index=-1):
        self._ids = None
        return list.pop(self, index)

    def remove(self, item):
        self._ids = None
        list.remove(self, item)

    def clear(self):
        self._ids = None
        list.clear(self)

    def sort(self, *args, **kwargs):
        self._ids = None
        list.sort(self, *args, **kwargs)

    def reverse(self):
        self._ids = None
        list.reverse(self)


def cancel(object_ref, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that produces `object_ref` (or a streaming generator).

    A queued task is dropped; a running one gets KeyboardInterrupt (force=True
    kills its worker instead); with `recursive`, tasks it submitted are
    cancelled too. `get` then raises TaskCancelledError; cancelled tasks are
    never retried; a finished task is left alone."""
    if context.client is not None:
        return context.client.call(
            "cancel", (object_ref,), {"force": force, "recursive": recursive}
        )
    cw = context.require_core_worker()
    if isinstance(object_ref, ObjectRefGenerator):
        task_id, owner = object_ref._task_id, object_ref._owner
    elif isinstance(object_ref, ObjectRef):
        task_id, owner = ids.task_id_of(object_ref._id), object_ref._owner
    else:
        raise TypeError(
            f"solray.cancel() only supports ObjectRef and ObjectRefGenerator, got "
            f"{type(object_ref).__name__}. To end an actor, use solray.kill()."
        )
    cw.cancel(task_id, force, recursive, owner)


def get_gpu_ids() -> list[int]:
    if context.client is not None:
        return context.client.call("get_gpu_ids")
    cw = context.require_core_worker()
    task = cw.current_task
    return list(task.gpu_ids) if task is not None else []


def nodes() -> list[dict]:
    if context.client is not None:
        return context.client.call("nodes")
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
                "NodeName": info.get("node_name") or info["ip"],
                "Resources": info["resources_total"] if info["alive"] else {},
                "Labels": info.get("labels", {}),
                "MetricsExportPort": info.get("metrics_export_port"),
            }
        )
    return result


def cluster_resources() -> dict[str, float]:
    if context.client is not None:
        return context.client.call("cluster_resources")
    return _sum_resources("resources_total")


def available_resources() -> dict[str, float]:
    if context.client is not None:
        return context.client.call("available_resources")
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

    if context.client is not None:
        return context.client.call("get_actor", (name,), {"namespace": namespace})
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
    # Weak, as in Ray: a handle looked up by name does not keep a
    # non-detached actor alive once the handles from its creation are gone.
    return ActorHandle(reply["actor_id"], reply["meta"], owner=reply.get("owner", ""), weak=True)


def kill(actor, *, no_restart: bool = True) -> None:
    """Forcefully end an actor's process. Calls in flight fail with
    ActorDiedError; with no_restart=False it restarts if max_restarts allows."""
    from solray.actor import ActorHandle

    if context.client is not None:
        return context.client.call("kill", (actor,), {"no_restart": no_restart})
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
