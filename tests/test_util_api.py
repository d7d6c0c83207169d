"""`ray.util` and the small import paths Ray users reach for, as a Ray user
sees them: solray.util's functions, as_completed/map_unordered,
inspect_serializability, custom serializers, list_named_actors,
solray.cloudpickle, solray._raylet, experimental.internal_kv,
_private.internal_api (free, memory_summary) and the exception names."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from conftest import wait_for_condition, wait_for_file

import solray
from solray.experimental import internal_kv as kv

# Every name Ray 2.x exports from ray.exceptions (its API reference, plus the
# developer ones it defines).
RAY_EXCEPTIONS = """
RayError RayTaskError RayActorError TaskCancelledError TaskUnschedulableError
ActorDiedError ActorUnschedulableError ActorUnavailableError AsyncioActorExit
LocalRayletDiedError WorkerCrashedError TaskPlacementGroupRemoved
ActorPlacementGroupRemoved ObjectStoreFullError OutOfDiskError OutOfMemoryError
ObjectLostError ObjectFetchTimedOutError GetTimeoutError OwnerDiedError
PendingCallsLimitExceeded PlasmaObjectNotAvailable ObjectReconstructionFailedError
ObjectReconstructionFailedMaxAttemptsExceededError
ObjectReconstructionFailedLineageEvictedError RayChannelError RayChannelTimeoutError
RayCgraphCapacityExceeded RuntimeEnvSetupError CrossLanguageError RaySystemError
NodeDiedError UnserializableException AuthenticationError ObjectFreedError
ReferenceCountingAssertionError ObjectRefStreamEndOfStreamError
OufOfBandObjectRefSerializationException
""".split()


def test_exception_names_and_bases():
    for name in RAY_EXCEPTIONS:
        cls = getattr(solray.exceptions, name)
        assert issubclass(cls, solray.exceptions.RayError), name
        assert name in solray.exceptions.__all__
    e = solray.exceptions
    assert issubclass(e.RayChannelTimeoutError, TimeoutError)
    assert issubclass(e.RayChannelError, e.RaySystemError)
    assert issubclass(e.ReferenceCountingAssertionError, AssertionError)
    assert issubclass(e.ObjectFreedError, e.ObjectLostError)
    assert "boom" in str(e.UnserializableException("boom"))


def test_util_names_are_the_kind_of_object_ray_has():
    util = solray.util
    for name in (
        "placement_group",
        "remove_placement_group",
        "get_placement_group",
        "placement_group_table",
        "get_current_placement_group",
        "get_node_ip_address",
        "list_named_actors",
        "as_completed",
        "map_unordered",
        "inspect_serializability",
        "register_serializer",
        "deregister_serializer",
        "log_once",
        "connect",
        "disconnect",
        "get_node_instance_id",
        "pass_by_reference",
    ):
        assert callable(getattr(util, name)) and not isinstance(getattr(util, name), type(os))
    assert isinstance(util.ActorPool, type)
    assert isinstance(util.accelerators, type(os))
    assert callable(util.pdb.set_trace) and callable(util.pdb.post_mortem)
    assert callable(util.ray_debugpy.set_trace)
    assert isinstance(util.queue.Queue, type)  # submodules load on first use
    assert isinstance(util.multiprocessing.Pool, type)
    assert callable(util.collective.allreduce) and isinstance(util.collective, type(os))
    assert callable(util.iter.from_items) and isinstance(util.iter, type(os))


# Ray 2.x's `ray.util.__all__`.
RAY_UTIL_ALL = """
accelerators ActorPool disable_log_once_globally enable_periodic_logging iter log_once pdb
placement_group placement_group_table get_placement_group get_current_placement_group
get_node_instance_id get_node_ip_address remove_placement_group ray_debugpy
inspect_serializability collective connect disconnect register_serializer
deregister_serializer list_named_actors
""".split()


def test_every_name_ray_util_exports_is_there():
    for name in RAY_UTIL_ALL:
        assert name in solray.util.__all__, name
        assert getattr(solray.util, name) is not None
    namespace: dict = {}
    exec("from solray.util import *", namespace)
    assert set(RAY_UTIL_ALL) <= namespace.keys()


def test_placement_group_function_survives_importing_its_module(tmp_path):
    """`import solray.util.placement_group` must not make the package's
    `placement_group` the module: both spellings work in one process."""
    script = textwrap.dedent(
        """
        import solray.util.placement_group
        from solray.util.placement_group import placement_group
        import solray
        assert solray.util.placement_group is placement_group
        solray.init(num_cpus=1)
        pg = solray.util.placement_group([{"CPU": 1}])
        assert pg.wait(30)
        solray.util.remove_placement_group(pg)
        solray.shutdown()
        print("OK")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=90, cwd=tmp_path
    )
    assert out.stdout.strip().endswith("OK"), out.stderr


NODE_INSTANCE_ID_SCRIPT = """
import solray
solray.init(num_cpus=1)

@solray.remote
def instance_id():
    return solray.util.get_node_instance_id()

print(repr((solray.util.get_node_instance_id(), solray.get(instance_id.remote()))))
solray.shutdown()
"""


@pytest.mark.parametrize("instance_id", ["i-0123456789abcdef0", None])
def test_get_node_instance_id_is_the_clouds_or_empty(tmp_path, instance_id):
    """The id Ray's launchers give a node (RAY_CLOUD_INSTANCE_ID), in the
    driver and in its workers; "" off a cloud, without asking any metadata
    service."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_CLOUD_INSTANCE_ID"}
    if instance_id is not None:
        env["RAY_CLOUD_INSTANCE_ID"] = instance_id
    out = subprocess.run(
        [sys.executable, "-c", NODE_INSTANCE_ID_SCRIPT],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env=env,
    )
    expected = instance_id or ""
    assert out.stdout.strip().splitlines()[-1] == repr((expected, expected)), out.stderr


def test_accelerator_constants_are_rays():
    from solray.util import accelerators

    assert accelerators.NVIDIA_TESLA_V100 == "V100"
    assert accelerators.NVIDIA_A100 == "A100" and accelerators.NVIDIA_H100 == "H100"
    assert accelerators.AMD_INSTINCT_MI300x == "AMD-Instinct-MI300X-OAM"
    assert accelerators.GOOGLE_TPU_V4 == "TPU-V4"
    assert accelerators.AWS_NEURON_CORE == "aws-neuron-core"
    current = [n for n in accelerators.__all__ if n != "NVIDIA_TESLA_A100"]
    assert all(isinstance(getattr(accelerators, n), str) for n in current)
    with pytest.warns(DeprecationWarning, match="use NVIDIA_A100"):
        assert accelerators.NVIDIA_TESLA_A100 == "A100"
    with pytest.raises(AttributeError, match="NVIDIA_NOPE"):
        accelerators.NVIDIA_NOPE  # noqa: B018


@pytest.mark.parametrize(
    "ray_start", [{"num_cpus": 1, "resources": {"accelerator_type:V100": 1}}], indirect=True
)
def test_accelerator_constants_schedule_by_accelerator_type(ray_start):
    from solray.util.accelerators import NVIDIA_TESLA_V100

    @solray.remote(accelerator_type=NVIDIA_TESLA_V100)
    def on_v100():
        return "ran"

    assert solray.get(on_v100.remote()) == "ran"
    assert solray.cluster_resources()["accelerator_type:" + NVIDIA_TESLA_V100] == 1


def test_ray_debugpy_imports_and_refuses_to_open_a_tcp_debugger():
    import importlib.util

    from solray.util import ray_debugpy  # noqa: F401  (Ray's import path works)

    if importlib.util.find_spec("debugpy") is None:
        with pytest.raises(ImportError, match="pip install debugpy"):
            solray.util.ray_debugpy.set_trace()
        with pytest.raises(ImportError, match="pip install debugpy"):
            solray.util.ray_debugpy._post_mortem()
    else:
        with pytest.raises(NotImplementedError, match="TCP port"):
            solray.util.ray_debugpy.set_trace()


def test_log_once():
    key = f"k{os.getpid()}-{threading.get_ident()}"
    assert solray.util.log_once(key) is True
    assert solray.util.log_once(key) is False


# -- on a cluster -------------------------------------------------------------


@solray.remote
def identity(x):
    return x


@solray.remote
def wait_then(path, value):
    wait_for_file(path)
    return value


def test_as_completed_yields_each_batch_as_it_is_ready(ray, tmp_path):
    gate = str(tmp_path / "go")
    refs = [wait_then.remote(gate, "slow"), identity.remote("a"), identity.remote("b")]
    results = ray.util.as_completed(refs, chunk_size=1)
    assert {next(results), next(results)} == {"a", "b"}  # the slow one has not finished
    open(gate, "w").close()
    assert next(results) == "slow"
    assert list(results) == []
    refs = [identity.remote(i) for i in range(5)]
    got = list(ray.util.as_completed(refs, chunk_size=2, yield_obj_refs=True))
    assert all(isinstance(r, solray.ObjectRef) for r in got) and set(got) == set(refs)
    with pytest.raises(ValueError, match="chunk_size"):
        list(ray.util.as_completed(refs, chunk_size=0))
    with pytest.raises(ValueError, match="chunk_size"):
        list(ray.util.as_completed(refs, num_returns=2))


def test_map_unordered_keeps_at_most_backpressure_size_tasks_in_flight(ray):
    pulled = []

    def items():
        for i in range(10):
            pulled.append(i)
            yield i

    results = ray.util.map_unordered(identity, items(), backpressure_size=2, chunk_size=1)
    first = next(results)
    assert pulled == [0, 1] and first in (0, 1)  # two submitted, then it waited for one
    assert sorted([first, *results]) == list(range(10))
    assert sorted(ray.util.map_unordered(identity, range(5), backpressure_size=None)) == [
        0,
        1,
        2,
        3,
        4,
    ]
    with pytest.raises(ValueError, match="backpressure_size"):
        next(ray.util.map_unordered(identity, range(3), backpressure_size=0))
    with pytest.raises(TypeError, match="remote function"):
        next(ray.util.map_unordered(len, range(3)))


@solray.remote
def what_arrived(arg):
    return isinstance(arg, solray.ObjectRef), solray.get(arg) if isinstance(
        arg, solray.ObjectRef
    ) else arg


def test_pass_by_reference_gives_the_task_the_ref(ray, tmp_path):
    ref = ray.put("payload")
    assert ray.get(what_arrived.remote(ref)) == (False, "payload")  # resolved, as usual
    assert ray.get(what_arrived.remote(ray.util.pass_by_reference(ref))) == (True, "payload")
    # A ref whose task has not finished: the call does not wait for it.
    gate = str(tmp_path / "go")
    pending = wait_then.remote(gate, "later")
    assert ray.get(identity.remote(ray.util.pass_by_reference(pending)), timeout=30) == pending
    open(gate, "w").close()
    assert ray.get(pending) == "later"
    with pytest.raises(TypeError, match="ObjectRef"):
        ray.util.pass_by_reference("not a ref")


def test_list_named_actors(ray):
    @ray.remote
    class Named:
        def ping(self):
            return "pong"

    here = Named.options(name="util-here").remote()
    there = Named.options(name="util-there", namespace="elsewhere").remote()
    unnamed = Named.remote()
    ray.get([here.ping.remote(), there.ping.remote(), unnamed.ping.remote()])
    assert "util-here" in ray.util.list_named_actors()
    assert "util-there" not in ray.util.list_named_actors()
    everywhere = ray.util.list_named_actors(all_namespaces=True)
    assert {"name": "util-there", "namespace": "elsewhere"} in everywhere
    assert {"name": "util-here", "namespace": ray.get_runtime_context().namespace} in everywhere
    ray.kill(here)
    wait_for_condition(lambda: "util-here" not in ray.util.list_named_actors())
    ray.kill(there)


def test_inspect_serializability_reports_what_fails():
    lock = threading.Lock()

    def uses_lock():
        return lock

    report = io.StringIO()
    ok, failures = solray.util.inspect_serializability(
        uses_lock, name="uses_lock", print_file=report
    )
    assert ok is False
    [failure] = failures
    assert failure.obj is lock and failure.parent is uses_lock and failure.path[-1] == "lock"
    text = report.getvalue()
    assert "Checking Serializability of" in text
    assert "!!! FAIL serialization: cannot pickle '_thread.lock' object" in text
    assert "was found to be non-serializable" in text
    assert solray.util.inspect_serializability([1, "two"], print_file=io.StringIO()) == (
        True,
        set(),
    )


class Unpicklable:
    def __init__(self, x):
        self.x = x
        self.lock = threading.Lock()


def to_plain(obj):
    return obj.x


def from_plain(x):
    return Unpicklable(x)


@solray.remote
def read_x(obj):
    return obj.x


@solray.remote
def make_unpicklable(register: bool):
    if register:
        solray.util.register_serializer(Unpicklable, serializer=to_plain, deserializer=from_plain)
    return Unpicklable(7)


def test_register_serializer_applies_where_ray_says(ray):
    with pytest.raises(TypeError, match="lock"):
        ray.put(Unpicklable(1))
    ray.util.register_serializer(Unpicklable, serializer=to_plain, deserializer=from_plain)
    try:
        value = ray.get(ray.put(Unpicklable(1)))
        assert isinstance(value, Unpicklable) and value.x == 1
        # The deserializer travels with the value: the worker registered nothing.
        assert ray.get(read_x.remote(Unpicklable(5))) == 5
        # Returning one needs a registration in the worker, as in Ray.
        with pytest.raises(Exception, match="lock"):
            ray.get(make_unpicklable.options(max_retries=0).remote(False))
        assert ray.get(make_unpicklable.remote(True)).x == 7
    finally:
        ray.util.deregister_serializer(Unpicklable)
    with pytest.raises(TypeError, match="lock"):
        ray.put(Unpicklable(1))
    ray.util.deregister_serializer(Unpicklable)  # nothing registered: no effect
    with pytest.raises(TypeError, match="class"):
        ray.util.register_serializer(Unpicklable(1), serializer=to_plain, deserializer=from_plain)


def test_cloudpickle_and_raylet_import_paths(ray):
    import solray.cloudpickle as cloudpickle
    from solray._raylet import ObjectID, ObjectRef, ObjectRefGenerator

    assert cloudpickle.loads(cloudpickle.dumps(lambda x: x + 1))(1) == 2
    assert ObjectRef is solray.ObjectRef and ObjectID is ObjectRef

    @ray.remote
    def stream():
        yield 1

    assert isinstance(stream.remote(), ObjectRefGenerator)


@solray.remote
def kv_from_worker(key):
    return kv._internal_kv_get(key, namespace="util-test")


def test_internal_kv(ray):
    assert kv._internal_kv_initialized()
    assert kv._internal_kv_put("k1", b"v1", namespace="util-test") is False  # a new key
    assert kv._internal_kv_get(b"k1", namespace="util-test") == b"v1"
    assert kv._internal_kv_get("k1") is None  # another namespace
    assert kv._internal_kv_put("k1", "v2", overwrite=False, namespace="util-test") is True
    assert kv._internal_kv_get("k1", namespace="util-test") == b"v1"  # not overwritten
    assert kv._internal_kv_put("k1", b"v3", namespace="util-test") is True
    assert ray.get(kv_from_worker.remote("k1")) == b"v3"  # workers see the same store
    kv._internal_kv_put("k2", b"x", namespace="util-test")
    kv._internal_kv_put("other", b"x", namespace="util-test")
    assert sorted(kv._internal_kv_list("k", namespace="util-test")) == [b"k1", b"k2"]
    assert kv._internal_kv_exists("k2", namespace="util-test")
    assert kv._internal_kv_del("k", del_by_prefix=True, namespace="util-test") == 2
    assert not kv._internal_kv_exists("k2", namespace="util-test")
    assert kv._internal_kv_del("other", namespace="util-test") == 1
    assert kv._internal_kv_del("other", namespace="util-test") == 0
    with pytest.raises(TypeError, match="key"):
        kv._internal_kv_get(3)


def _store_mib() -> int:
    from solray._private.internal_api import memory_summary

    return int(re.search(r"Plasma memory usage (\d+) MiB", memory_summary(stats_only=True))[1])


def _freed(ref) -> bool:
    try:
        solray.get(ref)
        return False
    except solray.exceptions.ObjectFreedError:
        return True


@solray.remote
def free_borrowed(boxed):
    from solray._private.internal_api import free

    free(boxed)  # this worker does not own it: left alone
    return True


def test_free_releases_objects_now(ray, tmp_path):
    from solray._private.internal_api import free

    before = _store_mib()
    big = ray.put(np.ones(40 * 2**20, dtype=np.uint8))
    small = ray.put("small")
    assert _store_mib() >= before + 40
    free([big, small])
    for ref in (big, small):
        with pytest.raises(solray.exceptions.ObjectFreedError):
            ray.get(ref)
    wait_for_condition(lambda: _store_mib() < before + 40)  # the store space is back
    # A task not finished yet: its result is freed once it arrives.
    gate = str(tmp_path / "go")
    pending = wait_then.remote(gate, "late")
    free(pending)
    open(gate, "w").close()
    wait_for_condition(lambda: _freed(pending))
    # Only the owner frees: a worker borrowing the ref leaves it be.
    kept = ray.put("kept")
    assert ray.get(free_borrowed.remote([kept]))
    assert ray.get(kept) == "kept"
    with pytest.raises(TypeError, match="list of ObjectRef"):
        free("not a ref")


def test_memory_summary(ray):
    from solray._private.internal_api import memory_summary

    ref = ray.put(np.zeros(2**20))
    text = memory_summary()
    assert ref.hex() in text
    assert "--- Aggregate object store stats across all nodes ---" in text
    assert ref.hex() not in memory_summary(stats_only=True)
    with pytest.raises(ValueError, match="group_by"):
        memory_summary(group_by="COLOR")
