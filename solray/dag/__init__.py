"""Ray's DAG API: `.bind()`, InputNode, MultiOutputNode, `execute()`.
How a DAG runs is in dag_node.py."""

from solray.dag.class_node import ClassMethodNode, ClassNode
from solray.dag.dag_node import DAGNode
from solray.dag.function_node import FunctionNode
from solray.dag.input_node import DAGInputData, InputAttributeNode, InputNode
from solray.dag.output_node import MultiOutputNode

__all__ = [
    "ClassMethodNode",
    "ClassNode",
    "DAGInputData",
    "DAGNode",
    "FunctionNode",
    "InputAttributeNode",
    "InputNode",
    "MultiOutputNode",
]
