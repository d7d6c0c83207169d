"""`JobSubmissionClient`: Ray's job SDK, over Ray's REST API (job_api.py).

Under TLS (tls.py) the dashboard serves HTTPS with the head's certificate:
the client checks it against the cluster CA (RAY_TLS_CA_CERT), or what
Ray's `verify` names. Every request carries the cluster token as `Authorization: Bearer <hex>`
(a header, never a URL or a log line), found as resolve_dashboard says:
SOLRAY_TOKEN, SOLRAY_TOKEN_FILE, or this user's session of that dashboard.
A caller that gives its own Authorization header (Ray's `headers=`) sends
that instead. Plain requests use the standard library; tail_job_logs (a
websocket) uses aiohttp, as Ray's does.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

from solray._private import services, tls
from solray._private.runtime_env import spec
from solray._private.runtime_env.resolve import Resolver
from solray.job_submission.models import JobDetails, JobStatus

REQUEST_TIMEOUT_S = 60.0


class JobSubmissionClient:
    def __init__(
        self,
        address: str | None = None,
        create_cluster_if_needed: bool = False,
        cookies: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        verify: str | bool | None = True,
    ) -> None:
        if create_cluster_if_needed:
            raise NotImplementedError(
                "JobSubmissionClient(create_cluster_if_needed=True): solray does not start "
                "clusters for jobs; start one with `solray start --head`"
            )
        self._ssl = _ssl_context(verify)
        if address is None:
            address = os.environ.get("RAY_API_SERVER_ADDRESS")
        if address is None and os.environ.get("RAY_ADDRESS", "").startswith("http"):
            address = os.environ["RAY_ADDRESS"]
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        given = any(k.lower() == "authorization" for k in self._headers)
        if given and address not in (None, "auto"):
            self._address = address.rstrip("/")
        else:
            self._address, token = services.resolve_dashboard(address)
            if not given:
                self._headers["Authorization"] = f"Bearer {token.hex()}"
        self._cookies = dict(cookies or {})
        if self._cookies:
            self._headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self._cookies.items())
        self._default_metadata = dict(metadata or {})
        self._version = self._request("GET", "/api/version")

    def get_address(self) -> str:
        return self._address

    def get_version(self) -> str:
        return self._version["version"]

    # -- HTTP -----------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, data: bytes | None = None):
        headers = dict(self._headers)
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self._address + path, data=data, method=method, headers=headers
        )
        context = self._ssl if self._address.startswith("https://") else None
        try:
            with urllib.request.urlopen(
                request, timeout=REQUEST_TIMEOUT_S, context=context
            ) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            raise RuntimeError(f"Request failed with status code {e.code}: {text}.") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            hint = ""
            if self._address.startswith("http://") and tls.enabled():
                hint = " (TLS is on here: a TLS cluster's dashboard serves https://)"
            raise ConnectionError(
                f"Failed to connect to the job API at {self._address}: {reason}{hint}"
            ) from None

    def _upload_packages(self, runtime_env: dict) -> dict:
        """The env with its local working_dir and py_modules uploaded (once
        each: the server is asked first) and replaced by their pkg:// URIs."""

        def has(digest: str) -> bool:
            try:
                self._request("GET", f"/api/packages/pkg/{digest}")
                return True
            except RuntimeError as e:
                if "status code 404" in str(e):
                    return False
                raise

        def upload(digest: str, data: bytes) -> None:
            self._request("PUT", f"/api/packages/pkg/{digest}", data=data)

        return Resolver(has, upload).resolve(runtime_env)

    # -- Ray's methods --------------------------------------------------------

    def submit_job(
        self,
        *,
        entrypoint: str,
        job_id: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        submission_id: str | None = None,
        entrypoint_num_cpus: int | float | None = None,
        entrypoint_num_gpus: int | float | None = None,
        entrypoint_memory: int | None = None,
        entrypoint_resources: dict[str, float] | None = None,
    ) -> str:
        """Start `entrypoint` (a shell command) on the head; its submission id."""
        env = spec.validate(runtime_env, "submit_job()")
        if callable(env.get("worker_process_setup_hook")):
            raise TypeError(
                "submit_job(): runtime_env worker_process_setup_hook must be 'module.function' "
                "(a job's env travels as JSON)"
            )
        request = {
            "entrypoint": entrypoint,
            "submission_id": submission_id or job_id,
            "runtime_env": self._upload_packages(env),
            "metadata": {**self._default_metadata, **(metadata or {})},
            "entrypoint_num_cpus": entrypoint_num_cpus,
            "entrypoint_num_gpus": entrypoint_num_gpus,
            "entrypoint_memory": entrypoint_memory,
            "entrypoint_resources": entrypoint_resources,
        }
        return self._request("POST", "/api/jobs/", body=request)["submission_id"]

    def get_job_info(self, job_id: str) -> JobDetails:
        return JobDetails.from_json(self._request("GET", f"/api/jobs/{_quoted(job_id)}"))

    def get_job_status(self, job_id: str) -> JobStatus:
        return self.get_job_info(job_id).status

    def list_jobs(self) -> list[JobDetails]:
        return [JobDetails.from_json(j) for j in self._request("GET", "/api/jobs/")]

    def get_job_logs(self, job_id: str) -> str:
        return self._request("GET", f"/api/jobs/{_quoted(job_id)}/logs")["logs"]

    def stop_job(self, job_id: str) -> bool:
        """Stop a running job: True if it was running (it is stopped now)."""
        return self._request("POST", f"/api/jobs/{_quoted(job_id)}/stop")["stopped"]

    def delete_job(self, job_id: str) -> bool:
        """Forget an ended job and its logs."""
        return self._request("DELETE", f"/api/jobs/{_quoted(job_id)}")["deleted"]

    async def tail_job_logs(self, job_id: str) -> AsyncIterator[str]:
        """The job's log as it is written, in pieces, until the job ends."""
        import aiohttp

        url = self._address.replace("http", "ws", 1) + f"/api/jobs/{_quoted(job_id)}/logs/tail"
        async with aiohttp.ClientSession(headers=self._headers) as session:
            try:
                ws = await session.ws_connect(url, ssl=self._ssl)  # used for wss:// only
            except aiohttp.WSServerHandshakeError as e:
                raise RuntimeError(
                    f"Request failed with status code {e.status}: {e.message}."
                ) from None
            async with ws:
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        yield message.data
                    elif message.type == aiohttp.WSMsgType.ERROR:
                        raise ConnectionError(
                            f"the log stream of job {job_id} broke: {ws.exception()}"
                        )


def _ssl_context(verify: str | bool | None) -> ssl.SSLContext:
    """How an https:// dashboard is checked, as Ray's `verify`: True (or
    None) against the cluster CA (RAY_TLS_CA_CERT) when set, else the
    system's CAs; a path, against the CA file or directory there; False,
    not at all."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if verify is None or verify is True:
        ca = os.environ.get(tls.CA_ENV)
        return ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    if not isinstance(verify, str):
        raise TypeError(f"verify must be True, False or a CA path, got {verify!r}")
    if os.path.isdir(verify):
        return ssl.create_default_context(capath=verify)
    if os.path.isfile(verify):
        return ssl.create_default_context(cafile=verify)
    raise ValueError(f"verify={verify!r}: no such CA file or directory")


def _quoted(job_id: str) -> str:
    return urllib.request.quote(str(job_id), safe="")
