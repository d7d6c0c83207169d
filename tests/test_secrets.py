"""Local secrets: the cluster token stays out of every command line and
environment, and the session registry is this user's alone.

Other local users can read any process's /proc/PID/cmdline, and code in a
task (and every subprocess it starts) sees its worker's environment, so the
token must be in neither. The session registry is where init(address="auto")
and the CLI find clusters and their tokens: another user who could plant or
read an entry there could make us join their cluster, or take our token.
Another user is simulated as root: entries chowned to uid 65534 (nobody), a
process started with that uid.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import psutil
import pytest
from conftest import assert_token_hidden, wait_for_condition

import solray
from solray._private import context, services
from solray.cluster_utils import Cluster

OTHER_UID = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="simulating another user needs root")


# -- the token ---------------------------------------------------------------------------


@solray.remote(num_cpus=0)
class Probe:
    """What code in a task can see of its worker."""

    def __init__(self):
        self.child = None

    def report(self) -> dict:
        child_env = subprocess.run(
            ["cat", "/proc/self/environ"], capture_output=True, check=True
        ).stdout
        fds = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
            except FileNotFoundError:  # listdir's own
                pass
        return {
            "pid": os.getpid(),
            "cmdline": open("/proc/self/cmdline", "rb").read().split(b"\0"),
            "token_variables": sorted(k for k in os.environ if "TOKEN" in k),
            "child_env": child_env,
            # The token's pipe is closed once read: stdout and stderr are
            # the only pipes left (fd numbers as strings, as /proc lists them).
            "pipes": sorted(fd for fd, target in fds.items() if target.startswith("pipe:")),
        }

    def start_child(self) -> int:
        self.child = subprocess.Popen(["sleep", "600"])
        return self.child.pid

    def stop_child(self) -> None:
        self.child.kill()
        self.child.wait()


def test_token_is_in_no_command_line_or_environment(leak_check, monkeypatch):
    """Control store, node, fork server and workers (forked or not), and a
    subprocess started in a task: the token is in none of their command lines
    or environments. A token the user gave in SOLRAY_TOKEN / SOLRAY_TOKEN_FILE
    is not passed on either."""
    user_token = os.urandom(32)
    monkeypatch.setenv("SOLRAY_TOKEN", user_token.hex())
    monkeypatch.setenv("SOLRAY_TOKEN_FILE", "/nonexistent/token")
    solray.init(num_cpus=1)
    token = context.core_worker.token
    # The first worker is a new interpreter; once it has registered, the node
    # starts its fork server and forks the next ones.
    probes, reports = [], []

    def kinds() -> set[bytes]:
        return {r["cmdline"][2] for r in reports}

    def another_probe() -> bool:
        probes.append(Probe.remote())
        reports.append(solray.get(probes[-1].report.remote(), timeout=60))
        return len(kinds()) == 2

    wait_for_condition(another_probe, timeout=60, message=lambda: f"worker kinds: {kinds()}")
    assert kinds() == {b"solray._private.worker_main", b"solray._private.worker_zygote"}
    for report in reports:
        assert report["token_variables"] == [], report
        for secret in (token, user_token):
            assert secret.hex().encode() not in report["child_env"].lower()
        assert b"SOLRAY_NODE_ADDRESS" in report["child_env"]  # it is the environment
        assert report["pipes"] == ["1", "2"], report

    child_pid = solray.get(probes[0].start_child.remote(), timeout=30)
    try:
        procs = psutil.Process().children(recursive=True)
        cmdlines = [b" ".join(r["cmdline"]) for r in reports]
        assert {p.pid for p in procs} >= {r["pid"] for r in reports} | {child_pid}
        names = " ".join(" ".join(p.cmdline()) for p in procs)
        for kind in ("control_store", "node", "worker_zygote", "worker_main"):
            assert f"solray._private.{kind}" in names, (kind, names)
        assert assert_token_hidden(procs, [token, user_token]) == len(procs), cmdlines
    finally:
        solray.get(probes[0].stop_child.remote(), timeout=30)
    assert os.environ["SOLRAY_TOKEN"] == user_token.hex()  # the user's own is left alone
    solray.shutdown()


# -- the registry ------------------------------------------------------------------------


def test_registry_and_sessions_are_private(leak_check, tmp_path):
    """Made mode 0700 whatever the umask; the token file 0600."""
    old_umask = os.umask(0)
    try:
        context_info = solray.init(num_cpus=1, _temp_dir=str(tmp_path))
    finally:
        os.umask(old_umask)
    root = services.sessions_root(str(tmp_path))
    assert root == str(tmp_path / f"solray-sessions-{os.getuid()}")
    session = context_info["session_dir"]
    assert os.path.dirname(session) == root
    for path, mode in ((root, 0o700), (session, 0o700), (os.path.join(session, "token"), 0o600)):
        st = os.lstat(path)
        assert (st.st_uid, st.st_mode & 0o777) == (os.getuid(), mode), path
    solray.shutdown()


def make_root_a_symlink(root):
    os.mkdir(root + ".real", 0o700)
    os.symlink(root + ".real", root)


def make_root_a_file(root):
    with open(root, "w"):
        pass


BAD_ROOTS = {
    "owned by uid 65534": (lambda root: os.chown(root, OTHER_UID, OTHER_UID), "remove it"),
    "accessible to other users (mode 755)": (lambda root: os.chmod(root, 0o755), "chmod 700"),
    "accessible to other users (mode 1777)": (lambda root: os.chmod(root, 0o1777), "chmod 700"),
    "a symbolic link": (make_root_a_symlink, "remove it"),
    "not a directory": (make_root_a_file, "remove it"),
}


@as_root
@pytest.mark.parametrize("problem", list(BAD_ROOTS))
def test_a_registry_that_is_not_private_is_refused(leak_check, tmp_path, problem):
    """Say another user made the registry first (or it was made unsafe): init()
    and the CLI refuse it with an error that names it, what is wrong, and the
    fix; nothing is started, nothing in it is read."""
    spoil, fix = BAD_ROOTS[problem]
    temp_dir = str(tmp_path)
    root = services.sessions_root(temp_dir)
    if problem not in ("a symbolic link", "not a directory"):
        os.mkdir(root, 0o700)
    spoil(root)
    expected = f"solray's session registry {root} is {problem}"
    for kwargs in ({"num_cpus": 1}, {"address": "auto"}):
        with pytest.raises(services.SessionRegistryError, match=re.escape(expected)) as error:
            solray.init(_temp_dir=temp_dir, **kwargs)
        assert fix in str(error.value) and "_temp_dir" in str(error.value)
        assert not solray.is_initialized()
    assert not psutil.Process().children()
    for command in (
        ["status", "--temp-dir", temp_dir],
        ["memory", "--temp-dir", temp_dir],
        ["start", "--head", "--port", "0", "--temp-dir", temp_dir],
    ):
        out = subprocess.run(
            [sys.executable, "-m", "solray.cli", *command],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 1, (command, out.stdout, out.stderr)
        assert expected in out.stderr and "Traceback" not in out.stderr, (command, out.stderr)
    # The CLI did not start anything either: no node with a session here.
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])
    ]


@pytest.fixture
def other_users_process():
    """A live process of another user (so a pid that is alive, but not ours)."""
    proc = subprocess.Popen(["sleep", "600"], user=OTHER_UID, group=OTHER_UID)
    yield proc
    proc.kill()
    proc.wait()


@as_root
def test_entries_not_of_this_user_or_its_live_drivers_are_ignored(
    leak_check, tmp_path, other_users_process
):
    """A running cluster, and newer entries in the registry that must not be
    believed: another user's session directory, cluster.json or token file;
    symbolic links; a session whose driver pid is another user's live
    process, or a pid recycled since. Each claims the cluster's address with a
    wrong token (or another address), so init() would fail if it trusted one."""
    temp_dir = str(tmp_path)
    root = services.session_registry(temp_dir, create=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    my_start = psutil.Process().create_time()
    try:

        def plant(name, pid=os.getpid(), create_time=my_start, owner=(), address=None):
            """A session directory with a wrong token; `owner` lists what
            belongs to another user."""
            path = os.path.join(root, name)
            os.mkdir(path, 0o700)
            with open(os.path.join(path, "cluster.json"), "w") as f:
                json.dump(
                    {
                        "node_address": cluster.head_node.address,
                        "control_address": address or cluster.address,
                        "driver_pid": pid,
                        "driver_create_time": create_time,
                    },
                    f,
                )
            with open(os.path.join(path, "token"), "w") as f:
                f.write(os.urandom(32).hex())
            for part in owner:
                os.chown(os.path.join(path, part), OTHER_UID, OTHER_UID)
            newer = my_start + 10_000
            os.utime(os.path.join(path, "cluster.json"), (newer, newer), follow_symlinks=False)
            return path

        plant("foreign_dir", owner=["."])
        plant("foreign_cluster_json", owner=["cluster.json"])
        plant("foreign_token", owner=["token"])
        plant(
            "foreign_driver",
            pid=other_users_process.pid,
            create_time=psutil.Process(other_users_process.pid).create_time(),
        )
        plant("recycled_pid", create_time=my_start - 1000)
        plant("another_address", owner=["."], address="127.0.0.1:1")
        # Symbolic links: a session directory, and a cluster.json.
        real = plant("linked_target")
        os.rename(real, elsewhere / "session")
        os.symlink(elsewhere / "session", os.path.join(root, "linked_dir"))
        linked_file = plant("linked_file")
        os.rename(os.path.join(linked_file, "cluster.json"), elsewhere / "cluster.json")
        os.symlink(elsewhere / "cluster.json", os.path.join(linked_file, "cluster.json"))

        # Only those: no running cluster of ours is registered here.
        with pytest.raises(ConnectionError, match="Could not find any running solray cluster"):
            solray.init(address="auto", _temp_dir=temp_dir)
        with pytest.raises(ConnectionError, match=f"No token for the cluster at {cluster.address}"):
            solray.init(address=cluster.address, _temp_dir=temp_dir)
        memory = solray_cli("memory", "--temp-dir", temp_dir)
        assert memory.returncode == 1 and "Could not find any running" in memory.stderr

        # The real session, older than every planted one, is the one used.
        ours = services.new_session_dir(temp_dir)
        services.write_session_file(ours, cluster.head_node.address, cluster.address, cluster.token)
        for address in ("auto", cluster.address):
            solray.init(address=address, _temp_dir=temp_dir)
            assert solray.get_runtime_context().get_node_id() == cluster.head_node.node_id
            assert solray.get(solray.put("ok"), timeout=30) == "ok"
            solray.shutdown()
        memory = solray_cli("memory", "--temp-dir", temp_dir)
        assert memory.returncode == 0, memory.stderr
        assert f"Cluster at {cluster.address}:" in memory.stdout
        status = solray_cli("status", "--temp-dir", temp_dir)
        assert status.returncode == 0, status.stderr
        assert f"Cluster at {cluster.address}: 1 alive node(s)" in status.stdout
    finally:
        cluster.shutdown()


def solray_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLRAY_")}
    return subprocess.run(
        [sys.executable, "-m", "solray.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- shared memory -------------------------------------------------------------------------


@as_root
def test_stale_store_sweep_touches_only_this_users_directories(leak_check):
    """/dev/shm is shared by every user. The sweep at init() removes this
    user's store directories whose node is gone, and never another user's,
    nor one whose node.pid names a live process of another user as if it
    were ours."""
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has now
    other = subprocess.Popen(["sleep", "60"], user=OTHER_UID)
    planted = {}
    try:
        for kind, pid, uid in (
            ("ours_dead", dead.pid, os.getuid()),
            ("ours_recycled", other.pid, os.getuid()),  # our node died; its pid is theirs now
            ("theirs_dead", dead.pid, OTHER_UID),
            ("ours_alive", os.getpid(), os.getuid()),
        ):
            path = os.path.join(services.SHM_ROOT, f"{services.SHM_PREFIX}sweeptest_{kind}")
            os.mkdir(path, 0o700)
            with open(os.path.join(path, "node.pid"), "w") as f:
                f.write(str(pid))
            os.chown(os.path.join(path, "node.pid"), uid, -1)
            os.chown(path, uid, -1)
            planted[kind] = path
        services.sweep_stale_shm()
        assert not os.path.exists(planted["ours_dead"])
        assert not os.path.exists(planted["ours_recycled"])
        assert os.path.exists(planted["theirs_dead"])
        assert os.path.exists(planted["ours_alive"])
    finally:
        other.kill()
        other.wait()
        for path in planted.values():
            subprocess.run(["rm", "-rf", path], check=True)
