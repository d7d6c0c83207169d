"""A node's metrics endpoint: `GET /metrics` in the Prometheus text format.

What it serves comes from *sources*: functions the node's loop calls at each
scrape, each returning prometheus_client metric families. The first source
is the application metrics (`util.metrics`) that this node's drivers and
workers report (METRICS_REPORT, batched by metrics_reporter.py), summed per
(name, tags) here; the node's system metrics (tasks, actors, workers,
resources, store and spill use: system_metrics.py) are the second.

Names and labels are Ray's: an application metric `x` is `ray_x` (a counter
`ray_x_total`), and every sample carries `Component="core_worker"`,
`NodeAddress`, `SessionName` and `Version`. Like Ray 2.53+ (its default
metric cardinality), no `WorkerId` label: the processes of a node add up.
A metric keeps its last value after the process that recorded it exits (a
counter's total, a gauge's last setting), as Ray's do.

The HTTP side: the launcher binds the listening socket (so a port in use
fails at init() / `solray start`, and the port is known before the node
starts), on loopback unless asked otherwise (`--metrics-export-host`). A
thread of its own serves it with the standard library's WSGI server and
prometheus_client's exposition (its `make_wsgi_app`, gzip and OpenMetrics
negotiation included), behind a guard that answers anything but GET or HEAD
of /metrics with 404: nothing else from the network is decoded. Serving
never touches the node's state from that thread: each scrape asks the loop
(which owns `families`) to run the sources, and renders what they return.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import socket
import socketserver
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from solray._private import transport
from solray._private.protocol import Msg

logger = logging.getLogger("solray.node")

PREFIX = "ray_"  # Ray's prefix for application metrics
SCRAPE_TIMEOUT_S = 10.0
_KINDS = ("counter", "gauge", "histogram")
_VALID_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_VALID_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class _Family:
    """One application metric on this node: its definition and its series."""

    def __init__(self, kind: str, description: str, bounds: list[float]):
        self.kind = kind
        self.description = description
        self.bounds = bounds
        self.series: dict[tuple, object] = {}  # sorted label pairs -> value


class MetricsExporter:
    def __init__(self, node):
        self.node = node
        self.families: dict[str, _Family] = {}  # the loop's
        self.sources: list[Callable] = [self._application_metrics]
        self.handlers = {Msg.METRICS_REPORT: self.on_report}
        self.port: int | None = None
        self.address: str | None = None  # host:port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conflicts: set[str] = set()  # names already warned about
        from solray import __version__

        self.constant_labels = {
            "Component": "core_worker",
            "NodeAddress": node.ip,
            "SessionName": os.path.basename(node.session_dir.rstrip("/")),
            "Version": __version__,
        }

    # -- serving -------------------------------------------------------------

    def start(self, sock: socket.socket) -> None:
        """Serve `sock` (listening already) from a thread of its own."""
        self._loop = asyncio.get_running_loop()
        self.port = sock.getsockname()[1]
        self.address = transport.socket_address(sock)
        self._server = _Server(sock, self._app)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="solray-metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def add_source(self, source: Callable) -> None:
        """Loop thread: `source()` (a function or coroutine function, run on
        the loop at each scrape) returns prometheus_client metric families."""
        self.sources.append(source)

    def _app(self, environ, start_response):
        """The WSGI app (server thread): GET /metrics, nothing else."""
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") not in (
            "GET",
            "HEAD",
        ):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"Not found: the metrics are at GET /metrics\n"]
        from prometheus_client import CollectorRegistry, make_wsgi_app

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Scrape(self))
        return make_wsgi_app(registry)(environ, start_response)

    def scrape(self) -> list:
        """Server thread: every source's families, gathered on the loop."""
        future = asyncio.run_coroutine_threadsafe(self._gather(), self._loop)
        return future.result(SCRAPE_TIMEOUT_S)

    async def _gather(self) -> list:
        families = []
        for source in self.sources:
            result = source()
            if inspect.isawaitable(result):
                result = await result
            families.extend(result)
        return families

    # -- application metrics -------------------------------------------------

    def on_report(self, conn, rid, body, bufs) -> None:
        """A process's batch (metrics_reporter.report): add it in."""
        try:
            metrics = body["metrics"]
            for name, kind, description, bounds, points in metrics:
                family = self._family(name, kind, description, bounds)
                if family is not None:
                    for labels, value in points:
                        self._add(family, _labels(labels), value)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            logger.warning("dropped a malformed metrics report: %s", e)

    def _family(self, name, kind, description, bounds) -> _Family | None:
        if (
            not isinstance(name, str)
            or not _VALID_NAME.match(name)
            or kind not in _KINDS
            or not isinstance(description, str)
            or not isinstance(bounds, list)
            or not all(isinstance(b, (int, float)) for b in bounds)
        ):
            raise ValueError(f"bad metric definition {name!r}")
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = _Family(kind, description, [float(b) for b in bounds])
        elif family.kind != kind or family.bounds != bounds:
            if name not in self._conflicts:
                self._conflicts.add(name)
                logger.warning(
                    "metric %r is reported as a %s%s by one process and as a %s%s by another; "
                    "only the first is exported",
                    name,
                    family.kind,
                    f" with boundaries {family.bounds}" if family.bounds else "",
                    kind,
                    f" with boundaries {bounds}" if bounds else "",
                )
            return None
        return family

    def _add(self, family: _Family, labels: tuple, value) -> None:
        if family.kind == "counter":
            family.series[labels] = family.series.get(labels, 0.0) + float(value)
        elif family.kind == "gauge":
            family.series[labels] = float(value)
        else:
            counts, total, count = value
            if len(counts) != len(family.bounds) + 1:
                raise ValueError("histogram bucket counts do not match its boundaries")
            entry = family.series.get(labels)
            if entry is None:
                entry = family.series[labels] = [[0] * len(counts), 0.0, 0]
            entry[0] = [a + int(b) for a, b in zip(entry[0], counts, strict=True)]
            entry[1] += float(total)
            entry[2] += int(count)

    def _application_metrics(self) -> list:
        """Loop thread: the application metrics as prometheus_client families."""
        from prometheus_client.core import Metric

        out = []
        for name, family in sorted(self.families.items()):
            full = PREFIX + name
            metric = Metric(full, family.description, family.kind)
            for labels, value in family.series.items():
                tags = {**dict(labels), **self.constant_labels}
                if family.kind == "counter":
                    metric.add_sample(full + "_total", tags, value)
                elif family.kind == "gauge":
                    metric.add_sample(full, tags, value)
                else:
                    counts, total, count = value
                    cumulative = 0
                    for bound, n in zip([*family.bounds, float("inf")], counts, strict=True):
                        cumulative += n
                        le = "+Inf" if bound == float("inf") else repr(bound)
                        metric.add_sample(full + "_bucket", {**tags, "le": le}, cumulative)
                    metric.add_sample(full + "_count", tags, count)
                    metric.add_sample(full + "_sum", tags, total)
            out.append(metric)
        return out


def _labels(pairs) -> tuple:
    labels = []
    for key, value in pairs:
        if not isinstance(key, str) or not _VALID_LABEL.match(key) or not isinstance(value, str):
            raise ValueError(f"bad tag {key!r}={value!r}")
        labels.append((key, value))
    return tuple(sorted(labels))


class _Scrape:
    """A prometheus_client collector for one scrape: the node's families."""

    def __init__(self, exporter: MetricsExporter):
        self._exporter = exporter

    def collect(self):
        return self._exporter.scrape()


class _QuietHandler(WSGIRequestHandler):
    timeout = 10  # a client that stalls mid-request holds its thread this long at most

    def log_message(self, format, *args) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """The standard library's WSGI server on a socket bound by the launcher,
    one thread per request."""

    daemon_threads = True

    def __init__(self, sock: socket.socket, app):
        super().__init__(sock.getsockname()[:2], _QuietHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.address_family = sock.family
        # What server_bind() would have set, without its reverse DNS lookup.
        host, port = sock.getsockname()[:2]
        self.server_address = (host, port)
        self.server_name, self.server_port = host, port
        self.setup_environ()
        self.set_app(app)
