"""The dashboard's web server: the page of a head (include_dashboard,
--include-dashboard), on one port (dashboard_port, 8265 by default).

Where it runs: not in the control store or the node, which are on every
call's path; a web server there would add its memory, its imports and its
requests' latency to theirs, and a fault in it would take the cluster down.
It reads the cluster as the CLI does, with the token over the ordinary
protocol and the CLI's client (data.py), so it needs no hook in any other
process. On a head
started by `solray start --head` it runs in the ray:// client server's
process (client/server.py), the head's other door for outside users,
likewise off every call's path: a process of its own would cost ~25 MB
(an interpreter with asyncio), an eighth of the idle cluster's 200 MB
budget. A cluster init() starts has no client server: there it is a
process of its own (main below). Either way the launcher starts it and it
stops with the cluster: on the lifeline, on SIGTERM, and when its control
store has been gone longer than a restart takes (control_client.py).

Light when idle: aiohttp is imported only when the first browser connects.
The launcher bound the listening socket, so that connection waits in its
backlog meanwhile; until then the dashboard holds two sockets and the
bounded window of worker output (data.WorkerLogs).

The page and its login are app.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket

from solray._private import services, tls
from solray._private.control_client import ControlClient
from solray._private.protocol import Msg
from solray._private.state_client import StateClient
from solray.dashboard import data


class DashboardService:
    """The dashboard on a listening socket, in the running loop: alone in
    its process (main), or in the head's client server (client/server.py)."""

    def __init__(
        self, sock: socket.socket, token: bytes, control_address: str, url: str, session_dir: str
    ) -> None:
        self.sock = sock
        self.token = token
        self.url = url
        self.session_dir = session_dir
        self.logs = data.WorkerLogs()
        # One connection to the control store, which outlives its restarts
        # (control_client.py): the views read through it, the job manager
        # writes its jobs' records through it. Given up on (no control store
        # for RECONNECT_TIMEOUT_S), the cluster is gone: stop as on SIGTERM.
        self.control = ControlClient(
            control_address,
            token,
            {Msg.PUBLISHED: self._on_published},
            on_lost=lambda: os.kill(os.getpid(), signal.SIGTERM),
        )
        self.state = StateClient(
            control_address, token, timeout=data.REQUEST_TIMEOUT_S, control=self.control
        )
        self.jobs = None  # the JobManager (jobs.py), made with the web application
        self._serving: asyncio.Task | None = None

    def _on_published(self, conn, rid, body, bufs) -> None:
        if body["channel"] == "logs":
            self.logs.add(body["data"]["ip"], body["data"]["lines"])

    async def start(self) -> None:
        await self.control.connect()
        await self.control.subscribe(["logs"])
        # Where the dashboard is, for drivers that join the cluster.
        await self.control.request(Msg.KV_PUT, data.URL_KEY, [self.url.encode()])
        self._serving = asyncio.get_running_loop().create_task(self._serve_from_first_connection())

    async def _serve_from_first_connection(self):
        """Wait for a browser's first connection (it stays in the socket's
        backlog), then import aiohttp and serve; returns the runner."""
        loop = asyncio.get_running_loop()
        connected = loop.create_future()
        fd = self.sock.fileno()

        def on_readable() -> None:
            loop.remove_reader(fd)
            connected.set_result(None)

        loop.add_reader(fd, on_readable)
        try:
            await connected
        except asyncio.CancelledError:
            loop.remove_reader(fd)
            raise
        from aiohttp import web

        from solray.dashboard import app
        from solray.dashboard.jobs import JobManager

        self.jobs = JobManager(self.control, self.state, self.session_dir)
        dashboard = app.Dashboard(self.token, self.state, self.logs, self.jobs)
        runner = web.AppRunner(dashboard.make_app(), access_log=None)
        await runner.setup()
        # Under TLS the page is HTTPS with the host's certificate (tls.py).
        await web.SockSite(runner, self.sock, ssl_context=tls.web_context()).start()
        return runner

    async def stop(self) -> None:
        runner = None
        if self._serving is not None:
            self._serving.cancel()
            try:
                runner = await self._serving
            except asyncio.CancelledError:
                pass
        if self.jobs is not None:
            await self.jobs.close()
        if runner is not None:
            await runner.cleanup()
        await self.state.close()
        self.control.close()
        self.sock.close()


async def serve(args) -> None:
    token = services.read_token(args.token_fd)
    sock = services.listening_socket(args)
    service = DashboardService(
        sock, token, args.control_address, args.dashboard_url, args.session_dir
    )
    await service.start()
    await services.wait_for_stop(args)
    await service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="solray dashboard")
    services.add_service_arguments(parser)
    parser.add_argument("--control-address", required=True)
    parser.add_argument("--dashboard-url", required=True, help="where browsers reach it")
    parser.add_argument(
        "--session-dir", required=True, help="the head's session (tools find this process by it)"
    )
    args = parser.parse_args()
    services.setup_process("dashboard", args)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
