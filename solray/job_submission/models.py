"""What the job API says about a job, in Ray's names and fields.

One record per job lives in the control store (key-value namespace
NAMESPACE, keyed by submission id, as JSON): the dashboard process writes
it as the job moves, and everything that shows a job reads it, so a job's
record outlives the job (`solray job list` shows past jobs) until it is
deleted. Times are Unix milliseconds, as in Ray.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

NAMESPACE = "job_submission"
SUBMISSION_ID_KEY = "job_submission_id"  # the driver's JobConfig metadata names its job


class JobStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    def is_terminal(self) -> bool:
        return self in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED)


class JobType(enum.StrEnum):
    SUBMISSION = "SUBMISSION"
    DRIVER = "DRIVER"


@dataclasses.dataclass
class DriverInfo:
    id: str
    node_ip_address: str
    pid: str


@dataclasses.dataclass
class JobInfo:
    """A job as the control store records it (Ray's JobInfo)."""

    status: JobStatus
    entrypoint: str
    message: str | None = None
    error_type: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict[str, str] | None = None
    runtime_env: dict[str, Any] | None = None
    entrypoint_num_cpus: int | float | None = None
    entrypoint_num_gpus: int | float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None
    driver_agent_http_address: str | None = None
    driver_node_id: str | None = None
    driver_exit_code: int | None = None

    def __post_init__(self) -> None:
        self.status = JobStatus(self.status)

    def to_json(self) -> dict:
        fields = dataclasses.asdict(self)
        fields["status"] = self.status.value
        return fields

    @classmethod
    def from_json(cls, fields: dict) -> JobInfo:
        return cls(**{k: v for k, v in fields.items() if k in _INFO_FIELDS})


_INFO_FIELDS = {f.name for f in dataclasses.fields(JobInfo)}


@dataclasses.dataclass
class JobDetails:
    """A job as the API returns it (Ray's JobDetails): its record, its
    submission id, and the id of the driver it started, once it did."""

    type: JobType
    status: JobStatus
    entrypoint: str
    job_id: str | None = None
    submission_id: str | None = None
    driver_info: DriverInfo | None = None
    message: str | None = None
    error_type: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict[str, str] | None = None
    runtime_env: dict[str, Any] | None = None
    driver_agent_http_address: str | None = None
    driver_node_id: str | None = None
    driver_exit_code: int | None = None

    def __post_init__(self) -> None:
        self.type = JobType(self.type)
        self.status = JobStatus(self.status)
        if isinstance(self.driver_info, dict):
            self.driver_info = DriverInfo(**self.driver_info)

    @classmethod
    def of_submission(cls, submission_id: str, info: JobInfo, job_id: str | None) -> JobDetails:
        """A submitted job's details: its record and its driver's job id."""
        recorded = {k: v for k, v in info.to_json().items() if k in _DETAIL_FIELDS}
        return cls(type=JobType.SUBMISSION, submission_id=submission_id, job_id=job_id, **recorded)

    def dict(self) -> dict:
        fields = dataclasses.asdict(self)
        fields["type"], fields["status"] = self.type.value, self.status.value
        return fields

    @classmethod
    def from_json(cls, fields: dict) -> JobDetails:
        return cls(**{k: v for k, v in fields.items() if k in _DETAIL_FIELDS})


_DETAIL_FIELDS = {f.name for f in dataclasses.fields(JobDetails)}
