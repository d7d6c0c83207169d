"""`multiprocessing.Pool`'s API on the cluster (Ray's `ray.util.multiprocessing`)."""

from multiprocessing import JoinableQueue, TimeoutError

from solray.util.multiprocessing.pool import Pool

__all__ = ["JoinableQueue", "Pool", "TimeoutError"]
