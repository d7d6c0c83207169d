"""Progress bars from tasks and actors, drawn on the driver (Ray's
`ray.experimental.tqdm_ray`).

A `tqdm` in a worker draws nothing there: each update writes the bar's state
as one line of its output, marked with BAR_MARK. Worker output already
reaches the driver (the node forwards it on the control store's `logs`
channel, with the task's name and the pid); the driver's output printer
(`_private/driver_output.py`) hands marked lines to this process's
`_BarManager`, which draws every bar with the real tqdm, each at its own
row (bars of one process keep their `position`s, below the bars of the
processes that came before), and clears them while it prints a log line
(`hide_bars`, `unhide_bars`), so bars and log lines never mix on a line. A
`tqdm` in the driver draws through the same manager directly.

Updates are sent at most every `flush_interval_s` (1 s, as in Ray); `close()`
and `refresh()` always send, so the driver shows each bar's final state. As
in Ray, once the driver draws a bar, `print` becomes `safe_print` (which
clears the bars around the print); RAY_TQDM_PATCH_PRINT=0 keeps `print` as is.
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from solray._private.protocol import BAR_MARK

_print = builtins.print
_manager: _BarManager | None = None
_manager_lock = threading.Lock()


def safe_print(*args, **kwargs) -> None:
    """`print` that does not corrupt the progress bars on the driver."""
    if kwargs.get("file") not in (sys.stdout, sys.stderr, None) or _manager is None:
        return _print(*args, **kwargs)
    with _manager.lock:
        _manager.hide_bars()
        try:
            _print(*args, **kwargs)
            (kwargs.get("file") or sys.stdout).flush()
        finally:
            _manager.unhide_bars()


class tqdm:  # noqa: N801 (Ray's name)
    """A progress bar usable in tasks and actors, drawn on the driver.

    Takes a subset of tqdm's arguments, as Ray's does."""

    DEFAULT_FLUSH_INTERVAL_SECONDS = 1.0

    def __init__(
        self,
        iterable: Iterable | None = None,
        desc: str | None = None,
        total: int | None = None,
        unit: str | None = None,
        position: int | None = None,
        flush_interval_s: float | None = None,
    ):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except (TypeError, AttributeError):
                total = None
        if position is not None and (
            isinstance(position, bool) or not isinstance(position, int) or position < 0
        ):
            raise ValueError(f"position must be an int >= 0, got {position!r}")
        self._iterable = iterable
        self._desc = desc or ""
        self._total = total
        self._unit = unit or "it"
        self._pos = position or 0
        self._uuid = uuid.uuid4().hex
        self._x = 0
        self._closed = False
        self._bar_format: str | None = None
        self._flush_interval_s = (
            self.DEFAULT_FLUSH_INTERVAL_SECONDS if flush_interval_s is None else flush_interval_s
        )
        self._last_flush = 0.0

    def update(self, n: int | float = 1) -> None:
        """Advance the bar by `n`."""
        self._x += n
        self._send()

    def set_description(self, desc: str) -> None:
        self._desc = desc
        self._send()

    def set_bar_format(self, bar_format: str) -> None:
        self._bar_format = bar_format
        self._send()

    def refresh(self) -> None:
        """Send the bar's state to the driver now."""
        self._send(force=True)

    def close(self) -> None:
        """Finish the bar; the driver draws its final state."""
        if not self._closed:
            self._closed = True
            self._send(force=True)

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, total: int | None) -> None:
        self._total = total

    def __iter__(self) -> Iterator:
        if self._iterable is None:
            raise ValueError("No iterable provided")
        for item in self._iterable:
            self.update(1)
            yield item
        self.close()  # as tqdm does (Ray's leaves the bar open)

    def __enter__(self) -> tqdm:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _state(self) -> dict[str, Any]:
        return {
            "uuid": self._uuid,
            "x": self._x,
            "pos": self._pos,
            "desc": self._desc,
            "total": self._total,
            "unit": self._unit,
            "closed": self._closed,
            "bar_format": self._bar_format,
        }

    def _send(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < self._flush_interval_s:
            return
        self._last_flush = now
        from solray._private import context

        cw = context.core_worker
        if cw is not None and not cw.is_driver:
            # One write, newline included: the line reaches the driver whole.
            sys.stdout.write(BAR_MARK + json.dumps(self._state()) + "\n")
            sys.stdout.flush()
        else:
            instance().update(("", os.getpid()), "", self._state())


def _checked_state(state) -> dict | None:
    """A bar state from a worker's output line, or None if it is not one."""
    if not isinstance(state, dict):
        return None
    checks = {
        "uuid": lambda v: isinstance(v, str),
        "x": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "pos": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1000,
        "desc": lambda v: isinstance(v, str),
        "total": lambda v: v is None or isinstance(v, (int, float)) and not isinstance(v, bool),
        "unit": lambda v: isinstance(v, str),
        "closed": lambda v: isinstance(v, bool),
        "bar_format": lambda v: v is None or isinstance(v, str),
    }
    if not all(key in state and check(state[key]) for key, check in checks.items()):
        return None
    return state


class _Bar:
    """One bar drawn on the driver, at row `offset + state["pos"]`."""

    def __init__(self, real_tqdm, state: dict, prefix: str, offset: int):
        self.state = state
        self.prefix = prefix
        self.offset = offset
        self.bar = real_tqdm(
            desc=prefix + state["desc"],
            total=state["total"],
            unit=state["unit"],
            position=offset + state["pos"],
            bar_format=state["bar_format"],
            dynamic_ncols=True,
            unit_scale=True,
            file=sys.stderr,
        )
        if state["x"]:
            self.bar.update(state["x"])

    def update(self, state: dict) -> None:
        if state["desc"] != self.state["desc"]:
            self.bar.set_description(self.prefix + state["desc"], refresh=False)
        if state["bar_format"] != self.state["bar_format"]:
            self.bar.bar_format = state["bar_format"]
        if state["total"] != self.state["total"]:
            self.bar.total = state["total"]
        delta = state["x"] - self.state["x"]
        if delta:
            self.bar.update(delta)
        self.bar.refresh()
        self.state = state

    def move(self, offset: int) -> None:
        if offset != self.offset:
            self.offset = offset
            self.bar.clear()
            self.bar.pos = -(offset + self.state["pos"])
            self.bar.refresh()


class _BarManager:
    """The driver's bars, grouped by the process that made them (each group
    gets rows after the groups before it, like Ray's). Its lock orders the
    loop thread (remote updates, log lines) and user threads (local bars,
    safe_print)."""

    def __init__(self):
        import tqdm as real_tqdm

        self._tqdm = real_tqdm.tqdm
        self.lock = threading.RLock()
        self.groups: dict[tuple, dict[str, _Bar]] = {}  # (ip, pid) -> uuid -> bar
        self.hidden = False

    def update(self, process: tuple, prefix: str, state: dict) -> None:
        with self.lock:
            self.unhide_bars()
            bars = self.groups.setdefault(process, {})
            bar = bars.get(state["uuid"])
            if bar is None:
                if state["closed"] and not state["x"]:
                    return
                bars[state["uuid"]] = _Bar(self._tqdm, state, prefix, self._offset_of(process))
                self._place()
                if not state["closed"]:
                    return
                bar = bars[state["uuid"]]
            else:
                bar.update(state)
            if state["closed"]:
                self.hide_bars()
                bar.bar.close()
                del bars[state["uuid"]]
                if not bars:
                    del self.groups[process]
                self.unhide_bars()
                self._place()

    def _offset_of(self, process: tuple) -> int:
        offset = 0
        for key, bars in self.groups.items():
            if key == process:
                return offset
            offset += _rows(bars)
        return offset

    def _place(self) -> None:
        offset = 0
        for bars in self.groups.values():
            for bar in bars.values():
                bar.move(offset)
            offset += _rows(bars)

    def hide_bars(self) -> None:
        """Clear every bar from the screen (before printing a line)."""
        with self.lock:
            if not self.hidden:
                self.hidden = True
                for bars in self.groups.values():
                    for bar in bars.values():
                        bar.bar.clear()

    def unhide_bars(self) -> None:
        with self.lock:
            if self.hidden:
                self.hidden = False
                for bars in self.groups.values():
                    for bar in bars.values():
                        bar.bar.refresh()


def _rows(bars: dict[str, _Bar]) -> int:
    return 1 + max(bar.state["pos"] for bar in bars.values()) if bars else 0


def instance() -> _BarManager:
    """This process's bar manager (made, and `print` patched, on first use)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = _BarManager()
            if os.environ.get("RAY_TQDM_PATCH_PRINT", "1").lower() not in ("0", "false"):
                builtins.print = safe_print
        return _manager


def show_remote(line: str, process: tuple, prefix: str) -> bool:
    """Driver, loop thread: draw the bar state in a marked worker output line
    (`line` without its mark); False if it is not a bar state."""
    try:
        state = _checked_state(json.loads(line))
    except ValueError:
        state = None
    if state is None:
        return False
    instance().update(process, prefix, state)
    return True


__all__ = ["tqdm", "safe_print"]
