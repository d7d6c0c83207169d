"""`ray.util.ActorPool` and `ray.util.queue.Queue` on a real local cluster.

`import solray as ray` stands in for `import ray`. Work that has to be slow or
held back waits on marker files, never on timing.
"""

from __future__ import annotations

import time

import pytest
from conftest import wait_for_condition, wait_for_file

import solray as ray
from solray.util import ActorPool
from solray.util.queue import Empty, Full, Queue
from solray.util.state import list_actors


@ray.remote
class Doubler:
    def __init__(self, name):
        self.name = name

    def double(self, value):
        return value * 2

    def double_when(self, value, path):
        """Doubles `value` once `path` exists (None: at once)."""
        if path is not None:
            wait_for_file(path)
        return value * 2

    def whoami(self, _value=None):
        return self.name


# --------------------------------------------------------------------------
# ActorPool.
# --------------------------------------------------------------------------


def test_actor_pool_map_is_ordered(ray_start):
    pool = ActorPool([Doubler.remote("a"), Doubler.remote("b")])
    assert list(pool.map(lambda a, v: a.double.remote(v), range(10))) == [v * 2 for v in range(10)]
    # The pool can be used again once a map is consumed.
    assert list(pool.map(lambda a, v: a.double.remote(v), [5, 6])) == [10, 12]
    assert list(pool.map(lambda a, v: a.double.remote(v), [])) == []


def test_actor_pool_map_uses_every_actor(ray_start):
    pool = ActorPool([Doubler.remote("a"), Doubler.remote("b")])
    names = list(pool.map(lambda a, v: a.whoami.remote(v), range(6)))
    assert set(names) == {"a", "b"}


def test_actor_pool_map_unordered(ray_start, tmp_path):
    go = tmp_path / "go"
    pool = ActorPool([Doubler.remote("a"), Doubler.remote("b")])
    # The first value waits for `go`; the others finish first and come out first.
    values = [(0, str(go)), (1, None), (2, None), (3, None)]
    results = pool.map_unordered(lambda a, v: a.double_when.remote(*v), values)
    first_three = [next(results) for _ in range(3)]
    assert sorted(first_three) == [2, 4, 6]
    go.touch()
    assert list(results) == [0]


def test_actor_pool_submit_get_next(ray_start):
    pool = ActorPool([Doubler.remote("a"), Doubler.remote("b")])
    assert not pool.has_next()
    for value in range(5):  # more values than actors: the rest wait in the pool
        pool.submit(lambda a, v: a.double.remote(v), value)
    assert pool.has_next()
    results = []
    while pool.has_next():
        results.append(pool.get_next())
    assert results == [0, 2, 4, 6, 8]
    with pytest.raises(StopIteration):
        pool.get_next()


def test_actor_pool_get_next_timeout(ray_start, tmp_path):
    go = tmp_path / "go"
    pool = ActorPool([Doubler.remote("a")])
    pool.submit(lambda a, v: a.double_when.remote(v, str(go)), 21)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05)
    go.touch()
    assert pool.get_next() == 42


def test_actor_pool_get_next_unordered(ray_start, tmp_path):
    go = tmp_path / "go"
    pool = ActorPool([Doubler.remote("a"), Doubler.remote("b")])
    pool.submit(lambda a, v: a.double_when.remote(v, str(go)), 1)
    pool.submit(lambda a, v: a.double_when.remote(v, None), 2)
    assert pool.get_next_unordered() == 4  # the second one is ready first
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    go.touch()
    assert pool.get_next_unordered() == 2
    assert not pool.has_next()


def test_actor_pool_has_free_pop_idle_push(ray_start, tmp_path):
    go = tmp_path / "go"
    a, b = Doubler.remote("a"), Doubler.remote("b")
    pool = ActorPool([a])
    assert pool.has_free()
    pool.submit(lambda actor, v: actor.double_when.remote(v, str(go)), 1)
    assert not pool.has_free()
    assert pool.pop_idle() is None

    pool.push(b)
    assert pool.has_free()
    with pytest.raises(ValueError):
        pool.push(b)  # already in the pool
    with pytest.raises(ValueError):
        pool.push(a)  # busy in the pool

    idle = pool.pop_idle()
    assert idle == b
    assert not pool.has_free()
    assert ray.get(idle.whoami.remote()) == "b"
    pool.push(idle)

    go.touch()
    assert pool.get_next() == 2
    assert pool.has_free()
    popped = {pool.pop_idle(), pool.pop_idle()}
    assert popped == {a, b}
    assert pool.pop_idle() is None


# --------------------------------------------------------------------------
# Queue.
# --------------------------------------------------------------------------


def test_queue_put_get(ray_start):
    queue = Queue()
    assert queue.empty() and queue.qsize() == 0 and len(queue) == 0
    for item in range(3):
        queue.put(item)
    assert queue.qsize() == 3 and not queue.empty() and not queue.full()
    assert [queue.get() for _ in range(3)] == [0, 1, 2]
    assert queue.empty()
    queue.put({"nested": [1, 2]})
    assert queue.get(block=False) == {"nested": [1, 2]}


def test_queue_empty_and_full(ray_start):
    queue = Queue(maxsize=2)
    with pytest.raises(Empty):
        queue.get(block=False)
    with pytest.raises(Empty):
        queue.get_nowait()
    with pytest.raises(Empty):
        queue.get(timeout=0.05)

    queue.put("a")
    queue.put_nowait("b")
    assert queue.full() and queue.qsize() == 2
    with pytest.raises(Full):
        queue.put("c", block=False)
    with pytest.raises(Full):
        queue.put_nowait("c")
    with pytest.raises(Full):
        queue.put("c", timeout=0.05)
    assert [queue.get(), queue.get()] == ["a", "b"]

    with pytest.raises(ValueError):
        queue.put("x", timeout=-1)
    with pytest.raises(ValueError):
        queue.get(timeout=-1)


# How long a blocking call that should wait is watched for not returning.
# Returning at once (not blocking) takes milliseconds.
STILL_BLOCKED_S = 1.0


def test_queue_blocking_get_waits_for_put(ray_start, tmp_path):
    queue = Queue()
    getting = tmp_path / "getting"

    @ray.remote
    def get_one(queue, getting):
        open(getting, "w").close()
        return queue.get(timeout=30)

    ref = get_one.remote(queue, str(getting))
    wait_for_condition(getting.exists, message="the task never started")
    assert ray.wait([ref], timeout=STILL_BLOCKED_S)[0] == []  # waiting, not empty-handed
    queue.put("late")
    assert ray.get(ref) == "late"


def test_queue_blocking_put_waits_for_space(ray_start, tmp_path):
    queue = Queue(maxsize=1)
    queue.put(1)
    putting = tmp_path / "putting"

    @ray.remote
    def put_one(queue, item, putting):
        open(putting, "w").close()
        queue.put(item, timeout=30)
        return "put"

    ref = put_one.remote(queue, 2, str(putting))
    wait_for_condition(putting.exists, message="the task never started")
    assert ray.wait([ref], timeout=STILL_BLOCKED_S)[0] == []  # waiting for room
    assert queue.full() and queue.qsize() == 1
    assert queue.get() == 1
    assert ray.get(ref) == "put"
    assert queue.get() == 2


def test_queue_batches(ray_start):
    queue = Queue(maxsize=3)
    queue.put_nowait_batch([1, 2])
    with pytest.raises(Full):
        queue.put_nowait_batch([3, 4])  # all or nothing
    assert queue.qsize() == 2
    queue.put_nowait_batch([3])
    with pytest.raises(Empty):
        queue.get_nowait_batch(4)
    assert queue.get_nowait_batch(2) == [1, 2]
    assert queue.get_nowait_batch(1) == [3]
    assert queue.get_nowait_batch(0) == []
    with pytest.raises(ValueError):
        queue.get_nowait_batch(-1)


def test_queue_between_producer_task_and_consumer_actor(ray_start):
    queue = Queue(maxsize=4)  # smaller than the stream: the producer blocks at times

    @ray.remote
    def producer(queue, n):
        for item in range(n):
            queue.put(item)
        queue.put(None)
        return n

    @ray.remote
    class Consumer:
        def __init__(self, queue):
            self.queue = queue

        def consume(self):
            items = []
            while (item := self.queue.get(timeout=30)) is not None:
                items.append(item)
            return items

    consumer = Consumer.remote(queue)
    consumed = consumer.consume.remote()
    produced = producer.remote(queue, 20)
    assert ray.get(produced) == 20
    assert ray.get(consumed) == list(range(20))
    assert queue.empty()


def test_queue_async_api_in_async_actor(ray_start):
    queue = Queue()

    @ray.remote
    class AsyncConsumer:
        async def take(self, queue, n):
            return [await queue.get_async(timeout=30) for _ in range(n)]

        async def give(self, queue, items):
            for item in items:
                await queue.put_async(item)

    consumer = AsyncConsumer.remote()
    taken = consumer.take.remote(queue, 3)
    ray.get(consumer.give.remote(queue, ["x", "y", "z"]))
    assert ray.get(taken) == ["x", "y", "z"]


def test_queue_actor_options(ray_start):
    queue = Queue(actor_options={"name": "the-queue", "num_cpus": 0})
    queue.put("via name")
    assert ray.get(ray.get_actor("the-queue").get.remote()) == "via name"


def test_queue_shutdown(ray_start):
    queue = Queue()
    queue.put(1)
    actor = queue.actor
    queue.shutdown()
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.qsize.remote())


def _state_and_cause(actor) -> tuple[str, str]:
    [row] = list_actors(filters=[("actor_id", "=", actor._ray_actor_id)], detail=True)
    return row["state"], row["death_cause"] or ""


def test_queue_shutdown_is_graceful(ray_start):
    """force=False: the actor ends itself (Ray's __ray_terminate__) after the
    calls queued before the shutdown ran, well within the grace period; a put
    blocked on the full queue then fails."""
    queue = Queue(maxsize=1)
    queue.put(1)
    actor = queue.actor
    blocked = actor.put.remote(2, None)  # waits for room that never comes
    earlier = actor.qsize.remote()
    start = time.monotonic()
    queue.shutdown(grace_period_s=60)
    assert time.monotonic() - start < 30
    assert ray.get(earlier) == 1  # queued before the shutdown: it ran
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(blocked, timeout=30)
    # It answers its exit call, then its process ends.
    wait_for_condition(lambda: _state_and_cause(actor)[0] == "DEAD")
    assert "exit_actor" in _state_and_cause(actor)[1]


def test_queue_shutdown_kills_after_the_grace_period(ray_start):
    """An actor that cannot end itself within grace_period_s (its only
    concurrency slot is held by a blocked put, so the exit call waits behind
    it) is killed once the grace period is over."""
    queue = Queue(maxsize=1, actor_options={"max_concurrency": 1})
    queue.put(1)
    actor = queue.actor
    blocked = actor.put.remote(2, None)
    start = time.monotonic()
    queue.shutdown(grace_period_s=1)
    assert time.monotonic() - start >= 1
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(blocked, timeout=30)
    state, cause = _state_and_cause(actor)
    assert state == "DEAD" and "solray.kill()" in cause, cause


def test_queue_shutdown_force_kills_at_once(ray_start):
    queue = Queue(maxsize=1)
    queue.put(1)
    actor = queue.actor
    blocked = actor.put.remote(2, None)
    start = time.monotonic()
    queue.shutdown(force=True, grace_period_s=60)
    assert time.monotonic() - start < 30
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(blocked, timeout=30)
    state, cause = _state_and_cause(actor)
    assert state == "DEAD" and "solray.kill()" in cause, cause
    queue.shutdown()  # a second shutdown has nothing left to do


@pytest.mark.parametrize("grace_period_s", [-1, "5", None, float("nan")])
def test_queue_shutdown_rejects_a_bad_grace_period(ray_start, grace_period_s):
    queue = Queue()
    with pytest.raises(ValueError, match="grace_period_s"):
        queue.shutdown(grace_period_s=grace_period_s)
    queue.put("still alive")
    assert queue.get() == "still alive"
