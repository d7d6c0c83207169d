"""The wire alone (transport.py) between two processes, TLS off and on
(results in BENCHMARKS.md, "TLS").

    python benchmarks/wire.py CERT_DIR     # a directory made by `solray tls make-cert`

1. Bulk: 1 GiB sent as 8 MiB buffers, 4 in flight (as object transfers
   pull chunks), from a client to a server that answers each. GB/s.
2. Round trips: small requests, one at a time, per second.

Each row runs in fresh processes with TLS off, then on (the environment
decides, as for every solray process), alternating, three times.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time

from solray._private import certs, transport
from solray._private.protocol import Msg

CHUNK = 8 << 20
TOTAL = 1 << 30
IN_FLIGHT = 4
ROUND_TRIPS = 5000


async def _serve(token: bytes) -> None:
    sock = transport.bind_socket("127.0.0.1", 0)
    handlers = {Msg.GET_NODES: lambda conn, rid, body, buffers: conn.reply(rid, len(buffers))}
    server = await transport.serve(sock, token, handlers)
    print(transport.socket_address(sock), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()


async def _client(address: str, token: bytes) -> tuple[float, float]:
    conn = await transport.connect(address, token)
    payload = bytes(CHUNK)
    start = time.perf_counter()
    pending: set = set()
    for _ in range(TOTAL // CHUNK):
        if len(pending) >= IN_FLIGHT:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        pending.add(conn.request(Msg.GET_NODES, None, [payload]))
    await asyncio.gather(*pending)
    bulk = TOTAL / (time.perf_counter() - start) / 1e9
    start = time.perf_counter()
    for _ in range(ROUND_TRIPS):
        await conn.request(Msg.GET_NODES)
    trips = ROUND_TRIPS / (time.perf_counter() - start)
    conn.close()
    return bulk, trips


def _measure(env: dict) -> tuple[float, float]:
    token = os.urandom(32).hex()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", token],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        address = server.stdout.readline().strip()
        out = subprocess.run(
            [sys.executable, __file__, "--client", address, token],
            env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        bulk, trips = map(float, out.split())
        return bulk, trips
    finally:
        server.stdin.close()
        server.wait()


def main(cert_dir: str) -> None:
    plain = {k: v for k, v in os.environ.items() if not k.startswith(("SOLRAY_", "RAY_"))}
    runs = {"off": dict(plain), "on": dict(plain, **certs.tls_env(cert_dir))}
    results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    for _ in range(3):
        for name, env in runs.items():
            results[name].append(_measure(env))
    for name, rows in results.items():
        bulk = [r[0] for r in rows]
        trips = [r[1] for r in rows]
        print(
            f"TLS {name}: bulk {statistics.mean(bulk):.2f} +- {statistics.stdev(bulk):.2f} GB/s, "
            f"round trips {statistics.mean(trips):,.0f} +- {statistics.stdev(trips):,.0f} /s"
        )


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        asyncio.run(_serve(bytes.fromhex(sys.argv[2])))
    elif sys.argv[1] == "--client":
        print(*asyncio.run(_client(sys.argv[2], bytes.fromhex(sys.argv[3]))))
    else:
        main(sys.argv[1])
