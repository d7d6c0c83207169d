"""Jobs (Ray's job submission), as a user meets them: a real cluster with
its dashboard, the SDK (JobSubmissionClient) and `solray job` talking HTTP
to it, entrypoints that are real processes running real drivers.

Every job here is a shell command on the head whose driver joins the
cluster with a bare init(); what a test checks is what the user sees
(status, message, logs, files the job wrote) and, for stop, that the
processes are gone.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal

import psutil
import pytest
from conftest import assert_token_hidden, wait_for_condition, wait_for_file
from test_cluster_cli import cli_env, solray_cli, start_head, stop_daemons

import solray
from solray.job_submission import JobStatus, JobSubmissionClient

JOB_TIMEOUT_S = 90

DRIVER = """
import os, sys
import ray
import helper  # from the uploaded working_dir

ray.init()

@ray.remote
def square(x):
    import helper  # the job's working_dir is the task's too
    return helper.SCALE * x * x

print("squares", ray.get([square.remote(i) for i in range(4)]), flush=True)
print("greeting", helper.greet(), file=sys.stderr, flush=True)
"""

LONG_DRIVER = """
import os, sys, time
import ray

ray.init()

@ray.remote
class Holder:
    def pid(self):
        return os.getpid()

@ray.remote
def sleeper(marks):
    with open(os.path.join(marks, "task.pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)

holder = Holder.remote()
actor_pid = ray.get(holder.pid.remote())
task = sleeper.remote(sys.argv[1])
with open(os.path.join(sys.argv[1], "actor.pid"), "w") as f:
    f.write(str(actor_pid))
with open(os.path.join(sys.argv[1], "driver.pid"), "w") as f:
    f.write(str(os.getpid()))
time.sleep(600)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A cluster with its dashboard, and an SDK client of its job API."""
    context = solray.init(num_cpus=2, dashboard_port=0)
    try:
        url = f"http://{context.dashboard_url}"
        with open(os.path.join(context["session_dir"], "token")) as f:
            token = f.read().strip()
        yield JobSubmissionClient(url), url, token, context["session_dir"]
    finally:
        solray.shutdown()
    me = psutil.Process()
    wait_for_condition(lambda: not me.children(recursive=True), timeout=15)


def working_dir(path) -> str:
    path.mkdir()
    (path / "helper.py").write_text("SCALE = 10\n\ndef greet():\n    return 'hello from helper'\n")
    (path / "script.py").write_text(DRIVER)
    (path / "long.py").write_text(LONG_DRIVER)
    return str(path)


def wait_for_status(client, submission_id, wanted: set[JobStatus]) -> JobStatus:
    found = {}

    def reached():
        found["status"] = client.get_job_status(submission_id)
        return found["status"] in wanted

    wait_for_condition(
        reached, timeout=JOB_TIMEOUT_S, interval=0.1, message=lambda: f"job is {found}"
    )
    return found["status"]


def read_pid(path) -> int:
    wait_for_file(str(path), timeout=JOB_TIMEOUT_S)
    wait_for_condition(lambda: path.read_text().strip() != "")
    return int(path.read_text())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def http_request(url: str, method: str, path: str, body: bytes | None = None, headers=None):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_a_cluster_that_stops_stops_its_running_jobs(leak_check, tmp_path):
    """A job's processes are in a group of their own, so they are not
    reached by what stops the cluster's processes: the dashboard stops them.
    (First in the module: its own cluster, before the module's starts.)"""
    context = solray.init(num_cpus=1, dashboard_port=0)
    client = JobSubmissionClient(f"http://{context.dashboard_url}")
    pid_file = tmp_path / "sleeper.pid"
    client.submit_job(entrypoint=f"sleep 600 & echo $! > {pid_file}; wait")
    sleeper = read_pid(pid_file)
    assert not gone(sleeper)
    solray.shutdown()
    wait_for_condition(lambda: gone(sleeper), timeout=15, message="the job outlived its cluster")


def test_jobs_end_with_their_dashboard_when_it_is_killed(leak_check, tmp_path):
    """A SIGKILLed dashboard cannot stop its jobs; their guard does, so no
    job goes on orphaned, unreported and unstoppable."""
    context = solray.init(num_cpus=1, dashboard_port=0)
    client = JobSubmissionClient(f"http://{context.dashboard_url}")
    pid_file = tmp_path / "sleeper.pid"
    client.submit_job(entrypoint=f"sleep 600 & echo $! > {pid_file}; wait")
    sleeper = read_pid(pid_file)
    (dashboard,) = [
        p
        for p in psutil.Process().children(recursive=True)
        if "solray.dashboard.server" in " ".join(p.cmdline())
    ]
    dashboard.kill()
    wait_for_condition(lambda: gone(sleeper), timeout=15, message="the job outlived its dashboard")
    solray.shutdown()


def test_a_job_runs_tasks_in_its_working_dir_and_keeps_its_log(cluster, tmp_path):
    client, url, token, session_dir = cluster
    submission_id = client.submit_job(
        entrypoint="python script.py",
        runtime_env={"working_dir": working_dir(tmp_path / "app"), "env_vars": {"A": "1"}},
        metadata={"owner": "tests"},
    )
    assert submission_id.startswith("raysubmit_")
    assert wait_for_status(client, submission_id, {JobStatus.SUCCEEDED, JobStatus.FAILED}) == (
        JobStatus.SUCCEEDED
    ), client.get_job_logs(submission_id)
    logs = client.get_job_logs(submission_id)
    assert "squares [0, 10, 40, 90]" in logs
    assert "greeting hello from helper" in logs  # stderr too
    info = client.get_job_info(submission_id)
    assert info.message == "Job finished successfully."
    assert info.driver_exit_code == 0 and info.end_time >= info.start_time
    assert info.metadata == {"owner": "tests"}
    assert info.runtime_env["working_dir"].startswith("pkg://")
    assert info.job_id is not None  # the driver it started, which names the job too (Ray's)
    assert client.get_job_info(info.job_id).submission_id == submission_id
    assert submission_id in [j.submission_id for j in client.list_jobs()]
    # The log is a file of the session, kept after the job.
    assert os.path.isfile(os.path.join(session_dir, "logs", f"job-driver-{submission_id}.log"))

    # The dashboard's jobs view shows it (to a program holding the token).
    status, text = http_request(
        url, "GET", "/api/jobs", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200
    shown = {j["submission_id"]: j for j in json.loads(text)["jobs"]}
    assert shown[submission_id]["status"] == "SUCCEEDED"
    assert shown[submission_id]["entrypoint"] == "python script.py"

    # list_jobs() (and `solray list jobs`), as Ray's: the submission, linked
    # to the driver it started, and the drivers no submission started.
    listed = solray.util.state.list_jobs(limit=10_000)
    [submitted] = [j for j in listed if j["submission_id"] == submission_id]
    assert (submitted["type"], submitted["status"]) == ("SUBMISSION", "SUCCEEDED")
    assert submitted["job_id"] == info.job_id and submitted["driver_info"]["pid"]
    assert submitted["entrypoint"] == "python script.py"
    assert info.job_id not in [j["job_id"] for j in listed if j["type"] == "DRIVER"]
    me = solray.get_runtime_context().get_job_id()
    [driver] = [j for j in listed if j["job_id"] == me]
    assert (driver["type"], driver["status"], driver["submission_id"]) == (
        "DRIVER",
        "RUNNING",
        None,
    )
    assert driver["driver_info"]["pid"] == str(os.getpid())


def test_ray_job_submission_is_the_sdk():
    """A Ray program's `from ray.job_submission import ...` gets solray's."""
    out = solray_cli(
        "run", "-c",
        "from ray.job_submission import JobSubmissionClient, JobStatus, JobDetails\n"
        "import solray.job_submission as s\n"
        "assert JobSubmissionClient is s.JobSubmissionClient\n"
        "print(sorted(JobStatus.__members__))",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['FAILED', 'PENDING', 'RUNNING', 'STOPPED', 'SUCCEEDED']"


def test_a_failing_entrypoint_fails_with_its_exit_code(cluster):
    client = cluster[0]
    submission_id = client.submit_job(entrypoint="echo about to fail; exit 3")
    assert wait_for_status(client, submission_id, {JobStatus.FAILED, JobStatus.SUCCEEDED}) == (
        JobStatus.FAILED
    )
    info = client.get_job_info(submission_id)
    assert "exit code 3" in info.message and "about to fail" in info.message
    assert info.driver_exit_code == 3
    assert info.error_type == "JOB_ENTRYPOINT_COMMAND_ERROR"


def test_stopping_a_job_ends_its_processes_tasks_and_actors(cluster, tmp_path):
    client, _, token, _ = cluster
    app = working_dir(tmp_path / "app")
    marks = tmp_path / "marks"
    marks.mkdir()
    # A background process in the job's group, and the driver.
    submission_id = client.submit_job(
        entrypoint=f"sleep 600 & echo $! > {marks}/background.pid; python long.py {marks}",
        runtime_env={"working_dir": app},
    )
    driver, actor = read_pid(marks / "driver.pid"), read_pid(marks / "actor.pid")
    task, background = read_pid(marks / "task.pid"), read_pid(marks / "background.pid")
    assert client.get_job_status(submission_id) == JobStatus.RUNNING
    # The driver got no token: not in its environment nor on its command line.
    assert assert_token_hidden([psutil.Process(driver)], [bytes.fromhex(token)]) == 1
    assert client.stop_job(submission_id) is True
    assert client.get_job_status(submission_id) == JobStatus.STOPPED
    for pid in (driver, background, actor, task):
        wait_for_condition(lambda pid=pid: gone(pid), timeout=30, message=f"pid {pid} lives")
    info = client.get_job_info(submission_id)
    assert info.message == "Job was intentionally stopped."
    assert info.driver_exit_code == -signal.SIGTERM
    assert client.stop_job(submission_id) is False  # already ended


def test_list_and_delete(cluster):
    client, _, _, session_dir = cluster
    running = client.submit_job(entrypoint="sleep 600", submission_id="to-delete-running")
    wait_for_status(client, running, {JobStatus.RUNNING})
    with pytest.raises(RuntimeError, match="status code 400.*not in a terminal state"):
        client.delete_job(running)
    client.stop_job(running)
    done = client.submit_job(entrypoint="echo done", submission_id="to-delete-done")
    wait_for_status(client, done, {JobStatus.SUCCEEDED})
    with pytest.raises(RuntimeError, match="already exists"):
        client.submit_job(entrypoint="echo again", submission_id="to-delete-done")
    listed = {j.submission_id: j.status for j in client.list_jobs()}
    assert listed[running] == JobStatus.STOPPED and listed[done] == JobStatus.SUCCEEDED
    for submission_id in (running, done):
        assert client.delete_job(submission_id) is True
        with pytest.raises(RuntimeError, match="status code 404"):
            client.get_job_info(submission_id)
        assert not os.path.exists(
            os.path.join(session_dir, "logs", f"job-driver-{submission_id}.log")
        )
    assert not {running, done} & {j.submission_id for j in client.list_jobs()}


def test_tail_job_logs_follows_until_the_end(cluster):
    import asyncio

    client = cluster[0]
    submission_id = client.submit_job(entrypoint="for i in 1 2 3; do echo line $i; sleep 0.2; done")

    async def follow():
        return "".join([chunk async for chunk in client.tail_job_logs(submission_id)])

    assert asyncio.run(follow()) == "line 1\nline 2\nline 3\n"
    assert client.get_job_status(submission_id) == JobStatus.SUCCEEDED


def test_requests_without_the_token_or_with_bad_bodies_are_refused(cluster, tmp_path):
    client, url, token, _ = cluster
    before = {j.submission_id for j in client.list_jobs()}
    marker = tmp_path / "ran"
    body = json.dumps({"entrypoint": f"touch {marker}"}).encode()
    json_type = {"Content-Type": "application/json"}
    wrong = "ab" * 32
    for headers in ({}, {"Authorization": f"Bearer {wrong}"}, {"Authorization": token}):
        for method, path in (
            ("POST", "/api/jobs/"),
            ("GET", "/api/jobs/"),
            ("GET", "/api/version"),
        ):
            status, text = http_request(url, method, path, body, {**json_type, **headers})
            assert status == 401, (method, path, headers, text)
            assert "entrypoint" not in text
    right = {**json_type, "Authorization": f"Bearer {token}"}
    for bad in (
        b"{not json",
        b"[1, 2]",
        json.dumps({"entrypoint": 3}).encode(),
        json.dumps({"entrypoint": f"touch {marker}", "surprise": 1}).encode(),
        json.dumps({"entrypoint": f"touch {marker}", "submission_id": "../x"}).encode(),
        json.dumps({"entrypoint": f"touch {marker}", "runtime_env": {"conda": "x"}}).encode(),
        json.dumps({"entrypoint": f"touch {marker}", "runtime_env": {"working_dir": "/"}}).encode(),
        json.dumps({"entrypoint": f"touch {marker}", "entrypoint_num_cpus": 1}).encode(),
    ):
        status, text = http_request(url, "POST", "/api/jobs/", bad, right)
        assert status == 400, (bad, status, text)
    status, _ = http_request(url, "PUT", "/api/packages/pkg/" + "0" * 64, b"not those bytes", right)
    assert status == 400
    # A job submitted after the refused ones runs and ends: had any refused
    # one started, its marker would exist by now.
    after = client.submit_job(entrypoint=f"touch {marker}.after")
    assert wait_for_status(client, after, {JobStatus.SUCCEEDED, JobStatus.FAILED}) == (
        JobStatus.SUCCEEDED
    )
    assert (tmp_path / "ran.after").exists() and not marker.exists()
    assert {j.submission_id for j in client.list_jobs()} == before | {after}


def test_a_runtime_env_file(cluster, tmp_path):
    """`--runtime-env FILE.yaml` (Ray's): read with PyYAML, or a clear error
    naming it where PyYAML is not installed, and then nothing is submitted."""
    client, url, _, _ = cluster
    env_file = tmp_path / "env.yaml"
    env_file.write_text("env_vars:\n  GREETING: hello from yaml\n")
    before = {j.submission_id for j in client.list_jobs()}
    out = solray_cli(
        "job", "submit", "--address", url, "--runtime-env", str(env_file), "--",
        'echo "$GREETING"', env=dict(os.environ),
    )  # fmt: skip
    try:
        import yaml  # noqa: F401
    except ImportError:
        assert out.returncode == 2 and "PyYAML" in out.stderr
        assert {j.submission_id for j in client.list_jobs()} == before
    else:
        assert out.returncode == 0, out.stderr
        assert "hello from yaml" in out.stdout


def test_the_sdk_refuses_what_it_cannot_honour(cluster, monkeypatch):
    client, url, _, _ = cluster
    for name in ("SOLRAY_TOKEN", "SOLRAY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    # No token is sent to a dashboard none of this user's sessions names.
    with pytest.raises(ConnectionError, match="No token for the dashboard at http://127.0.0.2:9"):
        JobSubmissionClient("http://127.0.0.2:9")
    with pytest.raises(RuntimeError, match="without reserving resources"):
        client.submit_job(entrypoint="echo hi", entrypoint_num_gpus=1)
    with pytest.raises(ValueError, match="unknown runtime_env field"):
        client.submit_job(entrypoint="echo hi", runtime_env={"nope": 1})
    with pytest.raises(NotImplementedError, match="create_cluster_if_needed"):
        JobSubmissionClient(url, create_cluster_if_needed=True)


def test_the_cli_against_a_started_head(tmp_path):
    """`solray start --head`, then `solray job submit/status/logs/list/stop/
    delete` finding the head and its token as any command does. (The head's
    processes are daemons, not this process's children: stop_daemons checks
    that they, the jobs' processes among them, and their stores are gone.)"""
    temp_dir = str(tmp_path / "head")
    app = working_dir(tmp_path / "app")
    env = dict(cli_env(), RAY_TMPDIR=temp_dir)  # the head's registry; no token given
    try:
        head = start_head("--temp-dir", temp_dir, "--dashboard-port", "0", "--num-cpus", "2")
        assert head.returncode == 0, head.stderr
        url = "http://" + re.search(r"View the dashboard at http://(\S+)", head.stdout).group(1)

        submitted = solray_cli(
            "job", "submit", "--no-wait", "--working-dir", app, "--", "python", "script.py",
            env=env,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        submission_id = re.search(r"Job '(\S+)' submitted", submitted.stdout).group(1)
        follow = solray_cli("job", "logs", "--follow", submission_id, env=env)
        assert "squares [0, 10, 40, 90]" in follow.stdout, follow.stderr
        status = solray_cli("job", "status", "--address", url, submission_id, env=env)
        assert f"Status for job '{submission_id}': SUCCEEDED" in status.stdout, status.stderr

        # Waiting (the default): the log, then the outcome and the exit status.
        failed = solray_cli("job", "submit", "--", "echo out; exit 4", env=env)
        assert failed.returncode == 1
        assert "out\n" in failed.stdout and "exit code 4" in failed.stdout

        long = solray_cli(
            "job", "submit", "--no-wait", "--submission-id", "long-one", "--", "sleep 600", env=env
        )
        assert long.returncode == 0, long.stderr
        wait_for_condition(
            lambda: "RUNNING" in solray_cli("job", "status", "long-one", env=env).stdout
        )
        stopped = solray_cli("job", "stop", "long-one", env=env)
        assert "was stopped" in stopped.stdout, stopped.stderr
        listed = solray_cli("job", "list", env=env).stdout
        assert re.search(rf"{submission_id}\s+SUCCEEDED", listed)
        assert re.search(r"long-one\s+STOPPED", listed)
        deleted = solray_cli("job", "delete", "long-one", env=env)
        assert (
            deleted.returncode == 0 and "long-one" not in solray_cli("job", "list", env=env).stdout
        )
        missing = solray_cli("job", "status", "long-one", env=env)
        assert missing.returncode != 0 and "404" in missing.stderr
    finally:
        stop_daemons(temp_dir)
