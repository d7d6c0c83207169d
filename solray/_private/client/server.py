"""The client server: where ray:// clients connect (`solray start --head`,
`--ray-client-server-port`, 10001 by default as in Ray).

It proves each connection holds the cluster token with transport.py's
handshake, like every solray port, before anything else: a connection that
fails it is closed, and nothing it sent is decoded or started for it. An
authenticated connection is handed over at once, socket and all, to a new
proxy driver process (proxy.py) that serves that client alone: a client's
calls, its crash or its objects never touch another client's. The client
sends nothing until its proxy answers, so no byte is read here. Under TLS
the session's keys cannot leave this process: it keeps the TLS connection
and relays its plaintext to the proxy (transport.Connection.detach).

Proxies are this process's children: it reaps each as it exits (a pidfd
each), stops them all when it stops, and they die with it (PR_SET_PDEATHSIG)
if it is killed.

It also serves the head's dashboard when given its socket (--dashboard-fd;
solray/dashboard/server.py says why here).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import subprocess
import sys

from solray._private import services, transport
from solray.dashboard import server as dashboard_server

logger = logging.getLogger(__name__)

STOP_GRACE_S = 10.0


class ClientServer:
    def __init__(self, token: bytes, control_address: str, ip: str, log_level: str):
        self.token = token
        self.control_address = control_address
        self.ip = ip
        self.log_level = log_level
        self.proxies: dict[int, subprocess.Popen] = {}  # pid -> proxy (loop thread)

    async def run(self, args) -> None:
        sock = services.listening_socket(args)
        server = await transport.serve(
            sock, self.token, {}, on_ready=self._hand_over, twin=services.listening_twin(args)
        )
        dashboard = None
        if args.dashboard_fd is not None:
            dashboard = dashboard_server.DashboardService(
                socket.socket(fileno=args.dashboard_fd),
                self.token,
                self.control_address,
                args.dashboard_url,
                args.session_dir,
            )
            await dashboard.start()
        await services.wait_for_stop(args)
        server.close()
        if dashboard is not None:
            await dashboard.stop()
        for proc in self.proxies.values():
            proc.terminate()
        for proc in list(self.proxies.values()):
            try:
                await asyncio.get_running_loop().run_in_executor(None, proc.wait, STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _hand_over(self, conn: transport.Connection) -> None:
        """An authenticated client: its own proxy driver serves it from now on."""
        sock = conn.detach()
        token_fd = None
        try:
            token_fd = services.token_pipe(self.token)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "solray._private.client.proxy",
                    "--token-fd",
                    str(token_fd),
                    "--client-fd",
                    str(sock.fileno()),
                    "--control-address",
                    self.control_address,
                    "--node-ip-address",
                    self.ip,
                    "--log-level",
                    self.log_level,
                    "--num-clients",  # Ray's connection info: clients served, this one too
                    str(len(self.proxies) + 1),
                ],
                env=services.child_env(),
                pass_fds=(token_fd, sock.fileno()),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError:
            logger.exception("could not start a proxy driver for a client")
            return
        finally:
            if token_fd is not None:
                os.close(token_fd)
            sock.close()
        self.proxies[proc.pid] = proc
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(proc.pid)
        loop.add_reader(pidfd, self._proxy_exited, proc, pidfd)

    def _proxy_exited(self, proc: subprocess.Popen, pidfd: int) -> None:
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        proc.wait()
        self.proxies.pop(proc.pid, None)


def main() -> None:
    parser = argparse.ArgumentParser(description="solray ray:// client server")
    services.add_service_arguments(parser)
    parser.add_argument("--dashboard-fd", type=int, help="the dashboard's listening socket")
    parser.add_argument("--dashboard-url", help="where browsers reach the dashboard")
    parser.add_argument("--control-address", required=True)
    parser.add_argument(
        "--session-dir", required=True, help="the head's session (tools find this process by it)"
    )
    args = parser.parse_args()
    token = services.read_token(args.token_fd)
    services.setup_process("client server", args)
    ip = transport.parse_address(args.control_address)[0]
    asyncio.run(ClientServer(token, args.control_address, ip, args.log_level).run(args))


if __name__ == "__main__":
    main()
