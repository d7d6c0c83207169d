"""Checking a call's arguments at `.remote()`, as Ray does.

A call that does not fit the function's signature (too many arguments, a
missing one, an unknown keyword) raises TypeError in the caller, at the call,
not later in a worker. The signature is read once per function (for actor
methods, once per handle and method, from the table the handle carries), and
a call of plain positional parameters with as many positional arguments takes
a shortcut that never builds a BoundArguments: this sits on the submit path.
"""

from __future__ import annotations

import inspect

_PLAIN = inspect.Parameter.POSITIONAL_OR_KEYWORD


class CallCheck:
    __slots__ = ("signature", "arity")

    def __init__(self, signature: inspect.Signature | None):
        self.signature = signature
        params = () if signature is None else signature.parameters.values()
        plain = all(p.kind is _PLAIN and p.default is p.empty for p in params)
        # Calls with exactly this many positional arguments fit without a check.
        self.arity = len(params) if plain and signature is not None else -1

    @classmethod
    def of(cls, function, drop_first: bool = False) -> CallCheck:
        """The check for calls of `function` (a class: its constructor); no
        check if Python cannot tell its signature (some builtins)."""
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return cls(None)
        if drop_first:
            signature = signature.replace(parameters=list(signature.parameters.values())[1:])
        return cls(signature)

    def __call__(self, args: tuple, kwargs: dict) -> None:
        if len(args) == self.arity and not kwargs or self.signature is None:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(str(e)) from None

    # A method's signature travels in its handle's method table (msgpack):
    # [[name, kind, has default], ...].

    def to_table(self) -> list | None:
        if self.signature is None:
            return None
        return [
            [p.name, int(p.kind), p.default is not p.empty]
            for p in self.signature.parameters.values()
        ]

    @classmethod
    def from_table(cls, table: list | None) -> CallCheck:
        if table is None:
            return cls(None)
        params = [
            inspect.Parameter(name, inspect._ParameterKind(kind), default=None if has else _EMPTY)
            for name, kind, has in table
        ]
        return cls(inspect.Signature(params))


_EMPTY = inspect.Parameter.empty
