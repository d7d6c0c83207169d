"""The DAG API's nodes and how a DAG runs (Ray's `ray.dag`).

`.bind()` records a call instead of making it: on a remote function it gives
a FunctionNode, on an actor class a ClassNode, on an actor method (of a
ClassNode or of a live handle) a ClassMethodNode. Nodes take other nodes as
arguments, at the top level or inside lists, tuples and dicts.
`dag.execute(*args, **kwargs)` submits the calls, each node once, its
arguments first, and returns what the root's `.remote()` would: refs (a
list of them for a MultiOutputNode), or a handle for a ClassNode. Nothing
waits: a node's result goes to the next node as a ref, so the tasks run as
soon as their inputs exist, as with hand-written `.remote()` chains.

One execution is an `Execution`: the memo of what each node gave in this
run (so a node used twice runs once) and the input values. Two rules come
from Ray: calls bound on one ClassNode run in the order they were bound,
whether or not the root uses them all (each remembers the one bound before
it); and a ClassNode creates its actor at its first execution and every
later execution reuses it (its constructor arguments are evaluated then,
once).
"""

from __future__ import annotations

from typing import Any


class DAGNode:
    """A recorded call: its arguments may hold other nodes."""

    def __init__(self, args: tuple = (), kwargs: dict | None = None):
        self._bound_args = tuple(args)
        self._bound_kwargs = dict(kwargs or {})

    def execute(self, *args, **kwargs) -> Any:
        """Submit the DAG ending at this node with these inputs (read by its
        InputNode) and return this node's result."""
        run = Execution(args, kwargs)
        result = run.value_of(self)
        if (args or kwargs) and run.input_node is None:
            raise TypeError(
                "execute() got input values, but this DAG has no InputNode to read them "
                "(bind with `with InputNode() as inp:`)"
            )
        return result

    def get_args(self) -> tuple:
        return self._bound_args

    def get_kwargs(self) -> dict:
        return dict(self._bound_kwargs)

    def _execute_impl(self, run: Execution) -> Any:
        raise NotImplementedError

    def _child_nodes(self) -> list[DAGNode]:
        return list(_nodes_in((self._bound_args, self._bound_kwargs)))

    def _reads_input(self) -> bool:
        """Whether this node's result depends on the DAG's input."""
        return any(child._reads_input() for child in self._child_nodes())

    def __getattr__(self, name: str):
        if name == "bind":
            raise AttributeError(f".bind() cannot be used again on {type(self).__name__}")
        if name == "remote":
            raise AttributeError(
                f".remote() cannot be used on {type(self).__name__}: to run the DAG that "
                "ends here, use .execute()"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class Execution:
    """One run of a DAG: the input values and each node's result so far."""

    def __init__(self, args: tuple, kwargs: dict):
        self.args = args
        self.kwargs = kwargs
        self.input_node = None
        self._results: dict[int, Any] = {}
        self._nodes: list[DAGNode] = []  # keeps ids valid while the memo lives

    def value_of(self, node: DAGNode) -> Any:
        key = id(node)
        if key not in self._results:
            self._results[key] = node._execute_impl(self)
            self._nodes.append(node)
        return self._results[key]

    def resolve(self, value: Any) -> Any:
        """`value` with every node inside it replaced by its result."""
        if isinstance(value, DAGNode):
            return self.value_of(value)
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    def resolve_call(self, node: DAGNode) -> tuple[tuple, dict]:
        return self.resolve(node._bound_args), self.resolve(node._bound_kwargs)


def _nodes_in(value: Any):
    if isinstance(value, DAGNode):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _nodes_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _nodes_in(v)
