"""A node's log directory: what its workers print, kept in files, and served
to the state API (`solray logs`, `util.state.list_logs` / `get_log`).

Worker output reaches the node as lines on pipes (worker_pool.py), which
forwards them to drivers; it also appends each line to
`worker-<worker id>-<pid>.out` or `.err` here. The directory is
`<session dir>/logs/<node id[:16]>`: nodes of one machine (a Cluster) share
a session directory, and each keeps its own files. Files stay after their
worker exits, until the session directory is removed.

Rotation, as Ray's: a file that would grow past RAY_ROTATION_MAX_BYTES
(512 MiB by default; 0: never) is renamed `.out.1` (`.1` to `.2`, and so on)
and a new one started; RAY_ROTATION_BACKUP_COUNT (5 by default) old files are
kept, older ones deleted (0: the file starts again empty). A chatty worker
therefore never fills the disk. The node reads both variables at start.

Task lines: before a line printed by a task, when the task differs from the
previous line's in that file, a marker line `:task_id:<hex>` is written
(`:task_id:` for lines printed outside any task), as Ray marks its worker
logs with `:task_name:` lines; readers never see them. So
`get_log(task_id=...)` cuts one task's lines out of the files without any
other record of where tasks ran; it scans the files, which is fine for a
debugging command.

Only bare file names of this directory are served: a name with a path
separator, `..`, or one that resolves (symlinks) outside the directory is
refused. Reads run on a thread, so a large file never stalls the node's loop.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass

from solray._private.protocol import Msg

TASK_MARKER = ":task_id:"
MAX_BYTES_ENV = "RAY_ROTATION_MAX_BYTES"
BACKUP_COUNT_ENV = "RAY_ROTATION_BACKUP_COUNT"
# One GET_LOG reply carries at most this much; the caller asks again from
# the offset it got (`more`).
MAX_CHUNK = 4 * 1024 * 1024


def log_dir(session_dir: str, node_id: str) -> str:
    return os.path.join(session_dir, "logs", node_id[:16])


@dataclass(frozen=True)
class Rotation:
    max_bytes: int = 512 * 1024 * 1024
    backup_count: int = 5

    @classmethod
    def from_environment(cls) -> Rotation:
        """The rotation RAY_ROTATION_MAX_BYTES and RAY_ROTATION_BACKUP_COUNT
        ask for; a value that is not a whole number >= 0 is a ValueError."""
        fields = {}
        for name, field in ((MAX_BYTES_ENV, "max_bytes"), (BACKUP_COUNT_ENV, "backup_count")):
            text = os.environ.get(name)
            if text is None or not text.strip():
                continue
            try:
                fields[field] = int(text)
            except ValueError:
                fields[field] = -1
            if fields[field] < 0:
                raise ValueError(f"{name} must be a whole number >= 0, not {text!r}")
        return cls(**fields)


# A file's last line belonged to no known task yet (a new file): whatever
# comes next writes its marker.
_UNKNOWN = object()


class WorkerLog:
    """The two files of one worker; written on the node's loop."""

    def __init__(self, directory: str, worker_id: str, pid: int, rotation: Rotation):
        base = os.path.join(directory, f"worker-{worker_id}-{pid}")
        self._paths = [base + ".out", base + ".err"]
        self._rotation = rotation
        self._files = [self._open(path, "a") for path in self._paths]
        self._sizes = [f.tell() for f in self._files]
        self._task: list = [_UNKNOWN, _UNKNOWN]  # the task of each file's last line

    @staticmethod
    def _open(path: str, mode: str):
        # Line buffered: `--follow` sees each line as soon as it is printed.
        return open(path, mode, buffering=1, encoding="utf-8", errors="replace")

    def write(self, is_err: bool, task_id: str | None, text: str) -> None:
        i = int(is_err)
        lines = text + "\n"
        if task_id != self._task[i]:
            lines = f"{TASK_MARKER}{task_id or ''}\n" + lines
        size = len(lines.encode("utf-8", errors="replace"))
        limit = self._rotation.max_bytes
        if limit and self._sizes[i] and self._sizes[i] + size > limit:
            self._roll_over(i)
            lines = f"{TASK_MARKER}{task_id or ''}\n{text}\n"
            size = len(lines.encode("utf-8", errors="replace"))
        self._task[i] = task_id
        self._files[i].write(lines)
        self._sizes[i] += size

    def _roll_over(self, i: int) -> None:
        self._files[i].close()
        path, keep = self._paths[i], self._rotation.backup_count
        if keep:
            for n in range(keep - 1, 0, -1):
                if os.path.exists(f"{path}.{n}"):
                    os.replace(f"{path}.{n}", f"{path}.{n + 1}")
            os.replace(path, f"{path}.1")
        self._files[i] = self._open(path, "w")
        self._sizes[i] = 0

    def close(self, is_err: bool) -> None:
        """Each stream closes its own file when the worker's pipe ends."""
        self._files[int(is_err)].close()


class LogFiles:
    """The node's LIST_LOGS and GET_LOG handlers."""

    def __init__(self, node, directory: str):
        self.node = node
        self.dir = directory
        self.rotation = Rotation.from_environment()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.handlers = {Msg.LIST_LOGS: self.list_logs, Msg.GET_LOG: self.get_log}

    def open_worker_log(self, worker_id: str, pid: int) -> WorkerLog:
        return WorkerLog(self.dir, worker_id, pid, self.rotation)

    def list_logs(self, conn, rid, body, bufs) -> None:
        files = []
        for entry in sorted(os.scandir(self.dir), key=lambda e: e.name):
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                files.append({"filename": entry.name, "size": st.st_size, "mtime": st.st_mtime})
        conn.reply(rid, files)

    def get_log(self, conn, rid, body, bufs) -> None:
        async def answer() -> None:
            try:
                reply = await asyncio.to_thread(self._read, body)
            except (ValueError, OSError) as e:
                conn.reply_error(rid, f"{type(e).__name__}: {e}")
            else:
                conn.reply(rid, reply)

        self.node.background(answer())

    def _read(self, body: dict) -> dict:
        tail = body.get("tail", 1000)
        if body.get("task_id"):
            lines = self._task_lines(body["task_id"], body.get("suffix", "out"))
            return {"lines": _last(lines, tail), "found": bool(lines)}
        path = self.path(body.get("filename"))
        offset = body.get("offset")
        if offset is None and tail >= 0:
            return _tail(path, tail)
        return _from(path, offset or 0)

    def path(self, name) -> str:
        """The file `name` of this directory; anything else is a ValueError."""
        if (
            not isinstance(name, str)
            or not name
            or "/" in name
            or "\\" in name
            or "\0" in name
            or name in (".", "..")
        ):
            raise ValueError(f"{name!r} is not the name of a file in the node's log directory")
        path = os.path.join(self.dir, name)
        if os.path.dirname(os.path.realpath(path)) != os.path.realpath(self.dir):
            raise ValueError(f"{name!r} is outside the node's log directory")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no log file {name!r} on node {self.node.node_id}")
        return path

    def _task_lines(self, task_id: str, suffix: str) -> list[str]:
        marker = f"{TASK_MARKER}{task_id}"
        lines = []
        for name in _oldest_first(os.listdir(self.dir), suffix):
            with open(os.path.join(self.dir, name), errors="replace") as f:
                inside = False
                for line in f:
                    if line.startswith(TASK_MARKER):
                        inside = line.rstrip("\n") == marker
                    elif inside:
                        lines.append(line.rstrip("\n"))
        return lines


# A worker's file: `worker-<id>-<pid>.out` or `.err`, and its rotated
# predecessors `.out.1`, `.out.2`, ...
_WORKER_FILE = re.compile(r"(worker-.+\.(out|err))(?:\.(\d+))?")


def worker_stream(name: str) -> str | None:
    """ "out" or "err" for a worker's log file (rotated ones too), else None."""
    match = _WORKER_FILE.fullmatch(name)
    return match[2] if match else None


def _oldest_first(names: list[str], suffix: str) -> list[str]:
    """The worker log files of `suffix` among `names`, rotated ones included,
    each worker's oldest first (`.out.2`, `.out.1`, `.out`)."""
    found = []
    for name in names:
        match = _WORKER_FILE.fullmatch(name)
        if match and match[2] == suffix:
            found.append((match[1], -int(match[3] or 0), name))
    return [name for *_, name in sorted(found)]


def _tail(path: str, n: int) -> dict:
    """The last `n` complete lines, and the offset after them."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        pos = end
        while pos > 0 and _count(data) <= n and end - pos < MAX_CHUNK:
            step = min(64 * 1024, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    complete = data[: data.rfind(b"\n") + 1]  # a line being written is not shown yet
    lines = complete.decode(errors="replace").splitlines()
    if pos > 0 and lines:  # the first line read may be cut
        lines = lines[1:]
    lines = _visible(lines)
    return {
        "lines": _last(lines, n),
        "offset": pos + len(complete),
        "more": False,
    }


def _from(path: str, offset: int) -> dict:
    """Complete lines from `offset` on (at most MAX_CHUNK bytes). An offset
    past the end means the file was rotated since: the new one is read from
    its start."""
    with open(path, "rb") as f:
        if offset > f.seek(0, os.SEEK_END):
            offset = 0
        f.seek(offset)
        data = f.read(MAX_CHUNK)
    complete = data[: data.rfind(b"\n") + 1]
    more = len(data) == MAX_CHUNK
    if more and not complete:  # one line longer than a chunk: send it cut
        complete = data
    return {
        "lines": _visible(complete.decode(errors="replace").splitlines()),
        "offset": offset + len(complete),
        "more": more,
    }


def _visible(lines: list[str]) -> list[str]:
    """Without the task markers, which only the node reads."""
    return [line for line in lines if not line.startswith(TASK_MARKER)]


def _count(data: bytes) -> int:
    """Lines in `data` a reader sees."""
    return data.count(b"\n") - data.count(b"\n" + TASK_MARKER.encode())


def _last(lines: list[str], n: int) -> list[str]:
    """The last n lines; all of them if n < 0."""
    return lines if n < 0 else lines[-n:] if n else []
