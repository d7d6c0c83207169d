"""The dashboard's web server: the page of a head (include_dashboard,
--include-dashboard), on one port (dashboard_port, 8265 by default).

Where it runs: not in the control store or the node, which are on every
call's path; a web server there would add its memory, its imports and its
requests' latency to theirs, and a fault in it would take the cluster down.
It reads the cluster as the CLI does, with the token over the ordinary
protocol (data.py), so it needs no hook in any other process. On a head
started by `solray start --head` it runs in the ray:// client server's
process (client/server.py), the head's other door for outside users,
likewise off every call's path: a process of its own would cost ~25 MB
(an interpreter with asyncio), an eighth of the idle cluster's 200 MB
budget. A cluster init() starts has no client server: there it is a
process of its own (main below). Either way the launcher starts it and it
stops with the cluster: on the lifeline, on SIGTERM, and when its control
store connection closes.

Light when idle: aiohttp is imported only when the first browser connects.
The launcher bound the listening socket, so that connection waits in its
backlog meanwhile; until then the dashboard holds two sockets and the
bounded window of worker output (data.WorkerLogs).

Never reachable without the token. Everything but the login page and its
style sheet needs a session cookie, which only a login with the cluster
token (compared in constant time) gets: HttpOnly (page scripts cannot read
it) and SameSite=Strict (another site's page cannot make the browser send
it, so no cross-site request acts with it). Without it pages redirect to
the login and the API answers 401. Sessions live in this process (a random
id each, the newest MAX_SESSIONS kept), so they end when the cluster does.
The page loads nothing from the network (a strict Content-Security-Policy
says so to the browser too), and it fills its tables with text nodes,
never markup, since task names and log lines are anyone's strings.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hmac
import html
import json
import logging
import os
import secrets
import signal
import socket
import time
from importlib import resources

from solray._private import services
from solray.dashboard import data

logger = logging.getLogger("solray.dashboard")

COOKIE = "solray_session"
MAX_SESSIONS = 1000
PUBLIC_PATHS = ("/login", "/static/style.css")
STATIC = {"style.css": "text/css", "app.js": "text/javascript"}
VIEWS = {
    "nodes": data.nodes,
    "jobs": data.jobs,
    "tasks": data.tasks,
    "actors": data.actors,
    "placement_groups": data.placement_groups,
    "objects": data.objects,
}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _static(name: str) -> bytes:
    return resources.files("solray.dashboard").joinpath("static", name).read_bytes()


class Dashboard:
    def __init__(self, token: bytes, cluster: data.Cluster) -> None:
        self.token = token
        self.cluster = cluster
        self.sessions: collections.OrderedDict[str, None] = collections.OrderedDict()

    # -- login ---------------------------------------------------------------

    def signed_in(self, request) -> bool:
        sid = request.cookies.get(COOKIE)
        return sid is not None and sid in self.sessions

    def token_matches(self, text: str) -> bool:
        try:
            given = bytes.fromhex(text.strip())
        except ValueError:
            return False
        return hmac.compare_digest(given, self.token)

    async def login_page(self, request, error: str = "", status: int = 200):
        from aiohttp import web

        page = _static("login.html").decode()
        page = page.replace("<!--error-->", html.escape(error))
        return web.Response(text=page, content_type="text/html", status=status)

    async def login(self, request):
        from aiohttp import web

        form = await request.post()
        if not self.token_matches(str(form.get("token", ""))):
            logger.warning("refused a dashboard login from %s: wrong token", request.remote)
            return await self.login_page(request, "That is not the cluster token.", 401)
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = None
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", path="/")
        return response

    async def logout(self, request):
        from aiohttp import web

        self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        return response

    def make_app(self):
        from aiohttp import web

        @web.middleware
        async def guard(request, handler):
            if request.path in PUBLIC_PATHS or self.signed_in(request):
                try:
                    response = await handler(request)
                except web.HTTPException as e:
                    response = e
            elif request.path.startswith("/api/"):
                response = web.json_response({"error": "log in first"}, status=401)
            else:
                response = web.HTTPSeeOther("/login")
            response.headers.update(HEADERS)
            return response

        app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
        app.router.add_get("/login", self.login_page)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/logs", self.logs)
        app.router.add_get("/api/timeline", self.timeline)
        app.router.add_get("/api/{view}", self.view)
        return app

    # -- pages and the API ---------------------------------------------------

    async def index(self, request):
        from aiohttp import web

        return web.Response(body=_static("index.html"), content_type="text/html")

    async def static(self, request):
        from aiohttp import web

        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_static(name), content_type=STATIC[name])

    async def _answer(self, query):
        from aiohttp import web

        try:
            return web.json_response(await query, dumps=_dumps)
        except (OSError, TimeoutError, ConnectionError, RuntimeError) as e:
            return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=503)

    async def view(self, request):
        from aiohttp import web

        query = VIEWS.get(request.match_info["view"])
        if query is None:
            raise web.HTTPNotFound()
        return await self._answer(query(self.cluster))

    async def logs(self, request):
        from aiohttp import web

        pid = request.query.get("pid")
        try:
            pid = int(pid) if pid else None
        except ValueError:
            raise web.HTTPBadRequest(text=f"pid must be a number, not {pid!r}") from None
        query = data.logs(self.cluster, request.query.get("ip"), pid, request.query.get("q", ""))
        return await self._answer(query)

    async def timeline(self, request):
        from aiohttp import web

        trace = await data.timeline(self.cluster)
        if trace is None:
            return web.Response(status=503, text=f"No timeline: {data.NEEDS_EVENTS}.")
        name = time.strftime("solray-timeline-%Y-%m-%d_%H-%M-%S.json")
        return web.Response(
            body=_dumps(trace),
            content_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )


def _dumps(value) -> str:
    return json.dumps(value, default=str)


class DashboardService:
    """The dashboard on a listening socket, in the running loop: alone in
    its process (main), or in the head's client server (client/server.py)."""

    def __init__(self, sock: socket.socket, token: bytes, control_address: str, url: str) -> None:
        self.sock = sock
        self.token = token
        self.url = url
        self.cluster = data.Cluster(control_address, token)
        self._serving: asyncio.Task | None = None

    async def start(self) -> None:
        # The cluster is gone when its control store is: stop as on SIGTERM.
        await self.cluster.connect(on_lost=lambda: os.kill(os.getpid(), signal.SIGTERM))
        await self.cluster.publish_url(self.url)
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

        runner = web.AppRunner(Dashboard(self.token, self.cluster).make_app(), access_log=None)
        await runner.setup()
        await web.SockSite(runner, self.sock).start()
        return runner

    async def stop(self) -> None:
        runner = None
        if self._serving is not None:
            self._serving.cancel()
            try:
                runner = await self._serving
            except asyncio.CancelledError:
                pass
        if runner is not None:
            await runner.cleanup()
        self.cluster.close()
        self.sock.close()


async def serve(args) -> None:
    token = services.read_token(args.token_fd)
    sock = services.listening_socket(args)
    service = DashboardService(sock, token, args.control_address, args.dashboard_url)
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
