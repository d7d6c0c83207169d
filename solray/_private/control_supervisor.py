"""The head node starts the control store again when it dies.

Why the head node: it is the one long-lived process on the head machine in
every way a cluster is started (init()'s local cluster, `solray start
--head`, whose command exits once the daemons run), it already starts and
reaps processes (its workers), and it is the first to notice the control
store is gone: its connection drops and will not come back
(control_client.py calls `revive` after each failed dial).

It starts one only where nobody serves: it binds the control store's address
itself (the new process inherits that socket, as from the launcher), so an
old control store that is only slow, or one an operator or a test started
again by hand, keeps the address, and the head node simply reconnects to it.
A control store that exits because its storage cannot be read
(EXIT_STORAGE_UNREADABLE) is not started again: it would fail
the same way, forever; its error (naming the file or server) is in the head
node's log, and the nodes stop after their reconnect timeout.

The new control store has the node's lifeline (it stops with an init()
cluster's driver) and is stopped with the node (or killed with it, should the
node be killed first); in a daemon cluster it is a
daemon in its own session, as the first one was, so `solray stop` finds it.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess

from solray._private import services, transport
from solray._private.control_storage import EXIT_STORAGE_UNREADABLE

logger = logging.getLogger("solray.node")

# A control store away this long is dead, not restarting by itself (nor
# stopping with the cluster: the node is stopping by then).
REVIVE_AFTER_S = 1.0


class ControlSupervisor:
    def __init__(
        self,
        address: str,
        token: bytes,
        args: list[str],
        lifeline_fd: int | None,
        log_level: str,
    ):
        self.address = address
        self.token = token
        self.args = args  # the control store's own: --storage, timeouts
        self.lifeline_fd = lifeline_fd
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None  # the one we started last
        self.gave_up = False

    def revive(self, away_s: float) -> None:
        """The control store has been unreachable for `away_s`: start a new
        one on its address if it is dead."""
        if self.gave_up or away_s < REVIVE_AFTER_S or self._cluster_stopping():
            return
        if self.proc is not None:
            if self.proc.poll() is None:
                return  # ours, still starting
            if self.proc.returncode == EXIT_STORAGE_UNREADABLE:
                logger.error(
                    "the control store cannot read its storage (its error is above); "
                    "not starting it again"
                )
                self.gave_up = True
                return
        host, port = transport.parse_address(self.address)
        try:
            sock = transport.bind_socket(host, port)
        except OSError:
            return  # somebody serves there, or will: we reconnect to it
        token_fd = services.token_pipe(self.token)
        try:
            os.set_inheritable(sock.fileno(), True)
            argv = services.daemon_command(
                "solray._private.control_store",
                *("--token-fd", str(token_fd), "--listen-fd", str(sock.fileno())),
            )
            argv += ["--log-level", self.log_level, *self.args]
            pass_fds = [token_fd, sock.fileno()]
            if self.lifeline_fd is not None:
                # An init() cluster's: it goes with the driver, and with us.
                argv += ["--lifeline-fd", str(self.lifeline_fd), "--die-with-parent"]
                pass_fds.append(self.lifeline_fd)
            logger.warning("the control store at %s died: starting it again", self.address)
            self.proc = subprocess.Popen(
                argv,
                env=services.child_env(),
                pass_fds=pass_fds,
                stdin=subprocess.DEVNULL,
                close_fds=True,
                # A daemon cluster's (no lifeline): a daemon in its own
                # session, as the first was, so `solray stop` finds it too.
                start_new_session=self.lifeline_fd is None,
            )
        finally:
            os.close(token_fd)
            sock.close()

    def _cluster_stopping(self) -> bool:
        """The launcher closed the lifeline: the cluster is shutting down."""
        if self.lifeline_fd is None:
            return False
        readable, _, _ = select.select([self.lifeline_fd], [], [], 0)
        return bool(readable)

    def stop(self) -> None:
        """With the node: the control store we started goes too."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
