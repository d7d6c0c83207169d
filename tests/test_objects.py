"""Objects as a Ray user sees them, on a real local cluster: put/get of
small and large values, get and wait semantics and their errors, zero-copy
reads of large arrays, refs as arguments, inside values and in closures,
ObjectRef identity, and refs as futures and awaitables.
"""

from __future__ import annotations

import asyncio
import gc
import pickle
import time

import numpy as np
import pytest
from conftest import mapped_file, store_file, wait_for_condition, wait_for_file

import solray as ray
from solray.exceptions import GetTimeoutError, RayTaskError

LARGE = 200_000  # float64 elements: 1.6 MB, well above the 100 KiB inline limit


def _blocked_task(path: str):
    """A task that stays pending until `path` is created."""

    @ray.remote
    def blocked(p):
        wait_for_file(p)
        return "released"

    return blocked.remote(path)


# -- put and get -------------------------------------------------------------


def test_put_get_values(ray_start):
    values = [
        0,
        -7,
        2**70,
        3.5,
        None,
        True,
        "text",
        "",
        b"\x00\x01 bytes",
        b"x" * 300_000,  # large bytes go to the store
        [1, "two", 3.0],
        (1, (2, 3)),
        {"a": 1, "nested": {"b": [1, 2]}},
        set(range(5)),
        np.arange(10, dtype=np.int32),
        np.zeros((3, 4), dtype=np.float32),
        np.arange(LARGE, dtype=np.float64),
        np.ones((500, 500), dtype=np.uint8),  # 250 KB
    ]
    refs = [ray.put(v) for v in values]
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    got = ray.get(refs)
    assert len(got) == len(values)
    for value, result in zip(values, got, strict=True):
        if isinstance(value, np.ndarray):
            assert isinstance(result, np.ndarray)
            assert result.dtype == value.dtype and result.shape == value.shape
            np.testing.assert_array_equal(result, value)
        else:
            assert type(result) is type(value)
            assert result == value
    # One ref at a time, a tuple of refs, repeated refs.
    assert ray.get(refs[6]) == "text"
    assert ray.get((refs[0], refs[1])) == [0, -7]
    assert ray.get([refs[0], refs[0], refs[1]]) == [0, 0, -7]
    assert ray.get([]) == []

    # Values computed by tasks, small and large.
    @ray.remote
    def make(n):
        return np.full(n, 3, dtype=np.int64)

    small, large = ray.get([make.remote(10), make.remote(LARGE)])
    assert small.sum() == 30
    assert large.shape == (LARGE,) and large.sum() == 3 * LARGE

    # A large value stored from a task is readable in another task too.
    @ray.remote
    def total(a):
        return int(a.sum())

    assert ray.get(total.remote(make.remote(LARGE))) == 3 * LARGE
    assert ray.get(total.remote(refs[16])) == int(np.arange(LARGE).sum())


def test_get_and_put_argument_errors(ray_start):
    ref = ray.put(1)
    with pytest.raises(TypeError, match="'put' on an ObjectRef"):
        ray.put(ref)
    # Wrapped in a list, a ref can be put.
    assert ray.get(ray.get(ray.put([ref]))[0]) == 1

    for bad in (1, "ref", None, {"a": ref}):
        with pytest.raises(ValueError, match=f"ObjectRefs, got {type(bad).__name__}"):
            ray.get(bad)
    with pytest.raises(ValueError, match="the list holds a int"):
        ray.get([ref, 2])


def test_get_timeout(ray_start, tmp_path):
    signal = str(tmp_path / "release")
    pending = _blocked_task(signal)

    with pytest.raises(GetTimeoutError) as info:
        ray.get(pending, timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, ray.exceptions.RayError)

    # timeout=0 on a pending task raises at once, for a list too.
    with pytest.raises(GetTimeoutError):
        ray.get(pending, timeout=0)
    with pytest.raises(TimeoutError):
        ray.get([ray.put(1), pending], timeout=0)

    # A ready object is returned even with timeout=0.
    assert ray.get(ray.put("ready"), timeout=0) == "ready"

    # The timed-out get did not spoil the ref.
    open(signal, "w").close()
    assert ray.get(pending, timeout=30) == "released"
    assert ray.get(pending, timeout=0) == "released"


# -- wait --------------------------------------------------------------------


def test_wait(ray_start, tmp_path):
    signal = str(tmp_path / "release")
    pending = _blocked_task(signal)
    a, b, c = ray.put("a"), ray.put("b"), ray.put("c")
    refs = [a, pending, b, c]

    # Ready refs come back in the order they were given.
    ready, not_ready = ray.wait(refs, num_returns=3)
    assert ready == [a, b, c]
    assert not_ready == [pending]

    ready, not_ready = ray.wait(refs)
    assert ready == [a]
    assert not_ready == [pending, b, c]

    ready, not_ready = ray.wait(refs, num_returns=2)
    assert ready == [a, b]
    assert not_ready == [pending, c]

    # Asking for more than are ready: the timeout decides.
    ready, not_ready = ray.wait(refs, num_returns=4, timeout=0.2)
    assert ready == [a, b, c]
    assert not_ready == [pending]
    ready, not_ready = ray.wait([pending], timeout=0)
    assert ready == [] and not_ready == [pending]

    # Tuples are accepted; the results are lists.
    ready, not_ready = ray.wait((c, a), num_returns=2, timeout=0)
    assert ready == [c, a] and not_ready == []

    # Once the task finishes, wait with no timeout returns it.
    open(signal, "w").close()
    ready, not_ready = ray.wait([pending])
    assert ready == [pending] and not_ready == []
    ready, not_ready = ray.wait(refs, num_returns=4)
    assert ready == refs and not_ready == []

    # Results of tasks, waited on one at a time as they finish.
    @ray.remote
    def square(i):
        return i * i

    remaining = [square.remote(i) for i in range(8)]
    done = []
    while remaining:
        ready, remaining = ray.wait(remaining)
        assert len(ready) == 1
        done.append(ray.get(ready[0]))
    assert sorted(done) == [i * i for i in range(8)]

    # A failed task is "ready" too; wait does not raise.
    @ray.remote
    def fail():
        raise ValueError("failed but ready")

    failed = fail.remote()
    ready, _ = ray.wait([failed], timeout=30)
    assert ready == [failed]
    with pytest.raises(ValueError):
        ray.get(failed)


@ray.remote
class Gate:
    """Values that arrive when the test says (an async actor: many calls
    wait at once in one process, holding no CPU)."""

    def __init__(self):
        self.events: dict[int, asyncio.Event] = {}

    def _event(self, i: int) -> asyncio.Event:
        return self.events.setdefault(i, asyncio.Event())

    async def value(self, i: int) -> int:
        await self._event(i).wait()
        if i < 0:
            raise ValueError(f"gate {i} failed")
        return i

    async def open(self, i: int) -> None:
        self._event(i).set()

    async def puts(self, n: int) -> list:
        return [ray.put(f"actor {k}") for k in range(n)]


@ray.remote
def puts_in_a_worker(n: int) -> list:
    return [ray.put(f"worker {k}") for k in range(n)]


def test_wait_and_get_over_long_lists_owned_by_several_processes(ray_start):
    """wait and get over lists longer than the memory store watches id by id
    (memory_store.WIDE), of refs owned by the driver, a worker and an actor,
    mixed with results still to come: num_returns, order, timeout and
    fetch_local as for short lists; results waited for one at a time as they
    come; get raises the first error without waiting for the rest."""
    gate = Gate.remote()
    mine = [ray.put(f"driver {k}") for k in range(20)]
    workers = ray.get(puts_in_a_worker.remote(20))
    actors = ray.get(gate.puts.remote(20))
    ready_ones = [r for three in zip(mine, workers, actors, strict=True) for r in three]
    pending = [gate.value.remote(i) for i in range(40)]
    refs = []
    for k, ref in enumerate(ready_ones):
        refs.append(ref)
        if k < len(pending):
            refs.append(pending[k])
    expected = [f"{who} {k}" for k in range(20) for who in ("driver", "worker", "actor")]
    assert ray.get(ready_ones) == expected

    for fetch_local in (True, False):
        ready, not_ready = ray.wait(refs, num_returns=60, timeout=0, fetch_local=fetch_local)
        assert ready == ready_ones and not_ready == pending
        ready, not_ready = ray.wait(refs, num_returns=7, fetch_local=fetch_local)
        assert ready == ready_ones[:7]
        assert not_ready == [r for r in refs if r not in ready_ones[:7]]
    start = time.monotonic()
    ready, not_ready = ray.wait(refs, num_returns=61, timeout=0.5)
    assert time.monotonic() - start >= 0.5
    assert ready == ready_ones and not_ready == pending

    # One at a time, in the order they come (the reverse of the list's).
    rest = pending
    for i in reversed(range(40)):
        assert ray.wait(rest, timeout=0) == ([], rest)
        ray.get(gate.open.remote(i))
        ready, rest = ray.wait(rest, timeout=60)
        assert ready == [pending[i]] and rest == pending[:i]
    assert ray.get(refs) == [
        v for k, value in enumerate(expected) for v in ([value, k] if k < 40 else [value])
    ]

    # A get of many raises the first error without waiting for the rest.
    more = [gate.value.remote(100 + i) for i in range(40)]
    failing = gate.value.remote(-1)
    ray.get(gate.open.remote(-1))
    with pytest.raises(ValueError, match="gate -1 failed"):
        ray.get([*more, failing, *ready_ones], timeout=60)
    assert ray.wait(more, num_returns=1, timeout=0) == ([], more)
    for i in range(40):
        gate.open.remote(100 + i)
    assert ray.get(more, timeout=60) == [100 + i for i in range(40)]


def test_wait_invalid_arguments(ray_start):
    a, b = ray.put(1), ray.put(2)
    with pytest.raises(ValueError, match="unique"):
        ray.wait([a, a])
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait([a, b], num_returns=3)
    with pytest.raises(TypeError, match="single ObjectRef"):
        ray.wait(a)
    with pytest.raises(ValueError, match="number of objects to return 0"):
        ray.wait([a], num_returns=0)
    with pytest.raises(ValueError, match="timeout"):
        ray.wait([a], timeout=-1)
    with pytest.raises(TypeError, match="holds 5"):
        ray.wait([a, 5])
    with pytest.raises(TypeError, match="got str"):
        ray.wait("not refs")
    # After all that, a good call works.
    assert ray.wait([a, b], num_returns=2) == ([a, b], [])


def test_wait_over_the_not_ready_list_it_returned_changed_in_place(ray_start):
    """wait's not_ready list remembers its refs' ids for the next wait over
    it (worker.Pending): changed in place, it must be read afresh."""
    gate = Gate.remote()
    pending = [gate.value.remote(i) for i in range(6)]
    ready_now = ray.put("now")
    ready, not_ready = ray.wait([ready_now, *pending], timeout=0)
    assert ready == [ready_now] and not_ready == pending and isinstance(not_ready, list)

    for change in (
        lambda refs: refs.__setitem__(3, ready_now),
        lambda refs: refs.insert(2, ready_now),
        lambda refs: refs.append(ready_now),
        lambda refs: refs.extend([ready_now]),
        lambda refs: refs.__iadd__([ready_now]),
    ):
        _, refs = ray.wait(list(pending), timeout=0)
        change(refs)
        assert ray.wait(refs, timeout=0)[0] == [ready_now]
    _, refs = ray.wait([ready_now, *pending], timeout=0)
    refs.append(pending[0])
    with pytest.raises(ValueError, match="unique"):
        ray.wait(refs, timeout=0)
    for change in (
        lambda refs: refs.pop(0),
        lambda refs: refs.remove(pending[0]),
        lambda refs: refs.__delitem__(0),
        lambda refs: refs.reverse(),
        lambda refs: refs.sort(key=lambda ref: ref.hex()),
        lambda refs: refs.clear(),
    ):
        _, refs = ray.wait(list(pending), timeout=0)
        change(refs)
        expected = list(refs)
        if expected:
            assert ray.wait(refs, num_returns=len(refs), timeout=0) == ([], expected)

    # Waited on twice, and as a copy: the same answer each time.
    _, refs = ray.wait(pending, timeout=0)
    assert ray.wait(refs, timeout=0) == ([], pending)
    assert ray.wait(refs, timeout=0) == ([], pending)
    for copied in (pickle.loads(pickle.dumps(refs)), refs.copy(), refs[:]):
        assert type(copied) is list and copied == pending
    ray.get(gate.open.remote(4))
    ready, rest = ray.wait(refs, timeout=60)
    assert ready == [pending[4]] and rest == pending[:4] + pending[5:]
    for i in range(6):
        gate.open.remote(i)
    assert ray.get(rest, timeout=60) == [0, 1, 2, 3, 5]


# -- zero-copy reads ---------------------------------------------------------


@ray.remote
def echo(value):
    return value


def test_arrays_of_every_kind_come_back_as_they_were(ray_start):
    """Whatever its dtype, byte order, layout or subclass, an array comes back
    with the same type, dtype, shape, memory order and bytes: small ones
    inline, large ones from the store (in place), through put and through a
    task's argument and result."""
    rows = LARGE // 8 + 1  # rows of 8 float64s: stored (above the inline limit)
    arrays = [
        np.arange(12, dtype=np.int64),
        np.arange(12.0).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
        np.arange(6, dtype=">i4"),  # not the machine's byte order
        np.array(5.5),  # no dimensions
        np.zeros(0),
        np.array(["ab", "c"]),
        np.array([b"ab", b"c"]),
        np.ones((2, 2), dtype=bool),
        np.arange(6, dtype=np.complex64).reshape(2, 3),
        np.arange(4, dtype=np.float16),
        np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]),  # records
        np.array([1, "x"], dtype=object),
        np.datetime64("2020-01-01") + np.arange(3),
        np.arange(10)[::2],  # not contiguous
        np.ma.masked_array([1, 2], mask=[0, 1]),  # a subclass
        np.asfortranarray(np.arange(rows * 8, dtype=np.float64).reshape(rows, 8)),
        np.arange(rows * 8, dtype=">f8"),
    ]
    put_back = ray.get([ray.put(array) for array in arrays])
    echoed = ray.get([echo.remote(array) for array in arrays])
    for array, backs in zip(arrays, zip(put_back, echoed, strict=True), strict=True):
        for back in backs:
            assert type(back) is type(array), array
            assert back.dtype == array.dtype and back.shape == array.shape, array
            if array.flags.c_contiguous or array.flags.f_contiguous:  # else a copy
                assert back.flags.c_contiguous == array.flags.c_contiguous, array
                assert back.flags.f_contiguous == array.flags.f_contiguous, array
            np.testing.assert_array_equal(back, array)
            if array.dtype != object:
                assert back.tobytes(order="A") == array.tobytes(order="A"), array
            if array.nbytes > 100 * 1024:  # stored
                assert mapped_file(back) == store_file() and not back.flags.writeable
    masked = ray.get(ray.put(arrays[15]))
    assert masked.mask.tolist() == [False, True]


def test_large_arrays_are_zero_copy_and_outlive_their_ref(ray_start):
    big = np.arange(LARGE, dtype=np.float64)

    store = store_file()

    # A large array read back from the store is a read-only view of the
    # store's memory.
    arr = ray.get(ray.put(big))
    assert not arr.flags.writeable
    assert mapped_file(arr) == store
    with pytest.raises(ValueError):
        arr[0] = 1.0
    with pytest.raises(ValueError):  # nor can it be made writable, as in Ray
        arr.flags.writeable = True
    np.testing.assert_array_equal(arr, big)

    # So are arrays inside a dict (or any container) of arrays.
    d = ray.get(ray.put({"x": big, "y": big * 2, "small": np.arange(3), "label": "d"}))
    assert not d["x"].flags.writeable
    assert not d["y"].flags.writeable
    with pytest.raises(ValueError):
        d["x"].flags.writeable = True
    assert mapped_file(d["x"]) == mapped_file(d["y"]) == store
    assert d["label"] == "d"
    np.testing.assert_array_equal(d["y"], big * 2)

    # The values stay valid after their refs are gone and the memory could
    # have been reused by other large objects.
    gc.collect()
    for i in range(20):
        filler_ref = ray.put(np.full(LARGE, float(-i)))
        del filler_ref
    fillers = [ray.put(np.full(LARGE, 7.0)) for _ in range(5)]
    gc.collect()
    np.testing.assert_array_equal(arr, big)
    np.testing.assert_array_equal(d["x"], big)
    np.testing.assert_array_equal(d["y"], big * 2)
    assert ray.get(fillers[-1])[0] == 7.0

    # A copy is writable, and lives outside the store.
    copy = np.array(arr)
    copy[0] = -1
    assert arr[0] == 0
    assert mapped_file(copy) != store

    # A large array returned by a task, read in the driver.
    @ray.remote
    def make_large():
        return np.arange(LARGE, dtype=np.int64).reshape(400, 500)

    ref = make_large.remote()
    out = ray.get(ref)
    assert out.shape == (400, 500)
    assert out[-1, -1] == LARGE - 1
    assert not out.flags.writeable
    assert mapped_file(out) == store
    del ref
    gc.collect()
    assert int(out.sum()) == LARGE * (LARGE - 1) // 2


def test_large_arguments_by_value(ray_start):
    @ray.remote
    def stats(a, b=None, scale=1):
        total = float(a.sum()) * scale
        if b is not None:
            total += float(np.sum(b))
        return total, mapped_file(a)

    result, mapped = ray.get(stats.remote(np.ones(10**6)))
    assert result == 10**6
    assert mapped == store_file()  # the task read it in place from the store

    assert ray.get(stats.remote(np.ones(10**6), b=np.ones(10**5), scale=2))[0] == 2.1 * 10**6
    # Several large arguments, and large values inside a container.
    assert ray.get(stats.remote(np.ones(300_000), [np.ones(300_000)]))[0] == 600_000

    # Many calls with large arguments in flight at once.
    refs = [stats.remote(np.full(200_000, float(i))) for i in range(6)]
    assert [r[0] for r in ray.get(refs)] == [200_000.0 * i for i in range(6)]


# -- refs as arguments and inside values ---------------------------------------


def test_ref_arguments_top_level_and_nested(ray_start, tmp_path):
    @ray.remote
    def describe(x, items, mapping, kw=None):
        return {
            "x": x,
            "items": [type(i).__name__ for i in items],
            "items_values": ray.get(list(items)),
            "mapping": type(mapping["k"]).__name__,
            "mapping_value": ray.get(mapping["k"]),
            "kw": kw,
        }

    x_ref = ray.put(10)
    inner = [ray.put("a"), ray.put("b")]
    k_ref = ray.put({"deep": True})
    kw_ref = ray.put([1, 2])
    out = ray.get(describe.remote(x_ref, inner, {"k": k_ref}, kw=kw_ref))
    # Top-level refs (positional and keyword) arrive as values...
    assert out["x"] == 10
    assert out["kw"] == [1, 2]
    # ...refs nested in lists and dicts arrive as refs.
    assert out["items"] == ["ObjectRef", "ObjectRef"]
    assert out["items_values"] == ["a", "b"]
    assert out["mapping"] == "ObjectRef"
    assert out["mapping_value"] == {"deep": True}

    # A nested ref to a task's output, whose task has not finished yet: it
    # waits for a file the driver creates only once the reader is waiting.
    release, reading = tmp_path / "release", tmp_path / "reading"

    @ray.remote
    def late_value(release):
        wait_for_file(release)
        return "late"

    @ray.remote
    def get_nested(lst, reading=None):
        if reading is not None:
            open(reading, "w").close()
        return ray.get(lst[0])

    result = get_nested.remote([late_value.remote(str(release))], str(reading))
    wait_for_condition(reading.exists, message="the reading task never started")
    release.touch()
    assert ray.get(result) == "late"

    # A large value behind a nested ref.
    big_ref = ray.put(np.arange(LARGE))
    assert ray.get(get_nested.remote([big_ref]))[-1] == LARGE - 1


def test_refs_captured_in_closures(ray_start, capfd):
    x_ref, y_ref, z_ref = ray.put(1), ray.put(2), ray.put(3)

    @ray.remote
    def print_via_capture():
        """This function prints the values of (x,y,z) from the outer scope."""
        values = ray.get([x_ref, y_ref, z_ref])
        print(f"captured values {values}")
        return values

    assert ray.get(print_via_capture.remote()) == [1, 2, 3]
    # The task's print reaches the driver's stdout, prefixed with its name.
    out = []

    def printed():
        out.append(capfd.readouterr().out)
        return "captured values [1, 2, 3]" in "".join(out)

    wait_for_condition(printed, timeout=20, message="the task's print never reached the driver")
    line = next(x for x in "".join(out).splitlines() if "captured values" in x)
    assert line.startswith("(print_via_capture pid=")

    # A captured ref whose only other holder was a local that is now gone.
    def make_function():
        big_ref = ray.put(np.arange(LARGE))

        @ray.remote
        def read_captured():
            return int(ray.get(big_ref)[-1])

        return read_captured

    read_captured = make_function()
    gc.collect()
    assert ray.get(read_captured.remote()) == LARGE - 1
    assert ray.get(read_captured.remote()) == LARGE - 1


def test_refs_inside_put_values(ray_start):
    inner = ray.put("inner value")
    big_inner = ray.put(np.arange(LARGE))
    outer = ray.put([inner, {"big": big_inner}])
    # The driver drops its own handles to the inner objects; the outer value
    # keeps them alive.
    del inner, big_inner
    gc.collect()

    got = ray.get(outer)
    assert isinstance(got[0], ray.ObjectRef)
    assert isinstance(got[1]["big"], ray.ObjectRef)
    assert ray.get(got[0]) == "inner value"
    assert ray.get(got[1]["big"])[-1] == LARGE - 1

    # The outer ref passed to a task: the inner refs are usable there too.
    @ray.remote
    def read_inner(value):
        return ray.get(value[0]), int(ray.get(value[1]["big"])[-1])

    assert ray.get(read_inner.remote(outer)) == ("inner value", LARGE - 1)


def test_task_returns_refs(ray_start):
    @ray.remote
    def put_inside():
        return ray.put("made in a task")

    @ray.remote
    def put_large_inside():
        return ray.put(np.arange(LARGE))

    @ray.remote
    def return_list_of_refs(n):
        return [ray.put(i) for i in range(n)]

    inner = ray.get(put_inside.remote())
    assert isinstance(inner, ray.ObjectRef)
    assert ray.get(inner) == "made in a task"
    assert ray.get(ray.get(put_inside.remote())) == "made in a task"
    assert ray.get(ray.get(put_large_inside.remote()))[-1] == LARGE - 1
    assert ray.get(ray.get(return_list_of_refs.remote(4))) == [0, 1, 2, 3]

    # The returned ref can be handed to another task.
    @ray.remote
    def add_one(x):
        return x + 1

    assert ray.get(add_one.remote(ray.get(return_list_of_refs.remote(3))[2])) == 3

    # A task returning a ref of another task it submitted.
    @ray.remote
    def submit_child():
        return add_one.remote(41)

    assert ray.get(ray.get(submit_child.remote())) == 42


# -- ObjectRef ---------------------------------------------------------------


def test_object_ref_identity(ray_start):
    a = ray.put(1)
    b = ray.put(1)
    hex_id = a.hex()
    assert isinstance(hex_id, str) and len(hex_id) == 56
    int(hex_id, 16)
    assert len(a.binary()) == 28
    assert bytes.fromhex(hex_id) == a.binary()
    assert a.hex() != b.hex()

    # Equality and hashing are by id.
    assert a == a and a != b
    copy = pickle.loads(pickle.dumps(a))
    assert copy is not a
    assert copy == a and hash(copy) == hash(a)
    assert len({a, b, copy}) == 2
    assert {a: "x"}[copy] == "x"
    assert a != hex_id and a != 1
    assert hex_id in repr(a)
    assert ray.get(copy) == 1

    @ray.remote(num_returns=2)
    def two():
        return 1, 2

    r1, r2 = two.remote()
    assert r1 != r2 and len(r1.hex()) == len(r2.hex()) == 56
    ray.get([r1, r2])


def test_refs_as_futures_and_awaitables(ray_start):
    @ray.remote
    def add(x, y):
        return x + y

    @ray.remote
    def fail():
        raise KeyError("from the task")

    # concurrent.futures.Future
    fut = add.remote(1, 2).future()
    assert fut.result(timeout=30) == 3
    # (Kept out of this frame's locals: the pytest.raises below makes a
    # reference cycle through it, and a live large value holds the store's
    # mapping open after shutdown.)
    last = int(ray.put(np.arange(LARGE)).future().result(timeout=30)[-1])
    assert last == LARGE - 1
    with pytest.raises(KeyError) as info:
        fail.remote().future().result(timeout=30)
    assert isinstance(info.value, RayTaskError)

    # await in a coroutine
    async def main():
        one = await add.remote(20, 22)
        both = await asyncio.gather(add.remote(1, 1), ray.put("put value"))
        try:
            await fail.remote()
        except KeyError as e:
            error = e
        return one, both, error

    one, both, error = asyncio.run(main())
    assert one == 42
    assert both == [2, "put value"]
    assert isinstance(error, RayTaskError) and "from the task" in str(error)
