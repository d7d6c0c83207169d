"""The dashboard, as a user meets it: in a real browser (headless Chromium
driven by selenium) against a real cluster running tasks, and over plain
HTTP for what a browser hides (status codes, cookies).

The browser tests skip, saying why, where Chromium or its driver is missing
(.ci/run installs Debian's `chromium` and `chromium-driver`). The browser
and its driver are children of the test process, so the leak check proves
none is left behind.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import shutil
import socket
import urllib.parse

import numpy as np
import psutil
import pytest
from conftest import wait_for_condition, wait_for_file
from test_cluster_cli import solray_cli, start_head, stop_daemons

import solray
from solray._private.state_client import StateClient
from solray.cluster_utils import Cluster
from solray.dashboard import data
from solray.dashboard.data import LOG_LINES_PER_WORKER, LOG_WORKERS, WorkerLogs
from solray.util.placement_group import placement_group

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# Set to a path to save the screenshot there (docs/dashboard.png is made so).
SCREENSHOT_ENV = "SOLRAY_DASHBOARD_SCREENSHOT"
ADVICE_SCREENSHOT_ENV = "SOLRAY_DASHBOARD_ADVICE_SCREENSHOT"  # docs/dashboard-advice.png


@pytest.fixture
def browser(leak_check):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "the browser tests need Chromium and chromedriver (Debian: chromium, chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def session_token(session_dir: str) -> str:
    with open(os.path.join(session_dir, "token")) as f:
        return f.read().strip()


def http_get(url: str, path: str, cookie: str | None = None) -> tuple[int, dict, str]:
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


def http_login(url: str, token: str) -> tuple[int, str | None]:
    """POST the login form: (status, the session cookie it set, if any)."""
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        body = urllib.parse.urlencode({"token": token})
        conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        cookie = response.getheader("Set-Cookie")
        return response.status, cookie.split(";")[0] if cookie else None
    finally:
        conn.close()


def show(driver, view: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'nav button[data-view="{view}"]').click()


def table_text(driver, name: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'table[data-table="{name}"]').text


def log_in(driver, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"http://{url}/")
    wait_for_condition(lambda: driver.current_url.endswith("/login"), timeout=10)
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()
    # The click only starts the navigation: wait for the page it leads to.
    wait_for_condition(
        lambda: (
            driver.find_elements(By.CSS_SELECTOR, "nav button[data-view]")
            or any(e.text for e in driver.find_elements(By.ID, "login-error"))
        ),
        timeout=15,
    )


@solray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1
        return self.n


@solray.remote
def hold(path: str, marker: str) -> str:
    print(marker, flush=True)
    wait_for_file(path)
    return marker


def test_dashboard_shows_the_cluster_only_after_login(browser, tmp_path):
    from selenium.webdriver.common.by import By

    context = solray.init(num_cpus=2)
    url = context.dashboard_url
    assert url == context.address_info["webui_url"]
    node_id = solray.get_runtime_context().get_node_id()
    job_id = solray.get_runtime_context().get_job_id()
    counter = Counter.options(name="dash-counter").remote()
    assert solray.get(counter.add.remote()) == 1
    release = tmp_path / "release"
    marker = f"dashboard-marker-{os.getpid()}"
    running = hold.remote(str(release), marker)
    stored = solray.put(np.zeros(50 * 2**20, dtype=np.uint8))  # in the object store
    group = placement_group([{"memory": 2**20}], strategy="PACK", name="dash-group")
    solray.get(group.ready(), timeout=30)

    # Unauthenticated: the browser lands on the login page with no data;
    # the API answers 401, the page's script is not served.
    browser.get(f"http://{url}/")
    wait_for_condition(lambda: browser.current_url.endswith("/login"), timeout=10)
    assert node_id[:12] not in browser.page_source
    status, _, body = http_get(url, "/api/nodes")
    assert status == 401 and node_id not in body
    status, headers, _ = http_get(url, "/static/app.js")
    assert status == 303 and headers["Location"] == "/login"

    # A wrong token is refused: still the login page, no session cookie.
    log_in(browser, url, "ab" * 32)
    wait_for_condition(
        lambda: "not the cluster token" in browser.find_element(By.ID, "login-error").text,
        timeout=10,
    )
    assert browser.current_url.endswith("/login")
    assert not [c for c in browser.get_cookies() if c["name"] == "solray_session"]

    # The right token: the nodes, the job, the actor and the worker's output.
    log_in(browser, url, session_token(context["session_dir"]))
    wait_for_condition(lambda: node_id[:12] in table_text(browser, "nodes"), timeout=15)
    [cookie] = [c for c in browser.get_cookies() if c["name"] == "solray_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # Alive, with the CPU `hold` runs on in use, and the array in its store.
    wait_for_condition(lambda: re.search(r"ALIVE [12] / 2", table_text(browser, "nodes")))
    assert re.search(r"50(\.\d)? MiB / ", table_text(browser, "nodes"))
    # The host's memory in use of its total, and its CPU utilization.
    total = psutil.virtual_memory().total
    assert re.search(rf"\d+%\s+[\d.]+ \w+ / {total / 2**30:.1f} GiB", table_text(browser, "nodes"))
    show(browser, "jobs")
    wait_for_condition(lambda: job_id in table_text(browser, "jobs"), timeout=10)
    show(browser, "actors")
    wait_for_condition(lambda: "dash-counter" in table_text(browser, "actors"), timeout=10)
    assert "Counter" in table_text(browser, "actors") and "ALIVE" in table_text(browser, "actors")
    show(browser, "placement_groups")
    wait_for_condition(lambda: "dash-group" in table_text(browser, "placement_groups"), timeout=10)
    assert re.search(r"dash-group\s+PACK\s+CREATED", table_text(browser, "placement_groups"))
    assert node_id[:12] in table_text(browser, "placement_groups")
    show(browser, "logs")
    wait_for_condition(lambda: marker in browser.find_element(By.ID, "log-lines").text, timeout=15)
    show(browser, "nodes")
    wait_for_condition(lambda: node_id[:12] in table_text(browser, "nodes"), timeout=10)
    screenshot = os.environ.get(SCREENSHOT_ENV) or str(tmp_path / "dashboard.png")
    assert browser.save_screenshot(screenshot)

    # Logging out ends the session: the same cookie is refused after.
    session = f"solray_session={cookie['value']}"
    assert http_get(url, "/api/nodes", session)[0] == 200
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    wait_for_condition(lambda: browser.current_url.endswith("/login"), timeout=10)
    assert http_get(url, "/api/nodes", session)[0] == 401

    release.touch()
    assert solray.get(running) == marker
    del stored


def test_a_running_task_appears(browser, tmp_path):
    context = solray.init(num_cpus=2)
    release = tmp_path / "release"
    running = hold.remote(str(release), "running")
    log_in(browser, context.dashboard_url, session_token(context["session_dir"]))
    show(browser, "tasks")
    try:
        wait_for_condition(
            lambda: re.search(r"hold.*RUNNING", table_text(browser, "tasks")), timeout=15
        )
        assert "RUNNING: 1" in table_text(browser, "functions")
    finally:
        release.touch()
        solray.get(running)
    # The timeline download holds the task's slice, on its worker's row.
    [cookie] = [c for c in browser.get_cookies() if c["name"] == "solray_session"]
    status, headers, body = http_get(
        context.dashboard_url, "/api/timeline", f"solray_session={cookie['value']}"
    )
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    trace = json.loads(body)
    [slice_] = [e for e in trace if e["name"].endswith("hold")]
    rows = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace if e["name"] == "thread_name"}
    assert slice_["ph"] == "X" and rows[slice_["pid"], slice_["tid"]].startswith("worker ")


@solray.remote
def tiny(i: int) -> int:
    return i


def test_the_advice_view_shows_anti_patterns(browser, tmp_path):
    context = solray.init(num_cpus=2)
    job_id = solray.get_runtime_context().get_job_id()
    log_in(browser, context.dashboard_url, session_token(context["session_dir"]))
    show(browser, "advice")
    wait_for_condition(lambda: "No anti-patterns seen" in browser.page_source, timeout=15)
    for i in range(15):
        assert solray.get(tiny.remote(i)) == i  # <- get in a loop
    with open(__file__) as f:
        [line] = [n for n, text in enumerate(f, 1) if text.rstrip().endswith("# <- get in a loop")]
    # The driver reports within a second; the view refreshes every two.
    wait_for_condition(
        lambda: f"test_dashboard.py:{line}" in table_text(browser, f"advice-{job_id}"), timeout=20
    )
    text = table_text(browser, f"advice-{job_id}")
    assert "get() right after remote(), in a loop" in text
    assert "15 gets" in text and "get of tiny(): 15" in text
    assert "submit all the tasks first" in text
    screenshot = os.environ.get(ADVICE_SCREENSHOT_ENV) or str(tmp_path / "advice.png")
    assert browser.save_screenshot(screenshot)


def test_worker_logs_stay_bounded_and_searchable():
    """The dashboard's window of worker output keeps the newest lines of the
    workers that wrote last, however much is printed."""
    logs = WorkerLogs()
    for pid in range(LOG_WORKERS + 10):
        logs.add("10.0.0.1", [[pid, False, "task", f"line {i} of {pid}"] for i in range(3)])
    logs.add("10.0.0.1", [[7, True, "f", f"late {i}"] for i in range(LOG_LINES_PER_WORKER + 5)])
    workers = logs.workers()
    assert len(workers) == LOG_WORKERS
    assert workers[0] == {
        "ip": "10.0.0.1",
        "pid": 7,
        "name": "f",
        "num_lines": LOG_LINES_PER_WORKER,
    }
    assert 0 not in {w["pid"] for w in workers}  # the first to write, long silent: dropped
    seven = logs.lines("10.0.0.1", 7, "")
    assert seven[-1]["text"] == f"late {LOG_LINES_PER_WORKER + 4}" and seven[-1]["stderr"]
    assert not logs.lines("10.0.0.1", 7, "line 0")  # pushed out by the newer lines
    last = LOG_WORKERS + 9
    assert [line["pid"] for line in logs.lines(None, None, f"LINE 2 OF {last}")] == [last]


def test_start_head_serves_the_dashboard_behind_the_token(leak_check, tmp_path):
    """`solray start --head`: the dashboard runs in the head's client server,
    its URL is printed, it refuses everything without the token's login, and
    a driver or ray:// client that joins the cluster gets its URL from init()."""
    temp_dir = str(tmp_path / "head")
    try:
        head = start_head("--temp-dir", temp_dir, "--dashboard-port", "0")
        assert head.returncode == 0, head.stderr
        url = re.search(r"View the dashboard at http://(\S+)", head.stdout).group(1)
        token_path = re.search(r"Cluster token: (\S+)", head.stdout).group(1)
        with open(token_path) as f:
            token = f.read().strip()
        address = re.search(r"control store at (\S+)\.", head.stdout).group(1)

        for path in ("/", "/api/nodes", "/api/logs", "/api/timeline", "/static/app.js"):
            status, headers, body = http_get(url, path)
            assert status in (303, 401), (path, status)
            assert "node_id" not in body
        assert http_login(url, "00" * 32) == (401, None)
        assert http_login(url, "not hex") == (401, None)
        status, cookie = http_login(url, token)
        assert status == 303 and cookie
        status, _, body = http_get(url, "/api/nodes", cookie)
        assert status == 200 and '"state": "ALIVE"' in body

        client_address = re.search(r'solray.init\("(ray://\S+)"\)', head.stdout).group(1)
        os.environ["SOLRAY_TOKEN_FILE"] = token_path
        try:
            for joining in (address, client_address):  # a driver, a thin client
                assert solray.init(address=joining).dashboard_url == url
                solray.shutdown()
        finally:
            os.environ.pop("SOLRAY_TOKEN_FILE")
            solray.shutdown()
    finally:
        stop_daemons(temp_dir)


def test_a_dashboard_port_in_use_fails_clearly(leak_check, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        with pytest.raises(OSError, match=rf"127.0.0.1:{port} for the dashboard \(dashboard_port"):
            solray.init(num_cpus=1, dashboard_port=port)
        assert not solray.is_initialized()
        temp_dir = str(tmp_path / "head")
        head = start_head("--temp-dir", temp_dir, "--dashboard-port", str(port))
        assert head.returncode != 0
        assert f"127.0.0.1:{port} for the dashboard" in head.stderr
        assert "--dashboard-port" in head.stderr
        stop_daemons(temp_dir)  # nothing should be left; this waits to be sure
    finally:
        busy.close()


def test_without_the_dashboard_there_is_no_url(leak_check, tmp_path):
    context = solray.init(num_cpus=1, include_dashboard=False)
    assert context.dashboard_url is None and context.address_info["webui_url"] is None
    solray.shutdown()

    temp_dir = str(tmp_path / "head")
    try:
        head = start_head("--temp-dir", temp_dir, "--include-dashboard", "false")
        assert head.returncode == 0, head.stderr
        assert "View the dashboard" not in head.stdout
        address = re.search(r"control store at (\S+)\.", head.stdout).group(1)
        token_path = re.search(r"Cluster token: (\S+)", head.stdout).group(1)
        os.environ["SOLRAY_TOKEN_FILE"] = token_path
        try:
            assert solray.init(address=address).dashboard_url is None
        finally:
            os.environ.pop("SOLRAY_TOKEN_FILE")
            solray.shutdown()
    finally:
        stop_daemons(temp_dir)


def test_dashboard_options_are_for_the_head(tmp_path):
    result = solray_cli("start", "--address", "127.0.0.1:1", "--dashboard-port", "9999")
    assert result.returncode != 0 and "--dashboard-port is for --head" in result.stderr


def test_views_follow_nodes_that_join_and_die(leak_check):
    """The data behind the page, over a real two-node cluster: each node's
    store is asked, and a node that died is shown dead, with nothing in use
    and nothing asked of it."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        worker_node = cluster.add_node(num_cpus=1, resources={"extra": 2})
        cluster.wait_for_nodes()

        async def views():
            state = StateClient(cluster.address, cluster.token, timeout=data.REQUEST_TIMEOUT_S)
            try:
                return await data.nodes(state), await data.objects(state)
            finally:
                await state.close()

        nodes, objects = asyncio.run(views())
        rows = {n["node_id"]: n for n in nodes["nodes"]}
        assert rows[worker_node.node_id]["resources"]["extra"] == [0.0, 2.0]
        assert rows[cluster.head_node.node_id]["is_head"]
        assert all(
            n["state"] == "ALIVE" and n["object_store"]["capacity"] > 0 for n in rows.values()
        )
        # The host's actual use, as the node's metrics endpoint reads it.
        memory = psutil.virtual_memory()
        for n in rows.values():
            host = n["host"]
            assert host["mem_total"] == memory.total and 0 < host["mem_used"] < memory.total
            assert 0.0 <= host["cpu_percent"] <= 100.0 and host["cpu_count"] == os.cpu_count()
        assert objects["missing"] == []
        assert {s["node_id"] for s in objects["stores"]} == set(rows)

        cluster.remove_node(worker_node)
        wait_for_condition(
            lambda: (
                {n["node_id"]: n["state"] for n in asyncio.run(views())[0]["nodes"]}
                == {cluster.head_node.node_id: "ALIVE", worker_node.node_id: "DEAD"}
            ),
            timeout=30,
        )
        nodes, objects = asyncio.run(views())
        dead = next(n for n in nodes["nodes"] if n["state"] == "DEAD")
        assert dead["resources"] == {} and "object_store" not in dead and "error" not in dead
        assert [s["node_id"] for s in objects["stores"]] == [cluster.head_node.node_id]
    finally:
        cluster.shutdown()
