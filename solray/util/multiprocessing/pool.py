"""`multiprocessing.Pool` on the cluster (Ray's `ray.util.multiprocessing.Pool`).

The pool's processes are actors (`_PoolActor`), so they run wherever the
cluster has room, on any node. Work goes to them in chunks: `map` and
`starmap` cut the whole input into chunks up front and hand them out round
robin; `imap` and `imap_unordered` keep one chunk per actor in flight and
send the next as each comes back, so an endless iterable streams through.
Each chunk runs as one actor call that answers with one outcome per item: the
value, or the exception the function raised (`_Raised`), which the caller
raises as multiprocessing does, at `get()` or at that item of an iterator.

Asynchronous results are resolved through `ObjectRef.future()`: callbacks run
on the thread that resolves those futures, as multiprocessing runs them on
its result-handler thread, so they should be quick.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import TimeoutError
from typing import Any

import solray
from solray.object_ref import ObjectRef

logger = logging.getLogger(__name__)


class _Raised:
    """An item whose function raised: the exception travels as a value, so
    the other items of its chunk still arrive."""

    def __init__(self, error: BaseException):
        self.error = error


class _PoolActor:
    """One process of the pool: runs the initializer once, then chunks."""

    def __init__(self, initializer: Callable | None, initargs: tuple):
        if initializer is not None:
            initializer(*initargs)

    def ping(self) -> None:
        pass

    def run_batch(self, func: Callable, batch: list) -> list:
        outcomes = []
        for args, kwargs in batch:
            try:
                outcomes.append(func(*args, **kwargs))
            except Exception as e:
                outcomes.append(_Raised(e))
        return outcomes


def _outcomes(ref_value_or_error) -> list:
    """A chunk's outcomes; a chunk whose call failed (its actor died, say)
    fails every item with that error."""
    return (
        ref_value_or_error
        if isinstance(ref_value_or_error, list)
        else [_Raised(ref_value_or_error)]
    )


def _unwrap(outcome):
    if isinstance(outcome, _Raised):
        raise outcome.error
    return outcome


class AsyncResult:
    """The result of `apply_async`, `map_async` or `starmap_async`."""

    def __init__(
        self,
        chunk_refs: list[ObjectRef],
        callback: Callable | None = None,
        error_callback: Callable | None = None,
        single_result: bool = False,
    ):
        self._single = single_result
        self._callback = callback
        self._error_callback = error_callback
        self._chunks: list = [None] * len(chunk_refs)
        self._left = len(chunk_refs)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._error: BaseException | None = None
        if not chunk_refs:
            self._finish()
        for index, ref in enumerate(chunk_refs):
            ref.future().add_done_callback(lambda f, i=index: self._chunk_done(i, f))

    def _chunk_done(self, index: int, future) -> None:
        error = future.exception()
        outcomes = _outcomes(error if error is not None else future.result())
        with self._lock:
            self._chunks[index] = outcomes
            self._left -= 1
            last = self._left == 0
        if last:
            self._finish()

    def _finish(self) -> None:
        self._values = [o for chunk in self._chunks for o in chunk]
        failed = next((o for o in self._values if isinstance(o, _Raised)), None)
        self._error = failed.error if failed is not None else None
        try:
            if failed is not None:
                if self._error_callback is not None:
                    self._error_callback(failed.error)
            elif self._callback is not None:
                self._callback(self._values[0] if self._single else list(self._values))
        finally:  # a callback that raises must not leave get() waiting forever
            self._done.set()

    def ready(self) -> bool:
        """Whether every task has finished."""
        return self._done.is_set()

    def successful(self) -> bool:
        """Whether no task raised; ValueError if not ready yet."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._error is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until ready, or `timeout` seconds."""
        self._done.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The result (a list, or one value for apply_async); raises what a
        task raised, or multiprocessing.TimeoutError after `timeout` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return self._values[0] if self._single else list(self._values)


class IMapIterator:
    """The iterator `imap` (ordered) and `imap_unordered` return. It drives
    the work itself, from `next()`: each actor has one chunk in flight, and
    gets the next chunk when its result comes in."""

    def __init__(
        self, pool: Pool, func: Callable, iterable: Iterable, chunksize: int, ordered: bool
    ):
        self._pool = pool
        self._func = func
        self._items = iter(iterable)
        self._chunksize = chunksize
        self._ordered = ordered
        self._exhausted = False
        self._submitted = 0  # chunks sent so far
        self._in_flight: dict[ObjectRef, tuple[int, int]] = {}  # ref -> (chunk, actor)
        self._results: dict[int, list] = {}  # finished chunks not yet yielded
        self._next_chunk = 0  # ordered: the chunk to yield from next
        self._ready: deque = deque()  # outcomes to yield before waiting again
        for actor_index in range(len(pool._actors)):
            self._submit(actor_index)

    def _submit(self, actor_index: int) -> None:
        if self._exhausted:
            return
        chunk = []
        for item in self._items:
            chunk.append(((item,), {}))
            if len(chunk) == self._chunksize:
                break
        else:
            self._exhausted = True
        if chunk:
            ref = self._pool._run_batch(actor_index, self._func, chunk)
            self._in_flight[ref] = (self._submitted, actor_index)
            self._submitted += 1

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self):
        return self.next()

    def next(self, timeout: float | None = None):
        """The next result; multiprocessing.TimeoutError if none comes within
        `timeout` seconds."""
        while not self._ready:
            if self._ordered and self._next_chunk in self._results:
                self._ready.extend(self._results.pop(self._next_chunk))
                self._next_chunk += 1
                continue
            if not self._in_flight:
                raise StopIteration
            self._collect(timeout)
        return _unwrap(self._ready.popleft())

    def _collect(self, timeout: float | None) -> None:
        """Wait for one chunk in flight, keep its outcomes, send its actor
        the next chunk."""
        ready, _ = solray.wait(list(self._in_flight), num_returns=1, timeout=timeout)
        if not ready:
            raise TimeoutError
        chunk_index, actor_index = self._in_flight.pop(ready[0])
        try:
            outcomes = _outcomes(solray.get(ready[0]))
        except solray.exceptions.RayError as e:
            outcomes = _outcomes(e)
        if self._ordered:
            self._results[chunk_index] = outcomes
        else:
            self._ready.extend(outcomes)
        self._submit(actor_index)


class Pool:
    """A pool of `processes` actors (default: the cluster's CPUs) running
    functions in parallel, with `multiprocessing.Pool`'s API.

    `initializer(*initargs)` runs in each actor as it starts;
    `maxtasksperchild` replaces an actor after that many chunks;
    `ray_address` is the cluster to `init()` if this process is not
    connected yet (else a new local one); `ray_remote_args` are the actors'
    options (`num_cpus`, `resources`, ...). `context` (a multiprocessing
    start method) has no meaning here: it is refused unless None."""

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable | None = None,
        initargs: Iterable | None = None,
        maxtasksperchild: int | None = None,
        context: Any = None,
        ray_address: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
    ):
        if context is not None:
            raise NotImplementedError(
                "Pool(context=...) is not supported: the pool's processes are solray actors, "
                "started by the cluster (configure them with ray_remote_args)"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and (
            isinstance(maxtasksperchild, bool)
            or not isinstance(maxtasksperchild, int)
            or maxtasksperchild < 1
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        self._closed = False
        self._initializer = initializer
        self._initargs = tuple(initargs or ())
        self._maxtasksperchild = maxtasksperchild
        self._actor_class = solray.remote(_PoolActor).options(**(ray_remote_args or {}))
        self._stopping: list[ObjectRef] = []  # __ray_terminate__ calls of retired actors
        self._next_actor = 0
        # Work may be submitted from several threads (joblib dispatches from
        # result callbacks): the actor table changes under this lock.
        self._lock = threading.Lock()
        processes = self._connect(processes, ray_address)
        self._actors = [self._new_actor() for _ in range(processes)]
        solray.get([actor.ping.remote() for actor, _ in self._actors])

    @staticmethod
    def _connect(processes: int | None, ray_address: str | None) -> int:
        if not solray.is_initialized():
            if ray_address in (None, "local") and (
                ray_address == "local" or "SOLRAY_ADDRESS" not in os.environ
            ):
                solray.init(address=ray_address, num_cpus=processes)  # a new local cluster
            else:
                solray.init(address=ray_address)
        cpus = int(solray.cluster_resources().get("CPU", 0))
        if processes is None:
            processes = cpus
        if isinstance(processes, bool) or not isinstance(processes, int) or processes <= 0:
            raise ValueError("Processes in the pool must be >0.")
        if processes > cpus:
            raise ValueError(
                f"Tried to start a pool with {processes} processes on an existing cluster, "
                f"but there are only {cpus} CPUs in the cluster."
            )
        return processes

    def _new_actor(self) -> tuple:
        return (self._actor_class.remote(self._initializer, self._initargs), 0)

    def _run_batch(self, actor_index: int | None, func: Callable, batch: list) -> ObjectRef:
        """Send a chunk to an actor (None: the next one, round robin)."""
        with self._lock:
            if actor_index is None:
                actor_index = self._next_actor
                self._next_actor = (actor_index + 1) % len(self._actors)
            actor, chunks = self._actors[actor_index]
            ref = actor.run_batch.remote(func, batch)
            chunks += 1
            if chunks == self._maxtasksperchild:  # it ends after this chunk
                self._stopping.append(actor.__ray_terminate__.remote())
                self._actors[actor_index] = self._new_actor()
            else:
                self._actors[actor_index] = (actor, chunks)
        return ref

    def _check_running(self) -> None:
        if self._closed:
            raise ValueError("Pool not running")

    def _chunks(self, iterable: Iterable, chunksize: int | None, star: bool) -> list[list]:
        items = list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(items), len(self._actors) * 4)
            chunksize += bool(extra)
        elif isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be a positive int, got {chunksize!r}")
        calls = [((tuple(i) if star else (i,)), {}) for i in items]
        return [calls[i : i + chunksize] for i in range(0, len(calls), max(chunksize, 1))]

    def _map_async(self, func, iterable, chunksize, star, callback, error_callback) -> AsyncResult:
        self._check_running()
        refs = []
        for chunk in self._chunks(iterable, chunksize, star):
            refs.append(self._run_batch(len(refs) % len(self._actors), func, chunk))
        return AsyncResult(refs, callback, error_callback)

    # -- multiprocessing.Pool's API -------------------------------------------

    def apply(self, func: Callable, args: tuple | None = None, kwargs: dict | None = None) -> Any:
        """func(*args, **kwargs) on one of the pool's actors; its result."""
        return self.apply_async(func, args, kwargs).get()

    def apply_async(
        self,
        func: Callable,
        args: tuple | None = None,
        kwargs: dict | None = None,
        callback: Callable | None = None,
        error_callback: Callable | None = None,
    ) -> AsyncResult:
        """func(*args, **kwargs) on the next actor (round robin)."""
        self._check_running()
        ref = self._run_batch(None, func, [(tuple(args or ()), dict(kwargs or {}))])
        return AsyncResult([ref], callback, error_callback, single_result=True)

    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        """[func(x) for x in iterable], computed in chunks on the actors."""
        return self._map_async(func, iterable, chunksize, False, None, None).get()

    def map_async(
        self,
        func: Callable,
        iterable: Iterable,
        chunksize: int | None = None,
        callback: Callable | None = None,
        error_callback: Callable | None = None,
    ) -> AsyncResult:
        return self._map_async(func, iterable, chunksize, False, callback, error_callback)

    def starmap(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        """[func(*args) for args in iterable]."""
        return self._map_async(func, iterable, chunksize, True, None, None).get()

    def starmap_async(
        self,
        func: Callable,
        iterable: Iterable,
        chunksize: int | None = None,
        callback: Callable | None = None,
        error_callback: Callable | None = None,
    ) -> AsyncResult:
        return self._map_async(func, iterable, chunksize, True, callback, error_callback)

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> Iterator:
        """Results in input order, computed a chunk per actor at a time."""
        self._check_running()
        return IMapIterator(self, func, iterable, self._iter_chunksize(chunksize), True)

    def imap_unordered(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> Iterator:
        """Results as they finish, computed a chunk per actor at a time."""
        self._check_running()
        return IMapIterator(self, func, iterable, self._iter_chunksize(chunksize), False)

    @staticmethod
    def _iter_chunksize(chunksize) -> int:
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be a positive int, got {chunksize!r}")
        return chunksize

    def close(self) -> None:
        """Accept no more work; the actors end once their queued work is done."""
        if self._closed:
            return
        self._closed = True
        for actor, _ in self._actors:
            self._stopping.append(actor.__ray_terminate__.remote())

    def terminate(self) -> None:
        """Stop at once: the actors are killed, work in progress is lost."""
        self.close()
        for actor, _ in self._actors:
            solray.kill(actor)

    def join(self) -> None:
        """Wait for the actors of a closed pool to end."""
        if not self._closed:
            raise ValueError("Pool is still running")
        if self._stopping:
            solray.wait(self._stopping, num_returns=len(self._stopping))
            self._stopping = []

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc) -> None:
        self.terminate()

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")


__all__ = ["AsyncResult", "IMapIterator", "Pool", "TimeoutError"]
