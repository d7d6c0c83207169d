"""One process's membership of a collective group: finding the other ranks,
and moving numpy arrays between them.

Rendezvous. Each rank records its core worker's address in the control
store's key-value store (namespace `_NS`, key "<group>/<rank>") and waits
until all `world_size` ranks have; a rank already recorded by another
process is refused (two actors claiming one rank). Waiting polls the store
(backing off to 100 ms), bounded by the group's timeout, as Ray's gloo
rendezvous on its internal KV does. `destroy` deletes this rank's key. A
rank that dies without destroying leaves its key: that group name cannot be
joined at that rank again in this cluster (the error says so).

Transport. Arrays go straight from rank to rank on the core workers'
authenticated connections (COLLECTIVE_DATA, collective_inbox.py), one
message per (sender, receiver, call), matched by a per-group sequence
number that every rank advances with each collective call (send/recv pairs
count on their own, per peer). A message names the collective it belongs
to, so ranks that call different collectives in the same position get an
error rather than each other's data.

Algorithms are the simple ones, chosen for exactness over bandwidth: reduce
gathers every array at the root and combines them there in rank order;
allreduce is that reduce at rank 0 followed by a broadcast; allgather and
reducescatter send each piece directly to the rank that needs it. So every
rank computes bit-identical results (the same additions in the same
order), but the root of an allreduce receives and sends (world_size - 1)
full arrays, where a ring would move 2 (world_size - 1) / world_size. That
suits the CPU use this backend has (coordination, metrics, small models);
large-tensor training wants a GPU backend, which solray does not have.

Arithmetic runs on the calling thread (the user's), never on the I/O loop:
the loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import time

import msgpack
import numpy as np

from solray._private import context
from solray._private.protocol import Msg
from solray.experimental import internal_kv
from solray.util.collective.types import ReduceOp

_NS = "solray_collective"
_REDUCERS = {
    ReduceOp.SUM: np.add,
    ReduceOp.PRODUCT: np.multiply,
    ReduceOp.MIN: np.minimum,
    ReduceOp.MAX: np.maximum,
}


class CollectiveTimeout(RuntimeError):
    pass


def rank_key(group_name: str, rank: int) -> str:
    return f"{group_name}/{rank}"


def declaration_key(group_name: str) -> str:
    return f"declared/{group_name}"


class CpuGroup:
    """This process as rank `rank` of `world_size` in group `name`."""

    def __init__(self, world_size: int, rank: int, name: str, timeout_ms: int):
        self.world_size = world_size
        self.rank = rank
        self.name = name
        self.backend = "gloo"
        self.timeout_s = timeout_ms / 1000.0
        self._cw = context.require_core_worker()
        self._seq = 0  # collective calls made (every rank makes the same ones)
        self._sent: dict[int, int] = {}  # p2p sends per destination rank
        self._received: dict[int, int] = {}  # p2p receives per source rank
        self.addresses = self._rendezvous()

    # -- membership ---------------------------------------------------------

    def _rendezvous(self) -> list[str]:
        me = msgpack.packb({"address": self._cw.address, "world_size": self.world_size})
        key = rank_key(self.name, self.rank)
        if internal_kv._internal_kv_put(key, me, overwrite=False, namespace=_NS):
            raise RuntimeError(
                f"rank {self.rank} of collective group '{self.name}' is already taken by "
                "another process (each rank is one process; a rank whose process died "
                "without destroy_collective_group keeps the name taken)"
            )
        deadline = time.monotonic() + self.timeout_s
        pause = 0.005
        while True:
            found = {}
            for k in internal_kv._internal_kv_list(f"{self.name}/", namespace=_NS):
                value = internal_kv._internal_kv_get(k, namespace=_NS)
                rank = k.decode().rpartition("/")[2]
                if value is None or not rank.isdigit():
                    continue
                found[int(rank)] = msgpack.unpackb(value)
            for rank, entry in found.items():
                if entry["world_size"] != self.world_size or rank >= self.world_size:
                    self._leave()
                    raise RuntimeError(
                        f"collective group '{self.name}': rank {rank} joined with "
                        f"world_size {entry['world_size']}, this rank with {self.world_size}"
                    )
            if len(found) == self.world_size:
                return [found[r]["address"] for r in range(self.world_size)]
            if time.monotonic() > deadline:
                self._leave()
                missing = sorted(set(range(self.world_size)) - set(found))
                raise CollectiveTimeout(
                    f"collective group '{self.name}': ranks {missing} of {self.world_size} "
                    f"did not join within {self.timeout_s:g} s"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _leave(self) -> None:
        internal_kv._internal_kv_del(rank_key(self.name, self.rank), namespace=_NS)

    def destroy(self) -> None:
        self._leave()
        self._cw.run_on_loop(self._cw.collective.drop_group, self.name)

    # -- moving arrays ----------------------------------------------------------

    def _exchange(
        self,
        what: str,
        kind: str,
        seq_of,
        sends: list[tuple[int, np.ndarray]],
        sources: list[int],
        error: str | None = None,
    ) -> dict[int, np.ndarray]:
        """Send each (rank, array) of `sends` and receive one array from each
        rank of `sources`, all at once; returns them by source rank.
        `seq_of(rank)` is the sequence number of the message to or from it.
        An `error` goes with the sends: the receivers raise it."""
        cw, inbox = self._cw, self._cw.collective
        loop_timeout = self.timeout_s

        async def send(dst: int, array: np.ndarray) -> None:
            body = {
                "group": self.name,
                "src": self.rank,
                "kind": kind,
                "seq": seq_of(dst),
                "op": what,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "error": error,
            }
            conn = await cw.peer(self.addresses[dst])
            await conn.request(Msg.COLLECTIVE_DATA, body, [array.reshape(-1).view(np.uint8)])

        async def run():
            jobs = {asyncio.ensure_future(send(d, a)): ("send to", d) for d, a in sends}
            takes = {
                asyncio.ensure_future(inbox.take((self.name, s, kind, seq_of(s)))): s
                for s in sources
            }
            jobs.update({t: ("receive from", s) for t, s in takes.items()})
            done, pending = await asyncio.wait(jobs, timeout=loop_timeout)
            for job in pending:
                job.cancel()
            if pending:
                late = sorted(f"{jobs[j][0]} rank {jobs[j][1]}" for j in pending)
                raise CollectiveTimeout(
                    f"collective group '{self.name}': {what} on rank {self.rank} timed out "
                    f"after {self.timeout_s:g} s waiting to {', '.join(late)}"
                )
            for job in done:
                if job.exception() is not None:  # e.g. the peer's process is gone
                    action, peer = jobs[job]
                    raise RuntimeError(
                        f"collective group '{self.name}': {what} on rank {self.rank} could "
                        f"not {action} rank {peer}: {job.exception()!r}"
                    ) from job.exception()
            return {s: t.result() for t, s in takes.items()}

        got = cw.call(run())
        arrays = {}
        for src, (body, buffers) in got.items():
            if body["op"] != what:
                raise RuntimeError(
                    f"collective group '{self.name}': rank {src} called {body['op']} where "
                    f"rank {self.rank} called {what} (every rank must make the same "
                    "collective calls in the same order)"
                )
            if body["error"]:
                raise RuntimeError(f"{what} failed on rank {src}: {body['error']}")
            arrays[src] = np.frombuffer(buffers[0], dtype=np.dtype(body["dtype"])).reshape(
                body["shape"]
            )
        return arrays

    def _collective(self, what: str, sends, sources, error=None) -> dict[int, np.ndarray]:
        self._seq += 1
        seq = self._seq
        return self._exchange(what, "c", lambda _rank: seq, sends, sources, error)

    def _check_like(self, what: str, src: int, got: np.ndarray, like: np.ndarray) -> None:
        if got.shape != like.shape or got.dtype != like.dtype:
            raise RuntimeError(
                f"collective group '{self.name}': {what} got shape {got.shape} {got.dtype} "
                f"from rank {src}, rank {self.rank} has {like.shape} {like.dtype} "
                "(every rank's tensor must have the same shape and dtype)"
            )

    def _others(self) -> list[int]:
        return [r for r in range(self.world_size) if r != self.rank]

    def _combine(self, what: str, mine: np.ndarray, got: dict[int, np.ndarray], op) -> np.ndarray:
        """The reduction of every rank's array, in rank order."""
        reducer = _REDUCERS[op]
        parts = {**got, self.rank: mine}
        for src, array in got.items():
            self._check_like(what, src, array, mine)
        result = np.array(parts[0], copy=True)
        for r in range(1, self.world_size):
            reducer(result, parts[r], out=result)
        return result

    # -- the collectives (tensor checks are collective.py's) -----------------------

    def reduce(self, tensor: np.ndarray, root: int, op, what: str = "reduce") -> None:
        mine = np.ascontiguousarray(tensor)
        if self.rank != root:
            self._collective(what, [(root, mine)], [])
            return
        got = self._collective(what, [], self._others())
        np.copyto(tensor, self._combine(what, mine, got, op))

    def broadcast(self, tensor: np.ndarray, root: int, what: str = "broadcast") -> None:
        if self.rank == root:
            mine = np.ascontiguousarray(tensor)
            self._collective(what, [(r, mine) for r in self._others()], [])
            return
        got = self._collective(what, [], [root])[root]
        self._check_like(what, root, got, tensor)
        np.copyto(tensor, got)

    def allreduce(self, tensor: np.ndarray, op, what: str = "allreduce") -> None:
        # Two collective calls, so both phases keep their own sequence numbers.
        # The others wait for rank 0's result: if it cannot make one, it
        # sends them its error instead.
        try:
            self.reduce(tensor, 0, op, what)
        except RuntimeError as e:
            if self.rank == 0:
                empty = np.zeros(0, dtype=tensor.dtype)
                self._collective(what, [(r, empty) for r in self._others()], [], str(e))
            raise
        self.broadcast(tensor, 0, what)

    def barrier(self) -> None:
        self.allreduce(np.zeros(1, dtype=np.int8), ReduceOp.SUM, "barrier")

    def allgather(self, tensor_list: list, tensor: np.ndarray) -> None:
        mine = np.ascontiguousarray(tensor)
        got = self._collective("allgather", [(r, mine) for r in self._others()], self._others())
        got[self.rank] = mine
        for r, out in enumerate(tensor_list):
            self._check_like("allgather", r, got[r], out)
        for r, out in enumerate(tensor_list):
            np.copyto(out, got[r])

    def reducescatter(self, tensor: np.ndarray, tensor_list: list, op) -> None:
        pieces = [np.ascontiguousarray(t) for t in tensor_list]
        got = self._collective(
            "reducescatter", [(r, pieces[r]) for r in self._others()], self._others()
        )
        self._check_like("reducescatter", self.rank, pieces[self.rank], tensor)
        np.copyto(tensor, self._combine("reducescatter", pieces[self.rank], got, op))

    def send(self, tensor: np.ndarray, dst: int) -> None:
        self._sent[dst] = n = self._sent.get(dst, 0) + 1
        self._exchange("send", "p", lambda _rank: n, [(dst, np.ascontiguousarray(tensor))], [])

    def recv(self, tensor: np.ndarray, src: int) -> None:
        self._received[src] = n = self._received.get(src, 0) + 1
        got = self._exchange("send", "p", lambda _rank: n, [], [src])[src]
        self._check_like("recv", src, got, tensor)
        np.copyto(tensor, got)
