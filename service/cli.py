"""`flowctl`: the operators' commands. Each builds `Settings()` once, if it needs any.

`worker` runs the service; `schema` keeps the generated contract files up to date.
Commands that publish control messages or read runs join this group later.
"""

import asyncio
from pathlib import Path

import click

from contracts import schema as contract_schema
from service import app
from service.settings import Settings


@click.group(name="flowctl", context_settings={"help_option_names": ["-h", "--help"]})
def flowctl() -> None:
    """Run and operate flow-orchestrator."""


@flowctl.command()
def worker() -> None:
    """Run a worker until SIGTERM (the same as `python -m service`)."""
    settings = Settings()
    asyncio.run(app.main(settings))


@flowctl.command()
@click.option("--check", is_flag=True, help="Change nothing; exit 1 if out of date.")
@click.option(
    "--directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=contract_schema.PACKAGE_DIRECTORY,
    show_default=True,
    help="Where the `schemas/` folder lives.",
)
def schema(*, check: bool, directory: Path) -> None:
    """Write the JSON Schema and AsyncAPI files of every message kind."""
    if check:
        stale = contract_schema.check(directory)
        for name in stale:
            click.echo(f"out of date: {name}", err=True)
        if stale:
            click.echo("run `flowctl schema` to regenerate them", err=True)
            raise SystemExit(1)
        click.echo("contract schemas are up to date")
        return
    for path in contract_schema.write(directory):
        click.echo(f"wrote {path}")


def main() -> None:
    """The `flowctl` entry point."""
    flowctl(prog_name="flowctl")
