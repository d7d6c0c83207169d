"""FunctionNode: `f.bind(...)` (see dag_node.py)."""

from __future__ import annotations

from typing import Any

from solray.dag.dag_node import DAGNode, Execution


class FunctionNode(DAGNode):
    """A remote function call; executing it submits the task."""

    def __init__(self, remote_function, args: tuple, kwargs: dict):
        super().__init__(args, kwargs)
        self._remote_function = remote_function  # a RemoteFunction, or one with .options()

    def _execute_impl(self, run: Execution) -> Any:
        args, kwargs = run.resolve_call(self)
        return self._remote_function.remote(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionNode({getattr(self._remote_function, '__name__', 'function')})"
