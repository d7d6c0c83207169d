"""Ray's job REST API on the dashboard's port: what JobSubmissionClient and
`solray job` call (jobs.py runs the jobs).

Every route here is behind app.py's guard: a request must carry the cluster
token (`Authorization: Bearer <hex token>`, compared in constant time) or
a dashboard login's session cookie, else it is answered 401 before its body
is read, and nothing runs. A request whose body is not what the route takes
is answered 400 naming what is wrong, before anything starts.

Routes (Ray's): GET /api/version; POST /api/jobs/ (submit) and GET
/api/jobs/ (list); GET and DELETE /api/jobs/{id}; POST
/api/jobs/{id}/stop; GET /api/jobs/{id}/logs (all of it) and
/api/jobs/{id}/logs/tail (a websocket: the log, then what the job adds
until it ends); GET and PUT /api/packages/pkg/{sha256} (a runtime_env
package, named by its content: an upload whose bytes do not hash to its
name is refused).
"""

from __future__ import annotations

import asyncio
import hashlib
from importlib import metadata

from aiohttp import web

from solray._private.runtime_env import packages
from solray.dashboard.jobs import JobManager, JobNotFound, JobRequestError
from solray.job_submission.models import JobStatus

API_VERSION = "3"  # Ray's job API version whose routes these are
TAIL_POLL_S = 0.2  # how often a tailed log is read for what was added
TAIL_CHUNK = 64 * 1024


class JobAPI:
    def __init__(self, manager: JobManager) -> None:
        self.manager = manager

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/version", self.version)
        app.router.add_post("/api/jobs/", self.submit)
        app.router.add_get("/api/jobs/", self.list_jobs)
        app.router.add_get("/api/jobs/{job_id}", self.get_job)
        app.router.add_delete("/api/jobs/{job_id}", self.delete)
        app.router.add_post("/api/jobs/{job_id}/stop", self.stop)
        app.router.add_get("/api/jobs/{job_id}/logs", self.logs)
        app.router.add_get("/api/jobs/{job_id}/logs/tail", self.tail)
        app.router.add_get("/api/packages/{protocol}/{name}", self.has_package)
        app.router.add_put("/api/packages/{protocol}/{name}", self.put_package)

    async def version(self, request):
        return web.json_response(
            {"version": API_VERSION, "ray_version": metadata.version("solray"), "ray_commit": ""}
        )

    # -- jobs -----------------------------------------------------------------

    async def submit(self, request):
        try:
            body = await request.json()
        except ValueError as e:  # json's and aiohttp's decode errors
            raise web.HTTPBadRequest(text=f"the request body is not JSON: {e}") from None
        try:
            submission_id = await self.manager.submit(body)
        except JobRequestError as e:
            raise web.HTTPBadRequest(text=str(e)) from None
        return web.json_response({"job_id": submission_id, "submission_id": submission_id})

    async def list_jobs(self, request):
        """Every job, as Ray's: the submitted ones and the drivers (list_jobs())."""
        return web.json_response(await self.manager.state.jobs(missing=[]))

    async def _id(self, request) -> str:
        """The submission id a path names: by itself, or by the id of the
        driver its job started (Ray takes either)."""
        given = request.match_info["job_id"]
        if await self.manager.exists(given):
            return given
        for job in await self.manager.state.jobs(missing=[]):
            if job["job_id"] == given and job["submission_id"] is not None:
                return job["submission_id"]
        raise web.HTTPNotFound(text=f"Job {given} does not exist")

    async def _info(self, request):
        submission_id = await self._id(request)
        try:
            return submission_id, await self.manager.get(submission_id)
        except JobNotFound:  # deleted meanwhile
            raise web.HTTPNotFound(text=f"Job {submission_id} does not exist") from None

    async def get_job(self, request):
        submission_id = await self._id(request)
        found = await self.manager.state.jobs(submission_id)
        if not found:  # deleted meanwhile
            raise web.HTTPNotFound(text=f"Job {submission_id} does not exist")
        return web.json_response(found[0])

    async def stop(self, request):
        submission_id = await self._id(request)
        try:
            stopped = await self.manager.stop(submission_id)
        except JobNotFound:
            raise web.HTTPNotFound(text=f"Job {submission_id} does not exist") from None
        return web.json_response({"stopped": stopped})

    async def delete(self, request):
        submission_id = await self._id(request)
        try:
            await self.manager.delete(submission_id)
        except JobNotFound:
            raise web.HTTPNotFound(text=f"Job {submission_id} does not exist") from None
        except JobRequestError as e:
            raise web.HTTPBadRequest(text=str(e)) from None
        return web.json_response({"deleted": True})

    async def logs(self, request):
        submission_id, _ = await self._info(request)
        text = await asyncio.to_thread(_read_all, self.manager.log_path(submission_id))
        return web.json_response({"logs": text})

    async def tail(self, request):
        submission_id, info = await self._info(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        path = self.manager.log_path(submission_id)
        offset = 0
        while True:
            # Read the status before the log: once it is terminal the log is
            # complete, so what is read after it is the end.
            ended = JobStatus(info.status).is_terminal()
            chunk = await asyncio.to_thread(_read_from, path, offset)
            while chunk:
                offset += len(chunk)
                await ws.send_str(chunk.decode(errors="replace"))
                chunk = await asyncio.to_thread(_read_from, path, offset)
            if ended or ws.closed:
                break
            await asyncio.sleep(TAIL_POLL_S)
            try:
                info = await self.manager.get(submission_id)
            except JobNotFound:
                break  # deleted meanwhile
        await ws.close()
        return ws

    # -- runtime_env packages -------------------------------------------------

    def _package(self, request) -> str:
        protocol, name = request.match_info["protocol"], request.match_info["name"]
        if protocol != "pkg" or len(name) != 64 or not all(c in "0123456789abcdef" for c in name):
            raise web.HTTPBadRequest(text=f"not a package name: {protocol}/{name}")
        return name

    async def has_package(self, request):
        if not await self.manager.has_package(self._package(request)):
            raise web.HTTPNotFound(text="no such package")
        return web.json_response({"exists": True})

    async def put_package(self, request):
        digest = self._package(request)
        data = bytearray()
        async for chunk in request.content.iter_chunked(TAIL_CHUNK):
            data += chunk
            if len(data) > packages.MAX_PACKAGE_BYTES:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=packages.MAX_PACKAGE_BYTES, actual_size=len(data)
                )
        if hashlib.sha256(data).hexdigest() != digest:
            raise web.HTTPBadRequest(text="the package's bytes do not match its name (sha256)")
        await self.manager.put_package(digest, bytes(data))
        return web.json_response({"uploaded": True})


def _read_all(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""  # not started yet


def _read_from(path: str, offset: int) -> bytes:
    """Up to TAIL_CHUNK bytes of the log from `offset`, cut after the last
    whole line of a full chunk, so a character is never split."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(TAIL_CHUNK)
    except FileNotFoundError:
        return b""
    if len(data) == TAIL_CHUNK and b"\n" in data:
        data = data[: data.rindex(b"\n") + 1]
    return data
