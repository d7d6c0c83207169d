"""The `solray` command line."""

from __future__ import annotations

import os

import click


@click.group()
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


@main.command()
@click.option("--limit", default=100, show_default=True, help="Show at most this many objects.")
@click.option("--temp-dir", default=None, help="The temp dir the cluster was started with.")
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


if __name__ == "__main__":
    main()
