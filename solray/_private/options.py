"""Validation of `@remote(...)` and `.options(...)` arguments.

Errors name the option and what was wrong with it, and use Ray's exception
types: ValueError for an unknown option or a bad value, TypeError for a value
of the wrong type.
"""

from __future__ import annotations

import numbers

from solray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

TASK_DEFAULTS = {
    "num_cpus": 1,
    "num_gpus": 0,
    "resources": None,
    "memory": None,
    "num_returns": 1,
    "max_retries": 3,
    "retry_exceptions": False,
    "name": None,
    "scheduling_strategy": None,
    "runtime_env": None,
    "max_calls": 0,
    "enable_task_events": True,
    "accelerator_type": None,
    "label_selector": None,
    "_metadata": None,
}


def _number(name: str, value, minimum: float = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"The option '{name}' must be a number, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"The option '{name}' must be >= {minimum}, got {value}")


def _validate_one(name: str, value) -> None:
    if value is None and name not in ("num_cpus", "num_returns", "max_retries"):
        return
    if name == "num_cpus" or name == "memory":
        _number(name, value)
    elif name == "num_gpus":
        _number(name, value)
        if value > 1 and value != int(value):
            raise ValueError(f"The option 'num_gpus' must be an integer when above 1, got {value}")
    elif name == "resources":
        if not isinstance(value, dict):
            raise TypeError(f"The option 'resources' must be a dict, got {type(value).__name__}")
        for key, amount in value.items():
            if key in ("CPU", "GPU"):
                raise ValueError(
                    "Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' and 'GPU' "
                    "in 'resources' keyword"
                )
            if not isinstance(key, str):
                raise TypeError(f"resource names must be strings, got {key!r}")
            _number(f"resources[{key!r}]", amount)
    elif name == "num_returns":
        if value in ("dynamic", "streaming"):
            raise ValueError(
                f"num_returns={value!r} (generator returns) is not supported yet in solray"
            )
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"The option 'num_returns' must be an int, got {value!r}")
        if value < 0:
            raise ValueError(f"The option 'num_returns' must be >= 0, got {value}")
    elif name == "max_retries":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"The option 'max_retries' must be an int, got {value!r}")
        if value < -1:
            raise ValueError(f"The option 'max_retries' must be >= -1, got {value}")
    elif name == "retry_exceptions":
        if isinstance(value, bool):
            return
        if isinstance(value, (list, tuple)) and all(
            isinstance(t, type) and issubclass(t, BaseException) for t in value
        ):
            return
        raise TypeError(
            "The option 'retry_exceptions' must be a bool or a list of exception types, "
            f"got {value!r}"
        )
    elif name == "name":
        if not isinstance(value, str):
            raise TypeError(f"The option 'name' must be a str, got {type(value).__name__}")
    elif name == "scheduling_strategy":
        if value in ("DEFAULT", "SPREAD") or isinstance(
            value, (NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy)
        ):
            return
        raise ValueError(
            f"Invalid scheduling_strategy {value!r}: use 'DEFAULT', 'SPREAD', "
            "NodeAffinitySchedulingStrategy or PlacementGroupSchedulingStrategy"
        )


def validate_task_options(options: dict) -> dict:
    for name, value in options.items():
        if name not in TASK_DEFAULTS:
            raise ValueError(
                f"Invalid option keyword {name} for remote functions. "
                f"Valid ones are {sorted(TASK_DEFAULTS)}."
            )
        _validate_one(name, value)
    return options


def with_defaults(options: dict) -> dict:
    merged = {**TASK_DEFAULTS, **options}
    for name in ("num_returns", "max_retries"):
        if merged[name] is None:
            merged[name] = TASK_DEFAULTS[name]
    return merged


def merge(base: dict, overrides: dict) -> dict:
    """`.options(...)` on top of the decorator's options."""
    return with_defaults({**base, **validate_task_options(overrides)})


def task_resources(options: dict) -> dict[str, float]:
    """The resource shape a task asks a node for."""
    shape = {}
    cpus = options.get("num_cpus")
    shape["CPU"] = float(1 if cpus is None else cpus)
    if options.get("num_gpus"):
        shape["GPU"] = float(options["num_gpus"])
    if options.get("memory"):
        shape["memory"] = float(options["memory"])
    for key, amount in (options.get("resources") or {}).items():
        shape[key] = float(amount)
    return {k: v for k, v in shape.items() if v > 0}
