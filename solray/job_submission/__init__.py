"""Ray's job submission SDK (`ray.job_submission`): submit a shell command
to run on the head as a job, follow its status and logs, stop and delete it.

The client (client.py) speaks Ray's REST API (`/api/jobs/...`) to the
dashboard's web server, which runs the jobs (solray/dashboard/jobs.py); the
shapes it returns are models.py. The client is imported at first use: the
dashboard imports models.py at start and must stay light while idle.
"""

from solray.job_submission.models import DriverInfo, JobDetails, JobInfo, JobStatus, JobType

__all__ = ["DriverInfo", "JobDetails", "JobInfo", "JobStatus", "JobSubmissionClient", "JobType"]


def __getattr__(name: str):
    if name == "JobSubmissionClient":
        from solray.job_submission.client import JobSubmissionClient

        return JobSubmissionClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
