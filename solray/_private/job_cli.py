"""`solray job ...` (Ray's `ray job ...`): the job SDK on the command line.

Each command is a JobSubmissionClient call; the token travels as the SDK
sends it (never on this command line). `submit` without --no-wait follows
the job's log until it ends and exits 0 only if it succeeded, as Ray's does.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys

import click

ADDRESS_HELP = (
    "The dashboard's http://HOST:PORT (it serves the job API; https:// with TLS on, checked "
    "against RAY_TLS_CA_CERT). Default: RAY_API_SERVER_ADDRESS, or RAY_ADDRESS if it is an "
    "http(s):// address, else the newest running cluster of this user on this machine."
)


def _client(address: str | None):
    from solray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, ValueError, RuntimeError, OSError) as e:
        raise click.ClickException(f"cannot reach the job API: {e}") from None


def _call(method, *args, **kwargs):
    """An SDK call whose failure is a plain CLI error."""
    try:
        return method(*args, **kwargs)
    except (RuntimeError, ConnectionError, OSError) as e:
        raise click.ClickException(str(e)) from None


def _json_option(value: str | None, option: str) -> dict | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise click.BadParameter(f"{option} is not JSON: {e}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"{option} must be a JSON object, got {value!r}")
    return parsed


def _runtime_env_file(path: str) -> dict:
    try:
        import yaml
    except ImportError:
        raise click.BadParameter(
            "--runtime-env reads YAML, which needs PyYAML (pip install pyyaml); or give the "
            "env as --runtime-env-json"
        ) from None
    try:
        with open(path) as f:
            env = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise click.BadParameter(f"--runtime-env {path}: {e}") from None
    if not isinstance(env, dict):
        raise click.BadParameter(f"--runtime-env {path} must hold a mapping, got {env!r}")
    return env


def _follow(client, submission_id: str) -> None:
    async def follow():
        async for chunk in client.tail_job_logs(submission_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    _call(asyncio.run, follow())


@click.group()
def job() -> None:
    """Submit, follow, stop and list jobs: shell commands run on the head
    (Ray's job submission). Needs the cluster token, found as for init()."""


@job.command(context_settings={"ignore_unknown_options": True})
@click.option("--address", default=None, help=ADDRESS_HELP)
@click.option("--submission-id", default=None, help="Id of the job (default: a new one).")
@click.option("--job-id", default=None, help="Deprecated name of --submission-id.")
@click.option("--runtime-env", default=None, help="A runtime_env YAML file.")
@click.option("--runtime-env-json", default=None, help="A runtime_env as JSON.")
@click.option("--metadata-json", default=None, help="Metadata kept with the job, as JSON.")
@click.option("--working-dir", default=None, help="A folder to upload and run the job in.")
@click.option(
    "--entrypoint-num-cpus", type=float, default=None, help="Refused unless 0 (see README)."
)
@click.option("--entrypoint-num-gpus", type=float, default=None, help="Refused unless 0.")
@click.option("--entrypoint-memory", type=int, default=None, help="Refused unless 0.")
@click.option("--entrypoint-resources", default=None, help="Refused unless empty (JSON).")
@click.option("--no-wait", is_flag=True, help="Return once submitted; do not follow the log.")
@click.argument("entrypoint", nargs=-1, required=True, type=click.UNPROCESSED)
def submit(
    address,
    submission_id,
    job_id,
    runtime_env,
    runtime_env_json,
    metadata_json,
    working_dir,
    entrypoint_num_cpus,
    entrypoint_num_gpus,
    entrypoint_memory,
    entrypoint_resources,
    no_wait,
    entrypoint,
) -> None:
    """Run ENTRYPOINT (a shell command, after `--`) on the head as a job.

    One argument is the command as written (`-- "python a.py && echo ok"`);
    several are quoted into one command (`-- python a.py --n 3`)."""
    if runtime_env is not None and runtime_env_json is not None:
        raise click.UsageError("give --runtime-env or --runtime-env-json, not both")
    if submission_id is not None and job_id is not None:
        raise click.UsageError("give --submission-id (or its old name --job-id), not both")
    env = (
        _runtime_env_file(runtime_env)
        if runtime_env is not None
        else _json_option(runtime_env_json, "--runtime-env-json") or {}
    )
    if working_dir is not None:
        env["working_dir"] = working_dir
    command = entrypoint[0] if len(entrypoint) == 1 else shlex.join(entrypoint)
    client = _client(address)
    try:
        submission_id = client.submit_job(
            entrypoint=command,
            submission_id=submission_id or job_id,
            runtime_env=env,
            metadata=_json_option(metadata_json, "--metadata-json"),
            entrypoint_num_cpus=entrypoint_num_cpus,
            entrypoint_num_gpus=entrypoint_num_gpus,
            entrypoint_memory=entrypoint_memory,
            entrypoint_resources=_json_option(entrypoint_resources, "--entrypoint-resources"),
        )
    except (TypeError, ValueError, NotImplementedError) as e:
        raise click.BadParameter(str(e)) from None
    except (RuntimeError, ConnectionError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Job '{submission_id}' submitted successfully")
    if no_wait:
        click.echo(f"Query its status with `solray job status {submission_id}`, its logs with "
                   f"`solray job logs {submission_id} --follow`, stop it with "
                   f"`solray job stop {submission_id}`.")  # fmt: skip
        return
    click.echo("Tailing logs until the job exits (disable with --no-wait):")
    _follow(client, submission_id)
    _finish(client, submission_id)


def _finish(client, submission_id: str) -> None:
    """Say how the job ended; exit 1 unless it succeeded."""
    info = _call(client.get_job_info, submission_id)
    status = info.status.value
    click.echo(f"Job '{submission_id}' {status.lower()}: {info.message}")
    if status != "SUCCEEDED":
        sys.exit(1)


@job.command()
@click.option("--address", default=None, help=ADDRESS_HELP)
@click.argument("submission_id")
def status(address, submission_id) -> None:
    """Print a job's status and message."""
    info = _call(_client(address).get_job_info, submission_id)
    click.echo(f"Status for job '{submission_id}': {info.status.value}")
    click.echo(f"Status message: {info.message}")


@job.command()
@click.option("--address", default=None, help=ADDRESS_HELP)
@click.option("-f", "--follow", is_flag=True, help="Follow the log until the job ends.")
@click.argument("submission_id")
def logs(address, follow, submission_id) -> None:
    """Print a job's log (stdout and stderr of its entrypoint)."""
    client = _client(address)
    if follow:
        _follow(client, submission_id)
    else:
        click.echo(_call(client.get_job_logs, submission_id), nl=False)


@job.command()
@click.option("--address", default=None, help=ADDRESS_HELP)
@click.argument("submission_id")
def stop(address, submission_id) -> None:
    """Stop a running job: SIGTERM to its processes, SIGKILL after a grace period."""
    client = _client(address)
    if _call(client.stop_job, submission_id):
        click.echo(f"Job '{submission_id}' was stopped")
    else:
        status = _call(client.get_job_status, submission_id).value
        click.echo(f"Job '{submission_id}' had already ended ({status})")


@job.command(name="list")
@click.option("--address", default=None, help=ADDRESS_HELP)
def list_jobs(address) -> None:
    """List the cluster's jobs, running and past: submitted ones, and the
    drivers no submission started (no submission id), as Ray's."""
    jobs = _call(_client(address).list_jobs)
    click.echo(f"{'SUBMISSION ID':<30}{'STATUS':<11}{'DRIVER JOB':<12}ENTRYPOINT")
    for j in sorted(jobs, key=lambda j: j.start_time or 0):
        submission_id = j.submission_id or "-"
        click.echo(f"{submission_id:<30}{j.status.value:<11}{j.job_id or '-':<12}{j.entrypoint}")


@job.command()
@click.option("--address", default=None, help=ADDRESS_HELP)
@click.argument("submission_id")
def delete(address, submission_id) -> None:
    """Forget an ended job and its log."""
    _call(_client(address).delete_job, submission_id)
    click.echo(f"Job '{submission_id}' deleted successfully")
