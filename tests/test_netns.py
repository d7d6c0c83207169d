"""Two hosts on one machine: each node in its own network namespace, joined by
a veth pair, so tasks and objects really cross a network link between two
addresses (not loopback).

Needs root and iproute2 (`ip netns`); skipped with the reason otherwise. Every
process is started with `solray start` inside a namespace and stopped by pid
at the end, and the namespaces (with their veth ends) are deleted.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest
from conftest import wait_for_condition

SUBNET = random.randint(16, 250)
IP_A, IP_B = f"10.231.{SUBNET}.1", f"10.231.{SUBNET}.2"
NS_A, NS_B = f"solray-a-{os.getpid()}", f"solray-b-{os.getpid()}"
VETH_A, VETH_B = f"sra{os.getpid() % 100000}", f"srb{os.getpid() % 100000}"


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _namespaces_unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"solray-probe-{os.getpid()}"
    result = _ip("netns", "add", probe)
    if result.returncode != 0:
        return f"`ip netns add` is not permitted here: {result.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


def _our_processes() -> list[psutil.Process]:
    """Everything running inside the test's two namespaces."""
    found = []
    for namespace in (NS_A, NS_B):
        for pid in _ip("netns", "pids", namespace).stdout.split():
            try:
                found.append(psutil.Process(int(pid)))
            except psutil.Error:
                pass
    return found


@pytest.fixture
def two_hosts(tmp_path):
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    commands = [
        ("netns", "add", NS_A),
        ("netns", "add", NS_B),
        ("link", "add", VETH_A, "type", "veth", "peer", "name", VETH_B),
        ("link", "set", VETH_A, "netns", NS_A),
        ("link", "set", VETH_B, "netns", NS_B),
        ("-n", NS_A, "addr", "add", f"{IP_A}/24", "dev", VETH_A),
        ("-n", NS_B, "addr", "add", f"{IP_B}/24", "dev", VETH_B),
        ("-n", NS_A, "link", "set", VETH_A, "up"),
        ("-n", NS_B, "link", "set", VETH_B, "up"),
        ("-n", NS_A, "link", "set", "lo", "up"),
        ("-n", NS_B, "link", "set", "lo", "up"),
    ]
    try:
        for command in commands:
            result = _ip(*command)
            assert result.returncode == 0, f"ip {' '.join(command)}: {result.stderr}"
        yield
    finally:
        procs = _our_processes()
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for proc in alive:
            proc.kill()
        _ip("netns", "del", NS_A)
        _ip("netns", "del", NS_B)


def _in(namespace: str, *command: str, env=None, timeout=120) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


DRIVER = textwrap.dedent(
    """
    import numpy as np
    import solray as ray

    ray.init(address="{address}")
    node_b = [n for n in ray.nodes() if n["NodeManagerAddress"] == "{ip_b}"][0]

    @ray.remote(resources={{"remote": 1}})
    def where():
        return ray.get_runtime_context().get_node_id()

    @ray.remote(resources={{"remote": 1}})
    def make():
        return np.arange(2_500_000, dtype=np.int64)  # 20 MB: through the store

    @ray.remote(resources={{"remote": 1}})
    def total(a):
        return int(a.sum())

    assert ray.get(where.remote()) == node_b["NodeID"]
    assert int(ray.get(make.remote()).sum()) == sum(range(2_500_000))  # pulled B -> A
    local = ray.put(np.ones(2_500_000, dtype=np.int64))
    assert ray.get(total.remote(local)) == 2_500_000  # pulled A -> B
    small = ray.put(41)

    @ray.remote(resources={{"remote": 1}})
    def borrow(refs):
        return ray.get(refs[0]) + 1  # asks the driver, on the other host

    assert ray.get(borrow.remote([small])) == 42
    print("CROSSED THE LINK")
    ray.shutdown()
    """
)


def test_tasks_and_objects_cross_a_veth_link(two_hosts, tmp_path):
    python = sys.executable
    head = _in(
        NS_A,
        python,
        "-m",
        "solray.cli",
        "start",
        "--head",
        "--port",
        "0",
        "--node-ip-address",
        IP_A,
        "--num-cpus",
        "1",
        "--temp-dir",
        str(tmp_path / "a"),
    )
    address = re.search(r"control store at (\S+)\.", head).group(1)
    token_file = re.search(r"Cluster token: (\S+)", head).group(1)
    assert address.startswith(IP_A)
    _in(
        NS_B,
        python,
        "-m",
        "solray.cli",
        "start",
        "--address",
        address,
        "--node-ip-address",
        IP_B,
        "--num-cpus",
        "1",
        "--resources",
        '{"remote": 1}',
        "--token-file",
        token_file,
        "--temp-dir",
        str(tmp_path / "b"),
    )
    env = dict(os.environ, SOLRAY_TOKEN_FILE=token_file)
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(address=address, ip_b=IP_B))
    out = _in(NS_A, python, str(script), env=env)
    assert "CROSSED THE LINK" in out
    # The node in B really listens on B's address, across the link.
    status = _in(NS_A, python, "-m", "solray.cli", "status", "--address", address, env=env)
    assert IP_B in status and "2 alive node(s)" in status
    for proc in _our_processes():
        proc.send_signal(signal.SIGTERM)
    wait_for_condition(lambda: not _our_processes(), timeout=30)
