"""Node labels and label selectors, as in Ray (which follows Kubernetes).

A node carries labels, string to string: the ones given when it starts
(`init(labels=...)`, `solray start --labels k=v,k2=v2`,
`Cluster.add_node(labels=...)`), plus `ray.io/node-id`. Tasks, actors and
placement group bundles may carry a label selector, a dict of label key to
expression; a node can host them only if it matches every entry:

    "v"            the node's label is v
    "!v"           the node's label is not v (or the node lacks the label)
    "in(a,b)"      the node's label is one of a, b
    "!in(a,b)"     the node's label is none of them (or it lacks the label)

Labels are not resources: a selector no node matches leaves the work
pending (with the same warning as an infeasible resource request) until
such a node joins. `fallback_strategy` (Ray's: [{"label_selector": ...},
...]) gives selectors tried in order when no node could ever host the work
with the primary one (placement.ClusterView.selector_for).
"""

from __future__ import annotations

import re

NODE_ID_LABEL = "ray.io/node-id"

_NAME = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9_.-]*[a-zA-Z0-9])?")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SET = re.compile(r"(!?)in\((.*)\)")


def _check_key(key, where: str) -> None:
    if not isinstance(key, str):
        raise TypeError(f"{where}: label keys must be str, got {key!r}")
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _PREFIX.fullmatch(prefix)):
        raise ValueError(
            f"{where}: invalid label key {key!r}: its prefix must be a DNS subdomain "
            "(lowercase alphanumerics, '-' and '.')"
        )
    if len(name) > 63 or not _NAME.fullmatch(name):
        raise ValueError(
            f"{where}: invalid label key {key!r}: its name must be 1-63 characters, "
            "alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        )


def _check_value(value, key: str, where: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{where}: the value of label {key!r} must be a str, got {value!r}")
    if value and (len(value) > 63 or not _NAME.fullmatch(value)):
        raise ValueError(
            f"{where}: invalid value {value!r} for label {key!r}: at most 63 characters, "
            "alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        )


def validate_labels(labels, where: str) -> dict[str, str]:
    """A node's labels: a dict of str to str in Kubernetes label syntax."""
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise TypeError(f"{where}: labels must be a dict of str to str, got {labels!r}")
    for key, value in labels.items():
        _check_key(key, where)
        _check_value(value, key, where)
    return dict(labels)


def _parse(expression: str) -> tuple[bool, list[str]]:
    """(negated, values) of one selector expression."""
    match = _SET.fullmatch(expression)
    if match:
        return bool(match.group(1)), [v.strip() for v in match.group(2).split(",")]
    if expression.startswith("!"):
        return True, [expression[1:]]
    return False, [expression]


def validate_selector(selector, where: str = "label_selector") -> None:
    if not isinstance(selector, dict):
        raise TypeError(f"{where} must be a dict of label key to expression, got {selector!r}")
    for key, expression in selector.items():
        _check_key(key, where)
        if not isinstance(expression, str):
            raise TypeError(
                f"{where}: the expression for {key!r} must be a str, got {expression!r}"
            )
        _, values = _parse(expression)
        if not all(values):
            raise ValueError(f"{where}: empty value in the expression {expression!r} for {key!r}")
        for value in values:
            _check_value(value, key, where)


def validate_fallback_strategy(fallback, where: str = "fallback_strategy") -> list[dict]:
    """Ray's `fallback_strategy` on tasks and actors: a list of options
    dicts, each with a `label_selector`, tried in order when no node matches
    the primary `label_selector`. Returns the selectors."""
    if not isinstance(fallback, list):
        raise ValueError(
            f"{where} must be a list of dicts such as [{{'label_selector': {{...}}}}], "
            f"got {fallback!r}"
        )
    selectors = []
    for i, option in enumerate(fallback):
        if not isinstance(option, dict):
            raise ValueError(f"{where}[{i}] must be a dict, got {option!r}")
        unknown = sorted(set(option) - {"label_selector"})
        if unknown:
            raise ValueError(
                f"{where}[{i}]: unknown option(s) {unknown}; a fallback takes 'label_selector'"
            )
        if "label_selector" not in option:
            raise ValueError(f"{where}[{i}] must contain 'label_selector'")
        validate_selector(option["label_selector"], f"{where}[{i}]['label_selector']")
        selectors.append(dict(option["label_selector"]))
    return selectors


def matches(labels: dict[str, str] | None, selector: dict[str, str] | None) -> bool:
    """Whether a node with `labels` satisfies every entry of `selector`."""
    for key, expression in (selector or {}).items():
        negated, values = _parse(expression)
        present = labels is not None and labels.get(key) in values
        if present == negated:
            return False
    return True


def parse_labels_string(text: str) -> dict[str, str]:
    """`k=v,k2=v2` (the `solray start --labels` format) to a dict."""
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--labels: {item!r} is not of the form key=value")
        labels[key.strip()] = value.strip()
    return validate_labels(labels, "--labels")
