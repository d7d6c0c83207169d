"""ClassNode and ClassMethodNode: `Actor.bind(...)`, `node.method.bind(...)`
and `handle.method.bind(...)` (see dag_node.py for the rules)."""

from __future__ import annotations

from typing import Any

from solray.dag.dag_node import DAGNode, Execution


class ClassNode(DAGNode):
    """An actor to create: at the DAG's first execution, then reused."""

    def __init__(self, actor_class, args: tuple, kwargs: dict):
        super().__init__(args, kwargs)
        self._actor_class = actor_class  # an ActorClass, or one with .options()
        self._handle = None
        self._last_call: ClassMethodNode | None = None
        if any(n._reads_input() for n in self._child_nodes()):
            raise ValueError(
                "an InputNode cannot be an argument of an actor's constructor: the actor "
                "is created once, and the DAG's input changes with every execute()"
            )

    def _execute_impl(self, run: Execution) -> Any:
        if self._handle is None:
            args, kwargs = run.resolve_call(self)
            self._handle = self._actor_class.remote(*args, **kwargs)
        return self._handle

    def __getattr__(self, name: str) -> UnboundMethod:
        if name.startswith("_"):
            return super().__getattr__(name)
        methods = _actor_class_of(self._actor_class)._methods
        if name not in methods:
            if name in ("bind", "remote"):
                return super().__getattr__(name)
            raise AttributeError(
                f"actor class {_actor_class_of(self._actor_class).__name__!r} has no method "
                f"{name!r}"
            )
        return UnboundMethod(self, name, {})

    def __repr__(self) -> str:
        return f"ClassNode({_actor_class_of(self._actor_class).__name__})"


def _actor_class_of(actor_class):
    return getattr(actor_class, "_actor_class", actor_class)


class UnboundMethod:
    """`class_node.method`: `.bind(...)` records a call, `.options(...)` sets
    the call's options."""

    def __init__(self, parent: ClassNode, name: str, options: dict):
        self._parent = parent
        self._name = name
        self._options = options

    def options(self, **options) -> UnboundMethod:
        return UnboundMethod(self._parent, self._name, {**self._options, **options})

    def bind(self, *args, **kwargs) -> ClassMethodNode:
        node = ClassMethodNode(
            self._parent, self._name, args, kwargs, self._options, self._parent._last_call
        )
        self._parent._last_call = node
        return node

    def remote(self, *args, **kwargs):
        raise AttributeError(
            ".remote() cannot be used on a method of a ClassNode: use .bind() to record "
            "the call, and execute() to run the DAG"
        )


class ClassMethodNode(DAGNode):
    """An actor method call, on a ClassNode's actor or on a live handle."""

    def __init__(self, target, name: str, args: tuple, kwargs: dict, options: dict, previous):
        super().__init__(args, kwargs)
        # A ClassNode (its actor is known at execution), or a live handle's
        # method, options included (ActorMethod, or one with .options()).
        self._target = target
        self._method_name = name
        self._options = options
        self._previous = previous  # the call bound before this one on the same ClassNode

    def _execute_impl(self, run: Execution) -> Any:
        if self._previous is not None:
            run.value_of(self._previous)  # calls run in the order they were bound
        if isinstance(self._target, ClassNode):
            method = getattr(run.value_of(self._target), self._method_name)
            if self._options:
                method = method.options(**self._options)
        else:
            method = self._target
        args, kwargs = run.resolve_call(self)
        return method.remote(*args, **kwargs)

    def _child_nodes(self) -> list[DAGNode]:
        extra = [n for n in (self._target, self._previous) if isinstance(n, DAGNode)]
        return super()._child_nodes() + extra

    def get_method_name(self) -> str:
        return self._method_name

    def __repr__(self) -> str:
        return f"ClassMethodNode({self._method_name})"
