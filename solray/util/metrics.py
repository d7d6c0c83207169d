"""Application metrics (Ray's `ray.util.metrics`): Counter, Gauge, Histogram.

A metric records into this process's buffer (`_private/metrics_reporter.py`),
which sends its updates to the node in batches; each node serves what its
processes recorded in the Prometheus text format (`_private/metrics_exporter.py`),
as `ray_<name>` with tags as labels, as Ray does. Usable in drivers, tasks and
actors alike, and a metric pickles (into a task's closure, say) as Ray's do:
name, description, tag keys (and boundaries), without its default tags.

The checks are Ray's, with its messages, plus two that are stricter on
purpose (their errors say so): a metric name Prometheus would refuse is a
ValueError (Ray warns and drops the metric's data), and a tag key given to a
record but not declared in `tag_keys` is a ValueError (as Ray 2.0-2.9 did;
later Ray drops the tag without a word).
"""

from __future__ import annotations

import math
import re
from typing import Any

_VALID_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_VALID_TAG_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Labels the node adds to every sample (metrics_exporter.py); a tag of the
# same name would make two labels of one name.
RESERVED_TAG_KEYS = frozenset({"Component", "NodeAddress", "SessionName", "Version", "le"})


class Metric:
    """The parent class of Counter, Gauge and Histogram."""

    _kind = ""

    def __init__(
        self,
        name: str,
        description: str = "",
        tag_keys: tuple[str, ...] | None = None,
    ):
        if not isinstance(name, str):
            raise TypeError(f"Metric name must be str, got {type(name)}.")
        if len(name) == 0:
            raise ValueError("Empty name is not allowed. Please provide a metric name.")
        if not _VALID_NAME.match(name):
            raise ValueError(
                f"Invalid metric name: {name}. Metric names can only contain letters, "
                "numbers, _, and :. Metric names cannot start with numbers. (Ray warns "
                "and discards such a metric's data; solray refuses it.)"
            )
        if not isinstance(description, str):
            raise TypeError(f"description must be str, got {type(description)}.")
        tag_keys = tag_keys or ()
        if not isinstance(tag_keys, tuple):
            raise TypeError(f"tag_keys should be a tuple type, got: {type(tag_keys)}")
        for key in tag_keys:
            if not isinstance(key, str):
                raise TypeError(f"Tag keys must be str, got {type(key)}.")
            if not _VALID_TAG_KEY.match(key) or key.startswith("__"):
                raise ValueError(
                    f"Invalid tag key {key!r}: a Prometheus label name is letters, numbers "
                    "and _, not starting with a number or __."
                )
            if key in RESERVED_TAG_KEYS:
                raise ValueError(
                    f"Tag key {key!r} is reserved: every sample carries it "
                    f"(reserved: {', '.join(sorted(RESERVED_TAG_KEYS))})."
                )
        if len(set(tag_keys)) != len(tag_keys):
            raise ValueError(f"tag_keys has a key twice: {tag_keys}")
        self._name = name
        self._description = description
        self._tag_keys: tuple[str, ...] = tag_keys
        self._default_tags: dict[str, str] = {}

    def set_default_tags(self, default_tags: dict[str, str]) -> Metric:
        """Set the tags used by every record that does not give them; returns
        the metric itself, so `Counter(...).set_default_tags({...})` works."""
        for key, value in default_tags.items():
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key}.")
            if not isinstance(value, str):
                raise TypeError(f"Tag values must be str, got {type(value)}.")
        self._default_tags = dict(default_tags)
        return self

    @property
    def info(self) -> dict[str, Any]:
        """The metric's name, description, tag keys and default tags."""
        return {
            "name": self._name,
            "description": self._description,
            "tag_keys": self._tag_keys,
            "default_tags": self._default_tags,
        }

    def _definition(self) -> list:
        """What the node needs to export it: [name, kind, description, boundaries]."""
        return [self._name, self._kind, self._description, []]

    def _record(self, value: float, tags: dict[str, str] | None) -> None:
        """Record one point; tags given here take precedence over the defaults."""
        from solray._private import metrics_reporter

        if tags:
            for tag_value in tags.values():
                if not isinstance(tag_value, str):
                    raise TypeError(f"Tag values must be str, got {type(tag_value)}.")
            unknown = [key for key in tags if key not in self._tag_keys]
            if unknown:
                raise ValueError(
                    f"Unrecognized tag keys: {unknown}. Declare them in tag_keys (Ray "
                    "2.10+ drops undeclared tags silently; solray refuses them)."
                )
            final = {**self._default_tags, **tags}
        else:
            final = self._default_tags
        missing = [key for key in self._tag_keys if key not in final]
        if missing:
            raise ValueError(f"Missing value for tag key(s): {','.join(missing)}.")
        labels = tuple(sorted((key, final[key]) for key in self._tag_keys))
        metrics_reporter.record(self, labels, float(value))

    def __reduce__(self):
        return type(self), (self._name, self._description, self._tag_keys)


def _check_number(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"value must be int or float, got {type(value)}.")
    if not math.isfinite(value):
        raise ValueError(f"value must be a finite number, got {value}")


class Counter(Metric):
    """A cumulative metric that only goes up (Prometheus' counter), exported
    as `ray_<name>_total`."""

    _kind = "counter"

    def inc(self, value: int | float = 1.0, tags: dict[str, str] | None = None) -> None:
        """Increment the counter by `value` (default 1), which must be > 0."""
        _check_number(value)
        if value <= 0:
            raise ValueError(f"value must be >0, got {value}")
        self._record(value, tags)


class Gauge(Metric):
    """The last value set (Prometheus' gauge): goes up and down."""

    _kind = "gauge"

    def set(self, value: int | float | None, tags: dict[str, str] | None = None) -> None:
        """Set the gauge to `value`; None does nothing, as in Ray."""
        if value is None:
            return
        _check_number(value)
        self._record(value, tags)


class Histogram(Metric):
    """Counts of observed values in buckets (Prometheus' histogram): bucket
    upper bounds are `boundaries`, plus +Inf."""

    _kind = "histogram"

    def __init__(
        self,
        name: str,
        description: str = "",
        boundaries: list[float] | None = None,
        tag_keys: tuple[str, ...] | None = None,
    ):
        super().__init__(name, description, tag_keys)
        if boundaries is None or len(boundaries) == 0:
            raise ValueError(
                "boundaries argument should be provided when using the Histogram class. "
                'e.g., Histogram("name", boundaries=[1.0, 2.0])'
            )
        for i, boundary in enumerate(boundaries):
            if isinstance(boundary, bool) or not isinstance(boundary, (int, float)):
                raise TypeError(
                    f"Invalid `boundaries` argument at index {i}, {boundaries}: "
                    f"boundaries must be numbers, got {type(boundary)}."
                )
            if not boundary > 0 or not math.isfinite(boundary):
                raise ValueError(
                    f"Invalid `boundaries` argument at index {i}, {boundaries}. "
                    "Use positive values for the arguments."
                )
        self.boundaries = list(boundaries)
        # Bucket bounds in order, each once: what Prometheus buckets are.
        self._bounds = sorted({float(b) for b in boundaries})

    def observe(self, value: int | float, tags: dict[str, str] | None = None) -> None:
        """Count `value` in its bucket."""
        _check_number(value)
        self._record(value, tags)

    @property
    def info(self) -> dict[str, Any]:
        return {**super().info, "boundaries": self.boundaries}

    def _definition(self) -> list:
        return [self._name, self._kind, self._description, self._bounds]

    def __reduce__(self):
        return Histogram, (self._name, self._description, self.boundaries, self._tag_keys)


__all__ = ["Counter", "Gauge", "Histogram"]
