"""init()'s options: each does what Ray documents, or is refused by name.

A refused option must fail before anything starts (the leak check sees no
process), and its "off" value must be accepted, since Ray programs pass them.
"""

from __future__ import annotations

import logging

import pytest
from conftest import logged, solray_log, wait_for_condition

import solray
from solray._private import init_options
from solray.cluster_utils import Cluster

# Ray options solray lacks, each with a value that asks for the missing thing.
REFUSED = {
    "local_mode": True,
    "logging_config": object(),
    "storage": "/tmp/storage",
    "enable_resource_isolation": True,
    "cgroup_path": "/sys/fs/cgroup/ray",
    "system_reserved_cpu": 1.0,
    "system_reserved_memory": 1 << 30,
    "proxy_server_url": "http://proxy:8000",
    "_redis_max_memory": 1 << 30,
    "_redis_password": "secret",
    "_plasma_directory": "/tmp",
    "_driver_object_store_memory": 1 << 30,
    "_tracing_startup_hook": "my.module:setup",
}


def test_every_unsupported_option_is_tested():
    assert set(REFUSED) == set(init_options.UNSUPPORTED)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_option_is_refused_by_name(leak_check, name):
    with pytest.raises(NotImplementedError, match=rf"init\({name}="):
        solray.init(num_cpus=1, **{name: REFUSED[name]})
    assert not solray.is_initialized()


def test_local_mode_refusal_says_what_to_do_instead(leak_check):
    with pytest.raises(NotImplementedError, match="local_mode") as error:
        solray.init(local_mode=True)
    assert "num_cpus=1" in str(error.value)
    assert not solray.is_initialized()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"no_such_option": 1}, TypeError, "no_such_option"),
        ({"_system_config": {"no_such_setting": 1}}, ValueError, "no_such_setting"),
        ({"_system_config": {"memory_usage_threshold": 1.5}}, ValueError, "memory_usage_threshold"),
        ({"_system_config": {"heartbeat_timeout_s": "10"}}, ValueError, "heartbeat_timeout_s"),
        ({"_system_config": {"memory_monitor_refresh_ms": 2.5}}, ValueError, "refresh_ms"),
        ({"_system_config": {"object_spilling_directory": 3}}, ValueError, "spilling_directory"),
        ({"_system_config": [("heartbeat_timeout_s", 1)]}, TypeError, "_system_config"),
        ({"logging_level": "loud"}, ValueError, "logging_level"),
        ({"logging_format": "%(nonsense"}, ValueError, "logging_format"),
        ({"log_to_driver": "yes"}, TypeError, "log_to_driver"),
        ({"ignore_reinit_error": 1}, TypeError, "ignore_reinit_error"),
        ({"namespace": ""}, ValueError, "namespace"),
        ({"_node_ip_address": "localhost:80"}, ValueError, "_node_ip_address"),
        ({"_metrics_export_port": 70000}, ValueError, "_metrics_export_port"),
        ({"_metrics_export_port": "8080"}, ValueError, "_metrics_export_port"),
        ({"_node_ip_address": "192.0.2.1"}, ValueError, "_node_ip_address"),  # not ours
        ({"_memory": -1}, ValueError, "_memory"),
        ({"_node_name": ""}, ValueError, "_node_name"),
        ({"include_dashboard": "yes"}, TypeError, "include_dashboard"),
        ({"dashboard_port": 70000}, ValueError, "dashboard_port"),
        ({"dashboard_host": "dashboard.example"}, ValueError, "dashboard_host"),
        ({"include_dashboard": False, "dashboard_port": 8265}, ValueError, "include_dashboard"),
    ],
    ids=lambda value: repr(value) if isinstance(value, dict) else None,
)
def test_invalid_option_values_are_refused(leak_check, kwargs, error, match):
    with pytest.raises(error, match=match):
        solray.init(num_cpus=1, **kwargs)
    assert not solray.is_initialized()


def test_off_values_of_unsupported_options_are_accepted(leak_check):
    solray.init(
        num_cpus=1,
        local_mode=False,
        include_dashboard=False,
        dashboard_host="127.0.0.1",
        dashboard_port=None,
        runtime_env={},
        job_config=None,
        labels={},
        _enable_object_reconstruction=True,
        _skip_env_hook=True,
    )
    assert solray.get(solray.put("up")) == "up"


def test_node_name_memory_and_ip_address(leak_check):
    """`_node_name` names the node in nodes(), `_memory` is its `memory`
    resource, `_node_ip_address` is where the cluster listens."""
    solray.init(num_cpus=1, _node_name="alpha", _memory=3 << 30, _node_ip_address="127.0.0.2")
    [node] = solray.nodes()
    assert node["NodeName"] == "alpha"
    assert node["NodeManagerAddress"] == "127.0.0.2"
    assert solray.cluster_resources()["memory"] == 3 << 30

    @solray.remote(memory=2 << 30)
    def where():
        return solray.get_runtime_context().get_node_id()

    assert solray.get(where.remote(), timeout=60) == node["NodeID"]


def test_address_local_starts_a_new_cluster(leak_check, monkeypatch):
    """ "local" starts a cluster even where SOLRAY_ADDRESS names another."""
    monkeypatch.setenv("SOLRAY_ADDRESS", "127.0.0.1:1")
    context = solray.init(address="local", num_cpus=1)
    assert context["address"] != "127.0.0.1:1"
    assert solray.get(solray.put(7)) == 7


def test_logging_level_and_format_configure_the_driver_logger(leak_check, capfd):
    """As Ray configures its "ray" logger: solray's warnings in the driver
    (here: a task no node can ever run) use logging_format."""
    solray.init(
        num_cpus=1, logging_level="info", logging_format="SOLRAY-LOG %(levelname)s %(message)s"
    )
    assert logging.getLogger("solray").level == logging.INFO

    @solray.remote(resources={"unobtainium": 1})
    def never():
        return 0

    with solray_log() as records:
        never.remote()
        wait_for_condition(
            lambda: logged(records, "unobtainium"), timeout=30, message="no warning logged"
        )
    err = capfd.readouterr().err
    assert "SOLRAY-LOG WARNING" in err and "unobtainium" in err, err


def test_configure_logging_false_leaves_the_logger_alone(leak_check):
    logger = logging.getLogger("solray")
    logger.setLevel(logging.CRITICAL)
    try:
        solray.init(num_cpus=1, configure_logging=False, logging_level="debug")
        assert logger.level == logging.CRITICAL
    finally:
        solray.shutdown()
        logger.setLevel(logging.WARNING)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_cpus": 0},
        {"resources": {"custom": 1}},
        {"_system_config": {"heartbeat_timeout_s": 5}},
        {"_memory": 1 << 30},
        {"_node_name": "mine"},
    ],
    ids=lambda kwargs: next(iter(kwargs)),
)
def test_new_node_options_are_refused_when_connecting(leak_check, kwargs):
    """They would configure a node, and joining a cluster starts none."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            solray.init(address=cluster.address, **kwargs)
        assert not solray.is_initialized()
    finally:
        cluster.shutdown()


def test_cluster_add_node_checks_system_config_and_refuses_unsupported(leak_check):
    cluster = Cluster()
    try:
        with pytest.raises(ValueError, match="no_such_setting"):
            cluster.add_node(num_cpus=1, _system_config={"no_such_setting": 1})
        with pytest.raises(NotImplementedError, match="dashboard_port"):
            cluster.add_node(num_cpus=1, dashboard_port=8265)
        assert cluster.head_node is None
        cluster.add_node(num_cpus=1, dashboard_port=None)
        assert cluster.head_node is not None
    finally:
        cluster.shutdown()
