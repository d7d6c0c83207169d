"""A Python worker's JVM child: where its Java tasks and actors run
(child.py has how a worker keeps a child and talks to it).

A worker that gets a Java task (or hosts a Java actor) starts `java
[jvm_options] -cp CLASSPATH io.solray.runtime.JavaExecutor`: the classpath
and options are the job's (JobConfig.code_search_path and jvm_options), one
JVM per distinct pair. The executor points the JVM's System.out at its
stderr, the worker's log.
"""

from __future__ import annotations

import os
import shutil
import zipfile

from solray._private.xlang.child import Child, ChildError, child_for, job_entry

EXECUTOR_CLASS = "io.solray.runtime.JavaExecutor"
_EXECUTOR_FILE = EXECUTOR_CLASS.replace(".", "/") + ".class"


def classpath(code_search_path: list[str]) -> list[str]:
    """The JVM classpath a job's code_search_path makes: a folder gives
    itself and every *.jar directly in it; a .jar file gives itself."""
    entries = []
    for path in code_search_path:
        if os.path.isdir(path):
            entries.append(path)
            entries += sorted(
                os.path.join(path, name) for name in os.listdir(path) if name.endswith(".jar")
            )
        elif path.endswith(".jar") and os.path.isfile(path):
            entries.append(path)
    return list(dict.fromkeys(entries))


def _has_executor(entries: list[str]) -> bool:
    for entry in entries:
        if os.path.isdir(entry):
            if os.path.isfile(os.path.join(entry, _EXECUTOR_FILE)):
                return True
            continue
        try:
            with zipfile.ZipFile(entry) as jar:
                jar.getinfo(_EXECUTOR_FILE)
            return True
        except (KeyError, OSError, zipfile.BadZipFile):
            continue
    return False


class JvmError(ChildError):
    """The JVM could not be started, or exited."""


class Jvm(Child):
    error = JvmError

    def __init__(self, entries: list[str], options: list[str]):
        if not _has_executor(entries):
            raise JvmError(
                f"the solray Java runtime ({EXECUTOR_CLASS}) is not on the job's "
                f"code_search_path (classpath {os.pathsep.join(entries) or 'empty'}): add the "
                "solray runtime jar (or its classes folder) to JobConfig(code_search_path=[...])"
            )
        command = [_java(), *options, "-cp", os.pathsep.join(entries), EXECUTOR_CLASS]
        super().__init__(command, "the JVM")


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise JvmError("no java executable on this worker's node (install a JDK, or set JAVA_HOME)")
    return java


def for_current_job() -> Jvm:
    """This worker's JVM for the job of the task running on this thread."""
    entry = job_entry()
    entries = tuple(classpath(entry.get("code_search_path") or []))
    options = tuple(entry.get("jvm_options") or [])
    return child_for(("java", entries, options), lambda: Jvm(list(entries), list(options)))
