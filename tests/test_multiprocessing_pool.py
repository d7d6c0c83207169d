"""`solray.util.multiprocessing.Pool`: multiprocessing.Pool's API, run by
actors on the cluster, as a Ray user sees it."""

from __future__ import annotations

import multiprocessing
import os

import pytest
from conftest import wait_for_condition, wait_for_file

import solray
from solray.util.multiprocessing import Pool

SHARED_CLUSTER = {"num_cpus": 2}


def square(x):
    return x * x


def add(a, b):
    return a + b


def pid_of(_):
    return os.getpid()


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


def wait_for(path):
    wait_for_file(path)
    return "done"


_initialized = None


def remember(value):
    global _initialized
    _initialized = value


def initialized(_):
    return _initialized


@pytest.fixture
def pool(ray):
    with Pool(2) as p:
        yield p


def test_map_starmap_apply(pool):
    assert pool.map(square, range(10)) == [x * x for x in range(10)]
    assert pool.map(square, range(10), chunksize=3) == [x * x for x in range(10)]
    assert pool.map(square, []) == []
    assert pool.starmap(add, [(1, 2), (3, 4), (5, 6)]) == [3, 7, 11]
    assert pool.apply(add, (2, 3)) == 5
    assert pool.apply(add, (2,), {"b": 10}) == 12
    pids = set(pool.map(pid_of, range(8), chunksize=1))
    assert len(pids) == 2 and os.getpid() not in pids  # two actor processes


def test_imap_keeps_order_and_imap_unordered_streams(pool):
    assert list(pool.imap(square, range(9), chunksize=2)) == [x * x for x in range(9)]
    pulled = []

    def endless():
        n = 0
        while True:
            pulled.append(n)
            yield n
            n += 1

    results = pool.imap_unordered(square, endless())
    taken = {next(results) for _ in range(5)}
    assert taken <= {x * x for x in range(len(pulled))}
    assert len(pulled) <= 5 + 2  # one chunk in flight per actor, not the whole input


def test_async_results_and_callbacks(pool, tmp_path):
    gate = str(tmp_path / "go")
    blocked = pool.apply_async(wait_for, (gate,))
    assert not blocked.ready()
    with pytest.raises(multiprocessing.TimeoutError):
        blocked.get(timeout=0.2)
    with pytest.raises(ValueError, match="not ready"):
        blocked.successful()
    open(gate, "w").close()
    assert blocked.get(timeout=30) == "done" and blocked.ready() and blocked.successful()

    got = []
    result = pool.map_async(square, range(4), callback=got.append)
    result.wait()
    assert got == [[0, 1, 4, 9]] and result.get() == [0, 1, 4, 9]
    errors = []
    result = pool.starmap_async(add, [(1, 1), (2, "x")], error_callback=errors.append)
    result.wait()
    assert not result.successful() and isinstance(errors[0], TypeError)
    single = []
    pool.apply_async(square, (6,), callback=single.append).wait()
    assert single == [36]


def test_errors_raise_the_functions_exception(pool):
    with pytest.raises(ValueError, match="bad item 3"):
        pool.map(fail_on_three, range(6))
    results = pool.imap(fail_on_three, range(6))
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad item 3"):
        next(results)
    assert list(results) == [4, 5]  # the other items still come, as in multiprocessing


def test_initializer_runs_in_each_process(ray):
    with Pool(2, initializer=remember, initargs=("ready",)) as pool:
        assert pool.map(initialized, range(6), chunksize=1) == ["ready"] * 6


def test_maxtasksperchild_replaces_processes(ray):
    with Pool(1, maxtasksperchild=1) as pool:
        pids = [pool.apply(pid_of, (i,)) for i in range(3)]
    assert len(set(pids)) == 3


def test_lifecycle_close_join_terminate(ray):
    pool = Pool(2)
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    result = pool.map_async(square, range(4))
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(square, range(3))
    pool.join()  # the actors end after the work queued before close
    assert result.get(timeout=30) == [0, 1, 4, 9]
    wait_for_condition(no_pool_actor_alive)
    with Pool(2) as pool:
        assert pool.map(square, [3]) == [9]
    wait_for_condition(no_pool_actor_alive)  # leaving the with block terminates them


def no_pool_actor_alive() -> bool:
    actors = solray.util.state.list_actors(limit=10_000)
    return all(a["state"] == "DEAD" for a in actors if a["class_name"] == "_PoolActor")


def test_bad_arguments(ray):
    with pytest.raises(ValueError, match="only 2 CPUs"):
        Pool(3)
    with pytest.raises(ValueError, match=">0"):
        Pool(0)
    with pytest.raises(NotImplementedError, match="context"):
        Pool(1, context=multiprocessing.get_context("spawn"))
    with Pool(1) as pool:
        with pytest.raises(ValueError, match="chunksize"):
            pool.imap(square, range(3), chunksize=0)
