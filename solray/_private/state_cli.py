"""`solray list|get|summary|logs`: the state API (solray.util.state) on the
command line, with Ray's commands and options; and solray's own `solray
why` and `solray stack` (why.py).

The commands are generic: `list X` calls `util.state.list_X`, `get X ID`
`get_<X singular>` (`get_objects` for objects), `summary X`
`summarize_X`, so a resource the state API gains is on the command line at
once; one it lacks is a clear error.
"""

from __future__ import annotations

import click

from solray._private.state_format import FORMATS, render, summary_rows

RESOURCES = ("actors", "objects", "nodes", "workers", "placement-groups", "jobs", "tasks")
SUMMARIES = ("tasks", "actors", "objects")

ADDRESS_HELP = "The cluster: HOST:PORT of its control store, or auto (this user's newest here)."


def _state_function(name: str, command: str):
    from solray.util import state

    fn = getattr(state, name, None)
    if fn is None:
        raise click.ClickException(
            f"`solray {command}` is not available: solray.util.state has no {name}()"
        )
    return fn


def _call(fn, *args, **kwargs):
    from solray._private.state_client import RayStateApiException

    try:
        return fn(*args, **kwargs)
    except (RayStateApiException, ConnectionError, OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None


def _parse_filter(ctx, param, values: tuple[str, ...]) -> list[tuple[str, str, str]]:
    filters = []
    for text in values:
        key, op, value = None, None, None
        for predicate in ("!=", "="):
            if predicate in text:
                key, _, value = text.partition(predicate)
                op = predicate
                break
        if op is None or not key.strip():
            raise click.BadParameter(
                f"{text!r}: a filter is KEY=VALUE or KEY!=VALUE, e.g. --filter 'state=ALIVE'"
            )
        filters.append((key.strip(), op, value.strip()))
    return filters


def _resource(name: str, known: tuple[str, ...]) -> str:
    if name not in known:
        raise click.UsageError(f"unknown resource {name!r}: choose from {', '.join(known)}")
    return name.replace("-", "_")


def _common(f):
    f = click.option("--address", default=None, help=ADDRESS_HELP)(f)
    f = click.option(
        "--timeout", default=30, show_default=True, help="Seconds to wait for the answers."
    )(f)
    return f


def _format_option(f):
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="default",
        show_default=True,
        help="table (list's default), yaml (get's default) or json.",
    )(f)


@click.command("list")
@click.argument("resource")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    callback=_parse_filter,
    help="KEY=VALUE or KEY!=VALUE (case-insensitive); repeat for several (all must hold).",
)
@click.option("--limit", default=100, show_default=True, help="At most this many entries.")
@click.option("--detail", is_flag=True, help="Every field, not only the main ones.")
@_format_option
@_common
def list_command(resource, filters, limit, detail, fmt, address, timeout) -> None:
    """List the cluster's RESOURCE: actors, objects, nodes, workers,
    placement-groups, jobs or tasks."""
    name = _resource(resource, RESOURCES)
    fn = _state_function(f"list_{name}", f"list {resource}")
    rows = _call(fn, address=address, filters=filters, limit=limit, timeout=timeout, detail=detail)
    click.echo(render(rows, "table" if fmt == "default" else fmt))


@click.command("get")
@click.argument("resource")
@click.argument("id")
@_format_option
@_common
def get_command(resource, id, fmt, address, timeout) -> None:
    """Show one entry of RESOURCE by its ID, with every field."""
    name = _resource(resource, RESOURCES)
    function = "get_objects" if name == "objects" else f"get_{name.removesuffix('s')}"
    fn = _state_function(function, f"get {resource}")
    found = _call(fn, id, address=address, timeout=timeout)
    if found is None or found == []:
        raise click.ClickException(f"no {resource.removesuffix('s')} with id {id}")
    click.echo(render(found, "yaml" if fmt == "default" else fmt))


@click.command("summary")
@click.argument("resource")
@_format_option
@_common
def summary_command(resource, fmt, address, timeout) -> None:
    """Summarize the cluster's tasks, actors or objects."""
    name = _resource(resource, SUMMARIES)
    fn = _state_function(f"summarize_{name}", f"summary {resource}")
    result = _call(fn, address=address, timeout=timeout)
    if fmt in ("default", "table"):
        cluster = result.get("cluster", result)
        totals = {k: v for k, v in cluster.items() if k != "summary"}
        click.echo(render(summary_rows(cluster), "table"))
        click.echo(", ".join(f"{k}: {v}" for k, v in totals.items()))
    else:
        click.echo(render(result, fmt))


# -- logs ------------------------------------------------------------------------


class _LogsGroup(click.Group):
    """`solray logs [GLOB]` is `solray logs cluster [GLOB]`, as Ray's."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["cluster", *args]
        return super().parse_args(ctx, args)


def _log_options(f):
    f = click.option(
        "--tail",
        "-t",
        default=1000,
        show_default=True,
        help="Print this many lines from the end; -1 for all.",
    )(f)
    f = click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C ends).")(
        f
    )
    f = click.option(
        "--interval", default=0.5, show_default=True, help="Seconds between reads with --follow."
    )(f)
    return _common(f)


def _node_options(f):
    f = click.option("--node-id", default=None, help="The node's id (or a unique prefix).")(f)
    f = click.option("--node-ip", default=None, help="The node's IP address.")(f)
    return f


def _print_log(**kwargs) -> None:
    from solray.util.state import get_log

    lines = _call(get_log, **kwargs)
    try:
        for line in _Guarded(lines):
            click.echo(line, nl=False)
    except KeyboardInterrupt:
        pass
    finally:
        lines.close()


class _Guarded:
    """Iterate a log generator, reporting its errors as CLI errors."""

    def __init__(self, it):
        self._it = it

    def __iter__(self):
        return self

    def __next__(self):
        return _call(next, self._it)


@click.group("logs", cls=_LogsGroup)
def logs_command() -> None:
    """Print the logs of the cluster's workers.

    `solray logs` lists every node's log files; `solray logs GLOB` prints the
    file matching GLOB on a node (--node-id/--node-ip; the head by default),
    or lists the files if several match. `solray logs worker --pid PID`,
    `solray logs actor --id ID` and `solray logs task --id ID` print a
    worker's, an actor's or a task's output (--err: its stderr).
    """


@logs_command.command("cluster")
@click.argument("glob", required=False)
@_node_options
@_log_options
def logs_cluster(glob, node_id, node_ip, tail, follow, interval, address, timeout) -> None:
    """List log files, or print the one GLOB matches."""
    from solray.util.state import list_logs

    if glob is None and node_id is None and node_ip is None:
        _list_every_node(address, timeout)
        return
    files = _call(
        list_logs,
        address=address,
        node_id=node_id,
        node_ip=node_ip,
        glob_filter=glob,
        timeout=timeout,
    )
    names = [name for group in files.values() for name in group]
    if glob is None or len(names) != 1:
        if glob is not None and not names:
            raise click.ClickException(f"no log file matches {glob!r} on that node")
        for category, group in sorted(files.items()):
            click.echo(f"{category}:")
            for name in group:
                click.echo(f"  {name}")
        return
    _print_log(
        address=address,
        node_id=node_id,
        node_ip=node_ip,
        filename=names[0],
        follow=follow,
        tail=tail,
        timeout=timeout,
        _interval=interval,
    )


def _list_every_node(address: str | None, timeout: int) -> None:
    from solray.util.state import list_logs, list_nodes

    for node in _call(list_nodes, address=address, timeout=timeout, limit=10_000):
        if node["state"] != "ALIVE":
            continue
        head = " (head)" if node["is_head_node"] else ""
        click.echo(f"node {node['node_id']} ({node['node_ip']}){head}:")
        files = _call(list_logs, address=address, node_id=node["node_id"], timeout=timeout)
        for category, group in sorted(files.items()):
            click.echo(f"  {category}:")
            for name in group:
                click.echo(f"    {name}")


@logs_command.command("worker")
@click.option("--pid", type=int, required=True, help="The worker's process id.")
@click.option("--err", is_flag=True, help="Its stderr instead of its stdout.")
@_node_options
@_log_options
def logs_worker(pid, err, node_id, node_ip, tail, follow, interval, address, timeout) -> None:
    """Print a worker's output (found on any node unless one is given)."""
    _print_log(
        address=address,
        node_id=node_id,
        node_ip=node_ip,
        pid=pid,
        suffix="err" if err else "out",
        follow=follow,
        tail=tail,
        timeout=timeout,
        _interval=interval,
    )


@logs_command.command("actor")
@click.option("--id", "actor_id", required=True, help="The actor's id (hex).")
@click.option("--err", is_flag=True, help="Its stderr instead of its stdout.")
@_log_options
def logs_actor(actor_id, err, tail, follow, interval, address, timeout) -> None:
    """Print an actor's output (its worker's log)."""
    _print_log(
        address=address,
        actor_id=actor_id,
        suffix="err" if err else "out",
        follow=follow,
        tail=tail,
        timeout=timeout,
        _interval=interval,
    )


@logs_command.command("task")
@click.option("--id", "task_id", required=True, help="The task's id (hex).")
@click.option("--err", is_flag=True, help="Its stderr instead of its stdout.")
@_log_options
def logs_task(task_id, err, tail, follow, interval, address, timeout) -> None:
    """Print what a task printed (cut out of its worker's log)."""
    _print_log(
        address=address,
        task_id=task_id,
        suffix="err" if err else "out",
        follow=follow,
        tail=tail,
        timeout=timeout,
        _interval=interval,
    )


# -- why and stack (solray's own: why.py) ------------------------------------


def _on_cluster(address, timeout, query):
    """(query's answer, what did not answer), asked of the cluster."""
    from solray._private.state_client import RayStateApiException, Session

    try:
        with Session(address, timeout) as session:
            return session.call(query), list(session.client.missing)
    except (RayStateApiException, ConnectionError, OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None


@click.command("why")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("text", "json", "yaml")),
    default="text",
    show_default=True,
    help="text: grouped by reason; json or yaml: one entry per waiting thing.",
)
@_common
def why_command(fmt, address, timeout) -> None:
    """Why every pending task, actor, placement group and get() waits."""
    from solray._private import why

    entries, missing = _on_cluster(address, timeout, why.explain)
    if fmt == "text":
        click.echo(why.render_why(entries, missing), nl=False)
    else:
        click.echo(render({"waiting": entries, "incomplete": missing}, fmt))


@click.command("stack")
@click.option("--pid", type=int, default=None, help="Only this driver or worker process.")
@click.option("--node-id", default=None, help="Only this node's processes (id or unique prefix).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
)
@_common
def stack_command(pid, node_id, fmt, address, timeout) -> None:
    """Print the Python stacks of every driver and worker, without stopping them."""
    from solray._private import why

    processes, missing = _on_cluster(
        address, timeout, lambda client: why.gather_stacks(client, pid, node_id)
    )
    if pid is not None and not processes and not missing:
        raise click.ClickException(f"no driver or worker with pid {pid} in the cluster")
    if fmt == "json":
        click.echo(render({"processes": processes, "incomplete": missing}, "json"))
        return
    click.echo(why.render_stacks(processes), nl=False)
    for what in missing:
        click.echo(f"did not answer: {what}", err=True)


COMMANDS = (list_command, get_command, summary_command, logs_command, why_command, stack_command)
