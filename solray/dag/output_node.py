"""MultiOutputNode: a DAG with several results (see dag_node.py)."""

from __future__ import annotations

from typing import Any

from solray.dag.dag_node import DAGNode, Execution


class MultiOutputNode(DAGNode):
    """`execute()` returns the list of its nodes' results."""

    def __init__(self, outputs: list | tuple):
        if not isinstance(outputs, (list, tuple)):
            raise TypeError(f"MultiOutputNode takes a list of nodes, got {outputs!r}")
        super().__init__((list(outputs),))

    def _execute_impl(self, run: Execution) -> Any:
        return run.resolve(self._bound_args[0])

    def __repr__(self) -> str:
        return f"MultiOutputNode({len(self._bound_args[0])})"
