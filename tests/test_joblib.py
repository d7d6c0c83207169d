"""`solray.util.joblib.register_ray()`: joblib.Parallel runs on the cluster."""

from __future__ import annotations

import os

import pytest

joblib = pytest.importorskip("joblib")

from solray.util.joblib import register_ray  # noqa: E402

SHARED_CLUSTER = {"num_cpus": 2}


def where(x):
    return x * 10, os.getpid()


def fail_on(x):
    if x == 4:
        raise KeyError(f"item {x}")
    return x


def test_parallel_runs_on_the_clusters_actors(ray):
    register_ray()
    with joblib.parallel_backend("ray"):
        results = joblib.Parallel(n_jobs=2)(joblib.delayed(where)(i) for i in range(20))
    assert [value for value, _ in results] == [i * 10 for i in range(20)]
    pids = {pid for _, pid in results}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_n_jobs_minus_one_is_the_clusters_cpus_and_errors_propagate(ray):
    register_ray()
    with joblib.parallel_backend("ray", n_jobs=-1):
        assert joblib.effective_n_jobs() == 2
        with pytest.raises(KeyError, match="item 4"):
            joblib.Parallel()(joblib.delayed(fail_on)(i) for i in range(8))
        assert joblib.Parallel()(joblib.delayed(fail_on)(i) for i in range(4)) == [0, 1, 2, 3]


def test_unknown_backend_option_is_refused(ray):
    register_ray()
    with pytest.raises(TypeError, match="unexpected option 'colour'"):
        with joblib.parallel_backend("ray", n_jobs=2, colour="blue"):
            joblib.Parallel()(joblib.delayed(where)(i) for i in range(2))
