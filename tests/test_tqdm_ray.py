"""`solray.experimental.tqdm_ray` (Ray's `ray.experimental.tqdm_ray`): bars
updated in tasks and actors are drawn by the driver, which clears them while
it prints a worker's log line. The driver runs as a program of its own, its
stdout and stderr captured into one stream as a terminal would show them."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from solray.experimental.tqdm_ray import tqdm

DRIVER = textwrap.dedent(
    """
    import time
    import solray
    from solray.experimental import tqdm_ray
    from solray.experimental.tqdm_ray import tqdm

    # Record which bars the driver has closed, to know when all output is in.
    closed = set()
    update = tqdm_ray._BarManager.update
    def recording(self, process, prefix, state):
        update(self, process, prefix, state)
        if state["closed"]:
            closed.add(state["uuid"])
    tqdm_ray._BarManager.update = recording

    solray.init(num_cpus=2)

    @solray.remote
    def work(n):
        bar = tqdm(total=n, desc="working", flush_interval_s=0)
        for i in range(n):
            bar.update(1)
            print(f"log line {i}")
        bar.close()
        return n

    @solray.remote
    class Walker:
        def walk(self, n):
            for _ in tqdm(range(n), desc="walking", position=1, flush_interval_s=0):
                pass
            return n

    walker = Walker.remote()
    assert solray.get([work.remote(10), walker.walk.remote(5)], timeout=60) == [10, 5]
    deadline = time.monotonic() + 30
    while len(closed) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(closed) == 2, closed
    solray.shutdown()
    """
)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def test_bars_from_a_task_and_an_actor_reach_the_driver_between_log_lines(leak_check):
    run = subprocess.run(
        [sys.executable, "-c", DRIVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout
    # What a terminal shows line by line: \r returns to the line's start.
    segments = [ANSI.sub("", s).rstrip() for s in re.split(r"[\r\n]", run.stdout)]
    for i in range(10):
        assert any(re.fullmatch(rf"\(work pid=\d+\) log line {i}", s) for s in segments), i
    # A log line never shares a line with a bar.
    for s in segments:
        assert not ("log line" in s and "%|" in s), s
    # Each bar's final state is drawn, named like the task's output.
    assert any(re.match(r"\(work pid=\d+\) working: 100%\|.*\| 10\.0/10\.0", s) for s in segments)
    assert any(re.search(r"walking: 100%\|.*\| 5\.00/5\.00", s) for s in segments), run.stdout


def test_tqdm_arguments_as_in_ray():
    bar = tqdm(range(3), desc="d")
    assert bar.total == 3  # from len(iterable)
    bar.total = 5
    assert bar.total == 5
    with pytest.raises(ValueError, match="No iterable provided"):
        next(iter(tqdm(total=2)))
    with pytest.raises(ValueError, match="position must be an int >= 0"):
        tqdm(position=-1)
    with pytest.raises(TypeError):
        tqdm(leave=False)  # not one of the arguments Ray's takes
