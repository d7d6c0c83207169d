"""`ray.util.pdb` (Ray's rpdb): `set_trace()` in a task or actor stops it at
a breakpoint and waits for `solray debug` to attach a pdb session.

Security is the design point: a debugger runs any code it is given, as the
worker's user. So a breakpoint never listens on a TCP port. It listens on a
Unix socket inside the node's session directory, under `pdb/` (mode 0700,
checked, as the session registry is): only this user, on this machine, can
connect. The breakpoint is recorded in the control store's key-value store
(namespace `pdb`: where it is, which task, which line) so `solray debug`
can list it; the entry goes when a debugger attaches, so one session at a
time has it. `solray debug` on the breakpoint's machine attaches and relays
its terminal to the session, line by line.

Detaching: `c` (continue) lets the task go on; if the debugger's side
closes, the task goes on too. `q` (quit) ends the task with pdb's BdbQuit,
as pdb does a program.
"""

from __future__ import annotations

import json
import os
import pdb
import socket
import stat
import sys
import time
import uuid

from solray._private import context, host
from solray._private.protocol import Msg

KV_NAMESPACE = "pdb"
_SOCKET_DIR = "pdb"
_MAX_UNIX_PATH = 107  # sun_path holds 108 bytes with its NUL


class _SocketPdb(pdb.Pdb):
    """pdb reading commands from and writing to one connected Unix socket."""

    def __init__(self, conn: socket.socket):
        self._conn = conn
        # Two files: a text file open for both drops what it read ahead
        # whenever it writes, and commands sent together would be lost.
        self._in = conn.makefile("r", encoding="utf-8", newline="\n")
        self._out = conn.makefile("w", buffering=1, encoding="utf-8", newline="\n")
        # nosigint: the worker's SIGINT is task cancellation, not pdb's.
        super().__init__(stdin=self._in, stdout=self._out, nosigint=True)
        self.use_rawinput = False

    def _detach(self) -> None:
        for closeable in (self._out, self._in, self._conn):
            try:
                closeable.close()
            except OSError:
                pass

    def do_continue(self, arg):
        result = super().do_continue(arg)
        self._detach()
        return result

    do_c = do_cont = do_continue

    def do_EOF(self, arg):
        """The debugger went away: the task goes on."""
        return self.do_continue(arg)

    def do_quit(self, arg):
        result = super().do_quit(arg)
        self._detach()
        return result

    do_q = do_exit = do_quit


def _socket_dir(session_dir: str) -> str:
    path = os.path.join(session_dir, _SOCKET_DIR)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    problem = None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        problem = "not a directory"
    elif st.st_uid != os.getuid():
        problem = f"owned by uid {st.st_uid}"
    elif st.st_mode & 0o077:
        problem = f"accessible to other users (mode {stat.S_IMODE(st.st_mode):o})"
    if problem:
        raise PermissionError(f"pdb: refusing to open a breakpoint in {path}: it is {problem}")
    return path


def set_trace(breakpoint_uuid: str | None = None) -> None:
    """Stop here and wait for `solray debug` to attach (Ray's
    `ray.util.pdb.set_trace()`). Outside a connected process, plain pdb."""
    frame = sys._getframe().f_back
    cw = context.core_worker
    if cw is None:
        pdb.Pdb().set_trace(frame)
        return
    _wait_for_debugger(cw, frame, breakpoint_uuid or uuid.uuid4().hex)


def post_mortem() -> None:
    """Ray's `ray.util.pdb.post_mortem()`: debug the exception being
    handled, through `solray debug`."""
    tb = sys.exc_info()[2]
    if tb is None:
        raise ValueError("pdb.post_mortem(): no exception is being handled")
    cw = context.core_worker
    if cw is None:
        pdb.post_mortem(tb)
        return
    _wait_for_debugger(cw, None, uuid.uuid4().hex, traceback=tb)


def _wait_for_debugger(cw, frame, breakpoint_id: str, traceback=None) -> None:
    path = os.path.join(_socket_dir(cw.node_info["session_dir"]), breakpoint_id[:16] + ".sock")
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise OSError(
            f"pdb: the breakpoint's socket path {path!r} is longer than a Unix socket allows "
            f"({_MAX_UNIX_PATH} bytes): use a shorter temp dir (init(_temp_dir=...), --temp-dir)"
        )
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is born 0600
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(1)
    task = cw.current_task
    where = frame
    if traceback is not None:  # the frame that raised
        last = traceback
        while last.tb_next is not None:
            last = last.tb_next
        where = last.tb_frame
    info = {
        "id": breakpoint_id,
        "socket": path,
        "host": socket.gethostname(),
        "node_ip": host.get_node_ip_address(),
        "pid": os.getpid(),
        "job_id": cw.job_bytes.hex() if getattr(cw, "job_bytes", None) else None,
        "task": getattr(task, "task_name", "") or "driver",
        "filename": where.f_code.co_filename,
        "lineno": where.f_lineno,
        "timestamp": time.time(),
        "post_mortem": traceback is not None,
    }
    key = {"ns": KV_NAMESPACE, "key": breakpoint_id.encode()}
    cw.request("control", Msg.KV_PUT, key, [json.dumps(info).encode()])
    print(
        f"solray.util.pdb: {info['task']} (pid {info['pid']}) is waiting at "
        f"{info['filename']}:{info['lineno']} for a debugger: run `solray debug` on "
        f"{info['host']}",
        file=sys.stderr,
        flush=True,
    )
    try:
        conn, _ = listener.accept()
    finally:
        listener.close()
        os.unlink(path)
        cw.request("control", Msg.KV_DEL, key)  # attached: no one else may
    debugger = _SocketPdb(conn)
    if traceback is not None:
        debugger.reset()
        debugger.interaction(None, traceback)
        debugger._detach()
    else:
        debugger.set_trace(frame)
