"""The worker fork server ("zygote") of a node.

Starting a worker as a fresh interpreter costs ~240 ms on this machine kind,
almost all of it imports; forking a process that already imported everything
costs ~3 ms. So each node starts one zygote, which imports the worker's code
and then, on request, forks workers. Forked workers also share the imported
modules' pages with the zygote (copy-on-write), which lowers idle memory.

The zygote reads the cluster token once, from the pipe the node passed (its
second argument), and keeps it in memory only: forked workers inherit that
memory, so the token is never in any environment or command line.

Protocol, over a SOCK_SEQPACKET socket pair with the node: a request is a JSON
object (the worker's environment additions) carrying two file descriptors
(the write ends of the worker's stdout and stderr pipes); the reply is the new
worker's pid, as text ("pid N"). Unasked, whenever it reaps a worker, the
zygote tells the node how it ended ("exit N CODE", CODE as asyncio's
returncode: the exit status, or minus the signal that killed it): only the
parent can see an exit status, and list_workers and the node's log say it.
A worker can end before its fork's reply is sent, so "exit N" may come first.

Rules kept: the zygote never starts a thread or an event loop (forking a
process with threads is unsafe); it reaps its children (they are not the
node's); it exits when the node does (its socket closes, and
PR_SET_PDEATHSIG); a forked worker dies with the zygote, hence with the node.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

_channel: socket.socket | None = None  # to the node; set once, before any fork


def _reap(signum, frame) -> None:
    # A signal handler runs between two bytecodes of the main loop, so a
    # message sent here never splits one the loop is sending (and a
    # SOCK_SEQPACKET send is one whole record anyway).
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        try:
            _channel.send(f"exit {pid} {os.waitstatus_to_exitcode(status)}".encode())
        except OSError:
            pass  # the node is gone; the loop sees it at its next receive


def main() -> None:
    from solray._private import services, worker_main

    token = services.read_token(int(sys.argv[2]))
    services.die_with_parent()
    try:  # preload what most workers need; not a dependency of the zygote
        import numpy  # noqa: F401
    except ImportError:
        pass
    global _channel
    channel = _channel = socket.socket(fileno=int(sys.argv[1]))
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(channel, 65536, 2)
        except InterruptedError:
            continue
        if not message:
            return  # the node is gone
        env = json.loads(message)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            channel.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.dup2(fds[0], 1)
            os.dup2(fds[1], 2)
            for fd in fds:
                os.close(fd)
            os.environ.update(env)
            code = 0
            try:
                worker_main.main(token)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        for fd in fds:
            os.close(fd)
        channel.send(f"pid {pid}".encode())


if __name__ == "__main__":
    main()
