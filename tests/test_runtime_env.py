"""Runtime environments (Ray's `runtime_env`) on real local clusters.

Packages come from wheels and folders the tests write themselves
(`make_wheel`), never from the network; a pip that must hang is pointed at a
local HTTP server that never answers.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile

import pytest

import solray
from solray.cluster_utils import Cluster
from solray.exceptions import RuntimeEnvSetupError
from solray.runtime_env import RuntimeEnv, RuntimeEnvConfig

TIMEOUT = 120


def make_wheel(directory, name: str, version: str, files: dict[str, str]) -> str:
    """A pure-Python wheel written by hand: a zip with its .dist-info."""
    dist = f"{name}-{version}.dist-info"
    entries = dict(files)
    entries[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    entries[f"{dist}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: solray-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, text in entries.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={encoded},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    entries[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    path = os.path.join(directory, f"{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as archive:
        for entry, text in entries.items():
            archive.writestr(entry, text)
    return path


@solray.remote
def environment(*names):
    import os

    return {name: os.environ.get(name) for name in names}, os.getpid()


def test_env_vars_per_job_task_and_actor_merge_as_in_ray(ray_start_env):
    @solray.remote(runtime_env={"env_vars": {"LEVEL": "actor", "ACTOR_ONLY": "yes"}})
    class Reporter:
        def report(self):
            return solray.get(environment.remote("JOB", "LEVEL", "ACTOR_ONLY"))[0]

        def own(self):
            import os

            return {k: os.environ.get(k) for k in ("JOB", "LEVEL", "ACTOR_ONLY")}, os.getpid()

    job, job_pid = solray.get(environment.remote("JOB", "LEVEL"), timeout=TIMEOUT)
    assert job == {"JOB": "job", "LEVEL": "job"}
    task_env = {"env_vars": {"LEVEL": "task"}}
    task, task_pid = solray.get(
        environment.options(runtime_env=task_env).remote("JOB", "LEVEL"), timeout=TIMEOUT
    )
    # env_vars merge key by key with the job's (Ray's rule); the task wins on LEVEL.
    assert task == {"JOB": "job", "LEVEL": "task"}
    reporter = Reporter.remote()
    own, actor_pid = solray.get(reporter.own.remote(), timeout=TIMEOUT)
    assert own == {"JOB": "job", "LEVEL": "actor", "ACTOR_ONLY": "yes"}
    # A task the actor submits without an env inherits the actor's.
    assert solray.get(reporter.report.remote(), timeout=TIMEOUT) == own
    # Workers of different envs never share a process.
    assert len({job_pid, task_pid, actor_pid}) == 3
    again, again_pid = solray.get(
        environment.options(runtime_env=task_env).remote("LEVEL"), timeout=TIMEOUT
    )
    assert again == {"LEVEL": "task"} and again_pid != job_pid


@pytest.fixture
def ray_start_env(leak_check):
    solray.init(num_cpus=2, runtime_env={"env_vars": {"JOB": "job", "LEVEL": "job"}})
    yield
    solray.shutdown()


def test_runtime_context_shows_the_effective_env(ray_start_env, tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "helper.py").write_text("X = 1\n")

    @solray.remote(runtime_env=RuntimeEnv(working_dir=str(tmp_path / "code")))
    def effective():
        env = solray.get_runtime_context().runtime_env
        return dict(env), env.env_vars(), env.working_dir()

    env, env_vars, working_dir = solray.get(effective.remote(), timeout=TIMEOUT)
    assert env_vars == {"JOB": "job", "LEVEL": "job"}
    assert working_dir.startswith("pkg://") and env["working_dir"] == working_dir
    driver_env = solray.get_runtime_context().runtime_env
    assert isinstance(driver_env, RuntimeEnv)
    assert driver_env == {"env_vars": {"JOB": "job", "LEVEL": "job"}}


def test_working_dir_and_py_modules_reach_the_workers(ray_start, tmp_path):
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / ".git" / "HEAD").write_text("ref: main\n")
    (project / "__pycache__").mkdir()
    (project / "__pycache__" / "x.pyc").write_text("stale")
    (project / "data").mkdir()
    (project / "data" / "big.bin").write_text("excluded by the user")
    (project / "notes.log").write_text("excluded by .gitignore")
    (project / ".gitignore").write_text("*.log\n")
    (project / "model.py").write_text("def predict(x):\n    return 2 * x\n")
    (project / "config.txt").write_text("threshold=3\n")
    library = tmp_path / "libs" / "mylib"
    library.mkdir(parents=True)
    (library / "__init__.py").write_text("NAME = 'mylib from py_modules'\n")

    @solray.remote(
        runtime_env={
            "working_dir": str(project),
            "excludes": ["data/"],
            "py_modules": [str(library)],
        }
    )
    def inside():
        import os

        import model
        import mylib

        return (
            model.predict(21),
            open("config.txt").read().strip(),
            mylib.NAME,
            sorted(os.listdir(".")),
        )

    result, config, name, listing = solray.get(inside.remote(), timeout=TIMEOUT)
    assert (result, config, name) == (42, "threshold=3", "mylib from py_modules")
    # Ray's default excludes (.git, __pycache__), .gitignore, and `excludes`.
    assert listing == [".gitignore", "config.txt", "model.py"]


def test_a_working_dir_change_is_picked_up_by_the_next_job(leak_check, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        seen = []
        for release in ("one", "two"):
            (code / "version.py").write_text(f"VERSION = {release!r}\n")
            solray.init(address=cluster.address, runtime_env={"working_dir": str(code)})

            @solray.remote
            def which():
                import version

                return version.VERSION

            seen.append(solray.get(which.remote(), timeout=TIMEOUT))
            solray.shutdown()
        assert seen == ["one", "two"]
    finally:
        solray.shutdown()
        cluster.shutdown()


def test_pip_env_from_a_local_wheel_is_built_once_per_node(ray_start, tmp_path):
    wheel = make_wheel(tmp_path, "tinypkg", "0.1", {"tinypkg/__init__.py": "VALUE = 42\n"})

    @solray.remote(runtime_env={"pip": [wheel]}, max_calls=1)
    def use_package():
        import os

        import numpy  # the base environment's packages stay visible
        import tinypkg

        marker = os.path.join(os.path.dirname(os.path.dirname(__import__("sys").executable)))
        return tinypkg.VALUE, numpy.__name__, marker, os.getpid()

    value, base, venv, first_pid = solray.get(use_package.remote(), timeout=TIMEOUT)
    assert (value, base) == (42, "numpy")
    complete = os.path.join(venv, ".solray-complete")
    built = os.stat(complete).st_mtime_ns
    # max_calls=1: the next task gets a new worker, which reuses the venv.
    value, _, venv_again, second_pid = solray.get(use_package.remote(), timeout=TIMEOUT)
    assert value == 42 and venv_again == venv and second_pid != first_pid
    assert os.stat(complete).st_mtime_ns == built
    assert len(os.listdir(os.path.dirname(venv))) == 1
    with pytest.raises(ModuleNotFoundError):
        __import__("tinypkg")  # the driver's environment is untouched


def test_uv_env_from_a_local_wheel(ray_start, tmp_path):
    wheel = make_wheel(tmp_path, "uvpkg", "1.0", {"uvpkg/__init__.py": "VALUE = 'uv'\n"})

    @solray.remote(runtime_env={"uv": [wheel]})
    def use_package():
        import uvpkg

        return uvpkg.VALUE

    assert solray.get(use_package.remote(), timeout=TIMEOUT) == "uv"


def test_a_broken_requirement_raises_runtime_env_setup_error(ray_start, tmp_path):
    missing = str(tmp_path / "missing-1.0-py3-none-any.whl")

    @solray.remote(runtime_env={"pip": [missing]})
    def task():
        return "ran"

    @solray.remote(runtime_env={"pip": [missing]})
    class Actor:
        def ping(self):
            return "ran"

    with pytest.raises(RuntimeEnvSetupError) as raised:
        solray.get(task.remote(), timeout=TIMEOUT)
    assert "pip failed" in str(raised.value) and "missing-1.0-py3-none-any.whl" in str(raised.value)
    actor = Actor.remote()
    with pytest.raises(RuntimeEnvSetupError, match="pip failed"):
        solray.get(actor.ping.remote(), timeout=TIMEOUT)
    # The cluster is fine: other work still runs.
    assert solray.get(environment.remote("HOME"), timeout=TIMEOUT)[0]["HOME"]


def test_setup_timeout_seconds_bounds_the_setup(ray_start, silent_index):
    env = {
        "pip": {
            "packages": ["nothing-to-find-here"],
            "pip_install_options": ["--index-url", silent_index, "--retries", "0"],
        },
        "config": RuntimeEnvConfig(setup_timeout_seconds=2),
    }

    @solray.remote(runtime_env=env)
    def task():
        return "ran"

    with pytest.raises(RuntimeEnvSetupError, match="setup_timeout_seconds=2"):
        solray.get(task.remote(), timeout=TIMEOUT)


def _set_marker():
    import os

    os.environ["HOOKED"] = "by the setup hook"


def _broken_hook():
    raise RuntimeError("the hook is broken")


@pytest.mark.parametrize(
    "ray_start", [{"runtime_env": {"worker_process_setup_hook": _set_marker}}], indirect=True
)
def test_worker_process_setup_hook_runs_in_every_worker(ray_start):
    result, _ = solray.get(environment.remote("HOOKED"), timeout=TIMEOUT)
    assert result == {"HOOKED": "by the setup hook"}

    @solray.remote
    def nested():
        return solray.get(environment.remote("HOOKED"), timeout=TIMEOUT)

    # A task's own task inherits the job's env itself (the same workers'
    # pool), not a copy that names the hook without its code.
    inner, _ = solray.get(nested.remote(), timeout=TIMEOUT)
    assert inner == {"HOOKED": "by the setup hook"}
    env = solray.get_runtime_context().runtime_env
    assert env["worker_process_setup_hook"].endswith("_set_marker")


def test_a_failing_setup_hook_raises_runtime_env_setup_error(leak_check):
    solray.init(num_cpus=1, runtime_env={"worker_process_setup_hook": _broken_hook})
    try:
        with pytest.raises(RuntimeEnvSetupError, match="the hook is broken"):
            solray.get(environment.remote("HOME"), timeout=TIMEOUT)
    finally:
        solray.shutdown()


def test_job_config_runtime_env_is_the_jobs_env(leak_check):
    from solray.job_config import JobConfig

    solray.init(num_cpus=1, job_config=JobConfig(runtime_env={"env_vars": {"FROM": "config"}}))
    try:
        assert solray.get(environment.remote("FROM"), timeout=TIMEOUT)[0] == {"FROM": "config"}
    finally:
        solray.shutdown()


@pytest.mark.parametrize(
    "env, error, words",
    [
        ({"env_vars": {"A": 1}}, TypeError, "dict of str to str"),
        ({"pips": ["x"]}, ValueError, "unknown runtime_env field 'pips'"),
        ({"conda": "base"}, NotImplementedError, "conda"),
        ({"container": {"image": "x"}}, NotImplementedError, "container"),
        ({"pip": ["a"], "uv": ["b"]}, ValueError, "pip or uv, not both"),
        ({"working_dir": "/no/such/folder"}, ValueError, "not an existing folder"),
        ({"working_dir": "s3://bucket/code.zip"}, NotImplementedError, "remote URIs"),
        ({"pip": {"packages": ["x"], "pip_version": "==23.0"}}, NotImplementedError, "pip_version"),
        ({"config": {"setup_timeout_seconds": 0}}, ValueError, "setup_timeout_seconds"),
        ({"excludes": ["*.log"]}, ValueError, "applies to a working_dir"),
        ("pip", TypeError, "must be a dict"),
    ],
)
def test_bad_runtime_envs_are_refused_where_given(env, error, words):
    with pytest.raises(error, match=words):
        solray.remote(runtime_env=env)(lambda: None)


def test_a_working_dir_over_the_size_limit_is_refused(ray_start, tmp_path):
    from solray._private.runtime_env import packages

    (tmp_path / "big.bin").write_bytes(b"")
    os.truncate(tmp_path / "big.bin", packages.MAX_PACKAGE_BYTES + 1)  # sparse: no real bytes

    @solray.remote(runtime_env={"working_dir": str(tmp_path)})
    def task():
        return 1

    with pytest.raises(ValueError, match="too large"):
        task.remote()
