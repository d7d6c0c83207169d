"""`ray.cross_language`: Java functions and actor classes, and C++
functions, called from Python.

`java_function(class_name, function_name)` is a RemoteFunction and
`java_actor_class(class_name)` an ActorClass, as in Ray: `.remote(...)`,
`.options(...)`, and an actor handle's methods by any name. They run in a
JVM that the Python worker running them starts (_private/xlang/jvm.py); its
classpath is the job's `JobConfig(code_search_path=[...])`, which must hold
the solray Java runtime jar and the user's classes, and its options the
job's `jvm_options`. A Java exception fails the task with RayTaskError whose
cause is a CrossLanguageError naming the Java type, with the Java stack trace.

`cpp_function(function_name)` and `cpp_actor_class(create_function_name,
class_name)`, as in Ray, are what a C++ library registered with RAY_REMOTE,
run in the C++ executor the worker starts (_private/xlang/cpp_executor.py):
the job's code_search_path must hold the library and solray_cpp_worker
(both built with cpp/).
"""

from __future__ import annotations

from solray._private.xlang.cpp_executor import CppActor, CppFunction
from solray._private.xlang.java_calls import JavaActor, JavaFunction
from solray.actor import ActorClass, ActorHandle
from solray.remote_function import RemoteFunction


def java_function(class_name: str, function_name: str) -> RemoteFunction:
    """A Java public static method, as a remote function."""
    _check_name("class_name", class_name)
    _check_name("function_name", function_name)
    return RemoteFunction(JavaFunction(class_name, function_name), {})


class _ChildActorClass(ActorClass):
    """An ActorClass whose actors are instances in a worker's child process
    (child.ChildActor): `made_by` is what the child makes them with."""

    def __init__(self, actor: type, made_by: str, name: str):
        super().__init__(actor, {})
        self._made_by = made_by
        self.__name__ = self.__qualname__ = name

    def _remote(self, args, kwargs, options: dict) -> ActorHandle:
        if options.get("max_concurrency") not in (None, 1):
            raise ValueError(
                f"max_concurrency={options['max_concurrency']} is not supported for the actor "
                f"{self.__name__}: its process runs one call of an instance at a time"
            )
        if kwargs:
            raise TypeError(
                f"the constructor of {self.__name__} takes positional arguments only, got "
                f"{sorted(kwargs)}"
            )
        return super()._remote((self._made_by, *args), {}, options)


class JavaActorClass(_ChildActorClass):
    """An ActorClass whose actors are instances of a Java class."""

    def __init__(self, class_name: str):
        super().__init__(JavaActor, class_name, class_name)

    def _described(self) -> dict:
        return {"class_name": self._made_by, "language": "java"}


class CppActorClass(_ChildActorClass):
    """An ActorClass whose actors are C++ instances a RAY_REMOTE factory makes."""

    def __init__(self, create_function_name: str, class_name: str):
        super().__init__(CppActor, create_function_name, class_name)

    def _described(self) -> dict:
        return {
            "class_name": self.__name__,
            "create_function": self._made_by,
            "language": "cpp",
        }


def java_actor_class(class_name: str) -> ActorClass:
    """A Java class, as an actor class: its public constructors make actors."""
    _check_name("class_name", class_name)
    return JavaActorClass(class_name)


def cpp_function(function_name: str) -> RemoteFunction:
    """A C++ function registered with RAY_REMOTE, as a remote function."""
    _check_name("function_name", function_name)
    return RemoteFunction(CppFunction(function_name), {})


def cpp_actor_class(create_function_name: str, class_name: str) -> ActorClass:
    """A C++ class, as an actor class (Ray's signature): its actors are made
    by the factory RAY_REMOTE registered as `create_function_name`
    ("Counter::FactoryCreate"), and their methods are the member functions
    it registered ("Counter::Add")."""
    _check_name("create_function_name", create_function_name)
    _check_name("class_name", class_name)
    return CppActorClass(create_function_name, class_name)


def _check_name(what: str, name) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{what} must be a non-empty string, got {name!r}")


__all__ = ["cpp_actor_class", "cpp_function", "java_actor_class", "java_function"]
