"""The `solray` command line."""

from __future__ import annotations

import os

import click


class _Commands(click.Group):
    """Every command reports an unsafe session registry as a plain error."""

    def invoke(self, ctx: click.Context):
        from solray._private.services import SessionRegistryError

        try:
            return super().invoke(ctx)
        except SessionRegistryError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=_Commands)
@click.version_option(package_name="solray")
def main() -> None:
    """solray: a distributed task, actor and object runtime with Ray Core's API."""


@main.command()
@click.option(
    "-k",
    "pattern",
    default=None,
    help="Run only the rows whose name matches this regular expression.",
)
@click.option(
    "--round-seconds",
    default=2.0,
    show_default=True,
    help="Length of each of the four timed rounds of a row.",
)
def microbenchmark(pattern: str | None, round_seconds: float) -> None:
    """Run Ray's microbenchmark workloads on a local cluster.

    Prints one line per row, `NAME per second MEAN +- SD`, with the names
    `ray microbenchmark` uses, so the two can be compared side by side.
    """
    from solray._private import microbenchmark as mb

    click.echo(f"solray microbenchmark on {os.cpu_count()} CPU(s)")
    mb.run(pattern, round_seconds)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-m", "module", default=None, help="Run a module (as `python -m MODULE`).")
@click.option("-c", "code", default=None, help="Run this code (as `python -c CODE`).")
@click.option("--temp-dir", default=None, help="Where the `ray` command is kept (see `start`).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(module: str | None, code: str | None, temp_dir: str | None, args: tuple[str, ...]) -> None:
    """Run a program written for Ray on solray, unchanged.

    `solray run script.py ARGS` (or `-m package.module ARGS`, `-c CODE`) runs
    the program with this Python, where `import ray` (and `ray.util`,
    `ray.exceptions`, ...) is solray and a `ray` command on PATH is this CLI
    (`ray start --head`, `ray status`, `ray stop`): in the program and in every
    process it starts. Nothing named `ray` is installed.
    """
    from solray._private import runner

    if module is not None and code is not None:
        raise click.UsageError("give -m MODULE or -c CODE, not both")
    if module is None and code is None and not args:
        raise click.UsageError("give a script to run (or -m MODULE, or -c CODE)")
    if module is not None:
        argv = ["-m", module, *args]
    elif code is not None:
        argv = ["-c", code, *args]
    else:
        argv = list(args)
    runner.exec_program(argv, temp_dir)


TEMP_DIR_HELP = (
    "Where this user's session registry is (its solray-sessions-<uid> directory); "
    "default: the system's temp dir."
)


def _node_options(f):
    f = click.option("--num-cpus", type=float, default=None, help="CPUs this node offers.")(f)
    f = click.option("--num-gpus", type=float, default=None, help="GPUs this node offers.")(f)
    f = click.option(
        "--resources", default=None, help="Custom resources as JSON, e.g. '{\"special\": 2}'."
    )(f)
    f = click.option(
        "--object-store-memory",
        type=int,
        default=None,
        help="Bytes of shared memory for this node's object store.",
    )(f)
    f = click.option(
        "--node-ip-address",
        default=None,
        help="Address this node's sockets bind to, the one other machines reach it at. "
        "Default: the address this machine routes from towards the head (with --head: "
        "towards the outside world; 127.0.0.1 on a machine without a network).",
    )(f)
    f = click.option(
        "--object-spilling-directory",
        default=None,
        help="Where this node spills objects when its store is full (in a subdirectory "
        "of its own). Default: under the session directory.",
    )(f)
    f = click.option("--temp-dir", default=None, help=TEMP_DIR_HELP)(f)
    f = click.option(
        "--labels", default=None, help="Node labels for label_selector, e.g. 'zone=a,disk=ssd'."
    )(f)
    return f


@main.command()
@click.option("--head", is_flag=True, help="Start a head node: the control store and a node.")
@click.option("--address", default=None, help="HOST:PORT of the head to join (not with --head).")
@click.option(
    "--port", type=int, default=6379, show_default=True, help="Port of the control store (--head)."
)
@click.option(
    "--token-file",
    type=click.File("r"),
    default=None,
    help="File holding the cluster token (hex); '-' reads it from stdin. Without it, "
    "--address takes SOLRAY_TOKEN, SOLRAY_TOKEN_FILE or this user's session registry, "
    "and --head makes a new token.",
)
@click.option(
    "--token",
    hidden=True,
    expose_value=False,
    callback=lambda ctx, param, value: _refuse_token_argument(value),
    help="Refused: a token on the command line is readable by every local user.",
)
@click.option(
    "--ray-client-server-port",
    type=click.IntRange(0, 65535),
    default=10001,
    show_default=True,
    help="Port of the head's client server (--head only), where thin clients connect with "
    'solray.init("ray://HOST:PORT"); 0 picks a free port. Each client gets a driver of its '
    "own on the head, which ends, freeing what the client owned, when the client "
    "disconnects.",
)
@click.option(
    "--metrics-export-port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Port of this node's Prometheus endpoint (GET /metrics: solray.util.metrics); "
    "default: a free port, printed.",
)
@click.option(
    "--metrics-export-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics endpoint listens on; give this node's address (or 0.0.0.0) "
    "for a Prometheus on another machine to scrape it. It serves read-only text, "
    "without authentication.",
)
@click.option(
    "--include-dashboard",
    type=bool,
    default=None,
    help="Start the dashboard on the head (--head only; default: yes, as in Ray).",
)
@click.option(
    "--dashboard-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the dashboard listens on (0.0.0.0: every interface). It serves "
    "nothing without a login with the cluster token.",
)
@click.option(
    "--dashboard-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the dashboard; default 8265, or a free port if 8265 is taken. A port "
    "given must be free.",
)
@click.option(
    "--storage",
    default=None,
    help="Where the control store keeps its tables, so that it can restart without the "
    "cluster losing its actors, placement groups and key-value store (--head only): "
    "redis://HOST:PORT for a Redis server (Ray's RAY_REDIS_ADDRESS=HOST:PORT works too), "
    "or sqlite:///PATH. Default: a SQLite file in the session directory.",
)
@click.option(
    "--redis-username",
    default=None,
    help="User name for the Redis server of --storage / RAY_REDIS_ADDRESS (as Ray's).",
)
@click.option(
    "--redis-password",
    default=None,
    help="Not accepted: a password on the command line is readable by every local user. "
    "Give --redis-password-file.",
)
@click.option(
    "--redis-password-file",
    type=click.File("r"),
    default=None,
    help="File holding the password for the Redis server of --storage / RAY_REDIS_ADDRESS "
    "('-': read it from stdin).",
)
@click.option(
    "--tls-generate",
    "tls_generate",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[DIR]",
    help="--head only: turn TLS on with a new cluster CA (or the one already in DIR) and a "
    "certificate for this host's addresses, written to DIR (default: the session's tls/), "
    "and print the variables that make other processes use them. Certificates for other "
    "hosts: `solray tls make-cert`.",
)
@click.option("--block", is_flag=True, help="Stay in the foreground until the processes exit.")
@_node_options
@click.pass_context
def start(
    ctx,
    head,
    address,
    port,
    ray_client_server_port,
    token_file,
    metrics_export_port,
    metrics_export_host,
    include_dashboard,
    dashboard_host,
    dashboard_port,
    storage,
    redis_username,
    redis_password,
    redis_password_file,
    tls_generate,
    block,
    num_cpus,
    num_gpus,
    resources,
    object_store_memory,
    node_ip_address,
    object_spilling_directory,
    temp_dir,
    labels,
) -> None:
    """Start this machine's solray processes as daemons.

    With --head: a control store, a node, a ray:// client server and the
    dashboard (a web page: log in with the cluster token); prints
    how to join nodes, drivers and clients. With --address: a node that joins
    that cluster. Every connection must present the cluster token, so keep the
    token file private. The token is never taken on the command line, where
    every local user could read it: give --token-file PATH, or --token-file -
    and the token on stdin.
    """
    import json
    import os
    import shutil

    from solray._private import host, init_options, services, tls
    from solray._private.labels import parse_labels_string
    from solray._private.worker import node_arguments, with_spilling_directory

    if head == bool(address):
        raise click.UsageError("give exactly one of --head and --address HOST:PORT")
    if storage is not None and not head:
        raise click.UsageError("--storage is for --head: the control store runs on the head")
    if storage is not None and not storage.startswith(("sqlite://", "redis://", "rediss://")):
        raise click.BadParameter(
            f"{storage!r}: give redis://HOST:PORT or sqlite:///PATH", param_hint="--storage"
        )
    if redis_password is not None:
        raise click.UsageError(
            "--redis-password is not accepted: a password on the command line is readable by "
            "every local user (/proc/PID/cmdline). Give --redis-password-file PATH, or "
            "--redis-password-file - and the password on stdin."
        )
    if redis_username is not None or redis_password_file is not None:
        password = redis_password_file.read().strip() if redis_password_file else None
        storage = _with_redis_credentials(storage, redis_username, password)
    given = ctx.get_parameter_source("ray_client_server_port")
    if address and given is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError(
            "--ray-client-server-port is for --head: the client server runs on the head"
        )
    dashboard_given = [
        f"--{name.replace('_', '-')}"
        for name in ("include_dashboard", "dashboard_host", "dashboard_port")
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    ]
    if address and dashboard_given:
        raise click.UsageError(
            f"{dashboard_given[0]} is for --head: the dashboard runs on the head"
        )
    if address and tls_generate is not None:
        raise click.UsageError(
            "--tls-generate is for --head: on another host, make its certificate with "
            "`solray tls make-cert` and set the variables it prints"
        )
    try:
        dashboard = init_options.check_dashboard(include_dashboard, dashboard_host, dashboard_port)
    except ValueError as e:
        raise click.BadParameter(str(e).removeprefix("init(): ")) from None
    if resources is not None:
        try:
            resources = json.loads(resources)
        except ValueError as e:
            raise click.BadParameter(f"--resources is not JSON: {e}") from None
    try:
        labels = parse_labels_string(labels or "")
    except (TypeError, ValueError) as e:
        raise click.BadParameter(str(e)) from None
    token_bytes = _cli_token(token_file, address, temp_dir, new=head)
    node_args = node_arguments(
        num_cpus,
        num_gpus,
        resources,
        object_store_memory,
        with_spilling_directory({}, object_spilling_directory),
        labels=labels,
    )
    if node_ip_address is None:
        node_ip_address = host.default_node_ip(None if head else address)
    session_dir = services.new_session_dir(temp_dir)
    tls_env = None
    if tls_generate is not None:
        tls_env = _generate_tls(tls_generate or os.path.join(session_dir, "tls"), node_ip_address)
        os.environ.update(tls_env)  # for the processes started here, and this one
    try:
        tls.settings()  # a TLS setting that cannot work fails here, not in a daemon
        tls.client_context()
    except tls.TLSConfigError as e:
        shutil.rmtree(session_dir, ignore_errors=True)
        raise click.ClickException(str(e)) from None
    launcher = services.Launcher(session_dir, token_bytes, daemon=True)
    if head:
        try:
            control = launcher.start_control_store(node_ip_address, port, storage=storage)
        except OSError as e:
            raise click.ClickException(f"cannot listen on {node_ip_address}:{port}: {e}") from None
        address = control.address
        try:
            client_server = launcher.start_client_server(
                address, node_ip_address, ray_client_server_port, dashboard
            )
        except services.DashboardPortError as e:
            launcher.stop()
            shutil.rmtree(session_dir, ignore_errors=True)
            raise click.ClickException(
                f"{e}. Give another --dashboard-port (0: any free port)."
            ) from None
        except OSError as e:
            launcher.stop()
            shutil.rmtree(session_dir, ignore_errors=True)
            raise click.ClickException(
                f"cannot listen on {node_ip_address}:{ray_client_server_port} for the ray:// "
                f"client server: {e}. Give another --ray-client-server-port (0: any free port)."
            ) from None
    else:
        client_server = None
    try:
        node = launcher.start_node(
            address,
            [*services.head_node_arguments(control), *node_args] if head else node_args,
            node_ip_address,
            metrics_export_port=metrics_export_port,
            metrics_export_host=metrics_export_host,
        )
    except OSError as e:
        launcher.stop()
        shutil.rmtree(session_dir, ignore_errors=True)
        raise click.ClickException(f"{e}. Give another --metrics-export-port.") from None
    try:
        _wait_for_node(address, token_bytes, node.node_id)
    except Exception as e:
        launcher.stop()
        raise click.ClickException(
            f"the node did not join the cluster at {address}: {e} (logs in {session_dir})"
        ) from None
    # Registered once it runs: the record names the node's process and start time.
    services.write_session_file(
        session_dir,
        node.address,
        address,
        token_bytes,
        pid=node.popen.pid,
        client_server_address=client_server.address if client_server else None,
        dashboard_url=client_server.dashboard_url if client_server else None,
    )
    token_path = os.path.join(session_dir, "token")
    if head:
        click.echo(f"Started a solray head node: control store at {address}.")
        click.echo(f"Session directory (logs): {session_dir}")
        click.echo(f"Cluster token: {token_path} (readable only by you; it grants full control)")
        click.echo("To add a node on another machine, copy the token file there (privately), then:")
        click.echo(f"    solray start --address {address} --token-file <copy of the token file>")
        click.echo("To connect a driver:")
        click.echo(
            f'    solray.init(address="{address}")   # here: the token is found;'
            " elsewhere set SOLRAY_TOKEN_FILE=<copy of the token file>"
        )
        click.echo("To connect a thin client (a machine without a node; same token):")
        click.echo(f'    solray.init("ray://{client_server.address}")')
        if client_server.dashboard_url is not None:
            scheme = "https" if tls.enabled() else "http"
            click.echo(
                f"View the dashboard at {scheme}://{client_server.dashboard_url} "
                "(log in with the cluster token: the hex in the token file)"
            )
        if tls_env is not None:
            _echo_tls(tls_env, "every driver, client and tool on this host")
            click.echo(
                "For another host, make its certificate where the CA key is, copy the "
                "directory there (privately), and set the variables it prints:"
            )
            ca_dir = os.path.dirname(tls_env["RAY_TLS_CA_CERT"])
            click.echo(f"    solray tls make-cert --ca-dir {ca_dir} --ip <its address> --out DIR")
        click.echo("To stop: solray stop")
    else:
        click.echo(f"Started a solray node ({node.node_id[:8]}) in the cluster at {address}.")
        click.echo(f"Session directory (logs): {session_dir}")
    click.echo(
        f"Metrics (Prometheus): http://{metrics_export_host}:{node.metrics_export_port}/metrics"
    )
    if block:
        for proc in launcher.processes:
            proc.popen.wait()


def _generate_tls(cert_dir: str, ip: str) -> dict[str, str]:
    import socket

    from solray._private import certs

    ips = [ip] if ip not in ("0.0.0.0", "::") else []
    try:
        if not certs.has_ca(cert_dir):
            certs.make_ca(cert_dir)
        return certs.make_host_cert(cert_dir, cert_dir, ips=ips, names=[socket.gethostname()])
    except (OSError, ValueError) as e:
        raise click.ClickException(f"--tls-generate: {e}") from None


def _echo_tls(env: dict[str, str], who: str) -> None:
    click.echo(f"TLS is on. For {who}, set:")
    for name, value in env.items():
        click.echo(f"    export {name}={value}")


@main.group()
def tls() -> None:
    """Certificates for TLS between solray processes (SOLRAY_USE_TLS=1)."""


@tls.command("make-ca")
@click.argument("ca_dir")
def tls_make_ca(ca_dir: str) -> None:
    """Make a cluster CA in CA_DIR (ca.crt, and ca.key readable only by you)."""
    from solray._private import certs

    try:
        certs.make_ca(ca_dir)
    except OSError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Made a cluster CA in {ca_dir}: copy ca.crt to every host, keep ca.key here.")


@tls.command("make-cert")
@click.option("--ca-dir", required=True, help="Directory holding the cluster CA (ca.crt, ca.key).")
@click.option("--ip", "ips", multiple=True, help="An address of the host (repeat for several).")
@click.option("--dns", "names", multiple=True, help="A host name of the host (repeat).")
@click.option("--out", "out_dir", required=True, help="Directory to write the host's files to.")
def tls_make_cert(ca_dir: str, ips: tuple[str, ...], names: tuple[str, ...], out_dir: str) -> None:
    """Make a certificate and key for one host, signed by the cluster CA.

    It names every --ip and --dns given, plus loopback; a process connecting
    to the host checks that the address it dialled is among them. OUT gets
    server.crt, server.key (readable only by you) and a copy of ca.crt: copy
    that directory to the host, privately.
    """
    from solray._private import certs

    if not ips and not names:
        raise click.UsageError("give the host's addresses: --ip ADDR and/or --dns NAME")
    try:
        env = certs.make_host_cert(ca_dir, out_dir, ips=ips, names=names)
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Made a certificate for {', '.join([*ips, *names])} in {out_dir}.")
    _echo_tls(env, "every solray process on that host (with the paths where you copy it)")


def _refuse_token_argument(value: str | None) -> None:
    if value is not None:
        raise click.UsageError(
            "--token is not accepted: a token on the command line is readable by every "
            "local user (/proc/PID/cmdline). Give --token-file PATH, or --token-file - and "
            "the token on stdin, or set SOLRAY_TOKEN_FILE."
        )


def _cli_token(token_file, address, temp_dir, new: bool) -> bytes:
    import os

    from solray._private import services

    try:
        if token_file is not None:
            source = "stdin" if token_file.name == "<stdin>" else token_file.name
            return services.parse_token(token_file.read(), source)
        if new:
            return os.urandom(32)
        return services.resolve_cluster(address, temp_dir)[1]
    except (ValueError, ConnectionError, OSError) as e:
        raise click.ClickException(str(e)) from None


def _with_redis_credentials(storage: str | None, username: str | None, password: str | None) -> str:
    """The Redis URL of --storage or RAY_REDIS_ADDRESS with Ray's
    --redis-username/--redis-password in it."""
    import os
    from urllib.parse import quote, urlsplit, urlunsplit

    from solray._private.control_storage import redis_url
    from solray._private.services import REDIS_ADDRESS_ENV

    if storage is None and os.environ.get(REDIS_ADDRESS_ENV):
        storage = redis_url(os.environ[REDIS_ADDRESS_ENV])
    if storage is None or not storage.startswith(("redis://", "rediss://")):
        raise click.UsageError(
            "--redis-username and --redis-password are for a control store storing to Redis: "
            "give --storage redis://HOST:PORT or set RAY_REDIS_ADDRESS"
        )
    parts = urlsplit(storage)
    credentials = quote(username or "", safe="") + ":" + quote(password or "", safe="")
    netloc = f"{credentials}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def _wait_for_node(address: str, token: bytes, node_id: str, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if any(n["node_id"] == node_id and n["alive"] for n in _nodes(address, token)):
                return
        except Exception as e:  # not listening yet
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s ({last})")


def _nodes(address: str, token: bytes) -> list[dict]:
    import asyncio

    from solray._private import transport
    from solray._private.protocol import Msg

    async def query():
        conn = await transport.connect(address, token, timeout=5)
        try:
            return await conn.request(Msg.GET_NODES)
        finally:
            conn.close()

    return asyncio.run(query())


# What `solray start` runs as daemons (the client server stops its proxies).
DAEMON_MODULES = (
    "solray._private.node",
    "solray._private.control_store",
    "solray._private.client.server",
)


@main.command()
@click.option("--force", is_flag=True, help="SIGKILL at once instead of stopping cleanly.")
@click.option(
    "--grace-period",
    default=10,
    show_default=True,
    help="Seconds to wait for a clean stop before killing.",
)
def stop(force: bool, grace_period: int) -> None:
    """Stop the solray daemons of this user on this machine (`solray start`).

    Clusters that init() started belong to their driver and are left alone."""
    import os
    import shutil

    import psutil

    from solray._private import services

    daemons, sessions = [], set()
    for proc in psutil.process_iter(["pid", "cmdline", "username"]):
        cmdline = proc.info["cmdline"] or []
        if not any(m in cmdline for m in DAEMON_MODULES):
            continue
        try:
            if os.getsid(proc.pid) != proc.pid or proc.uids().real != os.getuid():
                continue  # not a daemon of ours
        except (OSError, psutil.Error):
            continue
        daemons.append(proc)
        if "--session-dir" in cmdline:
            sessions.add(cmdline[cmdline.index("--session-dir") + 1])
    # Nodes first, so they stop their workers and clean their stores.
    daemons.sort(key=lambda p: "solray._private.node" not in p.info["cmdline"])
    for proc in daemons:
        try:
            proc.kill() if force else proc.terminate()
        except psutil.Error:
            pass
    gone, alive = psutil.wait_procs(daemons, timeout=grace_period)
    for proc in alive:
        proc.kill()
    for session in sessions:
        services.remove_session_shm(session)
        shutil.rmtree(session, ignore_errors=True)
    click.echo(f"Stopped {len(daemons)} solray process(es).")


@main.command()
@click.option(
    "--address", default="auto", show_default=True, help="HOST:PORT of the control store, or auto."
)
@click.option("--temp-dir", default=None, help=TEMP_DIR_HELP)
def status(address: str, temp_dir: str | None) -> None:
    """Print the cluster's nodes, their resources and usage."""
    from solray._private import services

    try:
        address, token = services.resolve_cluster(address, temp_dir)
        nodes = _nodes(address, token)
    except (ConnectionError, OSError, ValueError) as e:
        raise click.ClickException(f"cannot reach the cluster: {e}") from None
    alive = [n for n in nodes if n["alive"]]
    click.echo(f"Cluster at {address}: {len(alive)} alive node(s), {len(nodes) - len(alive)} dead")
    for n in nodes:
        state = "ALIVE" if n["alive"] else "DEAD"
        click.echo(f"  node {n['node_id'][:12]}  {n['address']:<22} {state}")
        if not n["alive"]:
            continue
        if n.get("metrics_export_address"):
            click.echo(f"    metrics: http://{n['metrics_export_address']}/metrics")
        total, free = n["resources_total"], n["resources_available"]
        for key in sorted(total):
            if key.startswith("node:"):
                continue
            used = total[key] - free.get(key, 0.0)
            if key in ("memory", "object_store_memory"):
                click.echo(f"    {used / 2**30:8.2f}/{total[key] / 2**30:.2f} GiB {key}")
            else:
                click.echo(f"    {used:8.1f}/{total[key]:.1f} {key}")


@main.command()
@click.option(
    "--address", default="auto", show_default=True, help="HOST:PORT of the control store, or auto."
)
@click.option("--temp-dir", default=None, help=TEMP_DIR_HELP)
def debug(address: str, temp_dir: str | None) -> None:
    """List the breakpoints tasks wait at (solray.util.pdb.set_trace()) and
    attach a pdb session to one (through a Unix socket: on its machine only)."""
    from solray._private import debugger, services

    try:
        address, token = services.resolve_cluster(address, temp_dir)
        debugger.run(address, token)
    except (ConnectionError, OSError, ValueError) as e:
        raise click.ClickException(f"cannot reach the cluster: {e}") from None


@main.command()
@click.option(
    "--address", default="auto", show_default=True, help="HOST:PORT of the control store, or auto."
)
@click.option(
    "--output",
    "-o",
    default=None,
    help="Where to write the trace (default: a timestamped file in the temp directory).",
)
@click.option("--temp-dir", default=None, help=TEMP_DIR_HELP)
def timeline(address: str, output: str | None, temp_dir: str | None) -> None:
    """Write the cluster's task timeline as a Chrome trace (JSON): one row per
    worker, one slice per task or actor call. Open it in https://ui.perfetto.dev
    or chrome://tracing."""
    import asyncio
    import json
    import tempfile
    import time

    from solray._private import services
    from solray._private.state_client import RayStateApiException, StateClient
    from solray._private.timeline import ALL, chrome_trace

    async def query(client: StateClient) -> dict:
        try:
            return await client.tasks([], ALL, detail=True, precise=True)
        finally:
            await client.close()

    try:
        address, token = services.resolve_cluster(address, temp_dir)
        reply = asyncio.run(query(StateClient(address, token)))
    except (ConnectionError, OSError, ValueError, RayStateApiException) as e:
        raise click.ClickException(f"cannot reach the cluster: {e}") from None
    trace = chrome_trace(reply["tasks"])
    if output is None:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        output = os.path.join(tempfile.gettempdir(), f"solray-timeline-{stamp}.json")
    with open(output, "w") as f:
        json.dump(trace, f)
    slices = sum(1 for e in trace if e["ph"] == "X")
    click.echo(f"Trace file written to {output} ({slices} slices).")
    if reply["dropped"]:
        click.echo(
            f"Note: {reply['dropped']} task attempts or events were dropped by the cluster "
            "(its bound is task_events_max_num_task_in_gcs); they are not in the trace."
        )
    click.echo("Open it in https://ui.perfetto.dev or chrome://tracing.")


@main.command()
@click.option("--limit", default=100, show_default=True, help="Show at most this many objects.")
@click.option("--temp-dir", default=None, help=TEMP_DIR_HELP)
@click.option(
    "--session-dir",
    default=None,
    help="The cluster's session directory (init() returns it); default: the newest.",
)
def memory(limit: int, temp_dir: str | None, session_dir: str | None) -> None:
    """List the objects of the running cluster and where they are stored.

    Finds the newest cluster this user started with solray.init() (its
    address and token are in the session directory, readable only by you).
    """
    import asyncio

    from solray._private import services, transport
    from solray._private.protocol import Msg

    try:
        info, token = services.find_session(temp_dir, session_dir)
    except ConnectionError as e:
        raise click.ClickException(str(e)) from None

    async def query():
        conn = await transport.connect(info["node_address"], token)
        try:
            return (await conn.request(Msg.LIST_OBJECTS), await conn.request(Msg.STORE_STATS))
        finally:
            conn.close()

    rows, stats = asyncio.run(query())
    owned = [r for r in rows if r["is_owner"]]
    click.echo(
        f"Cluster at {info['control_address']}: {len(owned)} objects, {len(rows)} references"
    )
    click.echo(
        f"Object store: {_size(stats['used'])} used of {_size(stats['capacity'])}, "
        f"{stats['num_spilled']} objects ({_size(stats['spilled_bytes_now'])}) spilled"
    )
    header = f"{'OBJECT ID':<58}{'SIZE':>10}  {'WHERE':<14}{'REFERENCE':<22}{'HOLDER':<16}CALL SITE"
    click.echo(header)
    for row in rows[:limit]:
        size = _size(row["object_size"]) if row["object_size"] is not None else "?"
        holder = f"{row['type'].lower()} {row['pid']}"
        click.echo(
            f"{row['object_id']:<58}{size:>10}  {row['location'] or 'pending':<14}"
            f"{row['reference_type']:<22}{holder:<16}{row['call_site']}"
        )
    if len(rows) > limit:
        click.echo(f"... {len(rows) - limit} more (use --limit)")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _add_command_groups() -> None:
    from solray._private.job_cli import job
    from solray._private.state_cli import COMMANDS

    for command in (*COMMANDS, job):
        main.add_command(command)


_add_command_groups()

if __name__ == "__main__":
    main()
