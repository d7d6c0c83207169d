"""Every program in examples/ runs as a user runs it, `solray run
examples/NAME.py`, exits 0 and prints the lines it promises.

Each example starts its own cluster with `ray.init()`, so each runs in a
process of its own session (start_new_session): when it has exited, nothing
of that session may be left running, and no node of its may have left its
shared memory behind.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import psutil
import pytest
from conftest import wait_for_condition

from solray._private import services

EXAMPLES_DIR = pathlib.Path(__file__).resolve().parent.parent / "examples"

# Lines each example must print (each is the start of an output line). A new
# example without an entry here fails test_every_example_is_tested.
EXPECTED: dict[str, list[str]] = {
    "batch_inference.py": [
        "6 batches of 1000 rows; tinymodel installed here: False",
        "predicted positives: 2975 of 6000",
        "matches a local computation: True",
        "batch_inference: all checks passed",
    ],
    "generators.py": [
        "num_returns=3: 3 values from a list, 3 refs from a generator, shapes "
        "[(1000000, 1), (1000000, 1), (1000000, 1)]",
        "Split array of size 63153 into 64 blocks of size 1000 each.",
        "get_size counted 63153 elements from the ref and from the generator",
        "num_returns=4: values [0, 1], then a RayTaskError: True",
        'num_returns="dynamic": values [0, 1], then a RayTaskError: True',
        "streaming generator: [0, 1, 2, 3, 4]",
        "generators: all checks passed",
    ],
    "map_reduce_files.py": [
        "8 files, 11982 words, 26 distinct",
        "3 reducers, each word counted by exactly one: True",
        "map-reduce matches a plain Python count: True",
        "map_reduce_files: all checks passed",
    ],
    "metrics_and_progress.py": [
        "task results: [499500, 1999000]",
        "num_requests counted by the actor: 5.0",
        "curr_count gauge: 15.0",
        "request_latency observations: 5.0",
        "metrics_and_progress: all checks passed",
    ],
    "monte_carlo_pi.py": [
        "Progress: 100%",
        "Estimated value of π is: 3.1",
        "within 0.02 of math.pi: True",
        "monte_carlo_pi: all checks passed",
    ],
    "objects.py": [
        "put/get: 1 [0, 1, 2]",
        "`get` timed out.",
        "wait: first ready is fast with 1 still running",
        "top-level refs, the task saw: (1, 2, 3)",
        "nested refs, the task saw: ['ObjectRef', 'ObjectRef', 'ObjectRef'] and got [1, 2, 3]",
        "actor constructor saw: int then [ObjectRef]",
        "actor method saw: int then [ObjectRef]",
        "closure capture: [1, 2, 3]",
        "nested object: outer holds a ref whose value is 1",
        "objects: all checks passed",
    ],
    "parameter_server.py": [
        "synchronous: 60 updates, found the true weights: True",
        "asynchronous: 240 updates, found the true weights: True",
        "parameter_server: all checks passed",
    ],
    "quick_sort.py": ["sorted 1,000,000 numbers with nested tasks in "],
    "return_put_anti_pattern.py": [
        "single small value: bad and good agree",
        "single large value: bad and good agree",
        "single value from an actor: bad and good agree",
        "static multiple returns: bad1, bad2 and good agree",
        "static multiple returns from an actor: bad1, bad2 and good agree",
        "dynamic returns: bad and good agree",
        "return_put_anti_pattern: all checks passed",
    ],
    "streaming_pipeline.py": [
        "batch 0 consumed before batch 5 was produced: True",
        "sum of squares 71982001000, as computed in one process: True",
        "streaming_pipeline: all checks passed",
    ],
    "task_patterns.py": [
        "get in a loop vs submit first: same 100 results",
        "get then resubmit vs pass the ref: both reduce to 1000000",
        "nested refs got in the task vs direct arguments: both sum to 3",
        "submission order vs completion order: same 100 results",
        "all at once vs in batches of 10: both total 5000000",
        "2000 tiny tasks vs 2 batches: same doubled list",
        "task_patterns: all checks passed",
    ],
    "tasks.py": [
        "my_function returned 1",
        "with num_cpus=3: 1",
        "a ref passed to another task: got 2",
        "wait: 1 ready, 1 remaining",
        "multiple returns: (0, 1, 2) [0, 1, 2]",
        "Object reference was cancelled.",
        "retried task succeeded on attempt 3",
        "without task events: done",
        "tasks: all checks passed",
    ],
}


# The anti-patterns an example shows on purpose, as the end-of-job advice
# (advice.py) names them on stderr.
EXPECTED_ADVICE = {
    "task_patterns.py": [
        "get() right after remote(), in a loop: the tasks run one at a time: 100 gets",
        "tasks shorter than 1 ms, in bulk",
    ],
    "return_put_anti_pattern.py": ["tasks returned refs they made with put(): 8 calls"],
}


def test_every_example_is_tested():
    assert set(EXPECTED) == {path.name for path in EXAMPLES_DIR.glob("*.py")}


def _in_session(sid: int) -> list[psutil.Process]:
    procs = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                procs.append(proc)
        except (ProcessLookupError, PermissionError):
            pass
    return procs


def _orphaned_shm(names: set[str]) -> list[str]:
    """Of these /dev/shm entries, those whose node process is gone."""
    orphaned = []
    for name in names:
        try:
            pid = int(pathlib.Path(services.SHM_ROOT, name, "node.pid").read_text())
        except (OSError, ValueError):
            continue  # removed meanwhile, or not a node's directory
        if not psutil.pid_exists(pid):
            orphaned.append(name)
    return orphaned


def _solray_shm() -> set[str]:
    return {n for n in os.listdir(services.SHM_ROOT) if n.startswith(services.SHM_PREFIX)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_prints_its_result(name, tmp_path):
    shm_before = _solray_shm()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SOLRAY_") and k != "RAY_ADDRESS"
    }
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    # Files, not pipes: a process left behind holding a pipe would keep a
    # read of it waiting; the check below names it instead.
    with open(out, "w") as stdout_file, open(err, "w") as stderr_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "solray.cli", "run", str(EXAMPLES_DIR / name)],
            stdout=stdout_file,
            stderr=stderr_file,
            cwd=tmp_path,
            env=env,
            start_new_session=True,
        )
    try:
        try:
            # Below pytest's own 120 s limit, so a hung example is reported
            # with its output, not interrupted with its process left behind.
            process.wait(timeout=100)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"{name} still running after 100 s:\n{out.read_text()}{err.read_text()}")
        stdout, stderr = out.read_text(), err.read_text()
        assert process.returncode == 0, stdout + stderr
        assert "Traceback" not in stderr, stderr
        lines = stdout.splitlines()
        for expected in EXPECTED[name]:
            assert any(line.startswith(expected) for line in lines), (expected, stdout)
        assert stderr.count("solray: advice:") <= 1, stderr
        for expected in EXPECTED_ADVICE.get(name, ()):
            assert f"\n  {expected}" in stderr, (expected, stderr)

        wait_for_condition(
            lambda: not _in_session(process.pid),
            timeout=15,
            message=lambda: f"left running after {name} exited: {_in_session(process.pid)}",
        )
    finally:
        for proc in _in_session(process.pid):  # only when the check above failed
            proc.kill()
        if process.poll() is None:  # interrupted (pytest's timeout): reap it here
            process.kill()
            process.wait()
    # Other runs on this machine may create (and remove) their own entries
    # meanwhile; an entry of this run is one that is new and whose node is gone.
    new = _solray_shm() - shm_before
    wait_for_condition(
        lambda: not _orphaned_shm(new),
        timeout=10,
        message=lambda: f"/dev/shm entries left behind by {name}: {_orphaned_shm(new)}",
    )
