"""A Python worker's C++ executor: where C++ tasks and actors run
(functions and classes a C++ library registers with RAY_REMOTE;
cpp/include/ray/api/ray_remote.h).

A worker that gets a C++ task starts `solray_cpp_worker LIBRARY.so...`
(cpp/src/worker_main.cc, built with cpp/) as its child (child.py): the
executable and the shared libraries come from the job's code_search_path
(each folder: the executable if it is there, and every *.so directly in
it; each .so file), one executor per distinct set. It loads the libraries
and runs a function by the name RAY_REMOTE gave it, on xlang values.

A C++ function is a remote function whose body (CppFunction) asks the
executor to run it, so scheduling, retries and errors are a Python task's;
a C++ exception arrives as CrossLanguageError (its type, what()) and fails
the task with RayTaskError. A C++ actor is a Python actor (CppActor) holding
an instance its factory made in the executor, as a Java actor holds one in
the JVM.
"""

from __future__ import annotations

import os

from solray._private.xlang.child import (
    CALL_STATIC,
    Child,
    ChildActor,
    ChildError,
    child_for,
    job_entry,
)

EXECUTABLE = "solray_cpp_worker"


class CppExecutorError(ChildError):
    """The C++ executor could not be started, or exited."""


class CppExecutor(Child):
    error = CppExecutorError


def executor_command(code_search_path: list[str]) -> list[str]:
    """The executor and the libraries a job's code_search_path names."""
    executable, libraries = None, []
    for path in code_search_path:
        if os.path.isdir(path):
            candidate = os.path.join(path, EXECUTABLE)
            if executable is None and os.access(candidate, os.X_OK):
                executable = candidate
            libraries += sorted(
                os.path.join(path, name) for name in os.listdir(path) if name.endswith(".so")
            )
        elif path.endswith(".so") and os.path.isfile(path):
            libraries.append(path)
    if executable is None:
        raise CppExecutorError(
            f"the C++ executor ({EXECUTABLE}, built with cpp/) is in no folder of the job's "
            f"code_search_path ({code_search_path or 'empty'}): add the folder it was built in "
            "to the code_search_path"
        )
    return [executable, *dict.fromkeys(libraries)]


def for_current_job() -> CppExecutor:
    """This worker's C++ executor for the job of the task running on this thread."""
    command = tuple(executor_command(job_entry().get("code_search_path") or []))
    return child_for(("cpp", command), lambda: CppExecutor(list(command), "the C++ executor"))


class CppFunction:
    """The body of a remote function that runs the C++ function `name`."""

    def __init__(self, name: str):
        self.name = name
        # The task's name, as in task events and errors.
        self.__name__ = self.__qualname__ = name
        self.__doc__ = f"The C++ remote function {name}."

    def __call__(self, *args):
        return for_current_job().call(CALL_STATIC, {"class_name": "", "name": self.name}, args)


class CppActor(ChildActor):
    """A Python actor holding one C++ instance (made by a RAY_REMOTE factory)
    in the worker's C++ executor."""

    child_for_job = staticmethod(for_current_job)
