"""Advice on anti-patterns: four of Ray's documented anti-patterns, noticed
as the program runs, counted per call site, summed up once at the end.

    returned put() refs   a task or actor call returned refs it made with
                          put(): the worker says so in its reply ("pr")
    get() in a loop       get() of the one ref of the task submitted just
                          before, again and again from one line
    tiny tasks            many calls of one `.remote()` line that ran under
                          1 ms each: the worker says so in its reply ("q",
                          the microseconds it ran)
    large args by value   the same large object (> 100 KiB) passed by value
                          again from one `.remote()` line

Why here: the owner (the process that called `.remote()`) is the one place
that sees the call site, the arguments, the get and the reply of a task. So
detection costs the hot path one thing, the call site of each `.remote()`
(`user_site`: a walk of a few frames out of solray, a tuple); everything
else happens on the anti-pattern's own path or in the reply's handler.

Counts live in this process's table (the loop's: user threads post to it),
keyed by (job, anti-pattern, file, line, label). The loop ships what was
added since the last report to the control store every second, one
fire-and-forget ADVICE_REPORT (advice_store.py keeps them per job, bounded);
the dashboard reads them from there. At its shutdown a driver ships the
rest, asks the control store for its job's counts (its workers' nested
tasks included) and prints the summary to stderr, once.

Off with SOLRAY_ANTI_PATTERN_ADVICE=0 (read from the environment by every
process when its core worker starts: set it before init() or `solray
start`, and the cluster's processes inherit it): nothing is recorded,
shipped or printed. Any value but 0 or 1 is a ValueError at init().
"""

from __future__ import annotations

import functools
import os
import sys
import weakref

from solray._private.protocol import Msg

SETTING = "SOLRAY_ANTI_PATTERN_ADVICE"

PUT_REFS = "returned_put_refs"
GET_IN_LOOP = "get_in_loop"
TINY_TASKS = "tiny_tasks"
LARGE_ARGS = "large_args_by_value"

TINY_US = 1000  # a task that ran less than this many microseconds is tiny
LARGE_BYTES = 100 * 1024  # Ray's "large argument" (it is stored, not inlined)
REPORT_INTERVAL_S = 1.0
MAX_LARGE_PER_SITE = 16  # large objects remembered per call site

_SOLRAY_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# The one program shipped inside solray: its lines are the user's.
_MICROBENCHMARK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "microbenchmark.py")


def enabled_from_environment() -> bool:
    value = os.environ.get(SETTING, "").strip()
    if value in ("", "1"):
        return True
    if value == "0":
        return False
    raise ValueError(f"{SETTING} must be 0 (off) or 1 (on), got {value!r}")


def user_frame():
    """The innermost frame outside solray: the user's call (None if there is
    none). A relative file name (a module imported from the current
    directory) is made absolute before it is compared."""
    frame = sys._getframe(2)  # our caller is solray's: start at its caller
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(_SOLRAY_DIR):
            if filename == _MICROBENCHMARK:
                return frame
        elif filename.startswith(os.sep) or not _relative_in_solray(filename):
            return frame
        frame = frame.f_back
    return None


@functools.cache
def _relative_in_solray(filename: str) -> bool:
    # Cached: abspath asks for the working directory (a system call), and
    # "<string>" or "<stdin>" (python -c, a notebook) is every call's file.
    return os.path.abspath(filename).startswith(_SOLRAY_DIR)


def user_site() -> tuple[str, int] | None:
    """(file, line) of the user's call (`user_frame`).

    Cached by code object and instruction offset: `f_lineno` walks the
    code's line table up to the instruction, microseconds for a long
    function or script, on every remote() call. The entry keeps its code
    object so that an id reused by a new code object is not mistaken for it."""
    frame = user_frame()
    if frame is None:
        return None
    code = frame.f_code
    key = (id(code), frame.f_lasti)
    entry = _sites.get(key)
    if entry is None or entry[0] is not code:
        if len(_sites) >= _MAX_SITES:
            _sites.clear()  # code made again and again (exec, notebooks)
        entry = _sites[key] = (code, (code.co_filename, frame.f_lineno))
    return entry[1]


_sites: dict[tuple[int, int], tuple] = {}
_MAX_SITES = 4096


# -- what the summary says ------------------------------------------------------

# kind -> (title, unit, whether a site is reported, the fix, Ray's page). A
# site is reported only past its threshold: one get() after a remote() is
# normal, a hundred from one line is a loop.
KINDS = {
    PUT_REFS: (
        "tasks returned refs they made with put()",
        "calls",
        lambda c: c[0] >= 1,
        "return the value itself (num_returns or a generator for several): small values "
        "come back inline, and the caller, not the worker, owns them",
        "return-ray-put",
    ),
    GET_IN_LOOP: (
        "get() right after remote(), in a loop: the tasks run one at a time",
        "gets",
        lambda c: c[0] >= 10,
        "submit all the tasks first, then get() the list once: "
        "refs = [f.remote(x) for x in xs]; ray.get(refs)",
        "ray-get-loop",
    ),
    TINY_TASKS: (
        "tasks shorter than 1 ms, in bulk: the per-task overhead dominates",
        "calls",
        lambda c: c[0] >= 100 and 2 * c[0] >= c[1],
        "batch the work: give each task many items to process (e.g. a chunk of the list)",
        "too-fine-grained-tasks",
    ),
    LARGE_ARGS: (
        "the same large argument passed by value again and again",
        "repeated calls",
        lambda c: c[0] >= 3,
        "ray.put() it once and pass the ref: ref = ray.put(x); f.remote(ref, ...)",
        "pass-large-arg-by-value",
    ),
}
RAY_DOCS = "https://docs.ray.io/en/latest/ray-core/patterns/{}.html"
TOP_SITES = 3


def _where(filename: str, line: int) -> str:
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        relative = filename
    return f"{relative if not relative.startswith('..') else filename}:{line}"


def summarize(rows: list) -> list[dict]:
    """The anti-patterns past their thresholds, from rows [kind, file, line,
    label, count, aux1, aux2] (one job's): each {kind, title, count, unit,
    sites: [{where, label, count, detail}], fix, doc}, most frequent first."""
    findings = []
    for kind, (title, unit, reported, fix, page) in KINDS.items():
        sites = [r for r in rows if r[0] == kind and reported(r[4:7])]
        if not sites:
            continue
        sites.sort(key=lambda r: -r[4])
        findings.append(
            {
                "kind": kind,
                "title": title,
                "count": sum(r[4] for r in sites),
                "unit": unit,
                "sites": [
                    {
                        "where": _where(r[1], r[2]),
                        "label": r[3],
                        "count": r[4],
                        "detail": _detail(kind, r[4:7]),
                    }
                    for r in sites
                ],
                "fix": fix,
                "doc": RAY_DOCS.format(page),
            }
        )
    findings.sort(key=lambda f: -f["count"])
    return findings


def _detail(kind: str, counts) -> str:
    count, aux1, aux2 = counts
    if kind == TINY_TASKS:
        return f"{count} of {aux1} calls, {aux2 / max(count, 1):.0f} us each on average"
    if kind == LARGE_ARGS:
        return f"{aux1 / 2**20:.1f} MiB serialized again"
    return ""


def render(findings: list[dict], dropped: int = 0) -> str:
    """The driver's summary: each anti-pattern, its count, its top call
    sites and the fix."""
    lines = [
        f"solray: advice: {len(findings)} anti-pattern(s) in this job ({SETTING}=0 turns this off):"
    ]
    for f in findings:
        lines.append(f"  {f['title']}: {f['count']} {f['unit']}")
        for site in f["sites"][:TOP_SITES]:
            detail = f" ({site['detail']})" if site["detail"] else ""
            lines.append(f"    {site['where']}  {site['label']}: {site['count']}{detail}")
        if len(f["sites"]) > TOP_SITES:
            lines.append(f"    ... and {len(f['sites']) - TOP_SITES} more call site(s)")
        lines.append(f"    fix: {f['fix']} ({f['doc']})")
    if dropped:
        lines.append(f"  ({dropped} call site(s) not counted: the per-job bound was reached)")
    return "\n".join(lines)


# -- this process's counts --------------------------------------------------------


class Advice:
    """This process's counts (the loop's), and their shipping."""

    def __init__(self, core_worker):
        self.cw = core_worker
        self.enabled = enabled_from_environment()
        self.pending: dict[tuple, list] = {}  # added since the last report
        self._reported: dict[tuple, list] = {}  # everything shipped so far
        self._timer = None
        # call site -> {id(obj): (weakref or None, type, length)} of the large
        # objects it passed by value
        self._large: dict[tuple, dict] = {}
        self.last_task: bytes | None = None  # the newest task .remote() made (user threads)
        self.last_name = ""

    # -- recording (loop thread, unless said otherwise) -------------------

    def _add(self, job: int, kind: str, site, label: str, n: int, aux1=0, aux2=0) -> None:
        key = (job, kind, site[0], site[1], label)
        counts = self.pending.get(key)
        if counts is None:
            counts = self.pending[key] = [0, 0, 0]
            if self._timer is None:
                self._timer = self.cw.loop.call_later(REPORT_INTERVAL_S, self.flush)
        counts[0] += n
        counts[1] += aux1
        counts[2] += aux2

    def on_reply(self, task, body: dict) -> None:
        """A task or actor call we own answered: did it return put() refs,
        was it a tiny task?"""
        site = task.site
        if site is None:
            return
        if "pr" in body:
            self._add(task.job, PUT_REFS, site, task.name, 1)
        if task.actor_id is None:
            quick = body.get("q")
            if quick is None:
                self._add(task.job, TINY_TASKS, site, task.name, 0, 1)
            else:
                self._add(task.job, TINY_TASKS, site, task.name, 1, 1, quick)

    def after_get(self, ref_id: bytes) -> None:
        """User thread: get() of one ref. If it is a result of the task
        submitted just before it, count that get's call site."""
        last = self.last_task
        if last is None or not ref_id.startswith(last):
            return
        self.last_task = None  # a second get of the same ref is not a loop
        site = user_site()
        if site is not None:  # lazily: a wake-up of the loop per get would cost more than the get
            self.cw.post_lazy(
                self._add, self.cw.job, GET_IN_LOOP, site, f"get of {self.last_name}()", 1
            )

    def large_arguments(self, site, label: str, args: tuple, kwargs: dict) -> None:
        """User thread: a call whose arguments pickled to more than 100 KiB.
        Which of them are large objects this line passed before?"""
        seen = []
        for value in (*args, *kwargs.values()):
            size = _size_estimate(value)
            if size < LARGE_BYTES:
                continue
            try:
                ref = weakref.ref(value)
            except TypeError:  # lists, dicts, bytes: identity and length then
                ref = None
            seen.append((id(value), ref, type(value), _length(value), size))
        if seen:
            self.cw.post_lazy(self._large_seen, self.cw.job, site, label, seen)

    def _large_seen(self, job: int, site, label: str, seen: list) -> None:
        known = self._large.setdefault(site, {})
        for ident, ref, kind, length, size in seen:
            before = known.get(ident)
            same = (
                before is not None
                and before[1] is kind
                and before[2] == length
                and (before[0] is None or before[0]() is not None)
            )
            if same:
                self._add(job, LARGE_ARGS, site, label, 1, size)
            else:
                known[ident] = (ref, kind, length)
                while len(known) > MAX_LARGE_PER_SITE:
                    del known[next(iter(known))]

    # -- shipping (loop thread) ---------------------------------------------

    def flush(self) -> None:
        """Send what was added since the last report to the control store."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self.pending = self.pending, {}
        if not pending:
            return
        for key, counts in pending.items():
            total = self._reported.setdefault(key, [0, 0, 0])
            for i in range(3):
                total[i] += counts[i]
        control = self.cw.control
        if control is None or control.closed:
            return
        rows = [[*key, *counts] for key, counts in pending.items()]
        control.send(Msg.ADVICE_REPORT, {"rows": rows})

    def job_summary(self, timeout: float | None) -> str | None:
        """User thread, a driver shutting down: ship the rest, then the
        summary of this job's anti-patterns (its workers' included), or None
        if there are none. Without an answer from the control store within
        `timeout` (None: do not ask, it is away), from this process's own
        counts."""
        cw = self.cw
        cw.run_on_loop(self.flush)
        rows = [[k[1], *k[2:], *c] for k, c in self._reported.items() if k[0] == cw.job]
        dropped = 0
        if timeout is not None:
            try:
                reply = cw.request("control", Msg.GET_ADVICE, {"job": cw.job}, timeout=timeout)
                if reply["jobs"]:
                    [[_, rows, dropped]] = reply["jobs"]
            except Exception:  # the control store is gone: what this process saw
                pass
        findings = summarize(rows)
        return render(findings, dropped) if findings else None


def _size_estimate(value) -> int:
    """A cheap lower bound of what `value` pickles to: numpy's nbytes, a
    buffer's length, else its own size (shallow for containers)."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (bytes, bytearray, str, memoryview)):
        return len(value)
    try:
        return sys.getsizeof(value)
    except TypeError:
        return 0


def _length(value) -> int:
    try:
        return len(value)
    except TypeError:
        return -1
