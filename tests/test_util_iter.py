"""`solray.util.iter` (Ray's `ray.util.iter`): parallel iterators sharded
over real actors on a local cluster, with the results Ray documents."""

from __future__ import annotations

import pytest

import solray
from solray.util import iter as par
from solray.util.iter import LocalIterator, ParallelIteratorWorker

SHARED_CLUSTER = {"num_cpus": 2}


def test_util_exports_iter(ray):
    import solray.util

    assert "iter" in solray.util.__all__
    assert solray.util.iter is par


def test_gather_sync_takes_one_item_per_shard_in_turn(ray):
    it = par.from_items([1, 2, 3, 4, 5], num_shards=2)
    assert repr(it) == "ParallelIterator[from_items[int, 5, shards=2]]"
    assert it.num_shards() == 2
    assert list(it.for_each(lambda x: x * 2).gather_sync()) == [2, 4, 6, 8, 10]
    rounds = par.from_iterators([range(3), range(2)]).batch_across_shards()
    assert list(rounds) == [[0, 0], [1, 1], [2]]
    with pytest.raises(TypeError, match="gather_sync"):
        iter(it)


def test_shards_and_their_order(ray):
    it = par.from_range(10, num_shards=2)
    assert list(it.get_shard(0)) == [0, 1, 2, 3, 4]
    assert list(it.get_shard(1, batch_ms=5, num_async=2)) == [5, 6, 7, 8, 9]
    assert [list(s) for s in par.from_range(5, num_shards=2).shards()] == [[0, 1], [2, 3, 4]]
    with pytest.raises(ValueError, match="Shard index out of range"):
        it.get_shard(2)
    with pytest.raises(ValueError, match="num_async must be positive"):
        it.get_shard(0, num_async=0)


def test_remote_transforms(ray):
    def base():  # shards are read once: each pipeline gets its own
        return par.from_range(12, num_shards=3)

    assert sorted(base().filter(lambda x: x % 3 == 0).gather_sync()) == [0, 3, 6, 9]
    batches = list(base().batch(3).gather_sync())
    assert sorted(map(tuple, batches)) == [(0, 1, 2), (3,), (4, 5, 6), (7,), (8, 9, 10), (11,)]
    assert sorted(base().batch(2).flatten().gather_sync()) == list(range(12))
    assert sorted(base().combine(lambda x: [x, -x]).gather_sync()) == sorted(
        [*range(12), *(-x for x in range(12))]
    )

    def evens(items):
        for x in items:
            if x % 2 == 0:
                yield x

    assert par.from_range(10, 1).transform(evens).gather_sync().take(3) == [0, 2, 4]

    def shuffled():
        return list(
            par.from_range(50, 1).local_shuffle(shuffle_buffer_size=50, seed=7).gather_sync()
        )

    first = shuffled()
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert shuffled() == first  # a seed makes it repeatable
    # A shard read to its end stays at its end, as in Ray.
    once = base()
    assert len(list(once.gather_sync())) == 12
    assert list(once.gather_sync()) == []
    # max_concurrency > 1: fn runs as remote tasks.
    assert sorted(base().for_each(lambda x: x + 100, max_concurrency=2).gather_sync()) == [
        x + 100 for x in range(12)
    ]


def test_gather_async_and_source_actors(ray):
    assert sorted(par.from_range(20, num_shards=2).gather_async()) == list(range(20))
    batched = par.from_range(20, num_shards=2).gather_async(batch_ms=5, num_async=3)
    assert sorted(batched) == list(range(20))
    it = par.from_range(20, num_shards=2)
    actors = {a._actor_id for s in it.actor_sets for a in s.actors}
    pairs = list(it.gather_async().zip_with_source_actor())
    assert sorted(x for _, x in pairs) == list(range(20))
    assert {a._actor_id for a, _ in pairs} == actors
    by_actor = {}
    for actor, x in pairs:
        by_actor.setdefault(actor._actor_id, set()).add(x)
    assert sorted(map(sorted, by_actor.values())) == [list(range(10)), list(range(10, 20))]
    with pytest.raises(ValueError, match="num_async must be positive"):
        it.gather_async(num_async=0)


def test_repartition_union_and_select_shards(ray):
    parts = par.from_range(8, 2).repartition(3)
    assert parts.num_shards() == 3
    assert [sorted(parts.get_shard(i)) for i in range(3)] == [[0, 3, 4, 7], [1, 5], [2, 6]]
    both = par.from_items(["a", "b"], 1).union(par.from_items(["c"], 1))
    assert both.num_shards() == 2 and sorted(both.gather_sync()) == ["a", "b", "c"]
    assert list(par.from_range(6, 3).select_shards([0, 2]).gather_sync()) == [0, 4, 1, 5]
    with pytest.raises(ValueError, match="not allowed after union"):
        both.select_shards([0])
    with pytest.raises(TypeError, match="ParallelIterator"):
        both.union([1])


def test_repeat_and_from_actors(ray):
    assert par.from_items([1, 2], num_shards=1, repeat=True).take(5) == [1, 2, 1, 2, 1]

    class Squares(ParallelIteratorWorker):
        def __init__(self, n):
            super().__init__(lambda: (i * i for i in range(n)), False)

    actors = [solray.remote(Squares).remote(3), solray.remote(Squares).remote(2)]
    assert list(par.from_actors(actors).gather_sync()) == [0, 0, 1, 1, 4]


def test_a_shard_reads_in_another_task(ray):
    shard = par.from_range(6, 2).for_each(lambda x: x * 10).get_shard(1)

    @solray.remote
    def read(it):
        return list(it)

    assert solray.get(read.remote(shard), timeout=60) == [30, 40, 50]


def test_local_iterators(ray, capsys):
    def local(items):
        return LocalIterator(lambda timeout: iter(items), par.SharedMetrics())

    a, b = local([1, 2, 3]).duplicate(2)
    assert (list(a), list(b)) == ([1, 2, 3], [1, 2, 3])
    assert list(local([1, 2]).union(local([10, 20, 30]), deterministic=True)) == [1, 10, 2, 20, 30]
    assert sorted(local([1, 2]).union(local([3]))) == [1, 2, 3]
    local(["x", "y", "z"]).show(2)
    assert capsys.readouterr().out == "x\ny\n"

    def count(x):
        LocalIterator.get_metrics().counters["seen"] += 1
        return x

    it = local([5, 6, 7]).for_each(count)
    assert list(it) == [5, 6, 7]
    assert it.shared_metrics.get().counters["seen"] == 3
    with pytest.raises(ValueError, match="outside an iterator"):
        LocalIterator.get_metrics()
    with pytest.raises(ValueError, match="Number of copies must be >= 2"):
        local([1]).duplicate(1)
