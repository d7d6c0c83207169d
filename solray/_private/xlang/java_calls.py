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

import os
import sys

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


class JavaActor:
    """A Python actor holding one instance of a Java class in the worker's JVM.

    Any method name the handle is called with (dunder names aside) reaches
    the Java instance; the JVM answers one call of an instance at a time,
    and the actor runs one call at a time (max_concurrency 1, checked where
    the class is made)."""

    def __init__(self, class_name: str, *args):
        self._solray_jvm = jvm.for_current_job()
        self._solray_instance = self._solray_jvm.call(
            child.NEW_ACTOR, {"class_name": class_name}, args
        )
        self._solray_jvm.exit_hooks.append(_end_actor)
        if not self._solray_jvm.alive:  # it exited before the hook was there
            _end_actor("it exited while the actor was made")

    def __getattr__(self, name: str):
        if name.startswith("__") or "_solray_instance" not in self.__dict__:
            raise AttributeError(name)

        def call(*args):
            return self._solray_jvm.call(
                child.CALL_METHOD, {"instance": self._solray_instance, "name": name}, args
            )

        call.__name__ = name
        return call

    def __ray_shutdown__(self) -> None:
        """The actor ends gracefully: the JVM lets go of the instance."""
        if self._solray_jvm.alive:
            self._solray_jvm.call(child.DROP_ACTOR, {"instance": self._solray_instance})


def _end_actor(why: str) -> None:
    """The JVM holding this worker's Java actor exited: the actor's state is
    gone, so the actor is too. Its worker exits, and the actor is restarted
    if max_restarts allows, as when any actor's process dies."""
    sys.stderr.write(f"the Java actor's JVM is gone ({why}): this actor's worker exits\n")
    sys.stderr.flush()
    os._exit(1)
