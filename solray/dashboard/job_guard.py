"""A job's guard: the process between the dashboard and a job's entrypoint.

The entrypoint runs in a process group of its own (so that stopping the
cluster's processes does not reach it, and stopping the job reaches all of
it: the shell, the driver, anything they start). A process group has no
parent to die with, so were the dashboard's process SIGKILLed, every running
job would go on, orphaned, with no one to report or stop it. The guard is
the dashboard's child and dies with it: Linux sends it SIGTERM when the
dashboard's process dies (PR_SET_PDEATHSIG), and the guard then ends the
entrypoint's group as a stop does (SIGTERM, then SIGKILL after the grace
period). A stop from the dashboard is the same SIGTERM.

The guard exits as the entrypoint's shell did (the same code, or killed by
the same signal), so the dashboard reads the job's exit as before.

It runs as a plain script (`python -P -S job_guard.py GRACE PARENT_PID
COMMAND`): standard library only, no solray import, a few MB per job.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    grace, parent, command = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    group: list[int] = []  # the entrypoint's process group, once it runs
    stopping: list[bool] = []

    def stop(signum, frame) -> None:
        if not stopping:
            stopping.append(True)
            signal.setitimer(signal.ITIMER_REAL, grace)  # then SIGALRM: kill
            for pgid in group:
                _signal_group(pgid, signal.SIGTERM)

    def kill(signum, frame) -> None:
        for pgid in group:
            _signal_group(pgid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, kill)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a stop is SIGTERM
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the dashboard died before the line above
        stop(signal.SIGTERM, None)
    if stopping:
        _exit_as(-signal.SIGTERM)
    entry = subprocess.Popen(
        ["/bin/sh", "-c", command],
        start_new_session=True,
        restore_signals=True,
        preexec_fn=_default_signals,
    )
    group.append(entry.pid)
    if stopping:  # a stop that came while it started
        _signal_group(entry.pid, signal.SIGTERM)
    # Interrupted by the handlers above, and resumed after each (PEP 475).
    _, status = os.waitpid(entry.pid, 0)
    entry.returncode = code = os.waitstatus_to_exitcode(status)
    if stopping:
        _signal_group(entry.pid, signal.SIGKILL)  # what outlived the shell
    _exit_as(code)


def _exit_as(code: int) -> None:
    """Exit with `code`, or die of signal -code as the shell did."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def _default_signals() -> None:
    """In the entrypoint: the signals the guard handles or ignores, as usual."""
    for sig in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is gone


if __name__ == "__main__":
    main()
