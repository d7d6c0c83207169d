"""`solray run`: start a program written for Ray so that it runs on solray.

The program gets an environment, not an edit: PYTHONPATH starts with the
directory holding the `ray` shim package (`ray_alias.py`), and PATH with a
directory holding a `ray` command that is solray's CLI. Both are inherited
by every process the program starts (multiprocessing's spawn children,
`subprocess` running `python -c "import ray"` or `ray status`), which is why
this is an environment and not an import hook in the runner's process. The
runner then replaces itself with the program (exec), so signals, exit
status and the terminal are the program's own.

The `ray` command is a two-line shell script kept in this user's private
session registry (one per Python interpreter, since it names the
interpreter), rewritten whenever it differs: no file outside the user's
private directory is created, and nothing is installed.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys

from solray._private import ray_alias, services


def ray_command_dir(temp_dir: str | None = None) -> str:
    """A directory whose `ray` runs solray's CLI with this interpreter."""
    root = services.session_registry(temp_dir, create=True)
    tag = hashlib.sha256(sys.executable.encode()).hexdigest()[:12]
    directory = os.path.join(root, f"bin-{tag}")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    script = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m solray.cli "$@"\n'
    path = os.path.join(directory, "ray")
    try:
        with open(path) as f:
            if f.read() == script:
                return directory
    except OSError:
        pass
    staging = f"{path}.{os.getpid()}"
    with open(staging, "w") as f:
        f.write(script)
    os.chmod(staging, 0o700)
    os.replace(staging, path)
    return directory


def program_environment(
    temp_dir: str | None = None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """`base` (default: this environment), with `import ray` and the `ray`
    command mapped to solray."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ray_alias.shim_path(), env.get("PYTHONPATH")) if p
    )
    env["PATH"] = os.pathsep.join(p for p in (ray_command_dir(temp_dir), env.get("PATH")) if p)
    return env


def exec_program(argv: list[str], temp_dir: str | None = None) -> None:
    """Replace this process with `python ARGV...` under the Ray mapping."""
    env = program_environment(temp_dir)
    os.execve(sys.executable, [sys.executable, *argv], env)
