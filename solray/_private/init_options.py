"""init()'s options that are not about resources: refusals, `_system_config`
and driver logging.

Ray's `init()` takes many options. solray does what Ray documents for each one
it has; every other Ray option is refused by name when given a value that
would ask for something (cgroups, local mode, ...),
because a program that passes one expects it to do something, and accepting
it silently would be a lie. An option Ray does not know at all is a TypeError,
as Python raises for any unknown keyword.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import sys
from collections.abc import Callable
from typing import Any

# Ray options solray does not have: the values that ask for nothing (their
# defaults, accepted), and why anything else is refused.
_NO_CGROUPS = "solray does not isolate resources with cgroups"
UNSUPPORTED: dict[str, tuple[tuple, str]] = {
    "local_mode": (
        (False,),
        "solray always runs tasks and actors in worker processes (Ray deprecated "
        "local mode too). To run tasks one at a time, use init(num_cpus=1); to step "
        "through a function in a debugger, call it as plain Python (a copy without "
        "@remote)",
    ),
    "logging_config": ((None,), "solray has no structured (JSON) worker logs yet"),
    "storage": ((None,), "solray has no cluster-wide persistent storage"),
    "enable_resource_isolation": ((False,), _NO_CGROUPS),
    "cgroup_path": ((None,), _NO_CGROUPS),
    "system_reserved_cpu": ((None,), _NO_CGROUPS),
    "system_reserved_memory": ((None,), _NO_CGROUPS),
    "proxy_server_url": ((None,), "solray has no Ray Client proxy"),
    "_redis_max_memory": ((None,), "solray starts no Redis server"),
    "_redis_password": (
        (None,),
        "a control store storing to Redis takes the password in RAY_REDIS_ADDRESS "
        "(redis://:PASSWORD@HOST:PORT); every connection to the cluster proves its token",
    ),
    "_plasma_directory": ((None,), "solray's object store always lives in /dev/shm"),
    "_driver_object_store_memory": ((None,), "it is deprecated in Ray and has no effect"),
    "_tracing_startup_hook": ((None,), "solray has no tracing"),
}


# The Cluster helper (cluster_utils) starts no dashboard: a test cluster has no
# use for one, and many would compete for its port.
_NO_HELPER_DASHBOARD = "the Cluster helper starts no dashboard (init() and `solray start` do)"
CLUSTER_UNSUPPORTED = {
    **UNSUPPORTED,
    "include_dashboard": ((None, False), _NO_HELPER_DASHBOARD),
    "dashboard_host": (("127.0.0.1",), _NO_HELPER_DASHBOARD),
    "dashboard_port": ((None,), _NO_HELPER_DASHBOARD),
}


def refuse_unsupported(options: dict[str, Any], table: dict = UNSUPPORTED) -> None:
    """TypeError for options Ray does not know; NotImplementedError naming the
    option for the ones solray lacks (in `table`), unless given a value that
    asks for nothing."""
    unknown = sorted(set(options) - set(table))
    if unknown:
        raise TypeError(f"init() got an unexpected keyword argument {unknown[0]!r}")
    for name, value in options.items():
        accepted, why = table[name]
        if not any(type(value) is type(ok) and value == ok for ok in accepted):
            raise NotImplementedError(f"init({name}={value!r}) is not supported: {why}.")


# -- _system_config ----------------------------------------------------------


def _number(low: float, high: float = math.inf, integer: bool = False) -> Callable:
    def check(key: str, value) -> None:
        kind = int if integer else (int, float)
        if (
            isinstance(value, bool)
            or not isinstance(value, kind)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            bounds = f">= {low}" if high == math.inf else f"between {low} and {high}"
            noun = "an integer" if integer else "a number"
            raise ValueError(f"_system_config[{key!r}] must be {noun} {bounds}, got {value!r}")

    return check


def _text_or_dict(key: str, value) -> None:
    if not isinstance(value, (str, dict)):
        raise ValueError(f"_system_config[{key!r}] must be a JSON string or a dict, got {value!r}")


def _path(key: str, value) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"_system_config[{key!r}] must be a directory path, got {value!r}")


# The settings solray reads, each with its check. Any other key is refused:
# a Ray setting solray does not have would otherwise be ignored.
SYSTEM_CONFIG: dict[str, Callable[[str, Any], None]] = {
    "object_spilling_directory": _path,
    "object_spilling_config": _text_or_dict,
    "memory_usage_threshold": _number(0.0, 1.0),
    "memory_monitor_refresh_ms": _number(0, integer=True),
    "heartbeat_timeout_s": _number(0.001),
    "actor_graceful_shutdown_timeout_ms": _number(0),
    "max_io_workers": _number(1, integer=True),
}


def check_system_config(config) -> dict:
    """The `_system_config` dict, checked: ValueError naming any key solray
    does not read, or a value it cannot use."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise TypeError(f"The _system_config must be a dict, got {type(config).__name__}")
    for key, value in config.items():
        check = SYSTEM_CONFIG.get(key)
        if check is None:
            raise ValueError(
                f"_system_config key {key!r} is not a setting solray has; "
                f"the settings are {sorted(SYSTEM_CONFIG)}"
            )
        check(key, value)
    return config


# -- other checked options ----------------------------------------------------


def check_node_ip_address(value) -> str | None:
    if value is None:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"init(): _node_ip_address must be an IP address, got {value!r}") from None
    return value


def check_port(name: str, value) -> int | None:
    """A TCP port to listen on (0: any free port)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"init(): {name} must be a port number (0 to 65535), got {value!r}")
    return value


DEFAULT_DASHBOARD_HOST = "127.0.0.1"


def check_dashboard(include, host, port) -> tuple[str, int | None] | None:
    """include_dashboard, dashboard_host, dashboard_port as Ray takes them:
    (host, port) to start the dashboard on, or None for no dashboard. As in
    Ray, include_dashboard=None starts it (its dependencies are solray's);
    port None is 8265, or a free port if 8265 is taken."""
    if include is not None:
        check_flag("include_dashboard", include)
    if not isinstance(host, str) or not host:
        raise ValueError(f"init(): dashboard_host must be an IP address, got {host!r}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"init(): dashboard_host must be an IP address (127.0.0.1: this machine only; "
            f"0.0.0.0: every interface), got {host!r}"
        ) from None
    port = check_port("dashboard_port", port)
    if include is False:
        given = [
            f"{n}={v!r}"
            for n, v, off in (
                ("dashboard_host", host, DEFAULT_DASHBOARD_HOST),
                ("dashboard_port", port, None),
            )
            if v != off
        ]
        if given:
            raise ValueError(
                f"init(): {', '.join(given)} configures the dashboard, but include_dashboard=False"
            )
        return None
    return host, port


def check_memory(value) -> float | None:
    """`_memory`: the node's reservable `memory` resource, in whole bytes."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"init(): _memory must be a non-negative number of bytes, got {value!r}")
    return float(int(value))


def check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"init(): {name} must be True or False, got {value!r}")
    return value


# -- driver logging (configure_logging, logging_level, logging_format) --------

DEFAULT_LOG_FORMAT = "%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted (a handler
    bound to the stream of its creation would miss a replaced stderr)."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


_handler: _StderrHandler | None = None


def log_level(value) -> int:
    """A logging level from an int or a name ("info", "WARNING")."""
    if isinstance(value, bool):
        raise ValueError(f"init(): logging_level must be a level, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        level = logging.getLevelNamesMapping().get(value.upper())
        if level is not None:
            return level
    raise ValueError(
        f"init(): logging_level must be a logging level (an int, or a name such as "
        f"'info' or 'WARNING'), got {value!r}"
    )


def configure_driver_logging(level: int, fmt: str | None) -> None:
    """As Ray does for its "ray" logger: the "solray" logger of this process
    logs at `level` to stderr in `fmt`, and not through the root logger."""
    global _handler
    if fmt is not None and not isinstance(fmt, str):
        raise ValueError(f"init(): logging_format must be a format string, got {fmt!r}")
    try:
        formatter = logging.Formatter(fmt or DEFAULT_LOG_FORMAT)
    except ValueError as e:
        raise ValueError(f"init(): logging_format {fmt!r} is not a logging format: {e}") from None
    logger = logging.getLogger("solray")
    if _handler is None:
        _handler = _StderrHandler()
        logger.addHandler(_handler)
    _handler.setFormatter(formatter)
    logger.setLevel(level)
    logger.propagate = False
