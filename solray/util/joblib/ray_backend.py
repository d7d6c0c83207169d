"""The joblib backend itself: joblib's pool-based backend machinery (task
batching, callbacks, abort) over `solray.util.multiprocessing.Pool`.

joblib passes every backend its memmapping options (`max_nbytes`,
`mmap_mode`, `temp_folder`) and a multiprocessing `context`; they are about
sharing large arrays with local worker processes through files, which the
object store does here (an argument over 100 KiB is stored once and read in
place by every actor on a node), so they do not apply. Any other keyword is
refused by name.
"""

from __future__ import annotations

from typing import Any

from joblib._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    PoolManagerMixin,
    SequentialBackend,
)

import solray
from solray._private.worker import auto_init
from solray.util.multiprocessing.pool import Pool

# What joblib.Parallel hands every backend's configure(); see the header.
_JOBLIB_POOL_OPTIONS = {"max_nbytes", "mmap_mode", "temp_folder", "verbose", "context"}


class RayBackend(PoolManagerMixin, AutoBatchingMixin, ParallelBackendBase):
    """Runs joblib's batches on a Pool of actors. `n_jobs=-1`: one actor per
    CPU of the cluster (started with `init()` if this process is not
    connected). `ray_remote_args`: the actors' options."""

    supports_retrieve_callback = True
    supports_return_generator = False
    supports_timeout = True
    supports_sharedmem = False
    uses_threads = False

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        self.ray_remote_args = ray_remote_args
        super().__init__(
            nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads, **kwargs
        )

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            auto_init()
            cpus = int(solray.cluster_resources().get("CPU", 1))
            return max(cpus + 1 + n_jobs, 1)
        return n_jobs

    def configure(
        self,
        n_jobs: int = 1,
        parallel=None,
        prefer: str | None = None,
        require: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
        **pool_options: Any,
    ) -> int:
        unknown = sorted(set(pool_options) | set(self.backend_kwargs))
        unknown = [k for k in unknown if k not in _JOBLIB_POOL_OPTIONS]
        if unknown:
            raise TypeError(f"the ray joblib backend got an unexpected option {unknown[0]!r}")
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:  # as joblib's process backends: run in this process
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        args = ray_remote_args if ray_remote_args is not None else self.ray_remote_args
        self._pool = Pool(n_jobs, ray_remote_args=args)
        self.parallel = parallel
        return n_jobs

    def terminate(self) -> None:
        super().terminate()
        self.reset_batch_stats()
