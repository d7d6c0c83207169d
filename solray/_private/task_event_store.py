"""The control store's table of task attempts, built from task events.

Owners and executors ship their events in batches of flat columns
(task_events.Columns), merged here without an object per event. Batches
arrive in any order: an executor's FINISHED may come before the
owner's PENDING_ARGS_AVAIL. So each (task id, attempt) record merges events
whatever their order: its events list is kept in time order, its state is the
furthest one along (FINISHED or FAILED end it), what the task is comes from
the owner's first event, and where it ran from the executor's batch.

Bounded twice: at most `task_events_max_num_task_per_job` attempts of one
job (solray's, default 100000), so a job that floods the cluster with tasks
evicts its own attempts and never another job's, and at most
`task_events_max_num_task_in_gcs` over every job (Ray's setting, 100000);
both read as SOLRAY_ or RAY_. When a new attempt would exceed a bound, the
oldest finished attempt (of that job, or of any) is evicted, else the oldest
of any state, and `dropped` counts it; so do events a process had to drop
from a full buffer. Late events of an evicted attempt are ignored (a short memory of
evicted keys), so an evicted finished task never comes back as pending.

Queries (LIST_TASKS) filter here, so a limit of 100 ships 100 rows:
{"filters": [[key, "=" | "!=", value], ...], "limit": n, "detail": bool}
answered {"tasks": [rows], "total": attempts kept, "num_filtered": rows
matching, "dropped": attempts and events lost}. With "precise": true, times
are float milliseconds (microsecond resolution) instead of Ray's integers:
the timeline needs them. With "summarize": true the answer is counts per
function or class name and state instead of rows (`summary`): a summary of
100000 attempts is a few kB, not 100000 rows encoded on this loop.

All of it runs on the control store's loop.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict

import msgpack

from solray._private import task_events as ev
from solray._private.ids import TASK_ID_LEN
from solray._private.state_filters import check_filters, matches

_NO_INFO = (ev.NORMAL_TASK, "", "", None, None, None, None, 0)


def _state(record) -> str:
    return ev.STATES[record.state if record.state >= 0 else ev.PENDING_ARGS_AVAIL]


# Row fields a filter can test on a record as it is (as the row's str).
_CHEAP = {
    "task_id": lambda key, record: key[0].hex(),
    "attempt_number": lambda key, record: str(key[1]),
    "job_id": lambda key, record: key[0][:4].hex(),
    "state": lambda key, record: _state(record),
    "node_id": lambda key, record: str(record.node_id),
    "worker_id": lambda key, record: str(record.worker_id),
    "worker_pid": lambda key, record: str(record.worker_pid),
    "error_type": lambda key, record: str(record.error[0] if record.error else None),
}


def _ms(us: int) -> int:
    return us // 1000


def _precise_ms(us: int) -> float:
    return us / 1000


class TaskRecord:
    """One attempt. Few objects the garbage collector must walk: `info` stays
    the msgpack bytes it came in, `events` is an int array."""

    __slots__ = ("info", "events", "state", "node_id", "worker_id", "worker_pid", "error")

    def __init__(self):
        self.info: bytes | None = None
        self.events = array("q")  # state, time_us, state, time_us, ... in time order
        self.state = -1
        self.node_id: str | None = None
        self.worker_id: str | None = None
        self.worker_pid: int | None = None
        self.error: list | None = None  # [error_type, error_message]


def _job(key: tuple) -> bytes:
    return key[0][:4]  # a task id starts with its job's id


class TaskEventStore:
    def __init__(self, max_tasks: int | None = None, max_per_job: int | None = None):
        if max_tasks is None:
            max_tasks = ev.setting("task_events_max_num_task_in_gcs", 100_000)
        if max_per_job is None:
            max_per_job = ev.setting("task_events_max_num_task_per_job", 100_000)
        for name, value in (
            ("task_events_max_num_task_in_gcs", max_tasks),
            ("task_events_max_num_task_per_job", max_per_job),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.max_tasks = max_tasks
        self.max_per_job = max_per_job
        self.records: OrderedDict[tuple, TaskRecord] = OrderedDict()
        self.finished: OrderedDict[tuple, None] = OrderedDict()  # in the order they ended
        # The same two orders per job, for the per-job bound.
        self.job_records: dict[bytes, OrderedDict[tuple, None]] = {}
        self.job_finished: dict[bytes, OrderedDict[tuple, None]] = {}
        self._evicted: OrderedDict[tuple, None] = OrderedDict()
        self._max_evicted = max(1000, max_tasks // 10)
        self.dropped = 0

    # -- merging -------------------------------------------------------------

    def add_batch(self, body: dict) -> None:
        """One process's TASK_EVENTS: events as columns (task_events.Columns)."""
        self.dropped += body.get("drop", 0)
        self._merge_columns(body["own"], None)
        executed = body["exe"]
        if executed["s"]:
            self._merge_columns(executed, (body.get("node"), body.get("wid"), body.get("pid")))

    def _merge_columns(self, columns: dict, where: tuple | None) -> None:
        task_ids, infos, errors = columns["t"], columns["i"], columns["x"]
        attempts = ev.from_little("q", columns["a"])
        times = ev.from_little("q", columns["us"])
        states = array("b", columns["s"])
        records, finished = self.records, self.finished
        for row, state in enumerate(states):
            key = (task_ids[row * TASK_ID_LEN : (row + 1) * TASK_ID_LEN], attempts[row])
            record = records.get(key)
            if record is None:
                record = self._new_record(key)
                if record is None:
                    continue
            at = times[row]
            events = record.events
            if not events or events[-1] <= at:
                events.append(state)
                events.append(at)
            else:  # the other side's batch came late: keep time order
                i = len(events)
                while i and events[i - 1] > at:
                    i -= 2
                events.insert(i, at)
                events.insert(i, state)
            if row in infos:
                record.info = infos[row]
            if row in errors:
                record.error = errors[row]
            if where is not None:
                record.node_id, record.worker_id, record.worker_pid = where
            if state > record.state:
                if state in ev.TERMINAL and record.state not in ev.TERMINAL:
                    finished[key] = None
                    self.job_finished.setdefault(_job(key), OrderedDict())[key] = None
                record.state = state

    def _new_record(self, key: tuple) -> TaskRecord | None:
        """A record for an attempt seen for the first time (None if it was
        evicted: its late events are dropped)."""
        if key in self._evicted:
            return None
        record = self.records[key] = TaskRecord()
        job = _job(key)
        of_job = self.job_records.setdefault(job, OrderedDict())
        of_job[key] = None
        first = self.records.get((key[0], 0)) if key[1] else None
        if first is not None:  # a retry, or an actor's restart: the same task
            record.info = first.info
        if len(of_job) > self.max_per_job:
            self._evict(self.job_finished.get(job) or of_job)
        elif len(self.records) > self.max_tasks:
            self._evict(self.finished or self.records)
        return record

    def _evict(self, oldest_first: OrderedDict) -> None:
        """Drop the first attempt of `oldest_first` from every table."""
        key = next(iter(oldest_first))
        job = _job(key)
        del self.records[key]
        self.finished.pop(key, None)
        of_job = self.job_records[job]
        del of_job[key]
        finished_of_job = self.job_finished.get(job)
        if finished_of_job is not None:
            finished_of_job.pop(key, None)
        if not of_job:
            self.job_records.pop(job)
            self.job_finished.pop(job, None)
        self.dropped += 1
        self._evicted[key] = None
        if len(self._evicted) > self._max_evicted:
            self._evicted.popitem(last=False)

    # -- queries ---------------------------------------------------------------

    def query(self, body: dict | None) -> dict:
        body = body or {}
        if body.get("summarize"):
            return self.summary()
        filters = check_filters(body.get("filters"))
        limit = body.get("limit", 100)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an int >= 0, got {limit!r}")
        detail, precise = bool(body.get("detail")), bool(body.get("precise"))
        # Filters on what a record holds plainly are tested before a row is
        # built: a get_task among 100000 attempts builds one row.
        cheap = [f for f in filters if f[0] in _CHEAP]
        other = [f for f in filters if f[0] not in _CHEAP]
        rows, num_filtered = [], 0
        for key, record in self.records.items():
            if not filters and len(rows) >= limit:
                num_filtered = len(self.records)
                break
            if cheap and not all(
                (_CHEAP[k](key, record).lower() == value) == want for k, want, value in cheap
            ):
                continue
            if other and not matches(self._row(key, record, False, False), other):
                continue
            num_filtered += 1
            if len(rows) < limit:
                rows.append(self._row(key, record, detail, precise))
        return {
            "tasks": rows,
            "total": len(self.records),
            "num_filtered": num_filtered,
            "dropped": self.dropped,
        }

    def summary(self) -> dict:
        """Attempts by function or class name and state, drivers aside
        (summarize_tasks, the dashboard): {"summary": {name:
        {"func_or_class_name", "type", "state_counts"}}, "totals": {type:
        attempts}, "total", "dropped"}."""
        by_name: dict[str, dict] = {}
        totals = {name: 0 for name in ev.TYPES if name != "DRIVER_TASK"}
        for record in self.records.values():
            info = msgpack.unpackb(record.info) if record.info is not None else _NO_INFO
            kind, func = info[0], info[2]
            if kind == ev.DRIVER_TASK:
                continue
            kind_name, state = ev.TYPES[kind], _state(record)
            entry = by_name.get(func)
            if entry is None:
                entry = by_name[func] = {
                    "func_or_class_name": func,
                    "type": kind_name,
                    "state_counts": {},
                }
            counts = entry["state_counts"]
            counts[state] = counts.get(state, 0) + 1
            totals[kind_name] += 1
        return {
            "summary": by_name,
            "totals": totals,
            "total": len(self.records),
            "dropped": self.dropped,
        }

    @staticmethod
    def _row(key: tuple, record: TaskRecord, detail: bool, precise: bool) -> dict:
        task_id, attempt = key
        info = msgpack.unpackb(record.info) if record.info is not None else _NO_INFO
        kind, name, func, actor_id, parent, resources, pg_id, args_bytes = info
        error_type, error_message = record.error or (None, None)
        row = {
            "task_id": task_id.hex(),
            "attempt_number": attempt,
            "name": name,
            "state": _state(record),
            "job_id": task_id[:4].hex(),
            "actor_id": actor_id.hex() if actor_id else None,
            "type": ev.TYPES[kind],
            "func_or_class_name": func,
            "parent_task_id": parent.hex() if parent else "",
            "node_id": record.node_id,
            "worker_id": record.worker_id,
            "worker_pid": record.worker_pid,
            "error_type": error_type,
            "error_message": error_message,
            "placement_group_id": pg_id,
        }
        if detail:
            ms = _precise_ms if precise else _ms
            events = record.events
            row["language"] = "PYTHON"
            row["required_resources"] = resources or {}
            row["args_bytes"] = args_bytes
            pairs = list(zip(events[0::2], events[1::2], strict=True))
            row["events"] = [{"state": ev.STATES[s], "created_ms": ms(t)} for s, t in pairs]
            row["creation_time_ms"] = ms(pairs[0][1]) if pairs else None
            start = next((t for s, t in pairs if s == ev.RUNNING), None)
            row["start_time_ms"] = ms(start) if start is not None else None
            end = next((t for s, t in reversed(pairs) if s in ev.TERMINAL), None)
            row["end_time_ms"] = ms(end) if end is not None else None
        return row
