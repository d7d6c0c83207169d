"""A joblib parallel backend named "ray" (Ray's `ray.util.joblib`), so
`joblib.Parallel` (and scikit-learn's `n_jobs`) runs on the cluster:

    from solray.util.joblib import register_ray
    register_ray()
    with joblib.parallel_backend("ray"):
        joblib.Parallel(n_jobs=4)(joblib.delayed(f)(x) for x in xs)
"""

from __future__ import annotations


def register_ray() -> None:
    """Register the "ray" backend with joblib (which must be installed)."""
    try:
        from joblib.parallel import register_parallel_backend
    except ImportError:
        raise ImportError(
            "register_ray() needs joblib: install it with `pip install joblib`"
        ) from None
    from solray.util.joblib.ray_backend import RayBackend

    register_parallel_backend("ray", RayBackend)


__all__ = ["register_ray"]
