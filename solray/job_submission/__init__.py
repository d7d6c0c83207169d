"""Ray's job submission SDK (`ray.job_submission`): submit a shell command
to run on the head as a job, follow its status and logs, stop and delete it.

The client (client.py) speaks Ray's REST API (`/api/jobs/...`) to the
dashboard's web server, which runs the jobs (solray/dashboard/jobs.py); the
shapes it returns are models.py.
"""

from solray.job_submission.client import JobSubmissionClient
from solray.job_submission.models import DriverInfo, JobDetails, JobInfo, JobStatus, JobType

__all__ = ["DriverInfo", "JobDetails", "JobInfo", "JobStatus", "JobSubmissionClient", "JobType"]
