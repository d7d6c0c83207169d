"""Objects read in bulk and moved between real nodes on this machine
(`solray.cluster_utils.Cluster`): a get of many stored objects, some here and
some on another node, reads them all in place; large objects arrive intact
however many pull them at once.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest import mapped_file, store_file, wait_for_condition

import solray
from solray._private import transport
from solray._private.protocol import Msg
from solray.cluster_utils import Cluster

GET_TIMEOUT_S = 90
ELEMENTS = 200_000  # int64: 1.6 MB, stored (above the inline limit)


@pytest.fixture
def cluster(leak_check):
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    yield c
    c.shutdown()


def node_request(cluster: Cluster, node, msg: Msg, body=None):
    async def query():
        conn = await transport.connect(node.address, cluster.token)
        try:
            return await conn.request(msg, body)
        finally:
            conn.close()

    return asyncio.run(query())


@solray.remote
def filled(i: int):
    return np.full(ELEMENTS, i, dtype=np.int64)


@solray.remote
def sums_and_files(*arrays) -> list[tuple[int, str | None]]:
    return [(int(a.sum()), mapped_file(a)) for a in arrays]


def test_get_of_many_stored_objects_here_and_on_another_node(cluster):
    remote = cluster.add_node(num_cpus=1, resources={"remote": 1})
    solray.init(address=cluster.address)

    here = [solray.put(np.full(ELEMENTS, i, dtype=np.int64)) for i in range(20)]
    there = [filled.options(resources={"remote": 1}).remote(100 + i) for i in range(20)]
    # Mixed, with repeats: every value comes back, read in place from this
    # node's store (those made on the other node are pulled here).
    refs = [*here, *there, here[3], there[5], here[3]]
    values = solray.get(refs, timeout=GET_TIMEOUT_S)
    expected = [*range(20), *range(100, 120), 3, 105, 3]
    assert [int(v[0]) for v in values] == expected
    assert all(int(v[-1]) == e and v.shape == (ELEMENTS,) for v, e in zip(values, expected))
    assert {mapped_file(v) for v in values} == {store_file()}

    # A task on the other node gets many stored arguments at once (pulling
    # those made here), each in place in its own store.
    results = solray.get(
        sums_and_files.options(resources={"remote": 1}).remote(*here[:10], *there[:10]),
        timeout=GET_TIMEOUT_S,
    )
    assert [s for s, _ in results] == [ELEMENTS * i for i in [*range(10), *range(100, 110)]]
    assert {f for _, f in results} == {store_file(remote.node_id)}

    # The views pinned the objects only while they lived: once the values
    # and refs are gone, the other node frees every copy it held.
    del values, here, there, refs
    wait_for_condition(
        lambda: node_request(cluster, remote, Msg.STORE_STATS)["num_objects"] == 0, timeout=30
    )
