"""`as_completed` and `map_unordered` (Ray 2.x's `ray.util` task helpers):
results as they finish, instead of `get` in a loop or `get` of everything.

Both wait with `solray.wait` in batches of `chunk_size` (its `num_returns`),
so within a batch results come in submission order, as in Ray.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import solray
from solray.object_ref import ObjectRef

DEFAULT_CHUNK_SIZE = 10
DEFAULT_BACKPRESSURE_SIZE = 100


def _check(chunk_size: int, wait_kwargs: dict) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError("`chunk_size` must be >= 1")
    if "num_returns" in wait_kwargs:
        raise ValueError("Use the `chunk_size` argument instead of `num_returns`.")


def _next_batch(
    refs: list[ObjectRef], chunk_size: int, yield_obj_refs: bool, wait_kwargs: dict
) -> tuple[list, list[ObjectRef]]:
    """Wait for up to `chunk_size` of `refs`: (their values or refs, the rest)."""
    ready, rest = solray.wait(refs, num_returns=min(chunk_size, len(refs)), **wait_kwargs)
    return (ready if yield_obj_refs else solray.get(ready)), rest


def as_completed(
    refs: Sequence[ObjectRef],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    yield_obj_refs: bool = False,
    **kwargs: Any,
) -> Iterator[Any]:
    """Yield the values of `refs` (or the refs, with `yield_obj_refs=True`) as
    soon as each batch of `chunk_size` of them is ready. Other keyword
    arguments go to `solray.wait` (`timeout`, `fetch_local`)."""
    _check(chunk_size, kwargs)
    pending = list(refs)
    while pending:
        results, pending = _next_batch(pending, chunk_size, yield_obj_refs, kwargs)
        yield from results


def map_unordered(
    fn,
    items: Iterable[Any],
    *,
    backpressure_size: int | None = DEFAULT_BACKPRESSURE_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    yield_obj_refs: bool = False,
    **kwargs: Any,
) -> Iterator[Any]:
    """Run the remote function `fn` on each item and yield results as they
    finish. At most `backpressure_size` tasks are in flight (None: no
    limit): past that, a batch of `chunk_size` finished ones is yielded
    before more are submitted."""
    if backpressure_size is None:
        limit = float("inf")
    elif (
        isinstance(backpressure_size, bool)
        or not isinstance(backpressure_size, int)
        or backpressure_size <= 0
    ):
        raise ValueError("backpressure_size must be positive.")
    else:
        limit = backpressure_size
    _check(chunk_size, kwargs)
    if not hasattr(fn, "remote"):
        raise TypeError(f"map_unordered() needs a remote function, got {fn!r}")
    in_flight: list[ObjectRef] = []
    for item in items:
        in_flight.append(fn.remote(item))
        if len(in_flight) >= limit:
            results, in_flight = _next_batch(in_flight, chunk_size, yield_obj_refs, kwargs)
            yield from results
    yield from as_completed(
        in_flight, chunk_size=chunk_size, yield_obj_refs=yield_obj_refs, **kwargs
    )
