"""Ray's `ray.util.iter_metrics`: the metrics a chain of `util.iter`
iterators shares (counters, timers, info, and the actor the current item
came from), reachable from inside iterator functions through
`LocalIterator.get_metrics()`."""

from __future__ import annotations

import collections
import time


class _Timer:
    """Accumulated wall time of the `with` blocks timed by it."""

    def __init__(self) -> None:
        self.count = 0
        self.total_s = 0.0
        self._start: float | None = None

    def __enter__(self) -> _Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.total_s += time.perf_counter() - self._start
        self.count += 1
        self._start = None

    @property
    def mean(self) -> float:
        return self.total_s / self.count if self.count else 0.0


class MetricsContext:
    """Metrics of one iterator chain."""

    def __init__(self) -> None:
        self.counters: collections.defaultdict = collections.defaultdict(int)
        self.timers: collections.defaultdict = collections.defaultdict(_Timer)
        self.info: dict = {}
        self.current_actor = None

    def save(self) -> tuple:
        """A picklable copy of the counters and info (timers stay local)."""
        return dict(self.counters), dict(self.info)

    def restore(self, values: tuple) -> None:
        counters, info = values
        self.counters.clear()
        self.counters.update(counters)
        self.info = dict(info)


class SharedMetrics:
    """The metrics context iterators of one chain (and the iterators a
    union was made of, its `parents`) hold in common."""

    def __init__(self, metrics: MetricsContext | None = None, parents: list | None = None):
        self.parents = parents or []
        self.set(metrics or MetricsContext())

    def set(self, metrics: MetricsContext) -> None:
        self.metrics = metrics
        for parent in self.parents:
            parent.set(metrics)

    def get(self) -> MetricsContext:
        return self.metrics
