"""Jobs: shell commands run on the head for whoever holds the cluster token
(Ray's job submission; the HTTP side is job_api.py, the SDK
solray/job_submission/).

Where they run: in the dashboard's process (server.py says where that is),
which supervises every job it started: each entrypoint is `/bin/sh -c
ENTRYPOINT` in a session (so a process group) of its own, under a small
guard process (job_guard.py) that dies with the dashboard's process and
takes the entrypoint's group with it; stdout and stderr go to
`<session>/logs/job-driver-<id>.log`, kept after it ends until the job is
deleted. The loop owns the table of running jobs; each job's record
(models.JobInfo) is written to the control store's key-value store at each
change, which is where every reader looks (the state API's list_jobs, the
job API). It is written through a reconnecting client (control_client.py): a
job that ends while the control store restarts is recorded as ended once it
is back.

How a job's driver joins the cluster: its environment names the control
store (RAY_ADDRESS) and the head's temp dir (RAY_TMPDIR), never the token:
init() finds the token where any driver on the head does, in the head's
session (readable only by the cluster's user); and the environment holds
the job's runtime_env and metadata (job_config.JOB_CONFIG_ENV), which init()
applies, so the driver's tasks and actors run in the job's env. The
entrypoint itself runs in that env too: the agent (runtime_env/agent.py,
with a cache of its own) unpacks the working_dir it starts in and the
py_modules on its PYTHONPATH, and builds the pip/uv environment whose
`python` comes first on its PATH. `import ray` and the `ray` command are
solray's in it (runner.program_environment), as under `solray run`.

Stopping a job is SIGTERM to its guard, which sends it to the entrypoint's
process group, then SIGKILL to the group after the grace period
(STOP_GRACE_S, less a second so the guard acts before the dashboard's own
SIGKILL of it); its driver's tasks and non-detached actors end with
the driver, as for any driver. When the dashboard stops (the cluster
does), it stops its running jobs the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import string
import sys
import time

from solray._private import runner, services, transport
from solray._private.control_client import ControlClient
from solray._private.protocol import Msg
from solray._private.runtime_env import packages, spec
from solray._private.runtime_env.agent import RuntimeEnvAgent
from solray._private.state_client import StateClient
from solray.job_config import JOB_CONFIG_ENV
from solray.job_submission.models import (
    NAMESPACE,
    SUBMISSION_ID_KEY,
    JobInfo,
    JobStatus,
)

logger = logging.getLogger(__name__)

# Ray's variable for the grace period of a stop, and its default.
STOP_GRACE_S = float(os.environ.get("RAY_JOB_STOP_WAIT_TIME_S", "3"))
FAILED_LOG_TAIL = 20_000  # characters of a failed job's log in its message (Ray's)
SUBMISSION_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
REQUEST_FIELDS = {
    "entrypoint",
    "submission_id",
    "job_id",
    "runtime_env",
    "metadata",
    "entrypoint_num_cpus",
    "entrypoint_num_gpus",
    "entrypoint_memory",
    "entrypoint_resources",
}
MESSAGES = {
    JobStatus.PENDING: "Job has not started yet. It may be waiting for the runtime environment "
    "to be set up.",
    JobStatus.RUNNING: "Job is currently running.",
    JobStatus.SUCCEEDED: "Job finished successfully.",
    JobStatus.STOPPED: "Job was intentionally stopped.",
}


class JobRequestError(ValueError):
    """A job request that is refused (the API answers 400 with its text)."""


class JobNotFound(KeyError):
    pass


def _now_ms() -> int:
    return int(time.time() * 1000)


def new_submission_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "raysubmit_" + "".join(secrets.choice(alphabet) for _ in range(16))


def check_request(body: object) -> dict:
    """The fields of a submit request, checked; JobRequestError naming what
    is wrong otherwise. Nothing is started for a request that fails here."""
    if not isinstance(body, dict):
        raise JobRequestError("the request body must be a JSON object")
    unknown = set(body) - REQUEST_FIELDS
    if unknown:
        raise JobRequestError(
            f"unknown field(s) {sorted(unknown)} (known: {sorted(REQUEST_FIELDS)})"
        )
    entrypoint = body.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise JobRequestError(f"entrypoint must be a non-empty shell command, got {entrypoint!r}")
    submission_id = body.get("submission_id") or body.get("job_id")
    if submission_id is not None and (
        not isinstance(submission_id, str) or not SUBMISSION_ID.fullmatch(submission_id)
    ):
        raise JobRequestError(
            "submission_id must be 1 to 128 letters, digits, '_', '.' or '-', got "
            f"{submission_id!r}"
        )
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise JobRequestError(f"metadata must be an object of strings, got {metadata!r}")
    for field in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise JobRequestError(f"{field} must be a number >= 0, got {value!r}")
    resources = body.get("entrypoint_resources")
    if resources is not None and (
        not isinstance(resources, dict)
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in resources.values()
        )
    ):
        raise JobRequestError(f"entrypoint_resources must map names to numbers, got {resources!r}")
    reserved = [
        f for f in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory")
        if body.get(f)
    ] + (["entrypoint_resources"] if resources else [])  # fmt: skip
    if reserved:
        raise JobRequestError(
            f"{', '.join(reserved)}: solray runs a job's entrypoint on the head without "
            "reserving resources for it; leave these unset (the job's tasks and actors "
            "reserve their own)"
        )
    try:
        runtime_env = spec.validate(body.get("runtime_env"), "job")
    except (TypeError, ValueError, NotImplementedError) as e:
        raise JobRequestError(str(e)) from None
    for field in ("working_dir", "py_modules"):
        paths = runtime_env.get(field)
        paths = [paths] if isinstance(paths, str) else paths or []
        local = [p for p in paths if not p.startswith(spec.PACKAGE_URI)]
        if local:
            raise JobRequestError(
                f"runtime_env {field} {local[0]!r} is a path on the head: upload the folder "
                "first (the SDK and `solray job submit` do) and give its pkg:// URI"
            )
    if callable(runtime_env.get("worker_process_setup_hook")):
        raise JobRequestError("runtime_env worker_process_setup_hook must be 'module.function'")
    return {
        "entrypoint": entrypoint,
        "submission_id": submission_id,
        "runtime_env": runtime_env,
        "metadata": metadata,
    }


class JobManager:
    """The jobs of this cluster's head: started, watched, stopped here."""

    def __init__(self, control: ControlClient, state: StateClient, session_dir: str) -> None:
        # The records are written through `control`, which waits out a
        # control store restart, so a job that ends meanwhile is recorded
        # as ended once it is back; `state` reads them as list_jobs() does.
        self.control = control
        self.state = state
        self.session_dir = session_dir
        self.logs_dir = os.path.join(session_dir, "logs")
        self.agent = RuntimeEnvAgent(
            os.path.join(session_dir, "runtime_resources", "jobs"), self._fetch_package
        )
        self.running: dict[str, _Job] = {}  # submission id -> its supervision (loop-owned)

    # -- the control store ----------------------------------------------------

    async def _fetch_package(self, digest: str) -> bytes:
        found, bufs = await self.control.request(
            Msg.KV_GET, {"ns": packages.NAMESPACE, "key": digest}, raw=True
        )
        if not found:
            raise RuntimeError(f"runtime_env package {digest} is not in the cluster")
        return bufs[0]

    async def has_package(self, digest: str) -> bool:
        keys = await self.control.request(Msg.KV_KEYS, {"ns": packages.NAMESPACE, "prefix": digest})
        return digest in keys

    async def put_package(self, digest: str, data: bytes) -> None:
        await self.control.request(
            Msg.KV_PUT, {"ns": packages.NAMESPACE, "key": digest, "overwrite": False}, [data]
        )

    async def _write(self, submission_id: str, info: JobInfo, overwrite: bool = True) -> bool:
        return await self.control.request(
            Msg.KV_PUT,
            {"ns": NAMESPACE, "key": submission_id, "overwrite": overwrite},
            [json.dumps(info.to_json()).encode()],
        )

    async def get(self, submission_id: str) -> JobInfo:
        found, bufs = await self.control.request(
            Msg.KV_GET, {"ns": NAMESPACE, "key": submission_id}, raw=True
        )
        if not found:
            raise JobNotFound(submission_id)
        return JobInfo.from_json(json.loads(bufs[0]))

    async def exists(self, submission_id: str) -> bool:
        keys = await self.control.request(Msg.KV_KEYS, {"ns": NAMESPACE, "prefix": submission_id})
        return submission_id in keys

    # -- the jobs -------------------------------------------------------------

    def log_path(self, submission_id: str) -> str:
        return os.path.join(self.logs_dir, f"job-driver-{submission_id}.log")

    async def submit(self, body: object) -> str:
        request = check_request(body)
        submission_id = request["submission_id"] or new_submission_id()
        info = JobInfo(
            status=JobStatus.PENDING,
            entrypoint=request["entrypoint"],
            message=MESSAGES[JobStatus.PENDING],
            start_time=_now_ms(),
            metadata=request["metadata"],
            runtime_env=spec.public_view(request["runtime_env"]),
        )
        if not await self._write(submission_id, info, overwrite=False):
            raise JobRequestError(
                f"Job with submission_id {submission_id} already exists. Please use a "
                "different submission_id."
            )
        job = self.running[submission_id] = _Job(submission_id, info, request["runtime_env"])
        job.task = asyncio.get_running_loop().create_task(self._run(job))
        return submission_id

    async def _run(self, job: _Job) -> None:
        try:
            await self._supervise(job)
        except transport.ConnectionLost:
            pass  # the control store is gone: the cluster is stopping, the job with it
        except Exception as e:  # a log folder could not be made, ...
            logger.exception("job %s failed in its supervision", job.submission_id)
            with contextlib.suppress(Exception):  # the control store may be what is gone
                await self._finish(
                    job, JobStatus.FAILED, f"Job supervision failed: {e}", "JOB_SUPERVISOR_ERROR"
                )
        finally:
            self.running.pop(job.submission_id, None)

    async def _supervise(self, job: _Job) -> None:
        try:
            launch = await self.agent.prepare(job.runtime_env)
        except Exception as e:  # RuntimeEnvSetupError and what a package fetch raises
            await self._finish(
                job, JobStatus.FAILED, f"runtime_env setup failed: {e}", "RUNTIME_ENV_SETUP_FAILED"
            )
            return
        if job.stopping:
            await self._finish(job, JobStatus.STOPPED, MESSAGES[JobStatus.STOPPED])
            return
        env = runner.program_environment(base=services.child_env())
        env.update(launch.env_vars)
        env["PATH"] = os.pathsep.join([os.path.dirname(launch.python), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join([*launch.sys_path, env.get("PYTHONPATH", "")])
        env["RAY_ADDRESS"] = env["SOLRAY_ADDRESS"] = self.control.address
        # The driver finds the token where any driver on this host does: in
        # the head's session, under the head's temp dir.
        env[services.TEMP_DIR_ENV] = os.path.dirname(os.path.dirname(self.session_dir))
        env[JOB_CONFIG_ENV] = json.dumps(
            {
                "runtime_env": job.runtime_env,
                "metadata": {**(job.info.metadata or {}), SUBMISSION_ID_KEY: job.submission_id},
            }
        )
        os.makedirs(self.logs_dir, mode=0o700, exist_ok=True)
        with open(self.log_path(job.submission_id), "ab") as log:
            job.process = await asyncio.create_subprocess_exec(
                *_guarded(job.info.entrypoint),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=launch.cwd,
                env=env,
                start_new_session=True,
            )
        job.info.status = JobStatus.RUNNING
        job.info.message = MESSAGES[JobStatus.RUNNING]
        await self._write(job.submission_id, job.info)
        code = await job.process.wait()
        job.info.driver_exit_code = code
        if job.stopping:
            await self._finish(job, JobStatus.STOPPED, MESSAGES[JobStatus.STOPPED])
        elif code == 0:
            await self._finish(job, JobStatus.SUCCEEDED, MESSAGES[JobStatus.SUCCEEDED])
        else:
            tail = self._log_tail(job.submission_id)
            await self._finish(
                job,
                JobStatus.FAILED,
                f"Job entrypoint command failed with exit code {code}, last available logs "
                f"(truncated to {FAILED_LOG_TAIL:,} chars):\n{tail}",
                "JOB_ENTRYPOINT_COMMAND_ERROR",
            )

    def _log_tail(self, submission_id: str) -> str:
        try:
            with open(self.log_path(submission_id), "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - FAILED_LOG_TAIL))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    async def _finish(
        self, job: _Job, status: JobStatus, message: str, error_type: str | None = None
    ) -> None:
        job.info.status, job.info.message, job.info.error_type = status, message, error_type
        job.info.end_time = _now_ms()
        await self._write(job.submission_id, job.info)

    async def stop(self, submission_id: str) -> bool:
        """Stop a running job; False if it has ended already."""
        job = self.running.get(submission_id)
        if job is None:
            await self.get(submission_id)  # JobNotFound if there is no such job
            return False
        if job.stopping:
            return True
        job.stopping = True
        if job.process is None:
            return True  # not started yet: its supervision sees `stopping`
        _signal_group(job.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(job.process.wait()), STOP_GRACE_S)
        except TimeoutError:
            pass
        _signal_group(job.process.pid, signal.SIGKILL)  # what did not stop, and stragglers
        return True

    async def delete(self, submission_id: str) -> None:
        """Forget an ended job: its record and its log."""
        info = await self.get(submission_id)
        if not info.status.is_terminal():
            raise JobRequestError(
                f"Attempted to delete job with status {info.status.value}, but it is not in a "
                "terminal state (stop it first)"
            )
        await self.control.request(Msg.KV_DEL, {"ns": NAMESPACE, "key": submission_id})
        try:
            os.unlink(self.log_path(submission_id))
        except FileNotFoundError:
            pass

    async def close(self) -> None:
        """Stop every running job (the cluster is stopping)."""
        running = list(self.running)
        await asyncio.gather(*(self.stop(i) for i in running), return_exceptions=True)
        tasks = [j.task for j in self.running.values() if j.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_S)


class _Job:
    def __init__(self, submission_id: str, info: JobInfo, runtime_env: dict) -> None:
        self.submission_id = submission_id
        self.info = info
        self.runtime_env = runtime_env
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task | None = None
        self.stopping = False


GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "job_guard.py")


def _guarded(entrypoint: str) -> list[str]:
    """The command that runs `entrypoint` under its guard (job_guard.py):
    a plain script, no site packages, nothing from the working directory."""
    grace = max(0.5, STOP_GRACE_S - 1)
    return [sys.executable, "-P", "-S", GUARD, str(grace), str(os.getpid()), entrypoint]


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is gone
