"""`util.pdb.set_trace()` in tasks and actors, and `solray debug`: a
breakpoint waits on a private Unix socket (never a TCP port), is listed by
`solray debug`, and a pdb session attached through it runs the commands sent
and lets the task finish."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from conftest import wait_for_condition
from test_cluster_cli import cli_env

import solray
from solray._private import debugger, services


@solray.remote
def debugged(x):
    y = x * 2
    solray.util.pdb.set_trace()
    return y + 1


@solray.remote
class Debugged:
    def __init__(self):
        self.hits = 0

    def stop_here(self, word):
        self.hits += 1
        solray.util.pdb.set_trace()
        return f"{word} {self.hits}"


def _breakpoints(address: str) -> list[dict]:
    return debugger.breakpoints(*services.resolve_cluster(address))


def _one_breakpoint(address: str) -> dict:
    wait_for_condition(lambda: _breakpoints(address), timeout=30, message="no breakpoint listed")
    [found] = _breakpoints(address)
    return found


def _debug(address: str, commands: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "solray.cli", "debug", "--address", address],
        input=commands,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_a_task_waits_at_set_trace_for_solray_debug(ray_start):
    address = ray_start.address
    ref = debugged.remote(20)
    found = _one_breakpoint(address)
    assert found["task"] == "debugged"
    assert (
        found["filename"] == __file__
        and found["lineno"] == debugged._function.__code__.co_firstlineno + 3
    )
    # Reachable only by this user on this machine: a Unix socket, 0600, in a 0700 directory.
    st = os.stat(found["socket"])
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    folder = os.stat(os.path.dirname(found["socket"]))
    assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.getuid()
    assert solray.wait([ref], timeout=0.1)[0] == []  # it waits for the debugger
    out = _debug(address, "0\np y\np x\nc\n")
    assert "debugged" in out and "-> return y + 1" in out
    assert "(Pdb) 40\n(Pdb) 20\n" in out, out
    assert solray.get(ref, timeout=30) == 41
    assert not os.path.exists(found["socket"])
    assert _breakpoints(address) == []  # attached, then gone
    assert "No active breakpoints." in out  # listed again after the session


def test_an_actor_goes_on_when_the_debugger_leaves(ray_start):
    """Input that ends without `c` detaches: the call goes on."""
    address = ray_start.address
    actor = Debugged.remote()
    ref = actor.stop_here.remote("hit")
    found = _one_breakpoint(address)
    assert found["task"] == "Debugged.stop_here"
    out = _debug(address, "0\np self.hits\n")
    assert "(Pdb) 1\n" in out, out
    assert solray.get(ref, timeout=30) == "hit 1"


@solray.remote
def with_breakpoint(word):
    breakpoint()
    return word.upper()


def test_breakpoint_builtin_in_a_task_is_a_solray_breakpoint(ray_start):
    ref = with_breakpoint.remote("loud")
    found = _one_breakpoint(ray_start.address)
    assert found["task"] == "with_breakpoint"
    out = _debug(ray_start.address, "0\np word\nc\n")
    assert "(Pdb) 'loud'\n" in out, out
    assert solray.get(ref, timeout=30) == "LOUD"


def test_a_breakpoint_whose_worker_was_killed_is_dropped(ray_start):
    import psutil

    ref = debugged.options(max_retries=0).remote(1)
    found = _one_breakpoint(ray_start.address)
    psutil.Process(found["pid"]).kill()
    with pytest.raises(solray.exceptions.WorkerCrashedError):
        solray.get(ref, timeout=30)
    assert _breakpoints(ray_start.address) == [found]  # nobody removed it
    out = _debug(ray_start.address, "0\n")
    assert "Breakpoint 0 is gone" in out and out.rstrip().endswith(
        "Enter breakpoint index or press enter to refresh:"
    ), out
    assert _breakpoints(ray_start.address) == []


def test_solray_debug_with_no_breakpoints_and_a_bad_index(ray_start):
    out = _debug(ray_start.address, "7\n")
    assert "No active breakpoints." in out and "No breakpoint '7'" in out


def test_set_trace_outside_a_cluster_is_plain_pdb(tmp_path):
    script = "import solray\nx = 5\nsolray.util.pdb.set_trace()\nprint('after', x)\n"
    out = subprocess.run(
        [sys.executable, "-c", script],
        input="p x * 3\nc\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "15" in out.stdout and "after 5" in out.stdout


@pytest.mark.parametrize("ray_start", [{"num_cpus": 1}], indirect=True)
def test_post_mortem_through_solray_debug(ray_start):
    @solray.remote
    def fails():
        try:
            bad = {"k": 1}
            bad["missing"]
        except KeyError:
            solray.util.pdb.post_mortem()
        return "survived"

    ref = fails.remote()
    found = _one_breakpoint(ray_start.address)
    assert found["post_mortem"] is True
    out = _debug(ray_start.address, "0\np bad\nc\n")
    assert "{'k': 1}" in out, out
    assert solray.get(ref, timeout=30) == "survived"
