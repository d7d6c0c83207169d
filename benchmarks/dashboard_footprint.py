"""Idle memory of `solray start --head` with the dashboard on (BENCHMARKS.md).

    python benchmarks/dashboard_footprint.py

Starts a head as daemons (in a temp dir of its own, on free ports), waits
until it is idle, and sums the resident memory (RSS, as psutil reports it) of
all its processes: the control store, the client server (which serves the
dashboard), the node, its workers and the worker fork server. Twice: before
any browser has opened the page (aiohttp not loaded yet), and after logging
in and loading every view five times. Then stops exactly those processes.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

import psutil

VIEWS = ["nodes", "jobs", "tasks", "actors", "placement_groups", "objects", "logs"]


def cluster_processes(session_dir: str, control_port: int) -> list[psutil.Process]:
    """The control store (listening on its port), the processes started with
    this --session-dir, and all their children."""
    roots = {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.pid and c.laddr.port == control_port
    }
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if (
            "--session-dir" in cmdline
            and cmdline[cmdline.index("--session-dir") + 1] == session_dir
        ):
            roots.add(proc.pid)
    found = {}
    for pid in roots:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            found[proc.pid] = proc
    return list(found.values())


def report(label: str, procs: list[psutil.Process]) -> None:
    rss = sum(p.memory_info().rss for p in procs)
    pss = sum(p.memory_full_info().pss for p in procs)
    print(
        f"{label}: {len(procs)} processes, RSS {rss / 1e6:.1f} MB ({rss / 2**20:.1f} MiB), "
        f"PSS {pss / 1e6:.1f} MB"
    )
    for p in sorted(procs, key=lambda p: p.pid):
        name = next((a for a in p.cmdline() if a.startswith("solray.")), p.name())
        print(f"    {p.memory_info().rss / 1e6:6.1f} MB  {name}")


def request(url: str, method: str, path: str, body: str | None = None, cookie: str = ""):
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Cookie": cookie} if cookie else {}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body, headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def main() -> None:
    temp_dir = tempfile.mkdtemp()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLRAY_")}
    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "solray.cli",
            "start",
            "--head",
            "--port",
            "0",
            "--ray-client-server-port",
            "0",
            "--dashboard-port",
            "0",
            "--temp-dir",
            temp_dir,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    url = re.search(r"View the dashboard at http://(\S+)", started.stdout).group(1)
    root = os.path.join(temp_dir, f"solray-sessions-{os.getuid()}")
    session_dir = os.path.join(root, os.listdir(root)[0])
    with open(os.path.join(session_dir, "cluster.json")) as f:
        control_port = int(json.load(f)["control_address"].rsplit(":", 1)[1])
    try:
        time.sleep(10)  # idle means idle: the pool and the zygote have settled
        report("idle, page never opened", cluster_processes(session_dir, control_port))
        with open(os.path.join(session_dir, "token")) as f:
            token = f.read().strip()
        login = request(url, "POST", "/login", urllib.parse.urlencode({"token": token}))
        cookie = login.getheader("Set-Cookie").split(";")[0]
        for _ in range(5):
            for view in VIEWS:
                assert request(url, "GET", f"/api/{view}", cookie=cookie).status == 200
            for path in ("/", "/static/app.js", "/static/style.css"):
                request(url, "GET", path, cookie=cookie)
        time.sleep(2)
        report("idle, after every view was loaded", cluster_processes(session_dir, control_port))
    finally:
        procs = cluster_processes(session_dir, control_port)
        nodes = [p for p in procs if "solray._private.node" in p.cmdline()]
        for group in (nodes, [p for p in procs if p not in nodes]):
            for proc in group:
                try:
                    proc.terminate()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(group, timeout=15)
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
