"""This process's application metrics, on their way to its node.

`util.metrics` records each point here; once per REPORT_INTERVAL_S the core
worker's loop takes what accumulated and sends it to the node as one
METRICS_REPORT (and once more at shutdown), where metrics_exporter.py adds
it to the node's totals. So a record costs a dict update under a lock, never
a message, and a process that records nothing has no timer, no lock taken
and nothing sent: task paths never look here.

What accumulates, per (metric name, tags): a counter's increments since the
last report, a gauge's last value, a histogram's bucket counts, sum and count
since the last report. The node sums counters and histograms and keeps a
gauge's last value.

Ownership: the pending table is shared by the user threads that record and
the loop that sends it, under `_lock` (a record must not wait for the loop).
Points recorded before `init()` wait here and go with the first report after
it; a ray:// client has no node to report to, so recording there raises.
"""

from __future__ import annotations

import bisect
import threading

from solray._private import context
from solray._private.protocol import Msg

REPORT_INTERVAL_S = 1.0

_lock = threading.Lock()
_pending: dict[tuple, object] = {}  # (name, labels) -> what accumulated
_definitions: dict[str, list] = {}  # name -> [name, kind, description, bounds]
_reporting_for = None  # the CoreWorker whose loop sends our reports


def record(metric, labels: tuple, value: float) -> None:
    """Any thread: add one point of `metric` with these labels (sorted
    (key, value) pairs)."""
    name, kind = metric._name, metric._kind
    cw = context.core_worker
    if cw is None and context.client is not None:
        raise NotImplementedError(
            "solray.util.metrics cannot export from a ray:// client (it has no node): "
            "record metrics in tasks or actors instead"
        )
    with _lock:
        definition = _definitions.get(name)
        if definition is None:
            definition = _definitions[name] = metric._definition()
        elif definition[1] != kind or definition[3] != metric._definition()[3]:
            raise ValueError(
                f"Metric {name!r} is already a {_describe(definition)} in this process; "
                f"a {_describe(metric._definition())} cannot have the same name."
            )
        key = (name, labels)
        if kind == "counter":
            _pending[key] = _pending.get(key, 0.0) + value
        elif kind == "gauge":
            _pending[key] = value
        else:
            bounds = definition[3]
            entry = _pending.get(key)
            if entry is None:
                entry = _pending[key] = [[0] * (len(bounds) + 1), 0.0, 0]
            entry[0][bisect.bisect_left(bounds, value)] += 1
            entry[1] += value
            entry[2] += 1
    if cw is not _reporting_for:
        _start_reporting(cw)


def _describe(definition: list) -> str:
    if definition[1] == "histogram":
        return f"histogram with boundaries {definition[3]}"
    return definition[1]


def _start_reporting(cw) -> None:
    global _reporting_for
    if cw is None:
        return  # before init(): sent with the first report after it
    with _lock:
        if _reporting_for is cw:
            return
        _reporting_for = cw
    cw.post(cw.loop.call_later, REPORT_INTERVAL_S, _tick, cw)


def _tick(cw) -> None:
    """Loop thread: report, and come back in REPORT_INTERVAL_S."""
    if cw.shutting_down or cw is not _reporting_for:
        return
    report(cw)
    cw.loop.call_later(REPORT_INTERVAL_S, _tick, cw)


def report(cw) -> None:
    """Loop thread: send what accumulated to the node (core_worker calls
    this at shutdown too)."""
    global _pending
    if cw is not _reporting_for or cw.node is None or cw.node.closed:
        return
    with _lock:
        if not _pending:
            return
        pending, _pending = _pending, {}
        definitions = {name: _definitions[name] for name, _ in pending}
    by_name: dict[str, list] = {name: [*d, []] for name, d in definitions.items()}
    for (name, labels), value in pending.items():
        by_name[name][4].append([[list(pair) for pair in labels], value])
    cw.node.send(Msg.METRICS_REPORT, {"metrics": list(by_name.values())})
