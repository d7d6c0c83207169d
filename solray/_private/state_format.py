"""How `solray list|get|summary` print state entries: a table sized to the
terminal, JSON or YAML (Ray's --format values)."""

from __future__ import annotations

import json
import shutil
from typing import Any

FORMATS = ("default", "json", "yaml", "table")
GAP = 2  # spaces between table columns


def plain(value: Any) -> Any:
    """Only dicts, lists, strings, numbers, bools and None (what JSON holds)."""
    return json.loads(json.dumps(value, default=str))


def render(value: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(plain(value), indent=2)
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(plain(value), sort_keys=False, default_flow_style=False).rstrip()
    return table(value if isinstance(value, list) else [value])


def table(rows: list[dict], width: int | None = None) -> str:
    """Rows as columns that fit `width` (the terminal's; COLUMNS is honoured):
    the widest columns are narrowed first, their cells cut with '…'."""
    if not rows:
        return "(no entries)"
    width = width or shutil.get_terminal_size().columns
    keys = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(k)) for k in keys] for row in rows]
    header = [k.upper() for k in keys]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    room = width - GAP * (len(keys) - 1)
    while sum(widths) > room and max(widths) > 3:
        widest = widths.index(max(widths))
        widths[widest] -= max(1, (sum(widths) - room) // len(widths) or 1)
        widths[widest] = max(widths[widest], 3)
    lines = [_line(header, widths), *(_line(c, widths) for c in cells)]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(plain(value), separators=(",", ":"))
    return str(value)


def _line(cells: list[str], widths: list[int]) -> str:
    out = [c if len(c) <= w else c[: w - 1] + "…" for c, w in zip(cells, widths, strict=True)]
    return (" " * GAP).join(c.ljust(w) for c, w in zip(out, widths, strict=True)).rstrip()


def summary_rows(summary: dict) -> list[dict]:
    """A summary's groups as table rows, each led by its key (class, call site...)."""
    by = summary.get("summary_by", "key")
    return [
        {**({} if key in group.values() else {by: key}), **group}
        for key, group in summary.get("summary", {}).items()
    ]
