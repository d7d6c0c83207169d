"""The control store's table of anti-pattern counts (advice.py), per job.

Drivers and workers send what they counted since their last report
(ADVICE_REPORT, rows [job, kind, file, line, label, count, aux1, aux2]);
counts add up per (kind, file, line, label), so a job's table holds its
driver's findings and those of its workers' nested tasks. GET_ADVICE
{"job": id or None} answers {"jobs": [[job, rows, dropped], ...]} for the
driver's summary at shutdown and the dashboard's Advice view.

Bounded: at most MAX_SITES_PER_JOB rows per job (a new row past it is
dropped and counted: a job's count of dropped rows travels with its rows)
and MAX_JOBS jobs (the oldest job's table goes first). Runs on the control
store's loop.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_SITES_PER_JOB = 256
MAX_JOBS = 256


class AdviceStore:
    def __init__(self) -> None:
        # job -> {(kind, file, line, label): [count, aux1, aux2]}, oldest job first
        self.jobs: OrderedDict[int, dict] = OrderedDict()
        self.dropped: dict[int, int] = {}

    def add(self, rows: list) -> None:
        for job, kind, filename, line, label, count, aux1, aux2 in rows:
            table = self.jobs.get(job)
            if table is None:
                table = self.jobs[job] = {}
                while len(self.jobs) > MAX_JOBS:
                    old, _ = self.jobs.popitem(last=False)
                    self.dropped.pop(old, None)
            key = (kind, filename, line, label)
            counts = table.get(key)
            if counts is None:
                if len(table) >= MAX_SITES_PER_JOB:
                    self.dropped[job] = self.dropped.get(job, 0) + 1
                    continue
                counts = table[key] = [0, 0, 0]
            counts[0] += count
            counts[1] += aux1
            counts[2] += aux2

    def query(self, job: int | None) -> dict:
        jobs = [job] if job is not None else list(self.jobs)
        return {
            "jobs": [
                [
                    j,
                    [[*key, *counts] for key, counts in self.jobs[j].items()],
                    self.dropped.get(j, 0),
                ]
                for j in jobs
                if j in self.jobs
            ]
        }
