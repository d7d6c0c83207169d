"""Worker output reaches the driver: stdout to stdout, stderr to stderr, each
line prefixed with `(task_name pid=N)`; and not at all with log_to_driver=False.

Output travels worker -> node -> control store -> driver, so tests poll the
captured output until the expected lines have arrived.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import pytest
from conftest import wait_for_condition

import solray
from solray._private import context, transport
from solray._private.protocol import Msg


@solray.remote
def say(tag: str):
    print(f"hello {tag}")
    return os.getpid()


@solray.remote
def complain(tag: str):
    print(f"oops {tag}", file=sys.stderr)
    return os.getpid()


@solray.remote
def say_lines(tag: str, n: int):
    for i in range(n):
        print(f"{tag} line {i}")
    print(f"{tag} first\n{tag} second")  # one write, two lines
    return os.getpid()


@solray.remote
def say_long(tag: str, length: int):
    print(tag + "x" * length)
    return os.getpid()


@solray.remote
def child_says(tag: str):
    print(f"child {tag}")
    return os.getpid()


@solray.remote
def parent_says(tag: str):
    print(f"parent {tag}")
    return os.getpid(), solray.get(child_says.remote(tag))


class Captured:
    """Output captured so far by capfd: readouterr() only returns what is new,
    so it is accumulated here."""

    def __init__(self, capfd):
        self.capfd = capfd
        self.out = ""
        self.err = ""

    def read(self) -> None:
        out, err = self.capfd.readouterr()
        self.out += out
        self.err += err

    def wait_for(self, *, out=(), err=(), timeout: float = 20.0) -> None:
        def arrived():
            self.read()
            return all(s in self.out for s in out) and all(s in self.err for s in err)

        short = [s if len(s) < 100 else s[:80] + "..." for s in (*out, *err)]
        wait_for_condition(arrived, timeout=timeout, message=f"output {short} never arrived")


@pytest.fixture
def captured(capfd):
    return Captured(capfd)


def test_print_reaches_driver_stdout_with_prefix(ray_start, captured):
    tag = uuid.uuid4().hex
    pid = solray.get(say.remote(tag), timeout=30)
    line = f"(say pid={pid}) hello {tag}\n"
    captured.wait_for(out=[line])
    assert tag not in captured.err
    assert captured.out.count(tag) == 1


def test_stderr_reaches_driver_stderr_with_prefix(ray_start, captured):
    tag = uuid.uuid4().hex
    pid = solray.get(complain.remote(tag), timeout=30)
    captured.wait_for(err=[f"(complain pid={pid}) oops {tag}\n"])
    assert tag not in captured.out


def test_every_line_is_prefixed_and_in_order(ray_start, captured):
    tag = uuid.uuid4().hex
    n = 200
    pid = solray.get(say_lines.remote(tag, n), timeout=30)
    prefix = f"(say_lines pid={pid})"
    expected = [f"{prefix} {tag} line {i}" for i in range(n)]
    expected += [f"{prefix} {tag} first", f"{prefix} {tag} second"]
    captured.wait_for(out=[expected[-1] + "\n"])
    lines = [line for line in captured.out.splitlines() if tag in line]
    assert lines == expected


def test_each_task_gets_its_own_prefix(ray_start, captured):
    tag = uuid.uuid4().hex
    parent_pid, child_pid = solray.get(parent_says.remote(tag), timeout=30)
    assert parent_pid != child_pid
    captured.wait_for(
        out=[
            f"(parent_says pid={parent_pid}) parent {tag}\n",
            f"(child_says pid={child_pid}) child {tag}\n",
        ]
    )


def test_long_line_arrives_whole(ray_start, captured):
    tag = uuid.uuid4().hex
    length = 200_000  # longer than a stream reader's default line limit
    pid = solray.get(say_long.remote(tag, length), timeout=30)
    line = f"(say_long pid={pid}) {tag}{'x' * length}\n"
    captured.wait_for(out=[line])


# -- log_to_driver=False ------------------------------------------------------------


async def run_and_watch_logs(address: str, token: bytes, tag: str) -> None:
    """Subscribe to the log channel ourselves, run tasks that print `tag` to
    stdout and stderr, and return once the control store has published both
    lines (so it has also sent them to the driver)."""
    seen: set[bool] = set()
    both = asyncio.get_running_loop().create_future()

    def on_published(conn, rid, body, buffers):
        if body["channel"] != "logs":
            return
        for _pid, is_err, _name, text in body["data"]["lines"]:
            if tag in text:
                seen.add(bool(is_err))
        if len(seen) == 2 and not both.done():
            both.set_result(None)

    conn = await transport.connect(address, token, {Msg.PUBLISHED: on_published})
    try:
        assert await conn.request(Msg.SUBSCRIBE, ["logs"])
        refs = [say.remote(tag), complain.remote(tag)]
        await asyncio.wait_for(both, 30)
    finally:
        conn.close()
    assert all(isinstance(pid, int) for pid in solray.get(refs, timeout=30))


@pytest.mark.parametrize("ray_start", [{"num_cpus": 2, "log_to_driver": False}], indirect=True)
def test_log_to_driver_false_prints_nothing(ray_start, captured):
    tag = uuid.uuid4().hex
    asyncio.run(run_and_watch_logs(ray_start["address"], context.core_worker.token, tag))
    # A round trip on the driver's own connection to the control store: the
    # published lines were sent to the driver before this reply, on the same
    # connection, so by now the driver has handled (and dropped) them.
    assert solray.nodes()
    captured.read()
    assert tag not in captured.out
    assert tag not in captured.err


def test_log_barrier_sees_output_when_enabled(ray_start, captured):
    """Control for the test above: with log_to_driver left on, the same
    barrier is enough for the lines to have been printed."""
    tag = uuid.uuid4().hex
    asyncio.run(run_and_watch_logs(ray_start["address"], context.core_worker.token, tag))
    assert solray.nodes()
    captured.read()
    assert f"hello {tag}" in captured.out
    assert f"oops {tag}" in captured.err
