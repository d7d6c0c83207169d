"""`solray start --head`, `solray start --address`, `solray status`, and a
driver joining the cluster they make.

`solray start` makes daemons (their own sessions, not children of the test),
so the test finds its own by the cluster token in their environment (the
token is new per cluster; nodes and workers all carry it) and stops exactly
those, even when an assertion fails. It does not run `solray stop`: that
stops every solray daemon of this user on the machine, other runs' too.
Every command gets a private --temp-dir, so session registries never mix.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import psutil
import pytest
from conftest import wait_for_condition

from solray._private import services

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


def processes_with_token(token_hex: str) -> list[psutil.Process]:
    """This user's processes carrying the cluster token: our daemons and
    their workers."""
    found = []
    for proc in psutil.process_iter(["uids"]):
        try:
            if proc.info["uids"].real != os.getuid() or proc.pid == os.getpid():
                continue
            if proc.environ().get(services.TOKEN_ENV) == token_hex:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def stop_daemons(token_hex: str) -> None:
    """SIGTERM our nodes first (they stop their workers and remove their
    stores), then the rest; SIGKILL whatever is left."""
    procs = processes_with_token(token_hex)
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
        lambda: not processes_with_token(token_hex),
        timeout=30,
        message=lambda: f"still running: {processes_with_token(token_hex)}",
    )


def _is_node(proc: psutil.Process) -> bool:
    try:
        return "solray._private.node" in proc.cmdline()
    except psutil.Error:
        return False


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def shm_of(session_dirs: list[str]) -> list[str]:
    prefixes = [f"solray_{os.path.basename(d)}_" for d in session_dirs]
    return [n for n in os.listdir("/dev/shm") if any(n.startswith(p) for p in prefixes)]


def test_start_head_and_node_status_and_driver(leak_check, tmp_path):
    temp_dir = str(tmp_path / "temp")
    sessions_root = services.sessions_root(temp_dir)
    token_hex = None
    try:
        head = solray_cli(
            "start", "--head", "--port", "0", "--num-cpus", "1", "--temp-dir", temp_dir
        )
        assert head.returncode == 0, head.stdout + head.stderr
        address = re.search(r"control store at ([\d.]+:\d+)", head.stdout).group(1)
        token_path = re.search(r"Cluster token: (\S+)", head.stdout).group(1)
        assert token_path.startswith(sessions_root)
        assert os.stat(token_path).st_mode & 0o077 == 0  # readable only by this user
        with open(token_path) as f:
            token_hex = f.read().strip()
        assert "solray start --address" in head.stdout

        # The node finds the token in this user's session registry (--temp-dir).
        node = solray_cli(
            "start",
            "--address",
            address,
            "--num-cpus",
            "1",
            "--resources",
            '{"x": 1}',
            "--labels",
            "zone=a,disk=ssd",
            "--temp-dir",
            temp_dir,
        )
        assert node.returncode == 0, node.stdout + node.stderr
        node_prefix = re.search(r"Started a solray node \((\w+)\)", node.stdout).group(1)
        # Daemons: the commands exited, the processes stay (in their own sessions).
        daemons = processes_with_token(token_hex)
        assert sum(_is_node(p) for p in daemons) == 2
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
        ran_on = re.search(r"RAN_ON (\w+)", run.stdout).group(1)
        assert ran_on.startswith(node_prefix)
        assert re.search(r"LABELED_ON (\w+)", run.stdout).group(1) == ran_on
        assert "SUM 285" in run.stdout
        # The driver's exit leaves the daemons running.
        status = solray_cli("status", "--address", address, "--temp-dir", temp_dir)
        assert "2 alive node(s)" in status.stdout, status.stdout + status.stderr
    finally:
        # Every session started under our temp dir records its cluster's
        # token: stop whatever carries one, even if parsing output failed.
        sessions = (
            [os.path.join(sessions_root, d) for d in os.listdir(sessions_root)]
            if os.path.isdir(sessions_root)
            else []
        )
        for token in {token_hex} | {_read(os.path.join(d, "token")) for d in sessions}:
            if token:
                stop_daemons(token)
        wait_for_condition(
            lambda: not shm_of(sessions),
            timeout=10,
            message=lambda: f"/dev/shm entries left behind: {shm_of(sessions)}",
        )

    # Once stopped, status says the cluster cannot be reached.
    status = solray_cli("status", "--address", address, "--temp-dir", temp_dir)
    assert status.returncode != 0
    assert "cannot reach the cluster" in status.stderr


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


@pytest.mark.parametrize("token", ["zz", "abc"])
def test_start_rejects_a_token_that_is_not_hex(tmp_path, token):
    out = solray_cli(
        "start", "--head", "--port", "0", "--token", token, "--temp-dir", str(tmp_path)
    )
    assert out.returncode != 0 and "hex" in out.stderr
