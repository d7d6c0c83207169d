"""The node's end of a worker fork server (worker_zygote.py is the other).

A forked worker is the zygote's child, not the node's: the node watches its
end through a pidfd (ForkedProcess), and learns how it ended from the
zygote, which reaps it and sends "exit PID CODE" on the channel it answers
forks on. So the channel has one reader for as long as the zygote lives
(`_readable`, on the node's loop), which hands each message to its owner:
the reply to the fork in progress (forks take turns, so the reply answers
the last request), or the exit status of a worker.

The two ends of a worker are told apart in time: its pidfd becomes readable
when it exits, and the zygote's message comes after it reaped it, a little
later (or before the fork's reply, for a worker that ended at once). A
worker's end is reported when both are in, or after EXIT_STATUS_WAIT_S
with the status unknown (None), which is also what every worker gets when
the zygote itself is gone: it takes its children's statuses with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket

# How long a worker's end waits, once its pidfd says it exited, for the
# zygote's word on its status (it reaps within milliseconds of the exit).
EXIT_STATUS_WAIT_S = 1.0
_NOT_YET = object()  # a ForkedProcess's status before the zygote's word (or the wait's end)


class ForkServer:
    """One running zygote (`process`) and its channel."""

    def __init__(self, process: asyncio.subprocess.Process, channel: socket.socket) -> None:
        self.process = process
        self._channel = channel
        self._lock = asyncio.Lock()  # one fork at a time: a reply answers the last request
        self._reply: asyncio.Future[bytes] | None = None
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}  # statuses that came before their fork's reply
        self._closed = False
        channel.setblocking(False)
        asyncio.get_running_loop().add_reader(channel.fileno(), self._readable)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def fork(self, env: dict, out_w: int, err_w: int) -> ForkedProcess:
        """A new worker with `env` added to its environment and its stdout
        and stderr on the write ends `out_w`, `err_w` (the caller closes its
        copies). OSError if the zygote is gone."""
        async with self._lock:
            if self._closed:
                raise OSError("the worker fork server exited")
            self._reply = asyncio.get_running_loop().create_future()
            try:
                socket.send_fds(self._channel, [json.dumps(env).encode()], [out_w, err_w])
                reply = await self._reply
            finally:
                self._reply = None
        pid = int(reply.split()[1])
        child = ForkedProcess(pid)
        if pid in self._early_exits:
            child.set_status(self._early_exits.pop(pid))
        elif self._closed:
            child.set_status(None)
        else:
            # Until the zygote says how it ended (even after the wait for
            # it ran out): a late word is not kept for a later worker that
            # is given the same pid.
            self._children[pid] = child
        return child

    def _readable(self) -> None:
        while True:
            try:
                message = self._channel.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:
                self.close()
                return
            kind, _, rest = message.partition(b" ")
            if kind == b"pid":
                if self._reply is not None and not self._reply.done():
                    self._reply.set_result(message)
            elif kind == b"exit":
                pid, code = (int(part) for part in rest.split())
                child = self._children.pop(pid, None)
                if child is not None:
                    child.set_status(code)
                else:
                    self._early_exits[pid] = code

    def close(self) -> None:
        """Stop reading: the zygote is gone, or replaced. Its workers' exit
        statuses can no longer come."""
        if self._closed:
            return
        self._closed = True
        asyncio.get_running_loop().remove_reader(self._channel.fileno())
        self._channel.close()
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(OSError("the worker fork server exited"))
        children, self._children = self._children, {}
        for child in children.values():
            child.set_status(None)
        self._early_exits.clear()


class ForkedProcess:
    """A worker forked by the zygote: its exit is watched through a pidfd
    (it is not our child, so waitpid cannot), its status comes from the
    zygote (`set_status`). `returncode` is asyncio's: the exit status, or
    minus the signal that killed it; None while unknown."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = False
        self._status: int | None | object = _NOT_YET
        self._end = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # already gone
            self._fd = None
            self._on_exit()
            return
        asyncio.get_running_loop().add_reader(self._fd, self._on_exit)

    def set_status(self, code: int | None) -> None:
        if self._status is _NOT_YET:
            self._status = code
            self._settle()

    def _on_exit(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        self._exited = True
        if self._status is _NOT_YET:
            self._timer = asyncio.get_running_loop().call_later(
                EXIT_STATUS_WAIT_S, self.set_status, None
            )
        self._settle()

    def _settle(self) -> None:
        if not self._exited or self._status is _NOT_YET or self._end.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        self.returncode = self._status
        self._end.set_result(self.returncode)

    async def wait(self) -> int | None:
        return await asyncio.shield(self._end)

    def kill(self) -> None:
        """SIGKILL through the pidfd: never a recycled pid."""
        if self._fd is not None:
            try:
                signal.pidfd_send_signal(self._fd, signal.SIGKILL)
            except ProcessLookupError:
                pass
