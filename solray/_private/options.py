"""Validation of `@remote(...)` and `.options(...)` arguments.

Errors name the option and what was wrong with it, and use Ray's exception
types: ValueError for an unknown option or a bad value, TypeError for a value
of the wrong type.
"""

from __future__ import annotations

import inspect
import numbers

from solray._private import labels
from solray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

ACCELERATOR_PREFIX = "accelerator_type:"
ACCELERATOR_AMOUNT = 0.001

TASK_DEFAULTS = {
    "num_cpus": 1,
    "num_gpus": 0,
    "resources": None,
    "memory": None,
    "num_returns": None,  # 1, or "streaming" for generator functions
    "max_retries": 3,
    "retry_exceptions": False,
    "name": None,
    "scheduling_strategy": None,
    "runtime_env": None,
    "max_calls": 0,
    "enable_task_events": True,
    "accelerator_type": None,
    "label_selector": None,
    "fallback_strategy": None,
    "_metadata": None,
    "_generator_backpressure_num_objects": None,
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
        validate_num_returns(value)
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
    elif name == "max_calls":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"The keyword 'max_calls' only accepts 0 or a positive integer, got {value!r}"
            )
    elif name == "name":
        if not isinstance(value, str):
            raise TypeError(f"The option 'name' must be a str, got {type(value).__name__}")
    elif name == "label_selector":
        labels.validate_selector(value)
    elif name == "fallback_strategy":
        labels.validate_fallback_strategy(value)
    elif name == "accelerator_type":
        if not isinstance(value, str) or not value:
            raise TypeError(f"The option 'accelerator_type' must be a non-empty str, got {value!r}")
    elif name == "_generator_backpressure_num_objects":
        if isinstance(value, bool) or not isinstance(value, int) or value == 0 or value < -1:
            raise ValueError(
                "The option '_generator_backpressure_num_objects' must be a positive int, "
                f"or -1 to disable backpressure, got {value!r}"
            )
    elif name == "scheduling_strategy":
        if isinstance(value, PlacementGroupSchedulingStrategy):
            _validate_placement_group_strategy(value)
            return
        if value in ("DEFAULT", "SPREAD") or isinstance(value, NodeAffinitySchedulingStrategy):
            return
        raise ValueError(
            f"Invalid scheduling_strategy {value!r}: use 'DEFAULT', 'SPREAD', "
            "NodeAffinitySchedulingStrategy or PlacementGroupSchedulingStrategy"
        )
    elif name == "runtime_env":
        from solray._private.runtime_env import spec

        spec.validate(value, "The option 'runtime_env'")
    elif name == "enable_task_events":
        if not isinstance(value, bool):
            raise TypeError(f"The option 'enable_task_events' must be a bool, got {value!r}")
    elif name == "_metadata":
        if not isinstance(value, dict):
            raise TypeError(f"The option '_metadata' must be a dict, got {value!r}")


def _validate_placement_group_strategy(strategy: PlacementGroupSchedulingStrategy) -> None:
    from solray.util.placement_group import PlacementGroup

    group = strategy.placement_group
    if group is None:  # Ray's way to opt out of a parent's captured group
        return
    if not isinstance(group, PlacementGroup):
        raise TypeError(
            "PlacementGroupSchedulingStrategy: placement_group must be a PlacementGroup "
            f"(or None), got {group!r}"
        )
    index = strategy.placement_group_bundle_index
    if (
        isinstance(index, bool)
        or not isinstance(index, int)
        or not -1 <= index < group.bundle_count
    ):
        raise ValueError(
            "PlacementGroupSchedulingStrategy: placement_group_bundle_index must be -1 (any "
            f"bundle) or in [0, {group.bundle_count}) for this group, got {index!r}"
        )
    if strategy.placement_group_capture_child_tasks not in (None, True, False):
        raise TypeError(
            "PlacementGroupSchedulingStrategy: placement_group_capture_child_tasks must be a "
            f"bool, got {strategy.placement_group_capture_child_tasks!r}"
        )


def placement_of(strategy) -> list | None:
    """What a task or actor carries about the placement group it runs in:
    [group id, bundles, capture_child_tasks], or None."""
    if isinstance(strategy, PlacementGroupSchedulingStrategy) and strategy.placement_group:
        group = strategy.placement_group
        return [group.id, group.bundle_specs, bool(strategy.placement_group_capture_child_tasks)]
    return None


def validate_num_returns(value) -> None:
    if value in ("dynamic", "streaming") or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"The option 'num_returns' must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"The option 'num_returns' must be >= 0, got {value}")


# @method(...) on an actor method; `.options(...)` on a call also takes `name`.
METHOD_OPTIONS = {
    "num_returns",
    "concurrency_group",
    "max_task_retries",
    "retry_exceptions",
    "enable_task_events",
    "_generator_backpressure_num_objects",
}


def validate_method_options(options: dict, where: str) -> dict:
    """Options of an actor method, from `@method` or a call's `.options()`."""
    valid = METHOD_OPTIONS | ({"name"} if where != "@method" else set())
    for name, value in options.items():
        if name not in valid:
            raise ValueError(f"Invalid option '{name}' for {where}; valid ones are {sorted(valid)}")
        if value is None:
            continue
        if name in ("num_returns", "retry_exceptions", "_generator_backpressure_num_objects"):
            _validate_one(name, value)
        elif name == "max_task_retries":
            if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise ValueError(
                    f"The option 'max_task_retries' must be an int >= -1, got {value!r}"
                )
        elif name in ("concurrency_group", "name"):
            if not isinstance(value, str):
                raise TypeError(f"The option '{name}' must be a str, got {type(value).__name__}")
        elif name == "enable_task_events" and not isinstance(value, bool):
            raise TypeError(f"The option 'enable_task_events' must be a bool, got {value!r}")
    return options


def backpressure(value: int | None) -> int | None:
    """Items a streaming generator may run ahead of its consumer (None: no limit)."""
    return None if value is None or value == -1 else value


ACTOR_DEFAULTS = {
    "num_cpus": None,
    "num_gpus": 0,
    "resources": None,
    "memory": None,
    "name": None,
    "namespace": None,
    "lifetime": None,
    "get_if_exists": False,
    "max_restarts": 0,
    "max_task_retries": 0,
    "max_concurrency": None,
    "concurrency_groups": None,
    "scheduling_strategy": None,
    "runtime_env": None,
    "max_pending_calls": -1,
    "allow_out_of_order_execution": False,
    "enable_task_events": True,
    "accelerator_type": None,
    "label_selector": None,
    "fallback_strategy": None,
    "_metadata": None,
}


def actor_options(options: dict) -> dict:
    """Validate actor options and fill in Ray's defaults."""
    for name, value in options.items():
        if name not in ACTOR_DEFAULTS:
            raise ValueError(
                f"Invalid option keyword {name} for actors. "
                f"Valid ones are {sorted(ACTOR_DEFAULTS)}."
            )
        if value is None:
            continue
        if name in (
            "num_cpus",
            "num_gpus",
            "resources",
            "memory",
            "scheduling_strategy",
            "accelerator_type",
            "label_selector",
            "fallback_strategy",
            "runtime_env",
            "enable_task_events",
            "_metadata",
        ):
            _validate_one(name, value)
        elif name in ("get_if_exists", "allow_out_of_order_execution"):
            if not isinstance(value, bool):
                raise TypeError(f"The option '{name}' must be a bool, got {value!r}")
        elif name in ("name", "namespace"):
            if not isinstance(value, str) or (name == "name" and not value):
                raise TypeError(f"The option '{name}' must be a non-empty str, got {value!r}")
        elif name == "lifetime":
            if value not in ("detached", "non_detached"):
                raise ValueError(
                    f"actor `lifetime` argument must be one of 'detached', 'non_detached' "
                    f"and 'None', got {value!r}"
                )
        elif name in ("max_restarts", "max_task_retries", "max_pending_calls"):
            if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise ValueError(f"The option '{name}' must be an int >= -1, got {value!r}")
        elif name == "max_concurrency":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"max_concurrency must be an int >= 1, got {value!r}")
        elif name == "concurrency_groups":
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
                for k, v in value.items()
            ):
                raise ValueError(
                    "concurrency_groups must be a dict of group name to max concurrency "
                    f"(int >= 1), got {value!r}"
                )
    merged = {**ACTOR_DEFAULTS, **options}
    for name in (
        "max_restarts",
        "max_task_retries",
        "max_pending_calls",
        "num_gpus",
        "get_if_exists",
        "allow_out_of_order_execution",
    ):
        if merged[name] is None:
            merged[name] = ACTOR_DEFAULTS[name]
    if merged["get_if_exists"] and not merged["name"]:
        raise ValueError("The actor name must be specified to use `get_if_exists`.")
    return merged


def actor_resources(options: dict) -> tuple[dict, dict]:
    """(resources while running, resources to place): without an explicit
    num_cpus an actor needs a CPU to be placed and holds none while it runs."""
    running = task_resources({**options, "num_cpus": options.get("num_cpus") or 0})
    if options.get("num_cpus") is not None:
        return running, running
    return running, task_resources({**options, "num_cpus": 1})


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
    if merged["max_retries"] is None:
        merged["max_retries"] = TASK_DEFAULTS["max_retries"]
    return merged


def default_num_returns(function) -> int | str:
    """Ray's default: a generator function streams, anything else returns one value."""
    if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
        return "streaming"
    return 1


def merge(base: dict, overrides: dict) -> dict:
    """`.options(...)` on top of the decorator's options."""
    if "max_calls" in overrides:
        # As in Ray: a worker counts calls of a function, whatever the options.
        raise ValueError("Setting 'max_calls' is not supported in '.options()'.")
    return with_defaults({**base, **validate_task_options(overrides)})


def task_resources(options: dict) -> dict[str, float]:
    """The resource shape a task asks a node for (renamed to a placement
    group bundle's resources when it is placed in one)."""
    shape = _plain_resources(options)
    strategy = options.get("scheduling_strategy")
    if isinstance(strategy, PlacementGroupSchedulingStrategy) and strategy.placement_group:
        from solray._private.placement_groups import group_resources

        return group_resources(
            shape, strategy.placement_group.id, strategy.placement_group_bundle_index
        )
    return shape


def _plain_resources(options: dict) -> dict[str, float]:
    shape = {}
    cpus = options.get("num_cpus")
    shape["CPU"] = float(1 if cpus is None else cpus)
    if options.get("num_gpus"):
        shape["GPU"] = float(options["num_gpus"])
    if options.get("memory"):
        shape["memory"] = float(options["memory"])
    for key, amount in (options.get("resources") or {}).items():
        shape[key] = float(amount)
    if options.get("accelerator_type"):
        # Ray's convention: a node with accelerators of type X has the
        # resource "accelerator_type:X" (1); a task asks for a sliver of it.
        shape[f"{ACCELERATOR_PREFIX}{options['accelerator_type']}"] = ACCELERATOR_AMOUNT
    return {k: v for k, v in shape.items() if v > 0}
