"""Refs and the smaller import paths, as Ray users reach them: ObjectRef
rebuilt out of band, `ray._raylet`, `ray.cloudpickle`, `internal_api.free`
and `memory_summary`, and every name of `ray.exceptions`."""

from __future__ import annotations

import pickle

import pytest
from conftest import wait_for_condition

import solray
from solray import exceptions
from solray._private import internal_api


def _raises(error_type, function) -> bool:
    try:
        function()
    except error_type:
        return True
    return False


# --------------------------------------------------------------------------
# ObjectRef(binary): out-of-band references.
# --------------------------------------------------------------------------


def test_object_ref_rebuilt_from_binary_or_hex_in_the_owner(ray):
    ref = ray.put({"answer": 42})
    from_binary = ray.ObjectRef(ref.binary())
    from_hex = ray.ObjectRef(bytes.fromhex(ref.hex()))
    assert from_binary == ref and from_hex == ref
    assert ray.get(from_binary) == ray.get(from_hex) == {"answer": 42}
    # In the owner it is an ordinary ref: it keeps the object alive.
    del ref
    assert ray.get(from_binary) == {"answer": 42}
    assert ray.get(ray.ObjectRef(from_hex.binary())) == {"answer": 42}


def test_object_ref_rebuilt_elsewhere_names_no_owner(ray):
    ref = ray.put("kept by the driver")

    @ray.remote
    def read(binary):
        try:
            return ray.get(ray.ObjectRef(binary))
        except exceptions.ReferenceCountingAssertionError as e:
            return str(e)

    message = ray.get(read.remote(ref.binary()))
    assert ref.hex() in message and "Pass the ObjectRef itself" in message

    @ray.remote
    def identity(x):
        return x

    @ray.remote
    def pass_on(binary):
        try:
            return ray.get(identity.remote(ray.ObjectRef(binary)))
        except exceptions.ReferenceCountingAssertionError:
            return "refused as an argument too"

    assert ray.get(pass_on.remote(ref.binary())) == "refused as an argument too"

    @ray.remote
    def read_nested(refs):
        return ray.get(refs[0])

    assert ray.get(read_nested.remote([ref])) == "kept by the driver"  # the ref itself works


def test_an_out_of_band_ref_does_not_keep_the_object(ray):
    binary = ray.put("short-lived").binary()
    # Its only ref is gone: the owner frees it, and rebuilding the ref from
    # the id then names an object nobody owns.
    wait_for_condition(
        lambda: _raises(
            exceptions.ReferenceCountingAssertionError,
            lambda: ray.get(ray.ObjectRef(binary), timeout=10),
        )
    )


def test_object_ref_checks_its_argument(ray):
    with pytest.raises(ValueError, match="length 28"):
        ray.ObjectRef(b"short")
    with pytest.raises(TypeError, match="as bytes"):
        ray.ObjectRef("00" * 28)


# --------------------------------------------------------------------------
# Import paths.
# --------------------------------------------------------------------------


def test_raylet_object_ref_generator_is_what_generators_return(ray):
    from solray._raylet import ObjectRef, ObjectRefGenerator

    @ray.remote
    def numbers():
        yield from range(3)

    generator = numbers.remote()
    assert isinstance(generator, ObjectRefGenerator)
    refs = list(generator)
    assert all(isinstance(r, ObjectRef) for r in refs)
    assert ray.get(refs) == [0, 1, 2]


def test_cloudpickle_round_trips_closures(ray):
    offset = 5
    function = ray.cloudpickle.loads(ray.cloudpickle.dumps(lambda x: x + offset))
    assert function(1) == 6


def test_internal_api_free_and_memory_summary_as_ray_documents_them(ray):
    ref = ray.put(b"x" * 200_000)  # in the store
    summary = internal_api.memory_summary(stats_only=True)
    assert "Plasma memory usage" in summary
    internal_api.free([ref])
    with pytest.raises(exceptions.ObjectFreedError):
        ray.get(ref)
    assert "Plasma memory usage" in internal_api.memory_summary()


# --------------------------------------------------------------------------
# ray.exceptions.
# --------------------------------------------------------------------------

# Every name Ray 2.x exports from ray.exceptions, with its base classes there.
RAY_EXCEPTIONS = {
    "RayError": (Exception,),
    "RaySystemError": ("RayError",),
    "RayTaskError": ("RayError",),
    "CrossLanguageError": ("RayError",),
    "TaskCancelledError": ("RayError",),
    "GetTimeoutError": ("RayError", TimeoutError),
    "WorkerCrashedError": ("RayError",),
    "LocalRayletDiedError": ("RayError",),
    "RayActorError": ("RayError",),
    "ActorDiedError": ("RayActorError",),
    "ActorUnavailableError": ("RayActorError",),
    "ActorUnschedulableError": ("RayError",),
    "TaskUnschedulableError": ("RayError",),
    "ObjectStoreFullError": ("RayError",),
    "OutOfDiskError": ("RayError",),
    "OutOfMemoryError": ("RayError",),
    "NodeDiedError": ("RayError",),
    "ObjectLostError": ("RayError",),
    "ObjectFetchTimedOutError": ("ObjectLostError",),
    "ReferenceCountingAssertionError": ("ObjectLostError", AssertionError),
    "ObjectFreedError": ("ObjectLostError",),
    "OwnerDiedError": ("ObjectLostError",),
    "ObjectReconstructionFailedError": ("ObjectLostError",),
    "ObjectReconstructionFailedMaxAttemptsExceededError": ("ObjectLostError",),
    "ObjectReconstructionFailedLineageEvictedError": ("ObjectLostError",),
    "RpcError": ("RayError",),
    "PlasmaObjectNotAvailable": ("RayError",),
    "AsyncioActorExit": ("RayError",),
    "RuntimeEnvSetupError": ("RayError",),
    "TaskPlacementGroupRemoved": ("RayError",),
    "ActorPlacementGroupRemoved": ("RayError",),
    "PendingCallsLimitExceeded": ("RayError",),
    "ObjectRefStreamEndOfStreamError": ("RayError",),
    "OufOfBandObjectRefSerializationException": ("RayError",),
    "UnserializableException": ("RayError",),
    "AuthenticationError": ("RayError",),
    "RayChannelError": ("RaySystemError",),
    "RayChannelTimeoutError": ("RayChannelError", TimeoutError),
    "RayCgraphCapacityExceeded": ("RaySystemError",),
}


@pytest.mark.parametrize("name", sorted(RAY_EXCEPTIONS))
def test_every_ray_exception_name_exists_with_its_bases(name):
    error_type = getattr(exceptions, name)
    assert name in exceptions.__all__
    for base in RAY_EXCEPTIONS[name]:
        assert issubclass(error_type, getattr(exceptions, base) if isinstance(base, str) else base)


def test_ray_exception_types_list():
    assert exceptions.RayError in exceptions.RAY_EXCEPTION_TYPES
    assert all(issubclass(t, exceptions.RayError) for t in exceptions.RAY_EXCEPTION_TYPES)


def test_errors_with_messages_round_trip_through_pickle():
    for error in (
        exceptions.RpcError("connection reset", rpc_code=14),
        exceptions.ReferenceCountingAssertionError("ab" * 28),
    ):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)


def test_solray_exceptions_is_ray_exceptions_under_the_shim():
    assert solray.exceptions is exceptions


def test_an_out_of_band_ref_sent_back_to_its_owner_reads_there(ray):
    ref = ray.put("home")

    @ray.remote
    def rebuild(binary):
        return [ray.ObjectRef(binary)]  # ownerless here, inside a list

    (back,) = ray.get(rebuild.remote(ref.binary()))
    assert ray.get(back) == "home"
