"""The client side of ray://: what `init("ray://HOST:PORT")` sets as
`context.client`.

It holds one authenticated connection to the client server at HOST:PORT,
which hands it to this client's proxy driver on the head (server.py,
proxy.py). Nothing else is assumed: no node on this machine, no shared
memory, no session registry (except as one of the places the token may be
found, as for init(address=...)).

Calls. The public API sends its function's name and arguments (`call`); the
reply is the result or the exception, raised here as the same type. A user
thread waits for each reply, so one thread's calls run in order on the proxy.

Client-side refs. Every ObjectRef and ActorHandle here names an object or
actor that the proxy holds for us. The proxy counts how many times it sent
each id; we count our live instances (`add_ref` under a lock when one is
made, `drop_ref` queued by `__del__`, which may run on any thread and so
takes no lock) and how many times each id arrived. When our last instance of
an id is gone, we release it with that arrival count, in a batch
(`CLIENT_RELEASE`, at most every RELEASE_INTERVAL_S); the proxy lets go of it
when every copy it sent is released. So a release crossing a reply that
carries the same id again never frees it early. Streaming generators are
released the same way when the client's generator object dies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections import deque

from solray._private import context, services, transport
from solray._private.client import wire
from solray._private.protocol import Msg
from solray.object_ref import ref_id
from solray.object_ref_generator import ObjectRefGenerator

RELEASE_INTERVAL_S = 0.05
CONNECT_TIMEOUT_S = 60.0


class ClientRefs:
    """Live instances and arrival counts of the ids the proxy holds for us.

    `counts` and `arrived` are guarded by `_lock` (user threads make refs
    while the loop applies drops); `_dropped` is a deque that `__del__`
    appends to without a lock; the loop drains it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: dict[bytes, int] = {}
        self.arrived: dict[bytes, int] = {}
        self._dropped: deque = deque()
        self._dropped_streams: deque = deque()

    def add(self, object_ids: list[bytes]) -> None:
        with self._lock:
            counts = self.counts
            for object_id in object_ids:
                counts[object_id] = counts.get(object_id, 0) + 1

    def drop(self, object_id: bytes) -> None:
        self._dropped.append(object_id)

    def drop_stream(self, task_id: bytes) -> None:
        self._dropped_streams.append(task_id)

    def received(self, object_ids: list[bytes], releases: dict[bytes, int]) -> None:
        """The proxy sent these ids (once per occurrence); any we no longer
        hold an instance of (the value did not keep it) goes to `releases`."""
        with self._lock:
            for object_id in object_ids:
                self.arrived[object_id] = self.arrived.get(object_id, 0) + 1
            for object_id in object_ids:
                if not self.counts.get(object_id) and object_id in self.arrived:
                    releases[object_id] = self.arrived.pop(object_id)

    def take_releases(self, releases: dict[bytes, int]) -> list[bytes]:
        """Apply queued drops; fill `releases` with ids no longer held here;
        return the streams dropped."""
        with self._lock:
            while self._dropped:
                object_id = self._dropped.popleft()
                left = self.counts.get(object_id, 0) - 1
                if left > 0:
                    self.counts[object_id] = left
                    continue
                self.counts.pop(object_id, None)
                if object_id in self.arrived:
                    releases[object_id] = self.arrived.pop(object_id)
        streams = []
        while self._dropped_streams:
            streams.append(self._dropped_streams.popleft())
        return streams


class _RefusedToken(Exception):
    """The client server closed the connection during the handshake."""


class ClientWorker:
    """A ray:// connection: `call` runs a public API function in the proxy.

    The attributes runtime_context.RuntimeContext reads (job_bytes,
    node_info, worker_id, ...) describe the proxy driver, as in Ray Client."""

    current_task = None
    actor_id = None
    executor = None

    def __init__(self, address: str, token: bytes):
        self.server_address = address
        self._token = token
        self.refs = ClientRefs()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="solray-client-io", daemon=True)
        self._conn: transport.Connection | None = None
        self._closed = False
        self._futures = concurrent.futures.ThreadPoolExecutor(
            max_workers=32, thread_name_prefix="solray-client-future"
        )

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    # -- connecting --------------------------------------------------------

    def start(self, namespace: str | None, log_to_driver: bool) -> None:
        self._thread.start()
        try:
            reply = asyncio.run_coroutine_threadsafe(
                self._connect(namespace, log_to_driver), self._loop
            ).result(CONNECT_TIMEOUT_S + 5)
        except _RefusedToken:
            self.disconnect()
            raise ConnectionError(
                f"Could not connect to the ray:// server at {self.server_address}: it closed "
                "the connection during authentication. Is the cluster token right? "
                "(SOLRAY_TOKEN, SOLRAY_TOKEN_FILE, or the token file `solray start` printed)"
            ) from None
        except transport.ConnectionLost:
            self.disconnect()
            raise ConnectionError(
                f"The ray:// server at {self.server_address} accepted the token, but the "
                "driver it started for this client closed the connection (its errors are in "
                "the client server's log, server_*.log in the head's session directory)"
            ) from None
        except transport.RemoteError as e:
            self.disconnect()
            raise ConnectionError(
                f"The ray:// server at {self.server_address} could not start a driver for "
                f"this client: {e}"
            ) from None
        except BaseException:
            self.disconnect()
            raise
        self.address = reply["address"]
        self.namespace = reply["namespace"]
        self.job_bytes = bytes.fromhex(reply["job_id"])
        self.worker_id = reply["worker_id"]
        self.node_info = reply["node_info"]
        self.webui_url = reply["webui_url"]  # the cluster's dashboard (HOST:PORT), or None
        self.connection_info = reply["connection_info"]

    async def _connect(self, namespace: str | None, log_to_driver: bool) -> dict:
        try:
            self._conn = await transport.connect(
                self.server_address,
                self._token,
                {Msg.CLIENT_OUTPUT: self._on_output},
                timeout=CONNECT_TIMEOUT_S,
            )
        except transport.ConnectionLost:
            raise _RefusedToken from None
        reply = await asyncio.wait_for(
            self._conn.request(
                Msg.CLIENT_CONNECT, {"namespace": namespace, "log_to_driver": log_to_driver}
            ),
            CONNECT_TIMEOUT_S,
        )
        self._loop.call_later(RELEASE_INTERVAL_S, self._release_tick)
        return reply

    def disconnect(self) -> None:
        """Close the connection (the proxy then exits) and stop the thread."""
        if self._closed:
            return
        self._closed = True

        async def close():
            if self._conn is not None:
                self._release()
                self._conn.close()
                await asyncio.sleep(0)

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            except Exception:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()
        self._futures.shutdown(wait=False)

    # -- calls -------------------------------------------------------------

    def call(self, name: str, args: tuple = (), kwargs: dict | None = None):
        """Run the public API function `name` in the proxy; its result, or
        its exception raised here."""
        body, buffers, _ = wire.pack((args, kwargs or {}))
        body["name"] = name

        async def request():
            if self._conn is None or self._conn.closed:
                raise transport.ConnectionLost("connection is closed")
            return await self._conn.request(Msg.CLIENT_CALL, body, buffers, raw=True)

        if self._closed:
            raise ConnectionError("this ray:// client connection is shut down")
        future = asyncio.run_coroutine_threadsafe(request(), self._loop)
        try:
            reply, reply_buffers = future.result()
        except transport.ConnectionLost:
            raise ConnectionError(
                f"lost the connection to the ray:// server at {self.server_address}"
            ) from None
        except BaseException:
            # Interrupted (Ctrl-C): refs in a late reply are released at once.
            future.add_done_callback(self._release_unread)
            raise
        releases: dict[bytes, int] = {}
        try:
            value, is_error = wire.unpack(reply, reply_buffers)
        finally:
            self.refs.received(reply["refs"], releases)
            self._send_releases(releases)
        if is_error:
            from solray._private.object_reader import raise_stored_error

            raise_stored_error(value)
        return value

    def _release_unread(self, future: concurrent.futures.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        releases: dict[bytes, int] = {}
        self.refs.received(future.result()[0]["refs"], releases)
        self._send_releases(releases)

    def value_future(self, ref) -> concurrent.futures.Future:
        """For ObjectRef.future() and `await ref`."""
        return self._futures.submit(self.call, "get", (ref,))

    # -- refs --------------------------------------------------------------

    def add_ref(self, object_id: bytes, owner: str) -> None:
        self.refs.add((object_id,))

    def add_refs(self, refs: list) -> None:
        self.refs.add(list(map(ref_id, refs)))

    def drop_ref(self, object_id: bytes) -> None:
        self.refs.drop(object_id)

    def release_stream(self, task_id: bytes) -> None:
        self.refs.drop_stream(task_id)

    def _release_tick(self) -> None:
        if self._closed or self._conn is None or self._conn.closed:
            return
        self._release()
        self._loop.call_later(RELEASE_INTERVAL_S, self._release_tick)

    def _release(self) -> None:
        """Loop thread: send what was dropped since the last time."""
        releases: dict[bytes, int] = {}
        streams = self.refs.take_releases(releases)
        if releases or streams:
            self._conn.send(
                Msg.CLIENT_RELEASE, {"refs": list(releases.items()), "streams": streams}
            )

    def _send_releases(self, releases: dict[bytes, int]) -> None:
        if releases and not self._closed:
            self._loop.call_soon_threadsafe(self._send_release_now, releases)

    def _send_release_now(self, releases: dict[bytes, int]) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.send(Msg.CLIENT_RELEASE, {"refs": list(releases.items()), "streams": []})

    # -- output ------------------------------------------------------------

    def _on_output(self, conn, rid, body, buffers) -> None:
        stream = sys.stderr if body["err"] else sys.stdout
        try:
            stream.write(body["text"])
            stream.flush()
        except Exception:
            pass

    def context_info(self) -> dict:
        return {
            "address": f"ray://{self.server_address}",
            "node_id": self.node_info["node_id"],
            "node_ip_address": self.node_info["ip"],
            "session_dir": None,
            "namespace": self.namespace,
            "webui_url": self.webui_url,
        }


class ClientObjectRefGenerator(ObjectRefGenerator):
    """A streaming generator's client side: each `next()` asks the proxy for
    the next ref of its generator (proxy.API["next"])."""

    def __next__(self):
        if self._done:
            raise StopIteration
        client = context.client
        if client is None:
            raise RuntimeError("solray is not initialized: this generator's client is gone")
        try:
            return client.call("next", (self,))
        except StopIteration:
            self._done = True
            raise

    async def __anext__(self):
        def step():
            try:
                return False, next(self)
            except StopIteration:
                return True, None

        done, ref = await asyncio.get_running_loop().run_in_executor(None, step)
        if done:
            raise StopAsyncIteration
        return ref

    def next_object_id(self) -> bytes:
        raise NotImplementedError("a ray:// client's generator is read through the proxy")

    def __del__(self):
        client = context.client
        if client is not None:
            client.release_stream(self._task_id)

    def __reduce__(self):
        # Passed to the proxy (wait, cancel, next): its generator there.
        from solray._private.client.proxy import proxy_stream

        return proxy_stream, (self._task_id,)


def client_stream(task_id: bytes, owner: str) -> ClientObjectRefGenerator:
    """What a proxy's ObjectRefGenerator unpickles to in the client."""
    return ClientObjectRefGenerator(task_id, owner)


def connect(
    address: str, namespace: str | None, log_to_driver: bool, temp_dir: str | None
) -> ClientWorker:
    """A connected client for "HOST:PORT" (the part after ray://). The token
    comes from where init(address=...) finds it (services.resolve_cluster)."""
    _, token = services.resolve_cluster(address, temp_dir)
    client = ClientWorker(address, token)
    client.start(namespace, log_to_driver)
    return client
