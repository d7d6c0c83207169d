"""`init(job_config=JobConfig(...))`: the fields solray implements do what
Ray documents; every other one is refused by name before anything starts."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

import solray
from solray.job_config import JobConfig


@pytest.fixture
def restore_sys_path(monkeypatch):
    """code_search_path goes on this process's sys.path: undo it after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in [m for m in sys.modules if m.startswith("jobcfg_")]:
        del sys.modules[name]


def test_code_search_path_loads_modules_and_functions_from_a_folder(
    leak_check, restore_sys_path, tmp_path
):
    code = tmp_path / "code"
    code.mkdir()
    (code / "jobcfg_tools.py").write_text(
        textwrap.dedent(
            """
            def triple(x):
                return 3 * x
            """
        )
    )
    solray.init(num_cpus=1, job_config=JobConfig(code_search_path=[str(code)]))

    @solray.remote
    def use_module(x):
        import jobcfg_tools  # found through the job's code search path

        return jobcfg_tools.triple(x)

    assert solray.get(use_module.remote(2)) == 6
    import jobcfg_tools  # the driver has the folder on its path too, as in Ray

    # A function of that module travels by reference: the worker loads it
    # from the folder.
    assert solray.get(solray.remote(jobcfg_tools.triple).remote(5)) == 15


def test_namespace_and_metadata(leak_check):
    config = JobConfig(ray_namespace="jobs-ns", metadata={"team": "util"})
    config.set_metadata("run", "7")
    solray.init(num_cpus=1, job_config=config)
    assert solray.get_runtime_context().namespace == "jobs-ns"
    job_id = solray.get_runtime_context().get_job_id()
    [job] = [j for j in solray.util.state.list_jobs() if j["job_id"] == job_id]
    assert job["metadata"] == {"team": "util", "run": "7"}
    assert (job["type"], job["status"], job["submission_id"]) == ("DRIVER", "RUNNING", None)
    assert job["driver_info"]["pid"] == str(os.getpid())
    solray.shutdown()
    # init(namespace=...) wins over the JobConfig's, as in Ray.
    solray.init(num_cpus=1, namespace="mine", job_config=JobConfig(ray_namespace="theirs"))
    assert solray.get_runtime_context().namespace == "mine"


@pytest.mark.parametrize(
    "config",
    [
        JobConfig(default_actor_lifetime="detached"),
        JobConfig(_client_job=True),
        JobConfig(_disable_job_level_lineage_reconstruction=True),
        JobConfig(_py_driver_sys_path=["/tmp"]),
    ],
    ids=lambda c: c._unsupported()[0],
)
def test_unsupported_fields_are_refused_by_name(leak_check, config):
    name = config._unsupported()[0]
    with pytest.raises(NotImplementedError, match=rf"JobConfig\({name}="):
        solray.init(num_cpus=1, job_config=config)
    assert not solray.is_initialized()


def test_malformed_job_config_is_refused(leak_check):
    with pytest.raises(TypeError, match="job_config must be"):
        solray.init(num_cpus=1, job_config={"ray_namespace": "x"})
    with pytest.raises(TypeError, match="metadata"):
        solray.init(num_cpus=1, job_config=JobConfig(metadata={"n": 1}))
    with pytest.raises(TypeError, match="jvm_options"):
        solray.init(num_cpus=1, job_config=JobConfig(jvm_options="-Xmx1g"))
    with pytest.raises(TypeError, match="code search path"):
        JobConfig(code_search_path="/not/a/list")
    with pytest.raises(ValueError, match="lifetime"):
        JobConfig(default_actor_lifetime="forever")
    assert not solray.is_initialized()


@pytest.mark.parametrize(
    "config",
    [JobConfig(code_search_path=["/opt/code"]), JobConfig(jvm_options=["-Xmx1g"])],
    ids=["code_search_path", "jvm_options"],
)
def test_job_settings_for_the_cluster_are_refused_through_ray_client(leak_check, config):
    # Refused before connecting: the client's files are not on the head.
    with pytest.raises(NotImplementedError, match="not available through a ray:// connection"):
        solray.init("ray://127.0.0.1:9", job_config=config)
    assert not solray.is_initialized()
