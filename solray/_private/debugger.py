"""`solray debug` (Ray's `ray debug`): list the breakpoints tasks and actors
are waiting at (`util.pdb.set_trace()`, recorded in the control store's
key-value store, namespace `pdb`) and attach to one.

Attaching connects to the breakpoint's Unix socket (in the session
directory, mode 0700: see util/rpdb.py), so only this user on the
breakpoint's machine can; the session relays this terminal's lines to pdb
and pdb's output back, until pdb lets go (`c`, `q`) or this side's input
ends. One thread: select() on the terminal and the socket. The terminal is
read through `_Lines` (its own buffer on fd 0), so the prompt and the
session never lose a line to each other's buffering.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import select
import socket
import sys

from solray._private import transport
from solray._private.protocol import Msg
from solray.util.rpdb import KV_NAMESPACE


class _Lines:
    """Lines from a file descriptor, for select() and blocking reads alike."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = b""
        self.eof = False

    def fill(self) -> None:
        data = os.read(self.fd, 65536)
        if data:
            self.buffer += data
        else:
            self.eof = True

    def take(self) -> bytes | None:
        """A complete line if one is buffered (the rest at EOF), else None."""
        end = self.buffer.find(b"\n")
        if end >= 0:
            line, self.buffer = self.buffer[: end + 1], self.buffer[end + 1 :]
            return line
        if self.eof and self.buffer:
            line, self.buffer = self.buffer, b""
            return line
        return None

    def readline(self) -> bytes | None:
        """The next line, waiting for it; None at end of input."""
        while True:
            line = self.take()
            if line is not None:
                return line
            if self.eof:
                return None
            self.fill()


class _Elsewhere(Exception):
    """The breakpoint is on another machine."""


def breakpoints(address: str, token: bytes) -> list[dict]:
    """The active breakpoints, oldest first."""

    async def query():
        conn = await transport.connect(address, token, timeout=5)
        try:
            found = []
            keys = await conn.request(Msg.KV_KEYS, {"ns": KV_NAMESPACE, "prefix": b""})
            for key in keys:
                ok, buffers = await conn.request(
                    Msg.KV_GET, {"ns": KV_NAMESPACE, "key": key}, raw=True
                )
                if ok:
                    found.append(json.loads(bytes(buffers[0])))
            return found
        finally:
            conn.close()

    return sorted(asyncio.run(query()), key=lambda b: b["timestamp"])


def forget(address: str, token: bytes, breakpoint_id: str) -> None:
    """Drop a breakpoint whose process is gone (killed while it waited)."""

    async def drop():
        conn = await transport.connect(address, token, timeout=5)
        try:
            await conn.request(Msg.KV_DEL, {"ns": KV_NAMESPACE, "key": breakpoint_id.encode()})
        finally:
            conn.close()

    asyncio.run(drop())


def print_table(found: list[dict], out) -> None:
    if not found:
        out.write("No active breakpoints.\n")
        return
    out.write(f"Active breakpoints:\n{'index':<6} {'timestamp':<20} {'task':<30} where\n")
    for i, b in enumerate(found):
        when = datetime.datetime.fromtimestamp(b["timestamp"]).strftime("%Y-%m-%d %H:%M:%S")
        where = f"{b['filename']}:{b['lineno']}"
        note = " (post mortem)" if b.get("post_mortem") else ""
        out.write(f"{i:<6} {when:<20} {b['task'][:30]:<30} {where}{note}\n")
        out.write(f"{'':<6} pid {b['pid']} on {b['host']} ({b['node_ip']})\n")
    out.flush()


def attach(breakpoint: dict, lines: _Lines, out) -> None:
    """Relay `lines` to the breakpoint's pdb and its output to `out`, until
    pdb lets go."""
    path = breakpoint["socket"]
    if breakpoint["host"] != socket.gethostname():
        raise _Elsewhere(
            f"it is on {breakpoint['host']}: run `solray debug` there (its socket is "
            "reachable on that machine only)"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:  # no socket file, or no one listening: its process is gone
        sock.close()
        raise
    watching_input = True
    try:
        while True:
            line = lines.take() if watching_input else None
            if line is not None:
                sock.sendall(line)
                continue
            if watching_input and lines.eof:
                sock.shutdown(socket.SHUT_WR)  # pdb sees EOF: the task goes on
                watching_input = False
            fds = [sock] + ([lines.fd] if watching_input else [])
            ready, _, _ = select.select(fds, [], [])
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                out.write(data.decode(errors="replace"))
                out.flush()
            if lines.fd in ready:
                lines.fill()
    finally:
        sock.close()


def run(address: str, token: bytes) -> None:
    """List breakpoints, ask which one, attach; again, until input ends."""
    out = sys.stdout
    lines = _Lines(sys.stdin.fileno())
    while True:
        found = breakpoints(address, token)
        print_table(found, out)
        out.write("Enter breakpoint index or press enter to refresh: ")
        out.flush()
        answer = lines.readline()
        if answer is None:
            out.write("\n")
            return
        choice = answer.decode(errors="replace").strip()
        if not choice:
            continue
        if not choice.isdigit() or int(choice) >= len(found):
            out.write(f"No breakpoint {choice!r}: give an index from the list.\n")
            continue
        chosen = found[int(choice)]
        try:
            attach(chosen, lines, out)
        except _Elsewhere as e:
            out.write(f"Cannot attach: {e}\n")
        except OSError:
            # Attached by another debugger (which removed it), or its process
            # ended without removing it (killed): either way it is gone.
            forget(address, token, chosen["id"])
            out.write(f"Breakpoint {choice} is gone (attached elsewhere, or its process ended).\n")
        out.write("\n")
