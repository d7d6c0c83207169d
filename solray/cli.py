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


if __name__ == "__main__":
    main()
