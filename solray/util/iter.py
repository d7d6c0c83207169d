"""Ray's parallel iterators (`ray.util.iter`, deprecated in Ray since 2.0 but
still exported by `ray.util`): a stream of items sharded over actors, with
transforms applied remotely in each shard (`ParallelIterator`) or locally
(`LocalIterator`).

Shards are `ParallelIteratorWorker` actors. A ParallelIterator is a list of
actor sets, each with the transforms to apply in its actors; nothing runs
until it is gathered (`gather_sync`, `gather_async`, `batch_across_shards`,
`get_shard`), which sends the transforms to the actors (`par_iter_init`) and
then pulls items (`par_iter_next`, or in batches). A shard that has no more
items raises StopIteration, which reaches the caller's `get` as one (a
RayTaskError is also an instance of the error it carries).

A LocalIterator is built lazily from a function that makes its base
iterator and a list of transforms, so it can be pickled until iteration
starts. An iterator given a `timeout` (union's non-deterministic mode) yields
`_NextValueNotReady()` instead of blocking; every transform passes those
markers through untouched.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import solray
from solray.exceptions import GetTimeoutError
from solray.util.iter_metrics import MetricsContext, SharedMetrics

T = TypeVar("T")
U = TypeVar("U")


class _NextValueNotReady(Exception):
    """Yielded (not raised) by an iterator with a timeout when no item is
    ready yet."""


def _not_ready(item) -> bool:
    return isinstance(item, _NextValueNotReady)


# -- making parallel iterators ---------------------------------------------------


def from_items(items: list, num_shards: int = 2, repeat: bool = False) -> ParallelIterator:
    """A parallel iterator over `items`, dealt round-robin to `num_shards`
    actors (forever, if `repeat`)."""
    _check_positive(num_shards, "num_shards")
    shards: list[list] = [[] for _ in range(num_shards)]
    for i, item in enumerate(items):
        shards[i % num_shards].append(item)
    kind = type(items[0]).__name__ if items else "None"
    name = f"from_items[{kind}, {len(items)}, shards={num_shards}{_repeat_tag(repeat)}]"
    return from_iterators(shards, repeat=repeat, name=name)


def from_range(n: int, num_shards: int = 2, repeat: bool = False) -> ParallelIterator:
    """A parallel iterator over 0..n-1, cut into `num_shards` consecutive
    ranges (the last takes the remainder)."""
    _check_positive(num_shards, "num_shards")
    size = n // num_shards
    ranges = [
        range(i * size, n if i == num_shards - 1 else (i + 1) * size) for i in range(num_shards)
    ]
    name = f"from_range[{n}, shards={num_shards}{_repeat_tag(repeat)}]"
    return from_iterators(ranges, repeat=repeat, name=name)


def from_iterators(
    generators: list, repeat: bool = False, name: str | None = None
) -> ParallelIterator:
    """A parallel iterator with one actor per iterable of `generators` (an
    iterable, or a function returning one: generators cannot be pickled)."""
    worker = solray.remote(ParallelIteratorWorker)
    actors = [worker.remote(g, repeat) for g in generators]
    return from_actors(
        actors, name=name or f"from_iterators[shards={len(generators)}{_repeat_tag(repeat)}]"
    )


def from_actors(actors: list, name: str | None = None) -> ParallelIterator:
    """A parallel iterator over existing actors, each of a class that
    subclasses ParallelIteratorWorker."""
    return ParallelIterator(
        [_ActorSet(list(actors), [])], name or f"from_actors[shards={len(actors)}]", []
    )


def _repeat_tag(repeat: bool) -> str:
    return ", repeat=True" if repeat else ""


def _check_positive(value, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")


def _check_batching(batch_ms, num_async) -> None:
    if num_async < 1:
        raise ValueError(f"num_async must be positive, got {num_async!r}")
    if batch_ms < 0:
        raise ValueError(f"batch_ms must not be negative, got {batch_ms!r}")


class _ActorSet:
    """Shard actors and the transforms (LocalIterator -> LocalIterator) to
    apply in each of them."""

    def __init__(self, actors: list, transforms: list):
        self.actors = actors
        self.transforms = transforms

    def init_actors(self) -> None:
        solray.get([a.par_iter_init.remote(self.transforms) for a in self.actors])

    def with_transform(self, fn: Callable) -> _ActorSet:
        return _ActorSet(self.actors, [*self.transforms, fn])


# -- the parallel iterator --------------------------------------------------------------


class ParallelIterator(Generic[T]):
    """Items sharded over actors; transforms run in the actors. Picklable:
    it can be passed to tasks and actors (read each shard from one process
    at a time)."""

    def __init__(self, actor_sets: list, name: str, parent_iterators: list):
        self.actor_sets = actor_sets
        self.name = name
        # Repartitioned iterators read from their parents' actors: keep them.
        self.parent_iterators = parent_iterators

    def __iter__(self):
        raise TypeError(
            "You must use it.gather_sync() or it.gather_async() to iterate over the "
            "results of a ParallelIterator."
        )

    def __repr__(self) -> str:
        return f"ParallelIterator[{self.name}]"

    __str__ = __repr__

    def _with_transform(self, fn: Callable, suffix: str) -> ParallelIterator:
        return ParallelIterator(
            [s.with_transform(fn) for s in self.actor_sets],
            self.name + suffix,
            self.parent_iterators,
        )

    def _actors(self) -> list:
        """Every shard actor, initialised with its transforms."""
        actors = []
        for actor_set in self.actor_sets:
            actor_set.init_actors()
            actors.extend(actor_set.actors)
        return actors

    # Transforms, applied in each shard.

    def transform(self, fn: Callable[[Iterable], Iterable]) -> ParallelIterator:
        return self._with_transform(lambda it: it.transform(fn), ".transform()")

    def for_each(self, fn: Callable, max_concurrency: int = 1, resources=None) -> ParallelIterator:
        if max_concurrency < 0:
            raise ValueError("max_concurrency must be non-negative.")
        return self._with_transform(
            lambda it: it.for_each(fn, max_concurrency, resources), ".for_each()"
        )

    def filter(self, fn: Callable[[Any], bool]) -> ParallelIterator:
        return self._with_transform(lambda it: it.filter(fn), ".filter()")

    def batch(self, n: int) -> ParallelIterator:
        return self._with_transform(lambda it: it.batch(n), f".batch({n})")

    def flatten(self) -> ParallelIterator:
        return self._with_transform(lambda it: it.flatten(), ".flatten()")

    def combine(self, fn: Callable) -> ParallelIterator:
        it = self.for_each(fn).flatten()
        it.name = self.name + ".combine()"
        return it

    def local_shuffle(self, shuffle_buffer_size: int, seed: int | None = None) -> ParallelIterator:
        return self._with_transform(
            lambda it: it.shuffle(shuffle_buffer_size, seed),
            f".local_shuffle(shuffle_buffer_size={shuffle_buffer_size}, seed={seed})",
        )

    def repartition(self, num_partitions: int, batch_ms: int = 0) -> ParallelIterator:
        """The same items over `num_partitions` new shards: the k-th item of
        each old shard goes to new shard k % num_partitions."""
        _check_positive(num_partitions, "num_partitions")
        sources = self._actors()

        def partition(index: int):
            def items():
                pending = {
                    a.par_iter_slice_batch.remote(num_partitions, index, batch_ms): a
                    for a in sources
                }
                while pending:
                    ready, _ = solray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        actor = pending.pop(ref)
                        try:
                            batch = solray.get(ref)
                        except StopIteration:
                            continue
                        pending[
                            actor.par_iter_slice_batch.remote(num_partitions, index, batch_ms)
                        ] = actor
                        yield from batch

            return items

        worker = solray.remote(ParallelIteratorWorker)
        actors = [worker.remote(partition(i), False) for i in range(num_partitions)]
        return ParallelIterator(
            [_ActorSet(actors, [])],
            self.name + f".repartition[num_partitions={num_partitions}]",
            [self],
        )

    # Reading.

    def batch_across_shards(self) -> LocalIterator:
        """Lists of one item from each shard, shard by shard, until all are
        exhausted (a shard that ends drops out)."""

        def rounds(timeout=None):
            active = self._actors()
            calls = [(a, a.par_iter_next.remote()) for a in active]
            while calls:
                if timeout is not None:
                    refs = [ref for _, ref in calls]
                    ready, _ = solray.wait(refs, num_returns=len(refs), timeout=timeout)
                    if len(ready) < len(refs):
                        yield _NextValueNotReady()
                        continue
                results, still = [], []
                for actor, ref in calls:
                    try:
                        results.append(solray.get(ref))
                        still.append(actor)
                    except StopIteration:
                        pass
                calls = [(a, a.par_iter_next.remote()) for a in still]
                if results:
                    yield results

        return LocalIterator(rounds, SharedMetrics(), name=f"{self}.batch_across_shards()")

    def gather_sync(self) -> LocalIterator:
        """Every item, one shard after another in turn, fetched on demand."""
        it = self.batch_across_shards().flatten()
        it.name = f"{self}.gather_sync()"
        return it

    def gather_async(self, batch_ms: int = 0, num_async: int = 1) -> LocalIterator:
        """Every item, as soon as a shard has it (order not deterministic),
        with `num_async` requests in flight per shard, each returning what
        the shard produced within `batch_ms` (at least one item)."""
        _check_batching(batch_ms, num_async)
        shared = SharedMetrics()

        def items(timeout=None):
            pending = {}
            for actor in self._actors():
                for _ in range(num_async):
                    pending[actor.par_iter_next_batch.remote(batch_ms)] = actor
            while pending:
                ready, _ = solray.wait(list(pending), num_returns=1, timeout=timeout)
                if not ready:
                    yield _NextValueNotReady()
                    continue
                for ref in ready:
                    actor = pending.pop(ref)
                    try:
                        batch = solray.get(ref)
                    except StopIteration:
                        continue
                    pending[actor.par_iter_next_batch.remote(batch_ms)] = actor
                    shared.get().current_actor = actor
                    yield from batch

        return LocalIterator(items, shared, name=f"{self}.gather_async()")

    def take(self, n: int) -> list:
        return self.gather_sync().take(n)

    def show(self, n: int = 20) -> None:
        self.gather_sync().show(n)

    def union(self, other: ParallelIterator) -> ParallelIterator:
        if not isinstance(other, ParallelIterator):
            raise TypeError(f"other must be of type ParallelIterator, got {type(other)}")
        return ParallelIterator(
            self.actor_sets + other.actor_sets,
            f"ParallelUnion[{self}, {other}]",
            self.parent_iterators + other.parent_iterators,
        )

    def select_shards(self, shards_to_keep: list[int]) -> ParallelIterator:
        """The shards of these indices only (disjoint selections are the
        caller's business)."""
        if len(self.actor_sets) > 1:
            raise ValueError("select_shards() is not allowed after union()")
        if not shards_to_keep:
            raise ValueError("at least one shard must be selected")
        (actor_set,) = self.actor_sets
        bad = [i for i in shards_to_keep if not 0 <= i < len(actor_set.actors)]
        if bad:
            raise ValueError(f"shard indices {bad} out of range: {len(actor_set.actors)} shards")
        kept = [a for i, a in enumerate(actor_set.actors) if i in shards_to_keep]
        return ParallelIterator(
            [_ActorSet(kept, actor_set.transforms)],
            f"{self}.select_shards({len(kept)} total)",
            self.parent_iterators,
        )

    def num_shards(self) -> int:
        return sum(len(s.actors) for s in self.actor_sets)

    def shards(self) -> list[LocalIterator]:
        return [self.get_shard(i) for i in range(self.num_shards())]

    def get_shard(self, shard_index: int, batch_ms: int = 0, num_async: int = 1) -> LocalIterator:
        """One shard's items, in order, as a LocalIterator (picklable: it can
        be read in another task or actor)."""
        _check_batching(batch_ms, num_async)
        index = shard_index
        for actor_set in self.actor_sets:
            if 0 <= index < len(actor_set.actors):
                actor, transforms = actor_set.actors[index], actor_set.transforms
                break
            index -= len(actor_set.actors)
        else:
            raise ValueError("Shard index out of range", shard_index, self.num_shards())

        def items(timeout=None):
            solray.get(actor.par_iter_init.remote(transforms))
            in_flight = collections.deque(
                actor.par_iter_next_batch.remote(batch_ms) for _ in range(num_async)
            )
            while True:
                try:
                    batch = solray.get(in_flight[0], timeout=timeout)
                except GetTimeoutError:
                    yield _NextValueNotReady()
                    continue
                except StopIteration:
                    return
                in_flight.popleft()
                in_flight.append(actor.par_iter_next_batch.remote(batch_ms))
                yield from batch

        return LocalIterator(items, SharedMetrics(), name=self.name + f".shard[{shard_index}]")


# -- the local iterator -----------------------------------------------------------------


class LocalIterator(Generic[T]):
    """An iterator over items in this process, with the same transforms as
    ParallelIterator, applied here. Picklable until iteration starts."""

    # A function given to for_each() that has this method gets it called
    # before each item is fetched (to time the wait).
    ON_FETCH_START_HOOK_NAME = "_on_fetch_start"

    thread_local = threading.local()

    def __init__(
        self,
        base_iterator: Callable[..., Iterable],
        shared_metrics: SharedMetrics,
        local_transforms: list | None = None,
        timeout: float | None = None,
        name: str | None = None,
    ):
        if not isinstance(shared_metrics, SharedMetrics):
            raise TypeError(f"shared_metrics must be a SharedMetrics, got {type(shared_metrics)}")
        self.base_iterator = base_iterator
        self.built_iterator: Iterator | None = None
        self.local_transforms = list(local_transforms or [])
        self.shared_metrics = shared_metrics
        self.timeout = timeout
        self.name = name or "unknown"

    @staticmethod
    def get_metrics() -> MetricsContext:
        """The metrics of the iterator whose function is running (only
        inside such a function)."""
        metrics = getattr(LocalIterator.thread_local, "metrics", None)
        if metrics is None:
            raise ValueError("Cannot access context outside an iterator.")
        return metrics

    @contextmanager
    def _metrics_context(self):
        previous = getattr(self.thread_local, "metrics", None)
        self.thread_local.metrics = self.shared_metrics.get()
        try:
            yield
        finally:
            self.thread_local.metrics = previous

    def _build_once(self) -> None:
        if self.built_iterator is None:
            it = iter(self.base_iterator(self.timeout))
            for transform in self.local_transforms:
                it = transform(it)
            self.built_iterator = it

    def __iter__(self):
        self._build_once()
        return self.built_iterator

    def __next__(self):
        self._build_once()
        return next(self.built_iterator)

    def __repr__(self) -> str:
        return f"LocalIterator[{self.name}]"

    __str__ = __repr__

    def _then(self, transform: Callable[[Iterator], Iterator], suffix: str) -> LocalIterator:
        return LocalIterator(
            self.base_iterator,
            self.shared_metrics,
            [*self.local_transforms, transform],
            name=self.name + suffix,
        )

    def transform(self, fn: Callable[[Iterable], Iterable]) -> LocalIterator:
        return self._then(lambda it: iter(fn(it)), ".transform()")

    def for_each(self, fn: Callable, max_concurrency: int = 1, resources=None) -> LocalIterator:
        """fn applied to each item: here, or with max_concurrency other than 1
        as remote tasks (`resources`: their options), at most that many at
        once (0: no limit), results in completion order."""
        if max_concurrency == 1:

            def apply(it):
                for item in it:
                    if _not_ready(item):
                        yield item
                        continue
                    while True:  # fn may itself answer "not ready": ask again
                        with self._metrics_context():
                            result = fn(item)
                        yield result
                        if not _not_ready(result):
                            break

        else:
            remote_fn = solray.remote(fn).options(**(resources or {}))

            def apply(it):
                running = []
                for item in it:
                    if _not_ready(item):
                        yield item
                        continue
                    if max_concurrency and len(running) >= max_concurrency:
                        done, running = solray.wait(running)
                        yield from solray.get(done)
                    running.append(remote_fn.remote(item))
                while running:
                    done, running = solray.wait(running)
                    yield from solray.get(done)

        hook = getattr(fn, self.ON_FETCH_START_HOOK_NAME, None)
        if hook is not None:
            inner = apply

            def apply(it):  # noqa: F811 (the hooked version wraps the plain one)
                results = inner(it)
                fresh = True
                while True:
                    if fresh:
                        with self._metrics_context():
                            hook()
                    try:
                        item = next(results)
                    except StopIteration:
                        return
                    fresh = not _not_ready(item)
                    yield item

        return self._then(apply, ".for_each()")

    def filter(self, fn: Callable[[Any], bool]) -> LocalIterator:
        def apply(it):
            for item in it:
                with self._metrics_context():
                    keep = _not_ready(item) or fn(item)
                if keep:
                    yield item

        return self._then(apply, ".filter()")

    def batch(self, n: int) -> LocalIterator:
        _check_positive(n, "batch size")

        def apply(it):
            batch = []
            for item in it:
                if _not_ready(item):
                    yield item
                    continue
                batch.append(item)
                if len(batch) >= n:
                    yield batch
                    batch = []
            if batch:
                yield batch

        return self._then(apply, f".batch({n})")

    def flatten(self) -> LocalIterator:
        def apply(it):
            for item in it:
                if _not_ready(item):
                    yield item
                else:
                    yield from item

        return self._then(apply, ".flatten()")

    def shuffle(self, shuffle_buffer_size: int, seed: int | None = None) -> LocalIterator:
        """Items in random order, drawn from a buffer of this many (a buffer
        as large as the stream shuffles it perfectly)."""
        rng = random.Random(seed)

        def apply(it):
            buffer = []
            for item in it:
                if _not_ready(item):
                    yield item
                    continue
                buffer.append(item)
                if len(buffer) >= shuffle_buffer_size:
                    yield buffer.pop(rng.randrange(len(buffer)))
            while buffer:
                yield buffer.pop(rng.randrange(len(buffer)))

        return self._then(
            apply, f".shuffle(shuffle_buffer_size={shuffle_buffer_size}, seed={seed})"
        )

    def combine(self, fn: Callable) -> LocalIterator:
        it = self.for_each(fn).flatten()
        it.name = self.name + ".combine()"
        return it

    def zip_with_source_actor(self) -> LocalIterator:
        """(actor the item came from, item): for gather_async iterators."""

        def with_source(item):
            actor = LocalIterator.get_metrics().current_actor
            if actor is None:
                raise ValueError("Could not identify source actor of item")
            return actor, item

        it = self.for_each(with_source)
        it.name = self.name + ".zip_with_source_actor()"
        return it

    def take(self, n: int) -> list:
        out = []
        if n <= 0:
            return out
        for item in self:
            out.append(item)
            if len(out) >= n:
                break
        return out

    def show(self, n: int = 20) -> None:
        for item in self.take(n):
            print(item)

    def duplicate(self, n: int) -> list[LocalIterator]:
        """`n` iterators that each yield every item of this one (items are
        kept until every copy has read them)."""
        if n < 2:
            raise ValueError("Number of copies must be >= 2")
        queues = [collections.deque() for _ in range(n)]

        def copy(i: int):
            def items(timeout=None):
                while True:
                    if not queues[i]:
                        self.timeout = timeout
                        try:
                            item = next(self)
                        except StopIteration:
                            return
                        for q in queues:
                            q.append(item)
                    yield queues[i].popleft()

            return items

        return [
            LocalIterator(copy(i), self.shared_metrics, name=self.name + f".duplicate[{i}]")
            for i in range(n)
        ]

    def union(self, *others: LocalIterator, deterministic: bool = False) -> LocalIterator:
        """Items of this and the others: in turn, one each, if
        `deterministic`; else from whichever has items ready (up to 20 from
        one before moving on)."""
        for other in others:
            if not isinstance(other, LocalIterator):
                raise ValueError(f"other must be of type LocalIterator, got {type(other)}")
        parents = [self, *others]
        shared = SharedMetrics(parents=[p.shared_metrics for p in parents])
        timeout = None if deterministic else 0
        sources = [
            LocalIterator(p.base_iterator, shared, p.local_transforms, timeout=timeout)
            for p in parents
        ]
        per_turn = 1 if deterministic else 20

        def items(timeout=None):
            active = list(sources)
            while active:
                for source in list(active):
                    try:
                        for _ in range(per_turn):
                            item = next(source)
                            if _not_ready(item):
                                break
                            yield item
                    except StopIteration:
                        active.remove(source)

        names = ", ".join(map(str, others))
        return LocalIterator(items, shared, name=f"LocalUnion[{self}, {names}]")


# -- the shard actor ------------------------------------------------------------------------


class ParallelIteratorWorker:
    """A shard: actors given to `from_actors` subclass it (and call this
    __init__)."""

    def __init__(self, item_generator: Any, repeat: bool):
        def make():
            return item_generator() if callable(item_generator) else item_generator

        if repeat:

            def forever():
                while True:
                    yield from make()

            self.item_generator = forever()
        else:
            self.item_generator = iter(make())
        self.local_it = None
        self._slices: collections.defaultdict | None = None

    def par_iter_init(self, transforms: list) -> None:
        it = LocalIterator(lambda timeout: self.item_generator, SharedMetrics())
        for transform in transforms:
            it = transform(it)
        self.local_it = iter(it)

    def _local(self):
        if self.local_it is None:
            raise RuntimeError("must call par_iter_init() first")
        return self.local_it

    def par_iter_next(self):
        return next(self._local())

    def _batch(self, next_item: Callable, batch_ms: float) -> list:
        """At least one item (StopIteration if none), then more until
        `batch_ms` have passed."""
        batch = [next_item()]
        deadline = time.monotonic() + batch_ms / 1000.0
        while batch_ms and time.monotonic() < deadline:
            try:
                batch.append(next_item())
            except StopIteration:
                break
        return batch

    def par_iter_next_batch(self, batch_ms: int):
        return self._batch(self.par_iter_next, batch_ms)

    def par_iter_slice(self, step: int, start: int):
        """The next item of partition `start` of `step`: items are dealt to
        partitions round-robin, and kept until their partition asks."""
        if self._slices is None:
            self._slices = collections.defaultdict(collections.deque)
        if not self._slices[start]:
            local = self._local()
            for j in range(step):
                try:
                    self._slices[j].append(next(local))
                except StopIteration:
                    break
            if not self._slices[start]:
                raise StopIteration
        return self._slices[start].popleft()

    def par_iter_slice_batch(self, step: int, start: int, batch_ms: int):
        return self._batch(lambda: self.par_iter_slice(step, start), batch_ms)


__all__ = [
    "LocalIterator",
    "ParallelIterator",
    "ParallelIteratorWorker",
    "from_actors",
    "from_items",
    "from_iterators",
    "from_range",
]
