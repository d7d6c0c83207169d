"""A node's system metrics (Ray's names), read as Prometheus reads them: an
HTTP GET of the node's /metrics while the node runs tasks, actors and
objects, asserting what a user would see there. And the Grafana dashboard
in docs/: each panel queries names a real scrape has."""

from __future__ import annotations

import json
import os
import pathlib
import re

import numpy as np
import psutil
import pytest
from conftest import wait_for_condition, wait_for_file
from test_metrics import scrape, value

import solray

MiB = 2**20
STORE = 100 * MiB
GET_TIMEOUT_S = 60
DASHBOARD = pathlib.Path(__file__).parent.parent / "docs" / "grafana-dashboard.json"


def port() -> int:
    (node,) = solray.nodes()
    return node["MetricsExportPort"]


def shows(**expected):
    """Wait until a scrape shows each `name__Label_value=...` sample at its
    value (e.g. ray_tasks__State_RUNNING=1); returns that scrape."""
    parsed = []
    for key, want in expected.items():
        name, *pairs = key.split("__")
        labels = dict(p.split("_", 1) for p in pairs)
        parsed.append((name, labels, want))
    last = {}

    def ok():
        last["s"] = s = scrape(port())
        return all(value(s, n, **labels) == want for n, labels, want in parsed)

    wait_for_condition(
        ok,
        timeout=30,
        message=lambda: (
            "scrape never showed "
            + ", ".join(
                f"{n}{labels}={w} (was {value(last['s'], n, **labels)})" for n, labels, w in parsed
            )
        ),
    )
    return last["s"]


@pytest.mark.parametrize(
    "ray_start", [{"num_cpus": 2, "object_store_memory": STORE}], indirect=True
)
def test_tasks_actors_resources_and_workers(ray_start, tmp_path):
    s = shows(
        ray_resources__Name_CPU__State_USED=0,
        ray_resources__Name_CPU__State_AVAILABLE=2,
        ray_tasks__State_RUNNING=0,
    )
    assert value(s, "ray_resources", Name="CPU", State="USED", Component="raylet") == 0
    assert value(s, "ray_node_cpu_count") == os.cpu_count()
    assert value(s, "ray_node_mem_total") == psutil.virtual_memory().total
    assert 0 < value(s, "ray_node_mem_used") < value(s, "ray_node_mem_total")
    assert 0 <= value(s, "ray_node_cpu_utilization") <= 100

    # One 1-CPU task blocks: one CPU used, one task running, on a leased worker.
    release = str(tmp_path / "release")
    blocker = solray.remote(num_cpus=1)(wait_for_file)
    first = blocker.remote(release, 120)
    s = shows(
        ray_resources__Name_CPU__State_USED=1,
        ray_resources__Name_CPU__State_AVAILABLE=1,
        ray_tasks__State_RUNNING=1,
        ray_node_workers__State_LEASED=1,
    )
    # Two more: one runs, the third waits for a CPU. Its owner may have
    # asked for one lease more than it will use: the node counts requests.
    more = [blocker.remote(release, 120) for _ in range(2)]
    shows(ray_resources__Name_CPU__State_USED=2, ray_tasks__State_RUNNING=2)
    wait_for_condition(
        lambda: value(scrape(port()), "ray_tasks", State="PENDING_NODE_ASSIGNMENT") >= 1
    )
    pathlib.Path(release).touch()
    solray.get([first, *more], timeout=GET_TIMEOUT_S)
    shows(
        ray_resources__Name_CPU__State_USED=0,
        ray_tasks__State_RUNNING=0,
        ray_tasks__State_PENDING_NODE_ASSIGNMENT=0,
    )

    # A task blocked in get() lends its CPU back: RUNNING_IN_RAY_GET.
    release2 = str(tmp_path / "release2")

    @solray.remote(num_cpus=1)
    def outer(path):
        return solray.get(blocker.remote(path, 120))

    ref = outer.remote(release2)
    shows(
        ray_tasks__State_RUNNING_IN_RAY_GET=1,
        ray_tasks__State_RUNNING=1,
        ray_resources__Name_CPU__State_USED=1,
    )
    pathlib.Path(release2).touch()
    solray.get(ref, timeout=GET_TIMEOUT_S)
    shows(ray_tasks__State_RUNNING_IN_RAY_GET=0, ray_tasks__State_RUNNING=0)

    # An actor alive here, then gone.
    @solray.remote(num_cpus=1)
    class Actor:
        def ping(self):
            return "pong"

    actor = Actor.remote()
    assert solray.get(actor.ping.remote(), timeout=GET_TIMEOUT_S) == "pong"
    shows(ray_actors__State_ALIVE=1, ray_resources__Name_CPU__State_USED=1)
    solray.kill(actor)
    shows(ray_actors__State_ALIVE=0, ray_resources__Name_CPU__State_USED=0)


@pytest.mark.parametrize(
    "ray_start", [{"num_cpus": 1, "object_store_memory": STORE}], indirect=True
)
def test_store_use_and_spilled_bytes(ray_start):
    before = scrape(port())
    sealed = value(before, "ray_object_store_memory", Location="MMAP_SHM", ObjectState="SEALED")
    objects = value(before, "ray_object_store_num_local_objects")
    assert value(before, "ray_object_store_memory", Location="SPILLED") == 0
    assert value(before, "ray_spill_manager_request_total", Type="Spilled") == 0

    # A 10 MB array in the store: its bytes (and a little header) show.
    ref = solray.put(np.ones(10 * MiB, dtype=np.uint8))
    s = scrape(port())
    grown = value(s, "ray_object_store_memory", Location="MMAP_SHM", ObjectState="SEALED") - sealed
    assert 10 * MiB <= grown < 10 * MiB + 64 * 1024
    assert value(s, "ray_object_store_num_local_objects") == objects + 1
    used = value(s, "ray_object_store_used_memory")
    assert used >= 10 * MiB
    assert used + value(s, "ray_object_store_available_memory") == STORE
    del ref
    wait_for_condition(
        lambda: value(scrape(port()), "ray_object_store_num_local_objects") == objects
    )

    # 300 MB into a 100 MB store: at least 200 MB of it spilled.
    refs = [solray.put(np.full(10 * MiB, i, dtype=np.uint8)) for i in range(30)]
    s = scrape(port())
    spilled = value(s, "ray_object_store_memory", Location="SPILLED")
    assert 20 * 10 * MiB <= spilled <= 30 * (10 * MiB + 64 * 1024)
    assert value(s, "ray_spill_manager_request_total", Type="Spilled") >= 20
    assert value(s, "ray_object_store_used_memory") <= STORE
    assert int(solray.get(refs[0], timeout=GET_TIMEOUT_S)[0]) == 0  # read back: a restore
    s = scrape(port())
    assert value(s, "ray_spill_manager_request_total", Type="Restored") >= 1
    del refs
    wait_for_condition(
        lambda: value(scrape(port()), "ray_object_store_memory", Location="SPILLED") == 0
    )


def test_the_grafana_dashboard_queries_exported_names(ray_start):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"] and dashboard["uid"] == "solray-system"
    exported = {name for name, _labels in scrape(port()) if name != "TYPE"}
    for panel in dashboard["panels"]:
        exprs = [t["expr"] for t in panel["targets"]]
        assert exprs, panel["title"]
        for expr in exprs:
            names = set(re.findall(r"\bray_[a-zA-Z0-9_]+", expr))
            assert names, (panel["title"], expr)
            assert names <= exported, (panel["title"], names - exported)
    variables = [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    for definition in variables:
        assert set(re.findall(r"\bray_[a-zA-Z0-9_]+", definition)) <= exported
