"""A node's part in `solray why` and `solray stack` (why.py).

WHY_NODE: what only the node knows of waiting work (its lease queue: each
request waiting for resources, or holding them and waiting for a worker,
and the runtime env preparations those workers wait for, with since when),
plus the report of every driver and worker connected to it (WHY_PROCESS,
process_probe.py), asked at once.

STACKS_NODE: the stacks of its drivers and workers (or of one pid), each
asked on its connection to the node (STACKS_PROCESS); a process that does
not answer within PROBE_TIMEOUT_S is listed with the error, not waited for.
"""

from __future__ import annotations

import asyncio
import time

from solray._private import transport
from solray._private.protocol import Msg

PROBE_TIMEOUT_S = 5.0


class NodeProbe:
    def __init__(self, node):
        self.node = node
        self.handlers = {Msg.WHY_NODE: self.why, Msg.STACKS_NODE: self.stacks}

    def _processes(self, pid: int | None = None) -> list[tuple[int | None, transport.Connection]]:
        """(pid, connection) of the drivers and workers connected here."""
        found = []
        for conn in self.node.clients:
            if conn.closed:
                continue
            worker = conn.peer.get("worker")
            if worker is not None:
                proc_pid = worker.process.pid
            else:
                proc_pid = (self.node.pool.drivers.get(conn) or {}).get("pid")
            if pid is None or proc_pid == pid:
                found.append((proc_pid, conn))
        return found

    async def _ask(self, msg: int, processes) -> list[dict]:
        answers = await asyncio.gather(
            *(asyncio.wait_for(conn.request(msg), PROBE_TIMEOUT_S) for _, conn in processes),
            return_exceptions=True,
        )
        rows = []
        for (pid, conn), answer in zip(processes, answers, strict=True):
            if isinstance(answer, BaseException):
                error = f"{type(answer).__name__}: {answer}".rstrip(": ")
                rows.append(
                    {"pid": pid, "address": conn.peer.get("address"), "error": error or "no answer"}
                )
            else:
                rows.append(answer)
        return rows

    def why(self, conn, rid, body, bufs) -> None:
        self.node.background(self._why(conn, rid))

    async def _why(self, conn, rid) -> None:
        leases = self.node.leases
        preparing = self.node.runtime_envs.preparing
        now = time.time()
        requests = []
        for stage, queue in (("resources", leases.pending), ("worker", leases.awaiting)):
            for request in queue:
                if request.conn.closed:
                    continue
                env = preparing.get(request.env_key) if request.env_key else None
                requests.append(
                    {
                        "stage": stage,
                        "resources": request.resources,
                        "label_selector": request.demand.selector,
                        "owner": request.conn.peer.get("address"),
                        "actor_id": request.actor_id.hex() if request.actor_id else None,
                        "env": (
                            {"step": env["step"], "for_s": round(now - env["since"], 1)}
                            if env is not None
                            else None
                        ),
                        "env_key": request.env_key,
                    }
                )
        processes = await self._ask(Msg.WHY_PROCESS, self._processes())
        conn.reply(
            rid,
            {
                "node_id": self.node.node_id,
                "requests": requests,
                "available": self.node.resources.available_view(),
                "processes": processes,
            },
        )

    def stacks(self, conn, rid, body, bufs) -> None:
        self.node.background(self._stacks(conn, rid, (body or {}).get("pid")))

    async def _stacks(self, conn, rid, pid: int | None) -> None:
        conn.reply(rid, await self._ask(Msg.STACKS_PROCESS, self._processes(pid)))
