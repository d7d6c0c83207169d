"""Java functions and actors as Python sees them (ray.cross_language).

A Java static method is a remote function whose body (JavaFunction, pickled
with the class and method names) asks the worker's JVM child to run it; a
Java actor is a Python actor (JavaActor) that holds a Java instance in that
JVM and forwards each method call by name. So scheduling, ownership,
retries, names, lifetimes and restarts are a Python task's and actor's:
only the body crosses to Java. Arguments and results cross as xlang values
(values.py); a Java exception arrives as CrossLanguageError, which the
worker reports as any task's error (RayTaskError with it as the cause).
"""

from __future__ import annotations

from solray._private.xlang import child, jvm


class JavaFunction:
    """The body of a remote function that runs `class_name.name(*args)` in Java."""

    def __init__(self, class_name: str, name: str):
        self.class_name = class_name
        self.name = name
        # The task's name, as in task events and errors (Ray shows the Java one).
        self.__name__ = self.__qualname__ = f"{class_name}.{name}"
        self.__doc__ = f"The Java static method {class_name}.{name}."

    def __call__(self, *args):
        return jvm.for_current_job().call(
            child.CALL_STATIC, {"class_name": self.class_name, "name": self.name}, args
        )


class JavaActor(child.ChildActor):
    """A Python actor holding one instance of a Java class in the worker's JVM."""

    child_for_job = staticmethod(jvm.for_current_job)
