"""A driver's printing of its workers' output (the `logs` channel).

Each line is printed as `(name pid=N) text` (`, ip=...` for another
machine's), to the driver's stdout or stderr as the worker wrote it, flushed
at once so lines from both streams keep their order. A line that carries a
progress bar's state (BAR_MARK, from experimental/tqdm_ray.py) is drawn as a
bar instead; while bars are drawn, printing clears them first and redraws
them after, so a log line never lands inside a bar.
"""

from __future__ import annotations

import sys

from solray._private.protocol import BAR_MARK


def print_worker_lines(data: dict, own_ip: str | None) -> None:
    """Loop thread: print one batch of worker output lines."""
    ip = data.get("ip")
    bars = _bar_manager()
    for pid, is_err, name, text in data["lines"]:
        prefix = f"({name} pid={pid})" if name else f"(pid={pid})"
        if ip and ip != own_ip:
            prefix = prefix[:-1] + f", ip={ip})"
        if text.startswith(BAR_MARK):
            from solray.experimental import tqdm_ray

            if tqdm_ray.show_remote(text[1:], (ip, pid), prefix + " "):
                bars = _bar_manager()
                continue
        stream = sys.stderr if is_err else sys.stdout
        if bars is None:
            _write(stream, f"{prefix} {text}\n")
        else:
            with bars.lock:
                bars.hide_bars()
                _write(stream, f"{prefix} {text}\n")
    if bars is not None:
        bars.unhide_bars()


def _write(stream, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except Exception:
        pass


def _bar_manager():
    """The process's progress bar manager, if it draws bars."""
    tqdm_ray = sys.modules.get("solray.experimental.tqdm_ray")
    return tqdm_ray._manager if tqdm_ray is not None else None
