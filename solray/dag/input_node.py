"""InputNode: the DAG's input, given to `execute(...)` (see dag_node.py).

As in Ray: one value given alone is the input itself (`inp` is it, `inp[0]`
and `inp.x` index or read an attribute of it); several values, or keyword
values, make a DAGInputData, where `inp[i]` is the i-th positional value and
`inp.x` / `inp["x"]` the keyword value x. A DAG has at most one InputNode.
"""

from __future__ import annotations

from typing import Any

from solray.dag.dag_node import DAGNode, Execution


class InputNode(DAGNode):
    """The values of `execute(...)`. Use it as `with InputNode() as inp:`."""

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise ValueError(
                "InputNode takes no arguments: the input values are given to execute()"
            )
        super().__init__()
        self._attributes: dict[tuple, InputAttributeNode] = {}

    def __enter__(self) -> InputNode:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _execute_impl(self, run: Execution) -> Any:
        if run.input_node is not None and run.input_node is not self:
            raise ValueError("a DAG has at most one InputNode; this one has two")
        run.input_node = self
        if len(run.args) == 1 and not run.kwargs:
            return run.args[0]
        return DAGInputData(*run.args, **run.kwargs)

    def _reads_input(self) -> bool:
        return True

    def __getattr__(self, key: str) -> InputAttributeNode:
        if key.startswith("_"):
            return super().__getattr__(key)
        return self._attribute(key, "getattr")

    def __getitem__(self, key: int | str) -> InputAttributeNode:
        if not isinstance(key, (int, str)) or isinstance(key, bool):
            raise TypeError(f"an InputNode is indexed by an int or a str, got {key!r}")
        return self._attribute(key, "getitem")

    def _attribute(self, key, how: str) -> InputAttributeNode:
        if (key, how) not in self._attributes:
            self._attributes[(key, how)] = InputAttributeNode(self, key, how)
        return self._attributes[(key, how)]

    def __repr__(self) -> str:
        return "InputNode()"


class InputAttributeNode(DAGNode):
    """`inp[key]` or `inp.key`: part of the DAG's input."""

    def __init__(self, input_node: InputNode, key: int | str, how: str):
        super().__init__()
        self._input_node = input_node
        self._key = key
        self._how = how

    def _execute_impl(self, run: Execution) -> Any:
        value = run.value_of(self._input_node)
        if isinstance(value, DAGInputData) or self._how == "getitem":
            return value[self._key]
        return getattr(value, self._key)

    def _reads_input(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"InputNode()[{self._key!r}]"


class DAGInputData:
    """Several input values: `[i]` the i-th positional one, `[name]` (or
    `.name` through an InputNode) the keyword one."""

    def __init__(self, *args, **kwargs):
        self._args = list(args)
        self._kwargs = kwargs

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, int):
            return self._args[key]
        return self._kwargs[key]
