"""`solray start --head`, `solray start --address`, `solray status`, and a
driver joining the cluster they make.

`solray start` makes daemons (their own sessions, not children of the test),
so the test finds its own through their sessions (conftest.cluster_processes:
the token, which would identify them, is in no process's environment) and
stops exactly those, even when an assertion fails. It does not run `solray
stop`: that stops every solray daemon of this user on the machine, other
runs' too. Every command gets a private --temp-dir, so session registries
never mix.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import psutil
import pytest
from conftest import assert_token_hidden, cluster_processes, wait_for_condition

from solray._private import host, services

CLI_TIMEOUT_S = 120


def cli_env() -> dict:
    """The environment without a cluster token: commands must find their own."""
    env = dict(os.environ)
    for name in ("SOLRAY_TOKEN", "SOLRAY_TOKEN_FILE", "SOLRAY_ADDRESS"):
        env.pop(name, None)
    return env


def solray_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "solray.cli", *args],
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def start_head(*args: str) -> subprocess.CompletedProcess:
    """`solray start --head` on free ports (the control store's and the
    client server's), with these further arguments."""
    return solray_cli("start", "--head", "--port", "0", "--ray-client-server-port", "0", *args)


def sessions_under(*temp_dirs: str) -> dict[str, str]:
    """{session directory: control store address} of every session the
    commands recorded under these temp dirs."""
    found = {}
    for temp_dir in temp_dirs:
        root = services.sessions_root(temp_dir)
        for name in os.listdir(root) if os.path.isdir(root) else []:
            try:
                with open(os.path.join(root, name, "cluster.json")) as f:
                    found[os.path.join(root, name)] = json.load(f)["control_address"]
            except (OSError, ValueError):
                found[os.path.join(root, name)] = None
    return found


def daemons_of(sessions: dict[str, str]) -> list[psutil.Process]:
    """The live processes of the clusters of these sessions."""
    procs = {}
    for address in set(sessions.values()) - {None}:
        for proc in cluster_processes(list(sessions), address):
            procs[proc.pid] = proc
    return list(procs.values())


def stop_daemons(*temp_dirs: str) -> None:
    """SIGTERM the nodes of the sessions under these temp dirs first (they
    stop their workers and remove their stores), then the rest; SIGKILL
    whatever is left; wait until their shared memory is gone."""
    sessions = sessions_under(*temp_dirs)
    procs = daemons_of(sessions)
    nodes = [p for p in procs if _is_node(p)]
    for group in (nodes, [p for p in procs if p not in nodes]):
        for proc in group:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(group, timeout=15)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
    wait_for_condition(
        lambda: not daemons_of(sessions),
        timeout=30,
        message=lambda: f"still running: {daemons_of(sessions)}",
    )
    wait_for_condition(
        lambda: not shm_of(list(sessions)),
        timeout=10,
        message=lambda: f"/dev/shm entries left behind: {shm_of(list(sessions))}",
    )


def _is_node(proc: psutil.Process) -> bool:
    try:
        return "solray._private.node" in proc.cmdline()
    except psutil.Error:
        return False


def shm_of(session_dirs: list[str]) -> list[str]:
    prefixes = [f"solray_{os.path.basename(d)}_" for d in session_dirs]
    return [n for n in os.listdir("/dev/shm") if any(n.startswith(p) for p in prefixes)]


# A driver's task reports what code in a task finds: token variables in its
# environment, and the environment of a subprocess it starts.
PROBE = """
@solray.remote
def probe():
    import os, subprocess
    child = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout
    return sorted(k for k in os.environ if "TOKEN" in k), child
"""


def kinds(procs: list[psutil.Process]) -> set[str]:
    """Which kinds of solray process are among `procs`: control store, node,
    zygote, worker (a new interpreter, or forked by the zygote)."""
    found = set()
    for proc in procs:
        try:
            cmdline = proc.cmdline()
            parent = proc.parent().cmdline()
        except psutil.Error:
            continue
        if "solray._private.control_store" in cmdline:
            found.add("control store")
        elif "solray._private.node" in cmdline:
            found.add("node")
        elif "solray._private.worker_main" in cmdline:
            found.add("worker")
        elif "solray._private.worker_zygote" in cmdline:
            found.add("worker" if "solray._private.worker_zygote" in parent else "zygote")
    return found


def test_start_head_and_node_status_and_driver(leak_check, tmp_path):
    temp_dir = str(tmp_path / "temp")
    sessions_root = services.sessions_root(temp_dir)
    try:
        head = start_head(
            "--num-cpus",
            "1",
            "--temp-dir",
            temp_dir,
        )
        assert head.returncode == 0, head.stdout + head.stderr
        address = re.search(r"control store at ([\d.]+:\d+)", head.stdout).group(1)
        # Without --node-ip-address the head listens where other machines
        # reach it: the address this host routes from (loopback offline).
        assert address.split(":")[0] == host.default_node_ip()
        token_path = re.search(r"Cluster token: (\S+)", head.stdout).group(1)
        assert token_path.startswith(sessions_root)
        assert os.stat(token_path).st_mode & 0o077 == 0  # readable only by this user
        with open(token_path) as f:
            token = bytes.fromhex(f.read())
        # How to join: point at the token file; never print the token itself.
        assert f"solray start --address {address} --token-file" in head.stdout
        assert token.hex() not in head.stdout.lower()

        # The node finds the token in this user's session registry (--temp-dir).
        node = solray_cli(
            "start",
            "--address",
            address,
            "--num-cpus",
            "1",
            "--resources",
            '{"x": 1}',
            "--object-spilling-directory",
            str(tmp_path / "spill"),
            "--labels",
            "zone=a,disk=ssd",
            "--temp-dir",
            temp_dir,
        )
        assert node.returncode == 0, node.stdout + node.stderr
        node_prefix = re.search(r"Started a solray node \((\w+)\)", node.stdout).group(1)
        # Daemons: the commands exited, the processes stay (in their own sessions).
        daemons = daemons_of(sessions_under(temp_dir))
        assert sum(_is_node(p) for p in daemons) == 2
        # Only the joining node was given a spill directory (spilling itself
        # is tested in test_spill_memory.py).
        spill_args = [
            p.cmdline()[p.cmdline().index("--spill-dir") :][:2]
            for p in daemons
            if "--spill-dir" in p.cmdline()
        ]
        assert spill_args == [["--spill-dir", str(tmp_path / "spill")]]
        assert all(os.getsid(p.pid) != os.getsid(0) for p in daemons if _is_node(p))

        status = solray_cli("status", "--address", address, "--temp-dir", temp_dir)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"Cluster at {address}: 2 alive node(s), 0 dead" in status.stdout
        assert status.stdout.count("ALIVE") == 2
        assert f"node {node_prefix}" in status.stdout
        assert re.search(r"/1\.0 x$", status.stdout, re.MULTILINE)

        driver = (
            "import solray\n"
            f"solray.init(address={address!r})\n"
            "alive = [n for n in solray.nodes() if n['Alive']]\n"
            "@solray.remote(resources={'x': 1})\n"
            "def where():\n"
            "    return solray.get_runtime_context().get_node_id()\n"
            "@solray.remote\n"
            "def square(i):\n"
            "    return i * i\n"
            "print('NODES', len(alive))\n"
            "print('DRIVER_IP', solray.util.get_node_ip_address())\n"
            "print('RAN_ON', solray.get(where.remote(), timeout=60))\n"
            "on_ssd = where.options(resources={}, label_selector={'disk': 'ssd'})\n"
            "print('LABELED_ON', solray.get(on_ssd.remote(), timeout=60))\n"
            "print('SUM', sum(solray.get([square.remote(i) for i in range(10)], timeout=60)))\n"
            "solray.shutdown()\n"
        )
        env = dict(cli_env(), SOLRAY_TOKEN_FILE=token_path)
        run = subprocess.run(
            [sys.executable, "-c", driver],
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "NODES 2" in run.stdout
        assert f"DRIVER_IP {address.split(':')[0]}\n" in run.stdout
        ran_on = re.search(r"RAN_ON (\w+)", run.stdout).group(1)
        assert ran_on.startswith(node_prefix)
        assert re.search(r"LABELED_ON (\w+)", run.stdout).group(1) == ran_on
        assert "SUM 285" in run.stdout
        # The driver's exit leaves the daemons running.
        status = solray_cli("status", "--address", address, "--temp-dir", temp_dir)
        assert "2 alive node(s)" in status.stdout, status.stdout + status.stderr
        # Every daemon (and whichever workers outlived the driver: those it
        # leased are gone with it), as any local user sees them in /proc.
        # Workers of a running driver are checked in tests/test_secrets.py.
        daemons = daemons_of(sessions_under(temp_dir))
        assert {"control store", "node"} <= kinds(daemons)
        assert assert_token_hidden(daemons, [token]) == len(daemons)
    finally:
        stop_daemons(temp_dir)

    # Once stopped, status says the cluster cannot be reached.
    status = solray_cli("status", "--address", address, "--temp-dir", temp_dir)
    assert status.returncode != 0
    assert "cannot reach the cluster" in status.stderr


def test_start_takes_the_token_from_a_file_or_stdin(leak_check, tmp_path):
    """A head started with --token-file, a node given the token on stdin, and
    one given SOLRAY_TOKEN_FILE make one cluster a driver can use; the token
    is in no process's command line or environment, nor in any task's."""
    token = os.urandom(32)
    token_file = tmp_path / "token"
    token_file.write_text(token.hex().upper() + "\n")
    token_file.chmod(0o600)
    head_dir, stdin_dir, env_dir = (str(tmp_path / d) for d in ("head", "stdin", "env"))
    try:
        head = start_head(
            "--num-cpus",
            "1",
            "--token-file",
            str(token_file),
            "--temp-dir",
            head_dir,
        )
        assert head.returncode == 0, head.stdout + head.stderr
        address = re.search(r"control store at ([\d.]+:\d+)", head.stdout).group(1)
        # The head's own copy of the token: the one it was given.
        recorded = re.search(r"Cluster token: (\S+)", head.stdout).group(1)
        assert bytes.fromhex(open(recorded).read()) == token

        # Separate temp dirs: no session registry could lend these the token.
        by_stdin = subprocess.run(
            [
                sys.executable,
                "-m",
                "solray.cli",
                "start",
                "--address",
                address,
                "--num-cpus",
                "1",
                "--resources",
                '{"stdin": 1}',
                "--token-file",
                "-",
                "--temp-dir",
                stdin_dir,
            ],
            input=token.hex() + "\n",
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        assert by_stdin.returncode == 0, by_stdin.stdout + by_stdin.stderr
        by_env = solray_cli(
            "start",
            "--address",
            address,
            "--num-cpus",
            "1",
            "--resources",
            '{"env": 1}',
            "--temp-dir",
            env_dir,
            env=dict(cli_env(), SOLRAY_TOKEN_FILE=str(token_file)),
        )
        assert by_env.returncode == 0, by_env.stdout + by_env.stderr

        driver = (
            "import solray\n"
            f"solray.init(address={address!r})\n" + PROBE + "for where in ('stdin', 'env'):\n"
            "    keys, child = solray.get(\n"
            "        probe.options(resources={where: 1}).remote(), timeout=60)\n"
            "    print('KEYS', where, keys)\n"
            "    print(child)\n"
            "print('NODES', len([n for n in solray.nodes() if n['Alive']]))\n"
            "solray.shutdown()\n"
        )
        run = subprocess.run(
            [sys.executable, "-c", driver],
            env=dict(cli_env(), SOLRAY_TOKEN_FILE=str(token_file)),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "NODES 3" in run.stdout
        assert "KEYS stdin []" in run.stdout and "KEYS env []" in run.stdout
        assert "SOLRAY_NODE_ADDRESS" in run.stdout  # the subprocesses' environments
        assert "SOLRAY_TOKEN" not in run.stdout
        assert token.hex() not in run.stdout.lower()

        daemons = daemons_of(sessions_under(head_dir, stdin_dir, env_dir))
        assert sum(_is_node(p) for p in daemons) == 3
        assert {"control store", "node", "worker"} <= kinds(daemons)
        assert assert_token_hidden(daemons, [token]) == len(daemons)
    finally:
        stop_daemons(head_dir, stdin_dir, env_dir)


def test_start_refuses_a_token_on_the_command_line(tmp_path):
    token = os.urandom(32).hex()
    for args in (["--token", token], [f"--token={token}"]):
        out = solray_cli("start", "--head", "--port", "0", *args, "--temp-dir", str(tmp_path))
        assert out.returncode == 2, out.stdout + out.stderr
        assert "--token is not accepted" in out.stderr
        assert "--token-file" in out.stderr and "stdin" in out.stderr
    # Nothing was started.
    assert not os.path.exists(services.sessions_root(str(tmp_path)))
    help_text = solray_cli("start", "--help").stdout
    assert "--token-file" in help_text and "stdin" in help_text
    assert "--token " not in help_text


def test_start_arguments_are_checked(tmp_path):
    temp_dir = str(tmp_path)
    both = solray_cli("start", "--head", "--address", "127.0.0.1:1", "--temp-dir", temp_dir)
    assert both.returncode != 0 and "exactly one of --head and --address" in both.stderr
    neither = solray_cli("start", "--temp-dir", temp_dir)
    assert neither.returncode != 0 and "exactly one of --head and --address" in neither.stderr
    bad = solray_cli("start", "--head", "--port", "0", "--resources", "{x", "--temp-dir", temp_dir)
    assert bad.returncode != 0 and "--resources is not JSON" in bad.stderr
    bad = solray_cli("start", "--head", "--port", "0", "--labels", "zone", "--temp-dir", temp_dir)
    assert bad.returncode != 0 and "key=value" in bad.stderr
    # Joining a cluster nobody started here: no token to be found.
    orphan = solray_cli("start", "--address", "127.0.0.1:1", "--temp-dir", temp_dir)
    assert orphan.returncode != 0 and "No token" in orphan.stderr
    assert not os.path.isdir(services.sessions_root(temp_dir)) or not os.listdir(
        services.sessions_root(temp_dir)
    )


@pytest.mark.parametrize(
    "content, error",
    [
        ("zz", "must be hex"),
        ("abc", "must be hex"),
        ("", "must hold 1 to 1024 bytes, not 0"),
        ("ab" * 1025, "must hold 1 to 1024 bytes, not 1025"),
    ],
)
def test_start_rejects_a_bad_token_file(tmp_path, content, error):
    token_file = tmp_path / "token"
    token_file.write_text(content)
    out = solray_cli(
        "start",
        "--head",
        "--port",
        "0",
        "--token-file",
        str(token_file),
        "--temp-dir",
        str(tmp_path),
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"the cluster token in {token_file} {error}" in out.stderr
    assert not os.path.exists(services.sessions_root(str(tmp_path)))


def test_start_with_a_missing_token_file(tmp_path):
    out = solray_cli(
        "start",
        "--head",
        "--port",
        "0",
        "--token-file",
        str(tmp_path / "nope"),
        "--temp-dir",
        str(tmp_path),
    )
    assert out.returncode == 2
    assert "--token-file" in out.stderr and "No such file" in out.stderr
