"""The state API's view of a cluster: one client for `util.state`, the CLI
(`solray list|get|summary|logs`) and the dashboard.

A StateClient holds a connection to the control store (a ControlClient, so
it outlives a control store restart: a long-lived caller, the dashboard,
passes its own, which it also writes through) and one to each node it
asks. Cluster-wide answers are gathered by the caller: actors, placement
groups, nodes, jobs and task events come from the control store; objects,
workers, log files and node stats from every alive node, asked at once
(LIST_OBJECTS, LIST_WORKERS, LIST_LOGS, NODE_STATS). The control store
stays off that path, and a node that does not answer in time is reported
(`missing`), not waited for beyond the timeout. Drivers already reach
every node, so a caller on a cluster machine does too.

Where to connect (`resolve`): in a driver or worker, its own cluster; given
an address, that cluster ("auto": this user's newest cluster on this
machine; else the control store's HOST:PORT, or its ray:// client server's),
with the token found as `solray status` finds it (services.resolve_cluster).
So the state API works from any process of the user, initialized or not.

Synchronous callers use a `Session`: a StateClient on an event loop of its
own thread, so it works the same from a plain thread, from an async actor
(whose thread runs a loop already) and from a generator (`get_log(follow=
True)`) that keeps its connections between reads. The dashboard, already
async, uses a StateClient directly.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from solray._private import context, services, transport
from solray._private.control_client import ControlClient
from solray._private.protocol import Msg
from solray.job_submission.models import NAMESPACE as SUBMISSIONS
from solray.job_submission.models import (
    SUBMISSION_ID_KEY,
    DriverInfo,
    JobDetails,
    JobInfo,
    JobStatus,
    JobType,
)


class RayStateApiException(Exception):
    """The state API could not get its answer (Ray's name): a node or the
    control store did not answer, or refused the request."""


def resolve(address: str | None) -> tuple[str, bytes]:
    """(control store address, token) of the cluster to ask."""
    cw = context.core_worker
    if address is None and cw is not None:
        return cw.node_info["control_address"], cw.token
    if address is not None and address.startswith("ray://"):
        address = address[len("ray://") :]
    try:
        return services.resolve_cluster(address or "auto")
    except (ConnectionError, OSError, ValueError) as e:
        raise ConnectionError(f"cannot find the cluster to ask: {e}") from None


class StateClient:
    def __init__(
        self,
        control_address: str,
        token: bytes,
        timeout: float = 30,
        control: ControlClient | None = None,
    ):
        """`control`: a connected ControlClient to ask through (the caller's,
        which closes it); without it, the client dials its own on first use."""
        self.control_address = control_address
        self.token = token
        self.timeout = timeout
        self._own_control = control is None
        self._control = control or ControlClient(control_address, token)
        self._dialing: asyncio.Future | None = None  # our own ControlClient's first dial
        self._conns: dict[str, transport.Connection] = {}
        self.missing: list[str] = []  # nodes that did not answer, and why

    async def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        if self._own_control:
            self._control.close()

    async def _ask(self, address: str, call: Callable[[], Awaitable]):
        try:
            return await asyncio.wait_for(call(), self.timeout)
        except transport.RemoteError as e:
            raise RayStateApiException(f"{address} refused the request: {e}") from None
        except (OSError, ConnectionError, TimeoutError) as e:
            raise RayStateApiException(
                f"cannot reach {address}: {type(e).__name__}: {e}".rstrip(": ")
            ) from None

    async def control(self, msg: int, body=None, raw: bool = False):
        """A request to the control store; while it restarts, waits for it
        (up to the timeout)."""

        async def call():
            if self._own_control:
                failed = (
                    self._dialing is not None
                    and self._dialing.done()
                    and (self._dialing.exception() is not None)
                )
                if self._dialing is None or failed:
                    self._dialing = asyncio.ensure_future(self._control.connect())
                await asyncio.shield(self._dialing)
            return await self._control.request(msg, body, raw=raw)

        return await self._ask(self.control_address, call)

    async def node(self, node: dict, msg: int, body=None):
        address = node["address"]

        async def call():
            conn = self._conns.get(address)
            if conn is None or conn.closed:
                conn = self._conns[address] = await transport.connect(
                    address, self.token, timeout=self.timeout
                )
            return await conn.request(msg, body)

        return await self._ask(address, call)

    async def nodes(self) -> list[dict]:
        """Every node the cluster has had, as the control store registered it."""
        return await self.control(Msg.GET_NODES)

    async def find_node(self, node_id: str | None = None, node_ip: str | None = None) -> dict:
        """An alive node by id (a unique prefix will do) or IP; the head if neither."""
        alive = [n for n in await self.nodes() if n["alive"]]
        if node_id:
            found = [n for n in alive if n["node_id"].startswith(node_id)]
            what = f"id {node_id}"
        elif node_ip:
            found = [n for n in alive if n["ip"] == node_ip]
            what = f"IP {node_ip}"
        else:
            found = [n for n in alive if "node:__internal_head__" in n["resources_total"]]
            what = "head"
        if len(found) != 1:
            known = ", ".join(f"{n['node_id'][:12]} ({n['ip']})" for n in alive)
            problem = "no alive node" if not found else "several alive nodes"
            raise ValueError(f"{problem} with {what}; alive nodes: {known}")
        return found[0]

    async def each_node(
        self, msg: int, body=None, missing: list[str] | None = None
    ) -> list[tuple[dict, Any]]:
        """Ask every alive node at once: (node, answer) of those that
        answered; the others are added to `missing` (the client's own list
        unless another is given: a long-lived caller keeps one per query)."""
        missing = self.missing if missing is None else missing
        alive = [n for n in await self.nodes() if n["alive"]]
        answers = await asyncio.gather(
            *(self.node(n, msg, body) for n in alive), return_exceptions=True
        )
        out = []
        for node, answer in zip(alive, answers, strict=True):
            if isinstance(answer, BaseException):
                missing.append(f"node {node['node_id'][:12]} ({node['address']}): {answer}")
            else:
                out.append((node, answer))
        return out

    async def _kv_all(self, namespace: str) -> dict[str, bytes]:
        """Every entry of a key-value namespace of the control store."""
        keys = sorted(await self.control(Msg.KV_KEYS, {"ns": namespace}))
        answers = await asyncio.gather(
            *(self.control(Msg.KV_GET, {"ns": namespace, "key": k}, raw=True) for k in keys)
        )
        return {k: bytes(bufs[0]) for k, (found, bufs) in zip(keys, answers, strict=True) if found}

    # -- the cluster's state, in Ray's field names -----------------------------

    async def actors(self) -> list[dict]:
        return await self.control(Msg.LIST_ACTORS)

    async def placement_groups(self) -> list[dict]:
        table = await self.control(Msg.PG_TABLE)
        return [
            {
                "placement_group_id": g["placement_group_id"],
                "name": g["name"],
                "creator_job_id": g.get("creator_job_id"),
                "state": g["state"],
                "is_detached": g.get("is_detached"),
                "bundles": [
                    {
                        "bundle_id": i,
                        "node_id": g["bundles_to_node_id"].get(i),
                        "unit_resources": bundle,
                    }
                    for i, bundle in g["bundles"].items()
                ],
                "stats": {"scheduling_state": g["state"], "strategy": g["strategy"]},
            }
            for g in table.values()
        ]

    async def node_states(self) -> list[dict]:
        return [
            {
                "node_id": n["node_id"],
                "node_ip": n["ip"],
                "is_head_node": "node:__internal_head__" in n["resources_total"],
                "state": "ALIVE" if n["alive"] else "DEAD",
                "state_message": None if n["alive"] else "the node left the cluster",
                "node_name": n.get("node_name") or n["ip"],
                "resources_total": {
                    k: v for k, v in n["resources_total"].items() if not k.startswith("node:")
                },
                "labels": n.get("labels", {}),
                "start_time_ms": _ms(n.get("start_time")),
                "end_time_ms": _ms(n.get("end_time")),
            }
            for n in await self.nodes()
        ]

    async def node_stats(self, missing: list[str] | None = None) -> dict[str, dict]:
        """node id -> its NODE_STATS answer (`host`: actual CPU and memory
        use, system_metrics.HostUsage; `store`: its object store), of every
        alive node that answered."""
        return {
            n["node_id"]: stats for n, stats in await self.each_node(Msg.NODE_STATS, None, missing)
        }

    async def workers(self, missing: list[str] | None = None) -> list[dict]:
        return [
            row for _, rows in await self.each_node(Msg.LIST_WORKERS, None, missing) for row in rows
        ]

    async def objects(self, missing: list[str] | None = None) -> list[dict]:
        """Every process's references, on every node, with the node's id and IP."""
        return [
            dict(row, ip=node["ip"], node_id=node["node_id"])
            for node, rows in await self.each_node(Msg.LIST_OBJECTS, None, missing)
            for row in rows
        ]

    async def jobs(
        self, submission_id: str | None = None, missing: list[str] | None = None
    ) -> list[dict]:
        """Ray's JobDetails of every job, as Ray's list_jobs: each submitted
        job (type SUBMISSION: its record as the job manager wrote it, with
        `job_id` and `driver_info` of the last driver it started) and each
        driver no submission started (type DRIVER: RUNNING while its driver
        is connected to its node, else SUCCEEDED, as in Ray). Given a
        `submission_id`, only that job (and the nodes are not asked)."""
        if submission_id is None:
            submissions = await self._kv_all(SUBMISSIONS)
        else:
            found, bufs = await self.control(
                Msg.KV_GET, {"ns": SUBMISSIONS, "key": submission_id}, raw=True
            )
            submissions = {submission_id: bytes(bufs[0])} if found else {}
        drivers = {k: msgpack.unpackb(v) for k, v in (await self._kv_all("job")).items()}
        last_driver = {}  # submission id -> the job id of the last driver it started
        for job_id, info in drivers.items():  # in job id order
            submitted = (info.get("metadata") or {}).get(SUBMISSION_ID_KEY)
            if submitted is not None:
                last_driver[submitted] = job_id
        rows = []
        for sid, record in submissions.items():
            job_id = last_driver.get(sid)
            details = JobDetails.of_submission(sid, JobInfo.from_json(json.loads(record)), job_id)
            if job_id is not None and drivers[job_id].get("driver"):
                details.driver_info = DriverInfo(**drivers[job_id]["driver"])
            rows.append(details)
        rows.sort(key=lambda j: j.start_time or 0)
        if submission_id is None:
            rows += await self._driver_jobs(drivers, set(last_driver.values()), missing)
        return [row.dict() for row in rows]

    async def _driver_jobs(
        self, drivers: dict[str, dict], submitted: set[str], missing: list[str] | None
    ) -> list[JobDetails]:
        """The drivers no submission started, alive or not as their nodes say."""
        workers = {
            w["worker_id"]: w for w in await self.workers(missing) if w["worker_type"] == "DRIVER"
        }
        rows = []
        for job_id, info in drivers.items():
            if job_id in submitted:
                continue
            driver = info.get("driver")
            worker = workers.get(driver["id"]) if driver else None
            alive = worker is not None and worker["is_alive"]
            rows.append(
                JobDetails(
                    type=JobType.DRIVER,
                    job_id=job_id,
                    status=JobStatus.RUNNING if alive else JobStatus.SUCCEEDED,
                    entrypoint=info.get("entrypoint", ""),
                    driver_info=driver,
                    start_time=info.get("start_time"),
                    end_time=None if alive or worker is None else worker["end_time_ms"],
                    metadata=info.get("metadata") or {},
                    runtime_env=info.get("runtime_env") or {},
                    driver_node_id=info.get("driver_node_id"),
                )
            )
        return rows

    async def tasks(self, filters: list, limit: int, detail: bool, precise: bool = False) -> dict:
        """LIST_TASKS: task attempts, filtered where their events are kept
        (task_event_store.py): {"tasks", "total", "dropped"}."""
        body = {"filters": filters, "limit": limit, "detail": detail}
        if precise:
            body["precise"] = True
        return await self.control(Msg.LIST_TASKS, body)

    async def task_summary(self) -> dict:
        """LIST_TASKS summarized where the events are kept: counts by
        function and state (task_event_store.TaskEventStore.summary)."""
        return await self.control(Msg.LIST_TASKS, {"summarize": True})

    # -- logs --------------------------------------------------------------

    async def log_files(self, node: dict) -> list[dict]:
        return await self.node(node, Msg.LIST_LOGS)

    async def read_log(self, node: dict, **body) -> dict:
        """GET_LOG (log_files.py): `filename` with `tail` or `offset`, or
        `task_id` with `suffix`."""
        return await self.node(node, Msg.GET_LOG, body)


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds else None


class Session:
    """A StateClient on an event loop of its own thread, for synchronous callers."""

    def __init__(self, address: str | None, timeout: float = 30):
        control_address, token = resolve(address)
        self.client = StateClient(control_address, token, timeout)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="solray-state", daemon=True
        )
        self._thread.start()

    def call(self, fn: Callable[..., Awaitable], *args, **kwargs):
        """fn(client, *args, **kwargs), awaited on the session's loop."""
        return asyncio.run_coroutine_threadsafe(
            fn(self.client, *args, **kwargs), self._loop
        ).result()

    def close(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.client.close(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
