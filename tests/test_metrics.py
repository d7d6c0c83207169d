"""`solray.util.metrics` (Ray's `ray.util.metrics`): Counter, Gauge and
Histogram recorded in drivers, tasks and actors, read back as Prometheus
reads them: an HTTP GET of each node's /metrics, parsed with
prometheus_client's parser. Processes report every second, so the tests
scrape until the values they expect have arrived (and then assert them
exactly)."""

from __future__ import annotations

import os
import pathlib
import pickle
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import psutil
import pytest
from conftest import wait_for_condition
from prometheus_client.parser import text_string_to_metric_families

import solray
from solray._private import system_metrics
from solray.cluster_utils import Cluster
from solray.util.metrics import Counter, Gauge, Histogram

GET_TIMEOUT_S = 60


def scrape(port: int) -> dict:
    """{(sample name, frozenset of labels): value}, and the families' types
    under ("TYPE", family name)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        samples[("TYPE", family.name)] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels) -> float | None:
    """The value of the sample `name` whose labels include `labels`."""
    for (sample, sample_labels), v in samples.items():
        if sample == name and set(labels.items()) <= set(sample_labels or ()):
            return v
    return None


def labels_of(samples: dict, name: str) -> list[dict]:
    return [dict(labels) for (sample, labels), _ in samples.items() if sample == name]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@solray.remote
def handle(route: str, n: int) -> None:
    requests = Counter("test_requests", "Requests handled.", tag_keys=("route",))
    for _ in range(n):
        requests.inc(tags={"route": route})
    latency = Histogram(
        "test_latency_s", "Latency.", boundaries=[0.1, 1.0], tag_keys=("route",)
    ).set_default_tags({"route": route})
    for v in (0.05, 0.5, 0.5, 3):
        latency.observe(v)


@solray.remote
class Queue:
    def __init__(self):
        self.depth = Gauge("test_queue_depth", "Items queued.", tag_keys=("queue",))

    def set(self, n: int) -> None:
        self.depth.set(n, tags={"queue": "q1"})


def test_metrics_from_the_driver_tasks_and_actors_are_served_per_node(ray_start):
    port = ray_start["metrics_export_port"]
    assert solray.nodes()[0]["MetricsExportPort"] == port
    requests = Counter("test_requests", "Requests handled.", tag_keys=("route",))
    requests.inc(tags={"route": "/driver"})
    requests.inc(2.5, tags={"route": "/driver"})
    solray.get(
        [handle.remote("/a", 3), handle.remote("/a", 4), handle.remote("/b", 1)],
        timeout=GET_TIMEOUT_S,
    )
    queue = Queue.remote()
    solray.get(queue.set.remote(7), timeout=GET_TIMEOUT_S)
    solray.get(queue.set.remote(3), timeout=GET_TIMEOUT_S)

    def arrived():
        s = scrape(port)
        return (
            value(s, "ray_test_requests_total", route="/a") == 7
            and value(s, "ray_test_requests_total", route="/driver") == 3.5
            and value(s, "ray_test_latency_s_count", route="/a") == 8
            and value(s, "ray_test_queue_depth", queue="q1") == 3
        )

    wait_for_condition(arrived, timeout=30, message="metrics never reached the endpoint")
    s = scrape(port)
    # Counters add up across processes, per tag value.
    assert value(s, "ray_test_requests_total", route="/b") == 1
    assert s[("TYPE", "ray_test_requests")] == "counter"
    # A gauge keeps its last value.
    assert s[("TYPE", "ray_test_queue_depth")] == "gauge"
    # Histogram buckets are cumulative, with +Inf; two tasks' observations add up.
    assert s[("TYPE", "ray_test_latency_s")] == "histogram"
    buckets = {
        le: value(s, "ray_test_latency_s_bucket", route="/a", le=le)
        for le in ("0.1", "1.0", "+Inf")
    }
    assert buckets == {"0.1": 2, "1.0": 6, "+Inf": 8}
    assert value(s, "ray_test_latency_s_sum", route="/a") == pytest.approx(2 * 4.05)
    assert value(s, "ray_test_latency_s_count", route="/b") == 4
    # Ray's labels on every sample; no WorkerId (Ray's default since 2.53).
    session = os.path.basename(ray_start["session_dir"])
    for name in ("ray_test_requests_total", "ray_test_queue_depth", "ray_test_latency_s_count"):
        for labels in labels_of(s, name):
            assert labels["Component"] == "core_worker"
            assert labels["NodeAddress"] == "127.0.0.1"
            assert labels["SessionName"] == session
            assert labels["Version"] == solray.__version__
            assert "WorkerId" not in labels


@pytest.mark.parametrize("ray_start", [{"_metrics_export_port": free_port()}], indirect=True)
def test_metrics_export_port_and_nothing_but_get_metrics(ray_start):
    port = ray_start["metrics_export_port"]
    assert port == solray.nodes()[0]["MetricsExportPort"]
    # Nothing recorded yet: the node's system metrics only, not an error.
    assert {name for name, _ in scrape(port) if name != "TYPE"} == set(system_metrics.NAMES)
    for path, method in (("/", "GET"), ("/metrics/x", "GET"), ("/metrics", "POST")):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            method=method,
            data=b"x" if method == "POST" else None,
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=10)
        assert error.value.code == 404
    # It listens on loopback only.
    with open(os.path.join(_shm_dir(ray_start), "node.pid")) as f:
        node = psutil.Process(int(f.read()))
    listening = [c.laddr for c in node.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    assert ("127.0.0.1", port) in [(a.ip, a.port) for a in listening]


class _Touch:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def _raw_exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a fresh connection; what comes back until it closes."""
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # it answered and closed before reading it all (an oversized request)
            pass
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:  # closed with our unread bytes pending: what came is here
            pass
    return reply


def test_the_metrics_endpoint_decodes_nothing_but_http_get(ray_start, tmp_path):
    """It has no token (Prometheus sends none): garbage, pickles, oversized
    requests and stalled clients get an HTTP error or nothing, never reach
    anything else, and scrapes go on."""
    port = ray_start["metrics_export_port"]
    marker = tmp_path / "unpickled"
    replies = [
        _raw_exchange(port, pickle.dumps(_Touch(str(marker)))),
        _raw_exchange(port, b"\x00\xff garbage\r\n\r\n"),
        _raw_exchange(port, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n"),
        _raw_exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 200),
    ]
    for reply in replies:
        # An HTTP error (a request without an HTTP version gets the bare error page).
        assert reply == b"" or re.search(rb"(HTTP/1\.[01] |Error code: )[45]\d\d", reply), reply
    stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        stalled.sendall(b"GET /metr")  # and never the rest
        Counter("test_after_attacks").inc()
        wait_for_condition(lambda: value(scrape(port), "ray_test_after_attacks_total") == 1)
    finally:
        stalled.close()
    assert not marker.exists()
    assert solray.get(handle.remote("/c", 1), timeout=GET_TIMEOUT_S) is None


def _shm_dir(context) -> str:
    from solray._private import services

    return services.shm_dir(context["session_dir"], context["node_id"])


def test_a_metrics_port_in_use_fails_init_naming_it(leak_check):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=rf"127\.0\.0\.1:{port}.*_metrics_export_port"):
            solray.init(num_cpus=1, _metrics_export_port=port)
    assert not solray.is_initialized()


@solray.remote(max_calls=1)
def record_and_retire() -> int:
    Counter("test_finished", "Finished.").inc(5)
    Gauge("test_last_seen", "Last seen.").set(42)
    return os.getpid()


def test_metrics_of_a_process_that_exited_keep_their_last_values(ray_start):
    port = ray_start["metrics_export_port"]
    pid = solray.get(record_and_retire.remote(), timeout=GET_TIMEOUT_S)
    # max_calls=1: the worker exits right after its task, reporting first.
    wait_for_condition(lambda: not psutil.pid_exists(pid), timeout=30)
    wait_for_condition(lambda: value(scrape(port), "ray_test_finished_total") == 5, timeout=30)
    s = scrape(port)
    assert value(s, "ray_test_last_seen") == 42


@solray.remote
def record(kind: str) -> str:
    """Bad uses inside a task: the error reaches the caller."""
    if kind == "twice":
        Counter("test_twice").inc()
        Gauge("test_twice").set(1)
    return "recorded"


def test_bad_metric_use_raises_rays_errors():
    with pytest.raises(ValueError, match="Empty name is not allowed"):
        Counter("")
    with pytest.raises(ValueError, match="Invalid metric name: 1bad.*solray refuses"):
        Counter("1bad")
    with pytest.raises(ValueError, match="Invalid metric name"):
        Gauge("has-dash")
    with pytest.raises(TypeError, match="tag_keys should be a tuple type"):
        Counter("x", tag_keys=["a"])
    with pytest.raises(TypeError, match="Tag keys must be str"):
        Counter("x", tag_keys=(1,))
    with pytest.raises(ValueError, match="reserved"):
        Counter("x", tag_keys=("Component",))
    with pytest.raises(ValueError, match="boundaries argument should be provided"):
        Histogram("x")
    with pytest.raises(ValueError, match="Invalid `boundaries` argument at index 1"):
        Histogram("x", boundaries=[1.0, 0.0])
    counter = Counter("x", tag_keys=("a", "b"))
    with pytest.raises(ValueError, match="Unrecognized tag key c"):
        counter.set_default_tags({"c": "1"})
    with pytest.raises(TypeError, match="Tag values must be str"):
        counter.set_default_tags({"a": 1})
    assert counter.set_default_tags({"a": "1"}) is counter
    with pytest.raises(ValueError, match=r"Missing value for tag key\(s\): b\."):
        counter.inc()
    with pytest.raises(ValueError, match=r"Unrecognized tag keys: \['c'\]"):
        counter.inc(tags={"b": "2", "c": "3"})
    with pytest.raises(TypeError, match="Tag values must be str"):
        counter.inc(tags={"b": 2})
    with pytest.raises(ValueError, match="value must be >0"):
        counter.inc(0, tags={"b": "2"})
    with pytest.raises(TypeError, match="value must be int or float"):
        Gauge("g").set("3")
    Gauge("g").set(None)  # as in Ray: nothing recorded
    assert counter.info == {
        "name": "x",
        "description": "",
        "tag_keys": ("a", "b"),
        "default_tags": {"a": "1"},
    }
    histogram = Histogram("h", "d", boundaries=[2, 1], tag_keys=("k",))
    assert histogram.info["boundaries"] == [2, 1]


def test_a_name_used_for_two_kinds_fails_in_the_task(ray_start):
    with pytest.raises(solray.exceptions.RayTaskError) as error:
        solray.get(record.remote("twice"), timeout=GET_TIMEOUT_S)
    assert isinstance(error.value, ValueError)
    assert "'test_twice' is already a counter" in str(error.value)


def test_each_node_serves_what_its_processes_recorded(leak_check):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        other = cluster.add_node(num_cpus=1, resources={"other": 1})
        solray.init(address=cluster.address)
        by_node = {n["NodeID"]: n["MetricsExportPort"] for n in solray.nodes()}
        assert by_node[other.node_id] == other.metrics_export_port
        head_port = cluster.head_node.metrics_export_port
        assert head_port != other.metrics_export_port

        @solray.remote(resources={"other": 1})
        def on_other():
            Counter("test_where", tag_keys=("node",)).inc(tags={"node": "other"})

        solray.get(on_other.remote(), timeout=GET_TIMEOUT_S)
        Counter("test_where", tag_keys=("node",)).inc(tags={"node": "driver"})
        wait_for_condition(
            lambda: value(scrape(other.metrics_export_port), "ray_test_where_total") == 1,
            timeout=30,
        )
        wait_for_condition(
            lambda: value(scrape(head_port), "ray_test_where_total") == 1, timeout=30
        )
        # The driver works through the head node: its metric is there only.
        assert value(scrape(head_port), "ray_test_where_total", node="other") is None
        on_other = scrape(other.metrics_export_port)
        assert value(on_other, "ray_test_where_total", node="driver") is None
    finally:
        cluster.shutdown()


def test_solray_start_metrics_export_port(leak_check, tmp_path):
    from test_cluster_cli import solray_cli, start_head, stop_daemons

    temp_dir = str(tmp_path / "temp")
    port = free_port()
    try:
        head = start_head(
            "--num-cpus",
            "1",
            "--node-ip-address",
            "127.0.0.1",
            "--metrics-export-port",
            str(port),
            "--temp-dir",
            temp_dir,
        )
        assert head.returncode == 0, head.stdout + head.stderr
        assert f"Metrics (Prometheus): http://127.0.0.1:{port}/metrics" in head.stdout
        address = re.search(r"control store at ([\d.]+:\d+)", head.stdout).group(1)
        status = solray_cli("status", "--address", address, "--temp-dir", temp_dir)
        assert f"metrics: http://127.0.0.1:{port}/metrics" in status.stdout, status.stdout
        driver = (
            "import solray\n"
            "from solray.util.metrics import Counter\n"
            f"solray.init(address={address!r}, _temp_dir={temp_dir!r})\n"
            "Counter('test_cli_driver').inc(3)\n"
            "solray.shutdown()\n"
        )
        run = subprocess.run(
            [sys.executable, "-c", driver], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stdout + run.stderr
        # The driver reported at its shutdown.
        wait_for_condition(lambda: value(scrape(port), "ray_test_cli_driver_total") == 3)
    finally:
        stop_daemons(temp_dir)


@solray.remote
class Recorder:
    def counter(self) -> int:
        Counter("test_clash").inc(2)
        return os.getpid()

    def gauge(self) -> int:
        Gauge("test_clash").set(9)
        Counter("test_clash_marker").inc()  # reported in the same batch
        return os.getpid()


def test_a_name_two_processes_use_for_two_kinds_exports_the_first(ray_start):
    port = ray_start["metrics_export_port"]
    first, second = Recorder.remote(), Recorder.remote()
    counting = solray.get(first.counter.remote(), timeout=GET_TIMEOUT_S)
    wait_for_condition(lambda: value(scrape(port), "ray_test_clash_total") == 2, timeout=30)
    assert solray.get(second.gauge.remote(), timeout=GET_TIMEOUT_S) != counting
    # The marker came in the gauge's batch: that batch has been applied.
    wait_for_condition(lambda: value(scrape(port), "ray_test_clash_marker_total") == 1)
    s = scrape(port)
    assert s[("TYPE", "ray_test_clash")] == "counter"
    assert value(s, "ray_test_clash_total") == 2
    assert value(s, "ray_test_clash") is None  # the gauge's points were dropped
