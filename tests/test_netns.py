"""Several hosts on one machine: each in its own network namespace, joined by
a bridge, so tasks, actors and objects really cross network links between
distinct addresses (not loopback), and a process on one host cannot listen on
another host's address.

The hosts: A runs the head (and its ray:// client server), B and C run
nodes; B also runs a driver (a driver on a host that is not the head's); D
has no node, and connects as a thin client. Every process is
started as a user would, with `solray start` inside a namespace; the nodes
find their own addresses (each namespace routes through the bridge, as a
machine routes through its network). At the end everything in the
namespaces is stopped and the namespaces are deleted, which deletes their
links and the bridge with them.

Needs root and iproute2 (`ip netns`); skipped with the reason otherwise.
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
TAG = os.getpid() % 100000
HOSTS = {name: f"10.231.{SUBNET}.{i}" for i, name in enumerate("abcd", start=1)}
SWITCH = f"solray-sw-{TAG}"
PYTHON = sys.executable


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _namespaces_unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"solray-probe-{TAG}"
    result = _ip("netns", "add", probe)
    if result.returncode != 0:
        return f"`ip netns add` is not permitted here: {result.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


class Hosts:
    """The namespaces of one test, by host name ("a".."d")."""

    def __init__(self, names):
        self.names = list(names)

    def namespace(self, name: str) -> str:
        return f"solray-{name}-{TAG}"

    def ip(self, name: str) -> str:
        return HOSTS[name]

    def processes(self, name: str) -> list[psutil.Process]:
        found = []
        for pid in _ip("netns", "pids", self.namespace(name)).stdout.split():
            try:
                found.append(psutil.Process(int(pid)))
            except psutil.Error:
                pass
        return found

    def all_processes(self) -> list[psutil.Process]:
        return [p for name in self.names for p in self.processes(name)]

    def run(self, name: str, *command: str, env=None, timeout=180) -> str:
        result = subprocess.run(
            ["ip", "netns", "exec", self.namespace(name), *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def popen(self, name: str, *command: str, env=None) -> subprocess.Popen:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.namespace(name), *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )

    def solray(self, name: str, *args: str, env=None) -> str:
        return self.run(name, PYTHON, "-m", "solray.cli", *args, env=env)


@pytest.fixture
def hosts():
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    topology = Hosts("abcd")
    commands = [("netns", "add", SWITCH), ("-n", SWITCH, "link", "add", "br0", "type", "bridge")]
    for name in topology.names:
        namespace, ip = topology.namespace(name), topology.ip(name)
        host_end, switch_end = f"h{name}{TAG}", f"s{name}{TAG}"
        commands += [
            ("netns", "add", namespace),
            ("link", "add", host_end, "type", "veth", "peer", "name", switch_end),
            ("link", "set", host_end, "netns", namespace),
            ("link", "set", switch_end, "netns", SWITCH),
            ("-n", SWITCH, "link", "set", switch_end, "master", "br0"),
            ("-n", SWITCH, "link", "set", switch_end, "up"),
            ("-n", namespace, "addr", "add", f"{ip}/24", "dev", host_end),
            ("-n", namespace, "link", "set", host_end, "up"),
            ("-n", namespace, "link", "set", "lo", "up"),
            # A default route, as a machine has: nodes find their address by it.
            ("-n", namespace, "route", "add", "default", "dev", host_end),
        ]
    commands.append(("-n", SWITCH, "link", "set", "br0", "up"))
    try:
        for command in commands:
            result = _ip(*command)
            assert result.returncode == 0, f"ip {' '.join(command)}: {result.stderr}"
        yield topology
    finally:
        procs = topology.all_processes()
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for proc in alive:
            proc.kill()
        psutil.wait_procs(alive, timeout=15)
        for name in topology.names:
            _ip("netns", "del", topology.namespace(name))
        _ip("netns", "del", SWITCH)
        leftover = [n for n in _ip("netns", "list").stdout.split() if n.endswith(f"-{TAG}")]
        assert not leftover, f"namespaces left behind: {leftover}"


def start_cluster(hosts: Hosts, tmp_path) -> tuple[str, str]:
    """Head on A, nodes on B and C (each with a resource naming its host);
    returns (control store address, token file)."""
    head = hosts.solray(
        "a",
        "start", "--head", "--port", "0", "--num-cpus", "1",
        "--resources", '{"host_a": 10}', "--temp-dir", str(tmp_path / "a"),
    )  # fmt: skip
    address = re.search(r"control store at (\S+)\.", head).group(1)
    token_file = re.search(r"Cluster token: (\S+)", head).group(1)
    # The head found its own address: the one its host routes from.
    assert address.startswith(hosts.ip("a") + ":"), head
    join_nodes(hosts, address, token_file, tmp_path)
    return address, token_file


def join_nodes(hosts: Hosts, address: str, token_file: str, tmp_path, env=None) -> None:
    """Nodes on B and C join the head at `address` (`env`: each host's
    environment, by host name)."""
    for name in "bc":
        hosts.solray(
            name,
            "start", "--address", address, "--num-cpus", "2",
            "--resources", f'{{"host_{name}": 10, "worker_host": 10}}',
            "--token-file", token_file, "--temp-dir", str(tmp_path / name),
            env=(env or {}).get(name),
        )  # fmt: skip


ACROSS_HOSTS = textwrap.dedent(
    """
    import itertools
    import sys

    import numpy as np
    import solray as ray
    from solray.util import get_node_ip_address

    ray.init(address=sys.argv[1])
    ips = dict(a=sys.argv[2], b=sys.argv[3], c=sys.argv[4])
    nodes = {n["NodeManagerAddress"]: n for n in ray.nodes() if n["Alive"]}
    assert set(nodes) == set(ips.values()), nodes
    # This driver runs on B and works through B's node.
    assert get_node_ip_address() == ips["b"], get_node_ip_address()
    assert ray.get_runtime_context().get_node_id() == nodes[ips["b"]]["NodeID"]

    def on(host):
        return {"resources": {f"host_{host}": 1}}

    @ray.remote
    def where():
        return get_node_ip_address(), ray.get_runtime_context().get_node_id()

    @ray.remote
    def make(seed):
        return np.full(300_000, seed, dtype=np.int64)  # 2.4 MB: in the store

    @ray.remote
    def total(array):
        return int(array.sum())

    @ray.remote
    def total_nested(refs):
        return int(ray.get(refs[0]).sum())  # a borrowed ref, owned on another host

    @ray.remote
    class Holder:
        def __init__(self):
            self.kept = None

        def keep(self, refs):
            self.kept = refs[0]  # borrowed from the driver on B
            return get_node_ip_address()

        def read(self):
            return int(ray.get(self.kept).sum())

    for host, ip in ips.items():
        assert ray.get(where.options(**on(host)).remote()) == (ip, nodes[ip]["NodeID"])
    # Objects made on every host, read on every other host.
    for seed, (src, dst) in enumerate(itertools.permutations("abc", 2), start=1):
        ref = make.options(**on(src)).remote(seed)
        assert ray.get(total.options(**on(dst)).remote(ref)) == seed * 300_000, (src, dst)
        assert ray.get(total_nested.options(**on(dst)).remote([ref])) == seed * 300_000
        assert int(ray.get(ref).sum()) == seed * 300_000  # and on the driver's host
    # Refs owned by the driver on B, borrowed by actors on A and C.
    mine = ray.put(np.ones(300_000, dtype=np.int64))
    holders = {h: Holder.options(**on(h)).remote() for h in "ac"}
    for host, holder in holders.items():
        assert ray.get(holder.keep.remote([mine])) == ips[host]
    del mine
    for holder in holders.values():
        assert ray.get(holder.read.remote()) == 300_000
    print("ACROSS ALL HOSTS")
    ray.shutdown()
    """
)


def test_driver_on_a_node_host_reaches_every_host(hosts, tmp_path):
    address, token_file = start_cluster(hosts, tmp_path)
    env = dict(os.environ, SOLRAY_TOKEN_FILE=token_file)
    script = tmp_path / "across.py"
    script.write_text(ACROSS_HOSTS)
    ips = [hosts.ip(name) for name in "abc"]
    out = hosts.run("b", PYTHON, str(script), address, *ips, env=env)
    assert "ACROSS ALL HOSTS" in out
    status = hosts.solray("a", "status", "--address", address, env=env)
    assert "3 alive node(s)" in status and all(ip in status for ip in ips), status


def test_driver_on_a_host_without_a_node_is_told_what_to_do(hosts, tmp_path):
    address, token_file = start_cluster(hosts, tmp_path)
    env = dict(os.environ, SOLRAY_TOKEN_FILE=token_file)
    script = tmp_path / "nonode.py"
    script.write_text(
        "import solray as ray, sys\n"
        "try:\n"
        "    ray.init(address=sys.argv[1])\n"
        "except ConnectionError as e:\n"
        "    print('REFUSED:', e)\n"
    )
    out = hosts.run("d", PYTHON, str(script), address, env=env)
    assert "REFUSED: No node of this cluster runs on this machine" in out, out
    assert "ray://" in out and hosts.ip("b") in out


THIN_CLIENT = textwrap.dedent(
    """
    import sys

    import numpy as np
    import solray as ray

    ray.init(sys.argv[1])  # ray://HEAD:10001, from a host without a node
    ips = dict(a=sys.argv[2], b=sys.argv[3], c=sys.argv[4])
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == set(ips.values())

    def on(host):
        return {"resources": {f"host_{host}": 1}}

    @ray.remote
    def where():
        from solray.util import get_node_ip_address

        return get_node_ip_address()

    @ray.remote
    def make(seed):
        return np.full(300_000, seed, dtype=np.int64)

    @ray.remote
    def total(array):
        return int(array.sum())

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, refs):
            self.n += int(ray.get(refs[0]).sum())  # a ref the client owns (by proxy)
            return self.n

    mine = ray.put(np.ones(300_000, dtype=np.int64))  # from the client's host
    for host, ip in ips.items():
        assert ray.get(where.options(**on(host)).remote()) == ip
        assert ray.get(total.options(**on(host)).remote(mine)) == 300_000  # D -> host
        made = make.options(**on(host)).remote(5)
        assert int(ray.get(made).sum()) == 5 * 300_000  # host -> D
    counter = Counter.options(**on("c")).remote()
    assert ray.get(counter.add.remote([mine])) == 300_000
    assert ray.get([counter.add.remote([mine]) for _ in range(2)]) == [600_000, 900_000]
    print("CLIENT REACHED ALL HOSTS")
    ray.shutdown()
    """
)


def test_a_client_on_a_host_without_a_node(hosts, tmp_path):
    address, token_file = start_cluster(hosts, tmp_path)
    env = dict(os.environ, SOLRAY_TOKEN_FILE=token_file)
    script = tmp_path / "client.py"
    script.write_text(THIN_CLIENT)
    client_address = f"ray://{hosts.ip('a')}:10001"
    ips = [hosts.ip(name) for name in "abc"]
    out = hosts.run("d", PYTHON, str(script), client_address, *ips, env=env)
    assert "CLIENT REACHED ALL HOSTS" in out


KILLED_MID_WORKLOAD = textwrap.dedent(
    """
    import pathlib
    import sys
    import time

    import solray as ray
    from solray.util import get_node_ip_address

    ray.init(address=sys.argv[1])
    marker = pathlib.Path(sys.argv[2])
    victim = sys.argv[3]

    @ray.remote(resources={"worker_host": 1}, max_retries=5)
    def work(i):
        if get_node_ip_address() == victim:
            marker.touch()  # the test kills this host once a task runs here
        time.sleep(0.3)
        return i, get_node_ip_address()

    results = ray.get([work.remote(i) for i in range(40)], timeout=300)
    assert [i for i, _ in results] == list(range(40))
    print("FINISHED ON", sorted({ip for _, ip in results}))
    ray.shutdown()
    """
)


def test_a_host_killed_mid_workload_loses_no_task(hosts, tmp_path):
    address, token_file = start_cluster(hosts, tmp_path)
    env = dict(os.environ, SOLRAY_TOKEN_FILE=token_file)
    script = tmp_path / "killed.py"
    script.write_text(KILLED_MID_WORKLOAD)
    marker = tmp_path / "running-on-c"
    driver = hosts.popen("b", PYTHON, str(script), address, str(marker), hosts.ip("c"), env=env)
    try:
        wait_for_condition(marker.exists, timeout=120, message="no task ever ran on host C")
        for proc in hosts.processes("c"):  # the whole host goes down at once
            try:
                proc.kill()
            except psutil.Error:
                pass
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 0, out
    assert "FINISHED ON" in out, out
    status = hosts.solray("a", "status", "--address", address, env=env)
    assert "2 alive node(s)" in status, status
