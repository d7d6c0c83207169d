"""The errors users catch, with Ray's names and hierarchy.

`RayTaskError.as_instanceof_cause()` builds, per user exception class, a
subclass of both RayTaskError and that class, so `except ValueError` catches a
remote ValueError while the message still carries the remote traceback.
"""

from __future__ import annotations

import os


class RayError(Exception):
    """Base of every solray error."""


class RaySystemError(RayError):
    def __init__(self, client_exc, traceback_str: str | None = None):
        self.client_exc = client_exc
        self.traceback_str = traceback_str
        super().__init__(client_exc, traceback_str)

    def __str__(self) -> str:
        s = f"System error: {self.client_exc}"
        if self.traceback_str:
            s += f"\ntraceback: {self.traceback_str}"
        return s


class RayTaskError(RayError):
    """A task or actor method raised. `cause` is the user's exception."""

    def __init__(
        self,
        function_name: str,
        traceback_str: str,
        cause: BaseException | None = None,
        proctitle: str | None = None,
        pid: int | None = None,
        ip: str | None = None,
        actor_repr: str | None = None,
        actor_id: str | None = None,
    ):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle or "solray::worker"
        self.pid = pid if pid is not None else os.getpid()
        self.ip = ip or "127.0.0.1"
        self.actor_repr = actor_repr
        self.actor_id = actor_id
        # Not super(): in a dual class (as_instanceof_cause) the next class in
        # the MRO is the cause's, whose __init__ takes other arguments.
        Exception.__init__(self, function_name, traceback_str, cause, proctitle, pid, ip)

    def __reduce__(self):
        return (
            _rebuild_task_error,
            (
                self.function_name,
                self.traceback_str,
                self.cause,
                self.proctitle,
                self.pid,
                self.ip,
                self.actor_repr,
                self.actor_id,
            ),
        )

    def __str__(self) -> str:
        lines = self.traceback_str.rstrip().splitlines() if self.traceback_str else []
        head = f"{type(self).__name__}: {self.proctitle} (pid={self.pid}, ip={self.ip})"
        if self.actor_repr:
            head += f", actor={self.actor_repr}"
        return "\n".join([head, *lines])

    def as_instanceof_cause(self) -> RayTaskError:
        """An equal error whose class also derives from the cause's class."""
        cause_cls = type(self.cause) if self.cause is not None else None
        if cause_cls is None or issubclass(RayTaskError, cause_cls):
            return self
        if isinstance(self, cause_cls):
            return self
        cls = _dual_class(cause_cls)
        if cls is None:
            return self
        err = cls.__new__(cls)
        RayTaskError.__init__(
            err,
            self.function_name,
            self.traceback_str,
            self.cause,
            self.proctitle,
            self.pid,
            self.ip,
            self.actor_repr,
            self.actor_id,
        )
        # Let attribute reads that the dual class does not define fall back to
        # the cause, so `err.code` works for an exception with a `code`.
        return err


def _rebuild_task_error(*args) -> RayTaskError:
    return RayTaskError(*args)


def _rebuild_dual_task_error(*args) -> RayTaskError:
    """A RayTaskError(Cause) comes back as one: `except Cause` still catches it."""
    return RayTaskError(*args).as_instanceof_cause()


_dual_classes: dict[type, type | None] = {}


def _dual_class(cause_cls: type) -> type | None:
    if cause_cls in _dual_classes:
        return _dual_classes[cause_cls]

    def __getattr__(self, name):
        cause = self.__dict__.get("cause")
        if cause is None:
            raise AttributeError(name)
        return getattr(cause, name)

    try:
        cls = type(
            f"RayTaskError({cause_cls.__name__})",
            (RayTaskError, cause_cls),
            {
                "__getattr__": __getattr__,
                "__init__": lambda self, *a, **k: RayTaskError.__init__(self, *a, **k),
                "__str__": RayTaskError.__str__,
                "__reduce__": lambda self: (
                    _rebuild_dual_task_error,
                    RayTaskError.__reduce__(self)[1],
                ),
                "__module__": __name__,
            },
        )
        cls.__qualname__ = cls.__name__
    except TypeError:  # layout conflicts, e.g. some C-implemented exceptions
        cls = None
    _dual_classes[cause_cls] = cls
    return cls


class GetTimeoutError(RayError, TimeoutError):
    """`get` or `wait` ran out of time."""


class TaskCancelledError(RayError):
    def __init__(self, task_id=None, error_message: str | None = None):
        self.task_id = task_id
        self.error_message = error_message
        super().__init__(task_id, error_message)

    def __str__(self) -> str:
        if self.error_message:
            return self.error_message
        return f"Task {self.task_id} was cancelled."


class WorkerCrashedError(RayError):
    def __str__(self) -> str:
        return (
            "The worker died unexpectedly while executing this task. "
            + (str(self.args[0]) if self.args else "")
        ).strip()


class RayActorError(RayError):
    def __init__(self, cause=None, actor_id=None, error_msg: str | None = None):
        self.actor_id = actor_id
        self.error_msg = error_msg or (str(cause) if cause else "The actor died unexpectedly.")
        super().__init__(self.error_msg)

    def __str__(self) -> str:
        return self.error_msg


class ActorDiedError(RayActorError):
    pass


class ActorUnavailableError(RayActorError):
    pass


class ActorUnschedulableError(RayError):
    pass


class TaskUnschedulableError(RayError):
    pass


class ObjectLostError(RayError):
    def __init__(self, object_ref_hex: str = "", owner_address: str = "", call_site: str = ""):
        self.object_ref_hex = object_ref_hex
        self.owner_address = owner_address
        self.call_site = call_site
        super().__init__(object_ref_hex, owner_address, call_site)

    def _base_str(self) -> str:
        return f"Failed to retrieve object {self.object_ref_hex}."

    def __str__(self) -> str:
        return self._base_str() + " All copies of it are lost."


class OwnerDiedError(ObjectLostError):
    def __str__(self) -> str:
        return (
            self._base_str()
            + f" Its owner ({self.owner_address}) has died, and an object fate-shares with "
            "the process that created it (the caller of the task, or of `put`)."
        )


class ObjectFreedError(ObjectLostError):
    def __str__(self) -> str:
        return self._base_str() + " It was freed with `solray._private.internal_api.free`."


class ObjectFetchTimedOutError(ObjectLostError):
    pass


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    def __str__(self) -> str:
        return self._base_str() + (
            " It has already been deleted by the reference counting protocol, or its owner "
            "is unknown here: an ObjectRef rebuilt from its id (ObjectRef(binary)) outside "
            "the process that owns the object does not name its owner and does not keep the "
            "object alive (as in Ray). Pass the ObjectRef itself (in an argument or a value) "
            "instead: its owner travels with it and counts it."
        )


class ObjectReconstructionFailedError(ObjectLostError):
    """The object is lost and its lineage cannot make it again. `reason` is
    the name of Ray's error type (OBJECT_UNRECONSTRUCTABLE_RETRIES_DISABLED,
    ...), `reason_message` says it in words; the signature is Ray's."""

    def __init__(
        self,
        object_ref_hex: str = "",
        reason: str | None = None,
        reason_message: str | None = None,
        owner_address: str = "",
        call_site: str = "",
    ):
        super().__init__(object_ref_hex, owner_address, call_site)
        self.reason = reason
        self.reason_message = reason_message
        self.args = (object_ref_hex, reason, reason_message, owner_address, call_site)

    def __str__(self) -> str:
        why = self.reason_message or (
            "it was created by an actor call, put(), or its ObjectRef was created by a "
            "different worker"
        )
        return self._base_str() + f" All copies of it are lost, and it cannot be rebuilt: {why}."


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectLostError):
    def __str__(self) -> str:
        return (
            self._base_str()
            + " All copies of it are lost, and it cannot be rebuilt because the task that "
            "made it has used up its retries. To prevent this error, set "
            "`@solray.remote(max_retries=<num retries>)` (default 3)."
        )


class ObjectReconstructionFailedLineageEvictedError(ObjectLostError):
    def __str__(self) -> str:
        return (
            self._base_str() + " All copies of it are lost, and the lineage that could "
            "rebuild it was evicted."
        )


class ObjectStoreFullError(RayError):
    pass


class OutOfDiskError(RayError):
    pass


class OutOfMemoryError(RayError):
    pass


class NodeDiedError(RayError):
    pass


class LocalRayletDiedError(RayError):
    pass


class RuntimeEnvSetupError(RayError):
    pass


class TaskPlacementGroupRemoved(RayError):
    pass


class ActorPlacementGroupRemoved(RayError):
    pass


class PendingCallsLimitExceeded(RayError):
    pass


class CrossLanguageError(RayError):
    """An exception raised in another language (a Java task): its type there
    (`type_name`, say "java.lang.ArithmeticException"), message and stack
    trace. A Java task that throws fails with RayTaskError whose cause is
    this."""

    def __init__(
        self, type_name: str, message: str = "", traceback_str: str = "", language: str = "java"
    ):
        self.type_name = type_name
        self.message = message
        self.traceback_str = traceback_str
        self.language = language
        super().__init__(type_name, message, traceback_str, language)

    def __str__(self) -> str:
        detail = self.traceback_str.rstrip() or f"{self.type_name}: {self.message}"
        return f"An exception raised from {self.language.upper()}:\n{detail}"


class AsyncioActorExit(RayError):
    pass


class PlasmaObjectNotAvailable(RayError):
    """An object was not available within the given timeout."""


class ObjectRefStreamEndOfStreamError(RayError):
    """A streaming generator has no more ObjectRefs to read."""


class OufOfBandObjectRefSerializationException(RayError):
    """An ObjectRef was serialized out of band where that is not allowed
    (Ray's spelling of the name)."""


class UnserializableException(RayError):
    """An exception raised remotely could not be unpickled here: its text
    and stack trace as captured where it was raised."""

    def __init__(self, original_stack_trace: str):
        self.original_stack_trace = original_stack_trace
        super().__init__(original_stack_trace)

    def __str__(self) -> str:
        return (
            "Failed to deserialize exception. Refer to "
            "https://docs.ray.io/en/latest/ray-core/objects/serialization.html"
            "#custom-serializers-for-exceptions for more information.\n"
            f"Original exception:\n{self.original_stack_trace}"
        )


class AuthenticationError(RayError):
    """A connection did not prove it holds the cluster token."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class RayChannelError(RaySystemError):
    """A system error of Ray's compiled-graph channels (solray has none; the
    class exists so code that catches it imports)."""


class RayChannelTimeoutError(RayChannelError, TimeoutError):
    """A compiled-graph channel operation timed out."""


class RayCgraphCapacityExceeded(RaySystemError):
    """A compiled graph has too many buffered results."""


class RpcError(RayError):
    """An error of the RPC layer (Ray's; solray raises ConnectionError and
    the errors above instead, the class exists so code that catches it
    imports)."""

    def __init__(self, message: str, rpc_code=None):
        self.message = message
        self.rpc_code = rpc_code
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


__all__ = [name for name, obj in list(globals().items()) if isinstance(obj, type)]

# Ray's list of the exception types its serializer knows.
RAY_EXCEPTION_TYPES = [
    PlasmaObjectNotAvailable,
    RayError,
    RayTaskError,
    WorkerCrashedError,
    RayActorError,
    ObjectStoreFullError,
    ObjectLostError,
    ObjectFetchTimedOutError,
    ReferenceCountingAssertionError,
    ObjectReconstructionFailedError,
    ObjectReconstructionFailedMaxAttemptsExceededError,
    ObjectReconstructionFailedLineageEvictedError,
    OwnerDiedError,
    GetTimeoutError,
    AsyncioActorExit,
    RuntimeEnvSetupError,
    TaskPlacementGroupRemoved,
    ActorPlacementGroupRemoved,
    PendingCallsLimitExceeded,
    LocalRayletDiedError,
    TaskUnschedulableError,
    ActorDiedError,
    ActorUnschedulableError,
    ActorUnavailableError,
    RayChannelError,
    RayChannelTimeoutError,
]
