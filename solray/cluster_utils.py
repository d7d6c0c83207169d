"""`Cluster`: several nodes on this machine, for tests and experiments (Ray's
`ray.cluster_utils.Cluster`).

Every node is a real node process with its own worker pool, object store and
listening socket; `remove_node` kills one with SIGKILL, as the loss of a
machine would. All processes are children of the process that made the
Cluster and stop when it exits.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from typing import Any

from solray._private import services, transport
from solray._private.protocol import Msg


class ClusterNode:
    """One node of a Cluster."""

    def __init__(self, process: services.ServiceProcess, is_head: bool):
        self._process = process
        self.node_id: str = process.node_id
        self.unique_id = self.node_id
        self.address: str = process.address
        self.node_manager_address, _, port = process.address.rpartition(":")
        self.node_manager_port = int(port)
        self.node_ip_address = self.node_manager_address
        self.metrics_export_port: int = process.metrics_export_port
        self.is_head = is_head

    @property
    def pid(self) -> int:
        return self._process.popen.pid

    def __repr__(self) -> str:
        return f"ClusterNode({self.node_id[:8]}, {self.address}, head={self.is_head})"


class Cluster:
    def __init__(
        self,
        initialize_head: bool = False,
        connect: bool = False,
        head_node_args: dict | None = None,
        shutdown_at_exit: bool = True,
    ):
        self.session_dir = services.new_session_dir()
        self._launcher = services.Launcher(self.session_dir, os.urandom(32))
        self.address: str | None = None
        self.head_node: ClusterNode | None = None
        self.worker_nodes: set[ClusterNode] = set()
        if initialize_head:
            self.add_node(**(head_node_args or {}))
            if connect:
                self.connect()

    @property
    def token(self) -> bytes:
        return self._launcher.token

    def connect(self, **init_kwargs: Any):
        import solray

        return solray.init(address=self.address, **init_kwargs)

    def add_node(self, wait: bool = True, **node_args: Any) -> ClusterNode:
        """Start a node with init()-style arguments (num_cpus, num_gpus,
        resources, object_store_memory, object_spilling_directory, labels,
        _system_config, metrics_export_port). The first node is the head, with
        the control store."""
        from solray._private import init_options
        from solray._private.labels import validate_labels
        from solray._private.worker import (
            control_store_arguments,
            node_arguments,
            with_spilling_directory,
        )

        system_config = with_spilling_directory(
            init_options.check_system_config(node_args.pop("_system_config", None)),
            node_args.pop("object_spilling_directory", None),
        )
        args = node_arguments(
            node_args.pop("num_cpus", None),
            node_args.pop("num_gpus", None),
            node_args.pop("resources", None),
            node_args.pop("object_store_memory", None),
            system_config,
            labels=validate_labels(node_args.pop("labels", None), "add_node(labels=...)"),
        )
        metrics_port = init_options.check_port(
            "metrics_export_port", node_args.pop("metrics_export_port", None)
        )
        # Ray options solray lacks: refused by name unless "off" (dashboard_port=None).
        init_options.refuse_unsupported(
            {k: node_args.pop(k) for k in list(node_args) if k in init_options.CLUSTER_UNSUPPORTED},
            init_options.CLUSTER_UNSUPPORTED,
        )
        if node_args:
            raise TypeError(f"add_node() got unexpected arguments {sorted(node_args)}")
        if self.head_node is None:
            control = self._launcher.start_control_store(
                args=control_store_arguments(system_config)
            )
            self.address = control.address
            process = self._launcher.start_node(
                control.address,
                [*services.head_node_arguments(control), *args],
                metrics_export_port=metrics_port or 0,
            )
            node = self.head_node = ClusterNode(process, is_head=True)
            services.write_session_file(self.session_dir, node.address, self.address, self.token)
        else:
            process = self._launcher.start_node(
                self.address, args, metrics_export_port=metrics_port or 0
            )
            node = ClusterNode(process, is_head=False)
            self.worker_nodes.add(node)
        if wait:
            self._wait_for(lambda nodes: _alive(nodes, node.node_id), f"node {node.node_id}")
        return node

    def remove_node(self, node: ClusterNode, allow_graceful: bool = False) -> None:
        """Kill a node's process (SIGKILL; its workers die with it)."""
        if allow_graceful:
            node._process.popen.terminate()
            node._process.popen.wait(10)
        self._launcher.kill(node._process)
        shutil.rmtree(services.shm_dir(self.session_dir, node.node_id), ignore_errors=True)
        if node is self.head_node:
            self.head_node = None
        self.worker_nodes.discard(node)

    def wait_for_nodes(self, timeout: float = 30) -> None:
        """Wait until every node added (and not removed) is registered and alive."""
        expected = {n.node_id for n in self.list_all_nodes()}
        self._wait_for(
            lambda nodes: all(_alive(nodes, node_id) for node_id in expected),
            f"{len(expected)} nodes",
            timeout,
        )

    def list_all_nodes(self) -> list[ClusterNode]:
        return ([self.head_node] if self.head_node else []) + list(self.worker_nodes)

    def _nodes(self) -> list[dict]:
        async def query():
            conn = await transport.connect(self.address, self.token)
            try:
                return await conn.request(Msg.GET_NODES)
            finally:
                conn.close()

        return asyncio.run(query())

    def _wait_for(self, predicate, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self._nodes()):
                return
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what} to join")

    def shutdown(self) -> None:
        import solray

        if solray.is_initialized():
            solray.shutdown()
        self._launcher.stop()
        shutil.rmtree(self.session_dir, ignore_errors=True)


def _alive(nodes: list[dict], node_id: str) -> bool:
    return any(n["node_id"] == node_id and n["alive"] for n in nodes)
