"""TLS between solray processes (SOLRAY_USE_TLS / RAY_USE_TLS): a cluster runs
with every connection mutual TLS, and a peer without the cluster's
certificate, or without its token, is refused while the server goes on
serving. Certificates are made by `solray tls` (certs.py); the last test
runs the multi-host namespace scenario of test_netns.py with TLS on.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import subprocess
import sys

import numpy as np
import pytest
import test_netns
from test_cluster_cli import start_head, stop_daemons

import solray
from solray._private import context, tls, transport
from solray.cluster_utils import Cluster

PYTHON = sys.executable
MiB = 1 << 20
TIMEOUT_S = 60

hosts = test_netns.hosts  # the namespaces fixture, reused


def _solray(*args: str, env=None) -> str:
    result = subprocess.run(
        [PYTHON, "-m", "solray.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, f"solray {args}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The cluster's CA and a certificate for this host; and another CA
    with a certificate of its own (what a stranger would hold)."""
    root = tmp_path_factory.mktemp("pki")
    made = {}
    for name in ("cluster", "stranger"):
        _solray("tls", "make-ca", str(root / name / "ca"))
        out = _solray(
            "tls", "make-cert", "--ca-dir", str(root / name / "ca"), "--ip", "127.0.0.1",
            "--out", str(root / name / "host"),
        )  # fmt: skip
        made[name] = dict(re.findall(r"export (\w+)=(\S+)", out))
    return made


@pytest.fixture
def tls_on(pki, monkeypatch):
    for name, value in pki["cluster"].items():
        monkeypatch.setenv(name, value)
    return pki


def test_made_keys_are_private_and_certificates_name_the_host(pki):
    env = pki["cluster"]
    assert set(env) == {"SOLRAY_USE_TLS", tls.CERT_ENV, tls.KEY_ENV, tls.CA_ENV}
    assert os.stat(env[tls.KEY_ENV]).st_mode & 0o777 == 0o600
    ca_key = os.path.join(os.path.dirname(os.path.dirname(env[tls.KEY_ENV])), "ca", "ca.key")
    assert os.stat(ca_key).st_mode & 0o777 == 0o600
    info = ssl._ssl._test_decode_cert(env[tls.CERT_ENV])
    assert ("IP Address", "127.0.0.1") in info["subjectAltName"]
    # The key is never printed.
    with open(env[tls.KEY_ENV]) as f:
        key_text = f.read()
    out = _solray("tls", "make-cert", "--ca-dir", os.path.dirname(ca_key), "--ip", "127.0.0.1",
                  "--out", os.path.dirname(env[tls.KEY_ENV]) + "-again")  # fmt: skip
    assert "PRIVATE KEY" not in out and key_text not in out


def test_bad_settings_are_named(monkeypatch, tmp_path, leak_check):
    monkeypatch.setenv("RAY_USE_TLS", "yes")
    with pytest.raises(tls.TLSConfigError, match="RAY_USE_TLS='yes'"):
        tls.settings()
    monkeypatch.setenv("RAY_USE_TLS", "1")
    for name in (tls.CERT_ENV, tls.KEY_ENV, tls.CA_ENV):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(tls.TLSConfigError, match="RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY"):
        tls.settings()
    missing = str(tmp_path / "nothing.crt")
    for name in (tls.CERT_ENV, tls.KEY_ENV, tls.CA_ENV):
        monkeypatch.setenv(name, missing)
    with pytest.raises(tls.TLSConfigError, match="cannot load the TLS certificate"):
        tls.client_context()
    with pytest.raises(tls.TLSConfigError):
        solray.init(num_cpus=1)
    assert not solray.is_initialized()


@solray.remote
def where():
    return solray.get_runtime_context().get_node_id()


@solray.remote
def make(n):
    return np.full(n, 7, dtype=np.int64)


@solray.remote
def total(array):
    return int(array.sum())


@solray.remote
class Keeper:
    def __init__(self):
        self.kept = None

    def keep(self, refs):
        self.kept = refs[0]
        return solray.get_runtime_context().get_node_id()

    def read(self):
        return int(solray.get(self.kept).sum())


@pytest.fixture
def tls_cluster(tls_on, leak_check):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        other = cluster.add_node(num_cpus=1, resources={"other": 1})
        yield cluster, other
    finally:
        cluster.shutdown()


def _raw_exchange(address: str, data: bytes) -> bytes:
    """Send `data` over plain TCP; return all the server sends until it closes."""
    host, port = transport.parse_address(address)
    received = b""
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def _connect(address: str, token: bytes) -> None:
    async def go():
        conn = await transport.connect(address, token, timeout=TIMEOUT_S)
        conn.close()

    asyncio.run(go())


def test_a_cluster_with_tls_runs_tasks_actors_and_moves_objects(tls_cluster):
    cluster, other = tls_cluster
    solray.init(address=cluster.address)
    head = cluster.head_node.node_id
    assert solray.get(where.remote(), timeout=TIMEOUT_S) in (head, other.node_id)
    assert solray.get(where.options(resources={"other": 1}).remote()) == other.node_id
    n = 4 * MiB // 8
    made = make.options(resources={"other": 1}).remote(n)  # in the other node's store
    assert int(solray.get(made, timeout=TIMEOUT_S).sum()) == 7 * n  # pulled to the head
    mine = solray.put(np.ones(n, dtype=np.int64))  # in the head's store
    assert solray.get(total.options(resources={"other": 1}).remote(mine)) == n
    keeper = Keeper.options(resources={"other": 1}).remote()
    assert solray.get(keeper.keep.remote([mine]), timeout=TIMEOUT_S) == other.node_id
    del mine
    assert solray.get(keeper.read.remote(), timeout=TIMEOUT_S) == n
    # Every port of the cluster speaks TLS only: the solray greeting is never
    # sent in the clear, and a TLS client without the token is refused.
    for address in (cluster.address, cluster.head_node.address, other.address):
        assert transport.MAGIC not in _raw_exchange(address, b"\x00" * 64)
        # And none has a local twin (a Unix socket, which would skip TLS).
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            with pytest.raises(ConnectionRefusedError):
                sock.connect(transport.local_name(address))
    assert context.core_worker.node._transport.get_extra_info("ssl_object") is not None


def test_a_plain_tcp_client_is_refused_and_the_server_keeps_serving(tls_cluster, monkeypatch):
    cluster, _ = tls_cluster
    # What a solray process without TLS sends (its version block and proof)
    # gets no answer but the end of the connection.
    greeting = transport.version_block() + bytes(transport.DIGEST_LEN + transport.NONCE_LEN)
    assert transport.MAGIC not in _raw_exchange(cluster.address, greeting)
    # A solray client with TLS off: the server never greets it in the clear,
    # and closes the connection when the TLS handshake times out.
    for name in tls.USE_TLS_ENVS:
        monkeypatch.setenv(name, "0")
    with pytest.raises(transport.ConnectionLost, match="set SOLRAY_USE_TLS=1"):
        _connect(cluster.address, cluster.token)
    monkeypatch.setenv("SOLRAY_USE_TLS", "1")
    _connect(cluster.address, cluster.token)  # still serving
    solray.init(address=cluster.address)
    assert solray.get(where.remote(), timeout=TIMEOUT_S)


def test_a_client_certificate_from_another_ca_is_refused(tls_cluster, pki, monkeypatch):
    cluster, _ = tls_cluster
    # The stranger trusts the cluster's CA, but its own certificate is not the cluster's.
    monkeypatch.setenv(tls.CERT_ENV, pki["stranger"][tls.CERT_ENV])
    monkeypatch.setenv(tls.KEY_ENV, pki["stranger"][tls.KEY_ENV])
    with pytest.raises(transport.ConnectionLost, match="refused this host's certificate"):
        _connect(cluster.address, cluster.token)
    monkeypatch.setenv(tls.CERT_ENV, pki["cluster"][tls.CERT_ENV])
    monkeypatch.setenv(tls.KEY_ENV, pki["cluster"][tls.KEY_ENV])
    _connect(cluster.address, cluster.token)  # the server keeps serving


def test_the_token_is_still_checked_inside_tls(tls_cluster):
    cluster, _ = tls_cluster
    with pytest.raises(transport.ConnectionLost):
        _connect(cluster.address, os.urandom(32))  # the right certificate, a wrong token
    _connect(cluster.address, cluster.token)


def test_a_server_certificate_from_another_ca_is_refused(pki, monkeypatch):
    """A server that is not the cluster's (a certificate from another CA),
    or whose certificate does not name the address dialled, is refused by
    the client before it sends its token proof."""
    token = os.urandom(32)
    greeted = []

    async def scenario(server_env: dict, address_host: str):
        for name, value in server_env.items():
            monkeypatch.setenv(name, value)
        sock = transport.bind_socket(address_host, 0)
        server = await transport.serve(sock, token, {}, on_ready=greeted.append)
        for name, value in pki["cluster"].items():
            monkeypatch.setenv(name, value)
        try:
            await transport.connect(transport.socket_address(sock), token, timeout=TIMEOUT_S)
        finally:
            server.close()
            await server.wait_closed()

    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        asyncio.run(scenario(pki["stranger"], "127.0.0.1"))
    # The cluster's own certificate, on an address it does not name (it names 127.0.0.1).
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        asyncio.run(scenario(pki["cluster"], "127.0.0.2"))
    assert greeted == []
    asyncio.run(_good_pair(pki, monkeypatch, token))


async def _good_pair(pki, monkeypatch, token):
    for name, value in pki["cluster"].items():
        monkeypatch.setenv(name, value)
    served = asyncio.get_running_loop().create_future()
    sock = transport.bind_socket("127.0.0.1", 0)
    server = await transport.serve(sock, token, {}, on_ready=served.set_result)
    conn = await transport.connect(transport.socket_address(sock), token, timeout=TIMEOUT_S)
    peer = await served
    assert peer._transport.get_extra_info("peercert")  # the client presented its certificate
    assert conn._transport.get_extra_info("cipher")
    conn.close()
    server.close()
    await server.wait_closed()


THIN_CLIENT = """
import sys

import numpy as np
import solray as ray

ray.init(sys.argv[1])

@ray.remote
def total(array):
    return int(array.sum())

big = ray.put(np.ones(2_000_000, dtype=np.int64))  # 16 MB through the relay, both ways
assert ray.get(total.remote(big)) == 2_000_000
assert int(ray.get(big).sum()) == 2_000_000
print("CLIENT OVER TLS")
ray.shutdown()
"""


def test_solray_start_tls_generate_and_a_ray_client(tmp_path):
    """`solray start --head --tls-generate`: the head runs with TLS, and a
    ray:// client with the printed variables works through the client
    server's relay; without TLS it is refused."""
    temp_dir = str(tmp_path / "head")
    try:
        out = start_head(
            "--num-cpus", "1", "--include-dashboard", "false", "--temp-dir", temp_dir,
            "--tls-generate", str(tmp_path / "pki"),
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        head = out.stdout
        client = re.search(r'solray\.init\("(ray://[\d.]+:\d+)"\)', head).group(1)
        token = re.search(r"Cluster token: (\S+)", head).group(1)
        tls_env = dict(re.findall(r"export (\w+)=(\S+)", head))
        assert tls_env["SOLRAY_USE_TLS"] == "1"
        assert os.stat(tls_env[tls.KEY_ENV]).st_mode & 0o777 == 0o600
        with open(tls_env[tls.KEY_ENV]) as f:
            assert f.read() not in head + out.stderr  # the key is never printed
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SOLRAY_", "RAY_"))}
        env = dict(base, SOLRAY_TOKEN_FILE=token, **tls_env)
        script = tmp_path / "client.py"
        script.write_text(THIN_CLIENT)
        run = subprocess.run(
            [PYTHON, str(script), client], env=env, capture_output=True, text=True, timeout=120
        )
        assert "CLIENT OVER TLS" in run.stdout, run.stdout + run.stderr
        plain = subprocess.run(
            [PYTHON, str(script), client], env=dict(base, SOLRAY_TOKEN_FILE=token),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert plain.returncode != 0 and "CLIENT OVER TLS" not in plain.stdout
    finally:
        stop_daemons(temp_dir)


# -- several hosts (network namespaces), with TLS on --------------------------


def test_hosts_in_namespaces_with_tls(hosts, tmp_path):
    """test_netns.py's scenario (a driver on B reaching every host, a thin
    client on D through the head's client server) with TLS on: the head
    generates the CA and its certificate, every other host gets its own."""
    pki_dir = tmp_path / "pki"
    head = hosts.solray(
        "a",
        "start", "--head", "--port", "0", "--num-cpus", "1", "--tls-generate", str(pki_dir),
        "--resources", '{"host_a": 10}', "--temp-dir", str(tmp_path / "a"),
    )  # fmt: skip
    address = re.search(r"control store at (\S+)\.", head).group(1)
    token_file = re.search(r"Cluster token: (\S+)", head).group(1)
    assert "TLS is on" in head and "solray tls make-cert" in head, head
    env = {"a": dict(re.findall(r"export (\w+)=(\S+)", head))}
    for name in "bcd":
        out = _solray(
            "tls", "make-cert", "--ca-dir", str(pki_dir), "--ip", hosts.ip(name),
            "--out", str(tmp_path / f"pki-{name}"),
        )  # fmt: skip
        env[name] = dict(re.findall(r"export (\w+)=(\S+)", out))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SOLRAY_", "RAY_"))}
    env = {name: dict(base, SOLRAY_TOKEN_FILE=token_file, **e) for name, e in env.items()}
    test_netns.join_nodes(hosts, address, token_file, tmp_path, env)
    ips = [hosts.ip(name) for name in "abc"]
    script = tmp_path / "across.py"
    script.write_text(test_netns.ACROSS_HOSTS)
    out = hosts.run("b", PYTHON, str(script), address, *ips, env=env["b"])
    assert "ACROSS ALL HOSTS" in out
    client = tmp_path / "client.py"
    client.write_text(test_netns.THIN_CLIENT)
    out = hosts.run("d", PYTHON, str(client), f"ray://{hosts.ip('a')}:10001", *ips, env=env["d"])
    assert "CLIENT REACHED ALL HOSTS" in out
    # Without TLS, a driver on B is refused (the head's port speaks only TLS).
    plain = dict(env["b"], SOLRAY_USE_TLS="0")
    refused = subprocess.run(
        ["ip", "netns", "exec", hosts.namespace("b"), PYTHON, "-c",
         f"import solray; solray.init(address={address!r})"],
        capture_output=True, text=True, env=plain, timeout=120,
    )  # fmt: skip
    assert refused.returncode != 0, refused.stdout
    status = hosts.solray("a", "status", "--address", address, env=env["a"])
    assert "3 alive node(s)" in status and all(ip in status for ip in ips), status


def test_the_dashboard_serves_https_with_the_host_certificate(tls_on, leak_check):
    import http.client
    import urllib.parse

    context = solray.init(num_cpus=1, include_dashboard=True)
    host, port = context.dashboard_url.rsplit(":", 1)
    with open(os.path.join(context["session_dir"], "token")) as f:
        token = f.read().strip()
    trusting = ssl.create_default_context(cafile=tls_on["cluster"][tls.CA_ENV])
    conn = http.client.HTTPSConnection(host, int(port), timeout=TIMEOUT_S, context=trusting)
    try:
        body = urllib.parse.urlencode({"token": token})
        conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        assert response.status == 303
        assert "Secure" in response.getheader("Set-Cookie")
    finally:
        conn.close()
    # Plain HTTP gets no page.
    plain = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain.request("GET", "/login")
            plain.getresponse().read()
    finally:
        plain.close()


TLS_JOB = "import ray; ray.init(); print('tls job', ray.get(ray.remote(lambda: 9).remote()))"


def test_job_submit_talks_https_to_a_tls_dashboard(tls_on, leak_check, monkeypatch, tmp_path):
    """With TLS on, `solray job submit` and the SDK reach the dashboard over
    HTTPS, checking its certificate against the cluster CA; a plain http://
    address, or a certificate from another CA, gets nothing."""
    from solray.job_submission import JobSubmissionClient

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # the session registry "auto" reads
    context = solray.init(num_cpus=1, include_dashboard=True)
    url = f"https://{context.dashboard_url}"
    monkeypatch.setenv("SOLRAY_TOKEN_FILE", os.path.join(context["session_dir"], "token"))
    run = subprocess.run(
        [PYTHON, "-m", "solray.cli", "job", "submit", "--address", url, "--submission-id",
         "over-tls", "--", "python", "-c", TLS_JOB],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0 and "tls job 9" in run.stdout, run.stdout + run.stderr
    job = JobSubmissionClient(url).get_job_info("over-tls")
    assert job.status == "SUCCEEDED" and job.job_id is not None
    # `solray job list`: the submission, and this test's driver (no submission).
    listed = subprocess.run(
        [PYTHON, "-m", "solray.cli", "job", "list", "--address", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert re.search(rf"over-tls\s+SUCCEEDED\s+{job.job_id}\s", listed.stdout), listed.stderr
    me = solray.get_runtime_context().get_job_id()
    assert re.search(rf"^-\s+RUNNING\s+{me}\s", listed.stdout, re.MULTILINE), listed.stdout
    # The newest cluster's address ("auto") is https:// under TLS.
    assert JobSubmissionClient().get_address() == url

    with pytest.raises(ConnectionError, match="https://"):
        JobSubmissionClient(f"http://{context.dashboard_url}")
    with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        JobSubmissionClient(url, verify=tls_on["stranger"][tls.CA_ENV])
