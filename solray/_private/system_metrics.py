"""A node's system metrics, in Ray's names: a source of the node's metrics
endpoint (metrics_exporter.py `add_source`), read from the node's own tables
at each scrape, on its loop (which owns them). Nothing is recorded between
scrapes, so an unscraped node pays nothing.

What a node knows, and so what it exports (every sample also carries the
exporter's constant labels, with `Component="raylet"`, the part of Ray a
solray node stands for):

    ray_tasks{State}            its lease queue and leases, not single calls:
                                PENDING_NODE_ASSIGNMENT per request queued
                                here (waiting for resources or a worker),
                                RUNNING per task lease granted,
                                RUNNING_IN_RAY_GET per one blocked in get().
                                An owner pushes its calls on a lease and
                                returns it when it has none left of that
                                shape, so RUNNING counts workers running
                                (or about to run) tasks. No Name label: a
                                lease serves every function of its shape.
    ray_actors{State}           PENDING_CREATION (actor lease requests queued
                                here), ALIVE (actors whose worker is here)
    ray_resources{Name,State}   USED and AVAILABLE of each logical resource
    ray_object_store_memory{Location,ObjectState}
                                bytes in shared memory (MMAP_SHM, SEALED or
                                UNSEALED) and spilled to disk (SPILLED)
    ray_object_store_used_memory, ray_object_store_available_memory,
    ray_object_store_num_local_objects
    ray_spill_manager_objects{State}, ray_spill_manager_objects_bytes{State}
                                Pinned, PendingSpill, PendingRestore
    ray_spill_manager_request_total{Type}
                                Spilled, Restored (since the node started;
                                a gauge, as Ray's is)
    ray_node_cpu_utilization, ray_node_cpu_count, ray_node_mem_used,
    ray_node_mem_available, ray_node_mem_total
                                the host's actual use (HostUsage), which the
                                node also answers NODE_STATS with, so the
                                dashboard shows what the metrics say
    ray_node_workers{State}     solray's own (Ray has no such gauge): the
                                node's worker processes, STARTING, IDLE or
                                LEASED
"""

from __future__ import annotations

import os

import psutil

from solray._private.object_store import RESTORING, SPILLED, SPILLING

# Every name this module exports (the Grafana dashboard in docs/ is checked
# against a scrape of them: tests/test_system_metrics.py).
NAMES = (
    "ray_tasks",
    "ray_actors",
    "ray_resources",
    "ray_object_store_memory",
    "ray_object_store_used_memory",
    "ray_object_store_available_memory",
    "ray_object_store_num_local_objects",
    "ray_spill_manager_objects",
    "ray_spill_manager_objects_bytes",
    "ray_spill_manager_request_total",
    "ray_node_cpu_utilization",
    "ray_node_cpu_count",
    "ray_node_mem_used",
    "ray_node_mem_available",
    "ray_node_mem_total",
    "ray_node_workers",
)


class HostUsage:
    """The host's actual CPU and memory use, as opposed to the resources
    reserved on it: the one reading behind both the ray_node_* gauges and
    the node's NODE_STATS answer (the dashboard's nodes view). The CPU
    utilization is over the time since the previous reading, whoever made
    it (a scrape or the dashboard); the node owns one of these."""

    def __init__(self) -> None:
        psutil.cpu_percent(None)  # the first reading starts the interval

    def read(self) -> dict:
        mem = psutil.virtual_memory()
        return {
            "cpu_percent": psutil.cpu_percent(None),
            "cpu_count": os.cpu_count() or 1,
            "mem_used": mem.total - mem.available,
            "mem_available": mem.available,
            "mem_total": mem.total,
        }


class SystemMetrics:
    def __init__(self, node, constant_labels: dict):
        self.node = node
        self.labels = {**constant_labels, "Component": "raylet"}

    def collect(self) -> list:
        """Loop thread: the families, as prometheus_client Metrics."""
        from prometheus_client.core import Metric

        out = []

        def gauge(name: str, description: str, samples) -> None:
            metric = Metric(name, description, "gauge")
            for labels, value in samples:
                metric.add_sample(name, {**labels, **self.labels}, float(value))
            out.append(metric)

        tasks, actors = self._leases()
        gauge(
            "ray_tasks",
            "Tasks on this node by state: queued lease requests and granted task leases",
            [({"State": s}, n) for s, n in tasks.items()],
        )
        gauge(
            "ray_actors",
            "Actors on this node by state",
            [({"State": s}, n) for s, n in actors.items()],
        )
        resources = self.node.resources
        available = resources.available_view()
        samples = []
        for name, total in sorted(resources.total.items()):
            free = available.get(name, 0.0)
            samples.append(({"Name": name, "State": "AVAILABLE"}, free))
            samples.append(({"Name": name, "State": "USED"}, max(total - free, 0.0)))
        gauge("ray_resources", "Logical Ray resources broken per state {AVAILABLE, USED}", samples)
        self._store(gauge)
        self._host(gauge)
        return out

    def _leases(self) -> tuple[dict, dict]:
        leases = self.node.leases
        tasks = {"PENDING_NODE_ASSIGNMENT": 0, "RUNNING": 0, "RUNNING_IN_RAY_GET": 0}
        actors = {"PENDING_CREATION": 0, "ALIVE": 0}
        for request in (*leases.pending, *leases.awaiting):
            if request.actor_id is None:
                tasks["PENDING_NODE_ASSIGNMENT"] += 1
            else:
                actors["PENDING_CREATION"] += 1
        for lease in leases.leases.values():
            if lease.actor_id is not None:
                actors["ALIVE"] += 1
            else:
                tasks["RUNNING_IN_RAY_GET" if lease.blocked else "RUNNING"] += 1
        return tasks, actors

    def _store(self, gauge) -> None:
        store = self.node.store
        sealed = unsealed = spilled = 0
        pinned = pinned_bytes = spilling = spilling_bytes = restoring = 0
        for obj in store.objects.values():
            if obj.state in (SPILLED, RESTORING):
                spilled += obj.size
                restoring += obj.state == RESTORING
                continue
            if obj.sealed:
                sealed += obj.size
            else:
                unsealed += obj.size
            if obj.state == SPILLING:
                spilling += 1
                spilling_bytes += obj.size
            elif obj.pins:
                pinned += 1
                pinned_bytes += obj.size
        gauge(
            "ray_object_store_memory",
            "Object store memory by location and state on this node, in bytes",
            [
                ({"Location": "MMAP_SHM", "ObjectState": "SEALED"}, sealed),
                ({"Location": "MMAP_SHM", "ObjectState": "UNSEALED"}, unsealed),
                ({"Location": "SPILLED", "ObjectState": "SEALED"}, spilled),
            ],
        )
        gauge(
            "ray_object_store_used_memory",
            "Bytes of the object store's shared memory in use",
            [({}, store.used)],
        )
        gauge(
            "ray_object_store_available_memory",
            "Bytes of the object store's shared memory free",
            [({}, store.capacity - store.used)],
        )
        gauge(
            "ray_object_store_num_local_objects",
            "Objects in this node's store (spilled ones included)",
            [({}, len(store.objects))],
        )
        gauge(
            "ray_spill_manager_objects",
            "Number of local objects broken per state {Pinned, PendingRestore, PendingSpill}.",
            [
                ({"State": "Pinned"}, pinned),
                ({"State": "PendingSpill"}, spilling),
                ({"State": "PendingRestore"}, restoring),
            ],
        )
        gauge(
            "ray_spill_manager_objects_bytes",
            "Byte size of local objects broken per state {Pinned, PendingSpill}.",
            [({"State": "Pinned"}, pinned_bytes), ({"State": "PendingSpill"}, spilling_bytes)],
        )
        gauge(
            "ray_spill_manager_request_total",
            "Number of {spill, restore} requests.",
            [
                ({"Type": "Spilled"}, store.spilled_objects),
                ({"Type": "Restored"}, store.restored_objects),
            ],
        )

    def _host(self, gauge) -> None:
        host = self.node.host.read()
        gauge(
            "ray_node_cpu_utilization",
            "CPU utilization of this node, percent (0..100)",
            [({}, host["cpu_percent"])],
        )
        gauge("ray_node_cpu_count", "CPU cores of this node", [({}, host["cpu_count"])])
        gauge("ray_node_mem_used", "Physical memory used, bytes", [({}, host["mem_used"])])
        gauge(
            "ray_node_mem_available",
            "Physical memory available, bytes",
            [({}, host["mem_available"])],
        )
        gauge("ray_node_mem_total", "Physical memory, bytes", [({}, host["mem_total"])])
        pool = self.node.pool
        leased = sum(1 for w in pool.workers.values() if w.lease is not None)
        gauge(
            "ray_node_workers",
            "Worker processes of this node by state (solray's; not a Ray metric)",
            [
                ({"State": "STARTING"}, pool.starting),
                ({"State": "IDLE"}, len(pool.idle)),
                ({"State": "LEASED"}, leased),
            ],
        )
