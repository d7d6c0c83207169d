"""ray:// thin clients: `init("ray://HOST:PORT")` against a head started with
`solray start --head`, as a user on a machine without a node would connect.

Each client is a separate Python process given only HOST:PORT and a copy of
the token (SOLRAY_TOKEN_FILE); its temp dir holds no session registry, so it
cannot find the cluster any other way. The head is one per module (daemons,
stopped by pid at the end with everything they started: see
test_cluster_cli.stop_daemons); every test leaves it as it found it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import psutil
import pytest
from conftest import wait_for_condition
from test_cluster_cli import (
    cli_env,
    daemons_of,
    sessions_under,
    solray_cli,
    start_head,
    stop_daemons,
)

from solray._private import transport

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
CLIENT_TIMEOUT_S = 180


@dataclass
class Head:
    temp_dir: str
    control_address: str
    client_address: str  # HOST:PORT of the client server
    token_file: str  # a copy, outside the head's session directory
    client_home: str  # the clients' TMPDIR: no session registry there

    def client_server(self) -> psutil.Process:
        (server,) = [
            p
            for p in daemons_of(sessions_under(self.temp_dir))
            if "solray._private.client.server" in p.cmdline()
        ]
        return server

    def proxies(self) -> list[psutil.Process]:
        """The client server's proxy drivers still running."""
        alive = []
        for proc in self.client_server().children():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                pass
        return alive


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    root = tmp_path_factory.mktemp("client")
    temp_dir = str(root / "head")
    try:
        out = start_head(
            "--num-cpus",
            "2",
            "--temp-dir",
            temp_dir,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        control = re.search(r"control store at ([\d.]+:\d+)", out.stdout).group(1)
        client = re.search(r'solray\.init\("ray://([\d.]+:\d+)"\)', out.stdout).group(1)
        token_path = re.search(r"Cluster token: (\S+)", out.stdout).group(1)
        copy = root / "token"
        with open(token_path) as f:
            copy.write_text(f.read())
        copy.chmod(0o600)
        home = root / "client-home"
        home.mkdir()
        yield Head(temp_dir, control, client, str(copy), str(home))
    finally:
        stop_daemons(temp_dir)


def client_env(head: Head, token_file: str | None = None) -> dict:
    env = cli_env()
    env["TMPDIR"] = head.client_home
    env["PYTHONPATH"] = TESTS_DIR + os.pathsep + env.get("PYTHONPATH", "")
    if token_file is not None:
        env["SOLRAY_TOKEN_FILE"] = token_file
    return env


PRELUDE = """
import os, sys, time
import numpy as np
import solray as ray
from conftest import wait_for_condition
ADDRESS = sys.argv[1]
"""


def client_command(head: Head, script: str) -> list[str]:
    return [sys.executable, "-c", PRELUDE + textwrap.dedent(script), f"ray://{head.client_address}"]


def run_client(head: Head, script: str, token_file: str | None = "") -> str:
    """Run a client program to its end; its stdout (it must exit 0)."""
    env = client_env(head, head.token_file if token_file == "" else token_file)
    out = subprocess.run(
        client_command(head, script),
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_the_api_through_a_client(head):
    out = run_client(
        head,
        """
        try:  # options that configure a new node: refused, as when joining
            ray.init(ADDRESS, num_cpus=1)
            raise AssertionError("num_cpus accepted")
        except ValueError as e:
            assert "num_cpus must not be given" in str(e)
        ctx = ray.init(ADDRESS, namespace="api")
        assert ray.is_initialized()
        assert ctx["namespace"] == "api" and ctx.address == ADDRESS
        assert ray.init(ADDRESS, ignore_reinit_error=True)["namespace"] == "api"
        try:
            ray.init(ADDRESS)
            raise AssertionError("initialized twice")
        except RuntimeError as e:
            assert "init twice" in str(e)

        @ray.remote
        def double(x):
            print("doubling", x)
            return x * 2

        @ray.remote
        def add(x, nested):
            return x + ray.get(nested[0])

        @ray.remote
        def make_nested():
            return {"inner": ray.put("inside")}

        @ray.remote
        def fail():
            raise KeyError("no such key")

        @ray.remote
        def slow():
            time.sleep(60)

        @ray.remote
        def count(n):
            for i in range(n):
                yield i * 10

        @ray.remote
        class Counter:
            def __init__(self, start):
                self.value = start

            def add(self, n):
                self.value += n
                return self.value

        # Tasks, options, refs as top-level and nested arguments.
        assert ray.get(double.remote(21)) == 42
        assert ray.get([double.options(num_cpus=1).remote(i) for i in range(4)]) == [0, 2, 4, 6]
        first = double.remote(1)
        assert ray.get(add.remote(first, [double.remote(5)])) == 12
        # A ref nested in a returned value: get it from the client.
        assert ray.get(ray.get(make_nested.remote())["inner"]) == "inside"
        # put/get of a large array: the bytes round-trip exactly.
        array = np.random.default_rng(7).integers(0, 2**62, size=50 * 2**20 // 8)
        big = ray.put(array)
        back = ray.get(big)
        assert back.dtype == array.dtype and np.array_equal(back, array)
        assert ray.get(add.remote(1, [ray.put(2)])) == 3
        # Actors: calls in order, refs passed to a method.
        counter = Counter.remote(10)
        assert [ray.get(counter.add.remote(1)) for _ in range(3)] == [11, 12, 13]
        assert ray.get(counter.add.remote(first)) == 15
        # Errors keep their types.
        try:
            ray.get(fail.remote())
            raise AssertionError("no error")
        except KeyError as e:
            assert isinstance(e, ray.exceptions.RayTaskError), type(e)
            assert "no such key" in str(e)
        # wait with num_returns and timeout, get timeout, cancel.
        slow_ref = slow.remote()
        ready, not_ready = ray.wait([first, slow_ref], num_returns=1, timeout=5)
        assert ready == [first] and not_ready == [slow_ref]
        ready, not_ready = ray.wait([slow_ref], timeout=0.2)
        assert (ready, not_ready) == ([], [slow_ref])
        try:
            ray.get(slow_ref, timeout=0.2)
            raise AssertionError("no timeout")
        except ray.exceptions.GetTimeoutError:
            pass
        ray.cancel(slow_ref)
        try:
            ray.get(slow_ref)
            raise AssertionError("not cancelled")
        except ray.exceptions.TaskCancelledError:
            pass
        # A streaming generator: iterate its refs; wait on it; async for.
        stream = count.remote(4)
        ready, _ = ray.wait([stream], timeout=30)
        assert ready == [stream]
        assert [ray.get(ref) for ref in stream] == [0, 10, 20, 30]

        async def consume():
            return [await ref async for ref in count.remote(3)]

        import asyncio

        assert asyncio.run(consume()) == [0, 10, 20]
        # Several returns, and dynamic generators.
        low, high = count.options(num_returns=2).remote(2)
        assert ray.get([low, high]) == [0, 10]
        dynamic = ray.get(count.options(num_returns="dynamic").remote(3))
        assert [ray.get(ref) for ref in dynamic] == [0, 10, 20]
        # An actor handle passed to a task, which calls the actor.
        @ray.remote
        def call_actor(actor):
            return ray.get(actor.add.remote(100))

        assert ray.get(call_actor.remote(counter)) == 115
        assert ray.get(counter.add.remote(0)) == 115
        # A placement group, and a task placed in it.
        from solray.util.placement_group import placement_group, remove_placement_group
        from solray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = placement_group([{"CPU": 1}])
        assert group.wait(30)
        in_group = PlacementGroupSchedulingStrategy(group)
        assert ray.get(double.options(scheduling_strategy=in_group).remote(3)) == 6
        remove_placement_group(group)
        # kill: later calls fail with ActorDiedError.
        ray.kill(counter)
        try:
            ray.get(counter.add.remote(1))
            raise AssertionError("actor still alive")
        except ray.exceptions.ActorDiedError:
            pass
        # The cluster as the proxy driver sees it.
        context = ray.get_runtime_context()
        assert context.namespace == "api"
        assert len(context.get_job_id()) == 8
        (node,) = ray.nodes()
        assert node["Alive"] and context.get_node_id() == node["NodeID"]
        assert ray.cluster_resources()["CPU"] == 2
        wait_for_condition(lambda: ray.available_resources().get("CPU") == 2)
        # await a ref.
        async def main():
            return await double.remote(8)

        assert asyncio.run(main()) == 16
        job = context.get_job_id()
        ray.shutdown()
        assert not ray.is_initialized()
        # A new connection is a new driver.
        ray.init(ADDRESS)
        assert ray.get_runtime_context().get_job_id() != job
        assert ray.get(double.remote(2)) == 4
        print("CLIENT OK")
        """,
    )
    assert "CLIENT OK" in out
    # Worker output reaches the client, as log_to_driver does for a driver.
    assert re.search(r"\(double pid=\d+\) doubling 21", out), out
    wait_for_condition(lambda: not head.proxies(), message="a proxy driver outlived its client")


def test_named_and_detached_actors_across_namespaces(head):
    run_client(
        head,
        """
        ray.init(ADDRESS, namespace="alpha")

        @ray.remote
        class Box:
            def __init__(self, value):
                self.value = value

            def get(self):
                return self.value

        keeper = Box.options(name="keeper", lifetime="detached").remote("kept")
        temp = Box.options(name="temp").remote("temporary")
        assert ray.get([keeper.get.remote(), temp.get.remote()]) == ["kept", "temporary"]
        assert ray.get(ray.get_actor("temp").get.remote()) == "temporary"
        print("CREATED")
        """,
    )
    # That client is gone: its detached actor stays, its other actor ended.
    out = run_client(
        head,
        """
        from solray.util.state import list_actors

        ray.init(ADDRESS, namespace="beta")
        try:
            ray.get_actor("keeper")
            raise AssertionError("found in the wrong namespace")
        except ValueError:
            pass
        keeper = ray.get_actor("keeper", namespace="alpha")
        assert ray.get(keeper.get.remote()) == "kept"

        def temp_gone():
            try:
                ray.get_actor("temp", namespace="alpha")
                return False
            except ValueError:
                return True

        wait_for_condition(temp_gone, timeout=30)
        ray.kill(keeper)
        wait_for_condition(
            lambda: [a["state"] for a in list_actors() if a["name"] == "keeper"]
            == ["DEAD"],
            timeout=30,
        )
        print("NAMESPACES OK")
        """,
    )
    assert "NAMESPACES OK" in out


def test_refs_dropped_on_the_client_are_freed(head):
    out = run_client(
        head,
        """
        from solray.util.state import list_objects

        ray.init(ADDRESS)

        @ray.remote
        def pair():
            return [ray.put(b"x" * 200_000), ray.put(b"y" * 200_000)]

        def live():
            return {row["object_id"] for row in list_objects(limit=10_000)}

        big = ray.put(np.zeros(2_000_000, dtype=np.uint8))
        inner = ray.get(pair.remote())
        held = {big.hex(), inner[0].hex(), inner[1].hex()}
        assert held <= live(), (held, live())
        kept = inner[1]
        del big, inner
        # Released in a batch; the owners free them; the kept one stays.
        wait_for_condition(lambda: not (held - {kept.hex()}) & live(), timeout=30)
        assert kept.hex() in live() and ray.get(kept) == b"y" * 200_000
        print("RELEASED OK")
        """,
    )
    assert "RELEASED OK" in out


def test_a_client_needs_the_token_and_garbage_is_refused(head):
    refused = """
        try:
            ray.init(ADDRESS)
            raise AssertionError("connected")
        except ConnectionError as e:
            print("REFUSED:", e)
        assert not ray.is_initialized()
        """
    out = run_client(head, refused, token_file=None)
    assert "No token" in out and "SOLRAY_TOKEN_FILE" in out
    # On the head's machine, the session registry has it (as for init(address=...)).
    found = f"ray.init(ADDRESS, _temp_dir={head.temp_dir!r}); print('FOUND', ray.get(ray.put(1)))"
    assert "FOUND 1" in run_client(head, found, token_file=None)
    wrong = os.path.join(head.client_home, "wrong-token")
    with open(wrong, "w") as f:
        f.write(os.urandom(32).hex())
    out = run_client(head, refused, token_file=wrong)
    assert "Is the cluster token right?" in out
    # Garbage on the port: the connection is closed; nothing is started.
    server = head.client_server()
    host, port = head.client_address.rsplit(":", 1)
    for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4, os.urandom(100_000)):
        with socket.create_connection((host, int(port)), timeout=15) as sock:
            received = b""
            try:
                sock.sendall(garbage)
                while chunk := sock.recv(65536):  # until the server closes it
                    received += chunk
            except (ConnectionResetError, BrokenPipeError):
                pass  # closed with our bytes unread: a reset
            # At most its challenge came back (MAGIC, version and nonce), nothing else.
            challenge = transport.MAGIC + transport.version_block()
            assert len(received) <= len(challenge) + transport.NONCE_LEN, received
            assert challenge.startswith(received[: len(challenge)]), received
    assert server.is_running() and not head.proxies()
    assert "CLIENT OK" in run_client(
        head, "ray.init(ADDRESS); print('CLIENT', ray.get(ray.put('OK')))"
    )


def listed_objects(head: Head, object_ids: list[str]) -> list[str]:
    """Which of these objects `solray memory` on the head lists."""
    memory = solray_cli("memory", "--temp-dir", head.temp_dir)
    assert memory.returncode == 0, memory.stderr
    return [i for i in object_ids if i in memory.stdout]


def start_client(head: Head, script: str) -> subprocess.Popen:
    return subprocess.Popen(
        client_command(head, script),
        env=client_env(head, head.token_file),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_client_frees_what_it_owned(head, tmp_path):
    killed = tmp_path / "killed"
    doomed = start_client(
        head,
        """
        ray.init(ADDRESS, namespace="doomed")

        @ray.remote
        class Holder:
            def ping(self):
                return "pong"

        @ray.remote
        def work(x):
            time.sleep(0.05)
            return x

        holder = Holder.options(name="holder").remote()
        survivor = Holder.options(name="survivor", lifetime="detached").remote()
        ray.get([holder.ping.remote(), survivor.ping.remote()])
        big = ray.put(np.ones(3_000_000, dtype=np.uint8))
        small = ray.put("small")
        print("READY", big.hex(), small.hex(), flush=True)
        while True:  # mid-workload when killed
            ray.get([work.remote(i) for i in range(4)])
        """,
    )
    # Another client, working all along: before, during and after the kill.
    bystander = start_client(
        head,
        f"""
        from solray.util.state import list_actors

        ray.init(ADDRESS)

        @ray.remote
        def square(x):
            return x * x

        @ray.remote
        class Adder:
            def add(self, x):
                return x + 1

        adder = Adder.remote()
        big = ray.put(np.arange(1_000_000))
        print("READY", flush=True)
        rounds = 0
        while not os.path.exists({str(killed)!r}) or rounds < 20:
            if os.path.exists({str(killed)!r}):
                rounds += 1
            assert ray.get(square.remote(7)) == 49
            assert ray.get(adder.add.remote(1)) == 2
            assert ray.get(big)[-1] == 999_999

        def states():
            doomed = list_actors(filters=[("ray_namespace", "=", "doomed")])
            return {{a["name"]: a["state"] for a in doomed}}

        wait_for_condition(lambda: states() == {{"holder": "DEAD", "survivor": "ALIVE"}}, 30)
        survivor = ray.get_actor("survivor", namespace="doomed")
        assert ray.get(survivor.ping.remote()) == "pong"
        ray.kill(survivor)
        print("BYSTANDER OK", rounds)
        """,
    )
    clients = [doomed, bystander]
    try:
        line = doomed.stdout.readline()
        assert line.startswith("READY"), line + doomed.stderr.read()
        object_ids = line.split()[1:]
        line = bystander.stdout.readline()
        assert line.startswith("READY"), line + bystander.stderr.read()
        wait_for_condition(lambda: len(head.proxies()) == 2)  # earlier clients' are gone
        proxies = {p.pid for p in head.proxies()}
        assert listed_objects(head, object_ids) == object_ids  # on the head, as its user sees
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(30)
        # Its proxy driver notices the closed connection and exits; the other stays.
        wait_for_condition(lambda: len(head.proxies()) == 1, timeout=30)
        assert {p.pid for p in head.proxies()} < proxies
        wait_for_condition(lambda: not listed_objects(head, object_ids), timeout=30)
        killed.touch()
        out, err = bystander.communicate(timeout=CLIENT_TIMEOUT_S)
        assert bystander.returncode == 0, out + err
        assert "BYSTANDER OK 20" in out
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
            client.communicate()


def test_client_server_port_option(head, tmp_path):
    help_text = solray_cli("start", "--help").stdout
    assert "--ray-client-server-port" in help_text and "ray://HOST:PORT" in help_text
    joined = solray_cli(
        "start",
        "--address",
        head.control_address,
        "--ray-client-server-port",
        "10002",
        "--temp-dir",
        head.temp_dir,
    )
    assert joined.returncode == 2 and "--ray-client-server-port is for --head" in joined.stderr
    # A port already taken: a clear error, and nothing left running.
    host, port = head.client_address.rsplit(":", 1)
    taken = solray_cli(
        "start",
        "--head",
        "--port",
        "0",
        "--ray-client-server-port",
        port,
        "--temp-dir",
        str(tmp_path),
    )
    assert taken.returncode == 1, taken.stdout + taken.stderr
    assert f"cannot listen on {host}:{port} for the ray:// client server" in taken.stderr
    assert os.listdir(os.path.join(str(tmp_path), f"solray-sessions-{os.getuid()}")) == []


def test_metrics_through_a_client(head):
    """Tasks a client runs record metrics on the cluster; the client itself
    has no node to report to, so recording there says so."""
    out = run_client(
        head,
        """
        import re, urllib.request
        from solray.util.metrics import Counter
        ray.init(ADDRESS)
        try:
            Counter("test_client_side").inc()
            raise AssertionError("a metric recorded on a client")
        except NotImplementedError as e:
            assert "ray:// client" in str(e)

        @ray.remote
        def count():
            Counter("test_via_client").inc(4)

        ray.get(count.remote())
        port = ray.nodes()[0]["MetricsExportPort"]

        def scraped():
            url = f"http://127.0.0.1:{port}/metrics"
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            return re.search(r"^ray_test_via_client_total\\{.*\\} 4\\.0$", text, re.M)

        wait_for_condition(scraped, timeout=30)
        print("SCRAPED")
        """,
    )
    assert "SCRAPED" in out


def test_util_connect_and_disconnect(head):
    """Ray Client's older entry points: `util.connect("HOST:PORT")` returns
    Ray's connection info, `util.disconnect()` ends the connection (its proxy
    driver goes) and may be called again."""
    wait_for_condition(lambda: not head.proxies())  # earlier tests' clients: gone
    out = run_client(
        head,
        """
        import platform, socket
        conn_str = ADDRESS[len("ray://"):]
        info = ray.util.connect(conn_str, namespace="legacy")
        assert set(info) == {
            "num_clients", "python_version", "ray_version", "ray_commit", "protocol_version"
        }, info
        assert info["num_clients"] == 1 and info["ray_version"] == ray.__version__
        assert info["python_version"] == platform.python_version()
        assert ray.is_initialized() and ray.get_runtime_context().namespace == "legacy"

        @ray.remote
        def inc(x):
            return x + 1

        assert ray.get(inc.remote(1)) == 2
        try:
            ray.util.connect(conn_str)
            raise AssertionError("connected twice")
        except RuntimeError as e:
            assert "Ray Client is already connected" in str(e)
        ray.util.disconnect()
        assert not ray.is_initialized()
        ray.util.disconnect()  # idempotent
        # The same through ray_init_kwargs and a ray:// address.
        ray.util.connect(ADDRESS, ray_init_kwargs={"log_to_driver": False})
        assert ray.get(inc.remote(2)) == 3
        ray.util.disconnect()

        for bad in ({"secure": True}, {"metadata": [("k", "v")]}, {"ignore_version": True}):
            try:
                ray.util.connect(conn_str, **bad)
                raise AssertionError(f"{bad} accepted")
            except NotImplementedError as e:
                assert next(iter(bad)) in str(e)
        try:
            ray.util.connect(conn_str, ray_init_kwargs={"namespace": "x"})
            raise AssertionError("namespace in ray_init_kwargs accepted")
        except ValueError as e:
            assert "namespace" in str(e)
        # Nothing listens there: tried 1 + connection_retries times, then a ConnectionError.
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        try:
            ray.util.connect(f"127.0.0.1:{port}", connection_retries=1)
            raise AssertionError("connected to nothing")
        except ConnectionError as e:
            assert f"127.0.0.1:{port} after 2 attempts" in str(e), e
        assert not ray.is_initialized()
        print("CONNECT OK")
        """,
    )
    assert "CONNECT OK" in out
    wait_for_condition(lambda: not head.proxies(), message="a proxy driver outlived its client")
