"""The state API's filters, applied where the rows are: in the caller for
rows it gathered itself, in the control store for task rows (so a query
ships only what matches).

A filter is (key, predicate, value) with predicate "=" or "!=", the value
compared as a string, case-insensitively, as in Ray's state API.
"""

from __future__ import annotations

from typing import Any

PREDICATES = ("=", "!=")


def check_filters(filters) -> list[tuple[str, bool, str]]:
    """Filters as (key, wanted equal, value as str); a malformed one is a
    ValueError naming it."""
    checked = []
    for item in filters or ():
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise ValueError(f"A filter must be (key, predicate, value), got {item!r}")
        key, predicate, value = item
        if predicate not in PREDICATES:
            raise ValueError(f"Unsupported filter predicate {predicate!r}: use '=' or '!='")
        checked.append((key, predicate == "=", str(value).lower()))
    return checked


def matches(row: dict[str, Any], filters: list[tuple[str, bool, str]]) -> bool:
    return all((str(row.get(key)).lower() == value) == want for key, want, value in filters)
