"""The dashboard's web application: its pages, its login and its JSON API
(aiohttp; imported once a browser connects, see server.py).

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

Programs (JobSubmissionClient, `solray job`) have no login: they present
the token itself on each request, `Authorization: Bearer <hex token>`,
compared in constant time too. The job API (job_api.py) takes either.
"""

from __future__ import annotations

import collections
import hmac
import html
import json
import logging
import secrets
import time
from importlib import resources

from aiohttp import web

from solray._private.state_client import RayStateApiException, StateClient
from solray.dashboard import data
from solray.dashboard.job_api import JobAPI
from solray.dashboard.jobs import JobManager

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
    "advice": data.advice,
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
    def __init__(
        self, token: bytes, state: StateClient, logs: data.WorkerLogs, jobs: JobManager
    ) -> None:
        self.token = token
        self.state = state
        self.worker_logs = logs
        self.jobs = JobAPI(jobs)
        self.sessions: collections.OrderedDict[str, None] = collections.OrderedDict()

    # -- login ---------------------------------------------------------------

    def signed_in(self, request) -> bool:
        """A browser logged in, or a program presenting the token."""
        sid = request.cookies.get(COOKIE)
        if sid is not None and sid in self.sessions:
            return True
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(credential)

    def token_matches(self, text: str) -> bool:
        try:
            given = bytes.fromhex(text.strip())
        except ValueError:
            return False
        return hmac.compare_digest(given, self.token)

    async def login_page(self, request, error: str = "", status: int = 200):
        page = _static("login.html").decode()
        page = page.replace("<!--error-->", html.escape(error))
        return web.Response(text=page, content_type="text/html", status=status)

    async def login(self, request):
        form = await request.post()
        if not self.token_matches(str(form.get("token", ""))):
            logger.warning("refused a dashboard login from %s: wrong token", request.remote)
            return await self.login_page(request, "That is not the cluster token.", 401)
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = None
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE, sid, httponly=True, samesite="Strict", path="/", secure=request.secure
        )
        return response

    async def logout(self, request):
        self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        return response

    def make_app(self):
        @web.middleware
        async def guard(request, handler):
            if request.path in PUBLIC_PATHS or self.signed_in(request):
                try:
                    response = await handler(request)
                except web.HTTPException as e:
                    response = e
                except RayStateApiException as e:  # the control store did not answer in time, ...
                    response = web.json_response({"error": str(e)}, status=503)
            elif request.path.startswith("/api/"):
                logger.warning(
                    "refused %s %s from %s: no token", request.method, request.path, request.remote
                )
                response = web.json_response(
                    {"error": "the cluster token is needed (Authorization: Bearer <hex token>)"},
                    status=401,
                )
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
        self.jobs.add_routes(app)
        app.router.add_get("/api/{view}", self.view)
        return app

    # -- pages and the API ---------------------------------------------------

    async def index(self, request):
        return web.Response(body=_static("index.html"), content_type="text/html")

    async def static(self, request):
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_static(name), content_type=STATIC[name])

    async def _answer(self, query):
        return web.json_response(await query, dumps=_dumps)

    async def view(self, request):
        query = VIEWS.get(request.match_info["view"])
        if query is None:
            raise web.HTTPNotFound()
        return await self._answer(query(self.state))

    async def logs(self, request):
        pid = request.query.get("pid")
        try:
            pid = int(pid) if pid else None
        except ValueError:
            raise web.HTTPBadRequest(text=f"pid must be a number, not {pid!r}") from None
        query = data.logs(
            self.worker_logs, request.query.get("ip"), pid, request.query.get("q", "")
        )
        return await self._answer(query)

    async def timeline(self, request):
        trace = await data.timeline(self.state)
        name = time.strftime("solray-timeline-%Y-%m-%d_%H-%M-%S.json")
        return web.Response(
            body=_dumps(trace),
            content_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )


def _dumps(value) -> str:
    return json.dumps(value, default=str)
