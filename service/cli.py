"""`flowctl`: the operators' commands, one per dashboard operation of FO (SPEC 7.1).

`worker` runs the service and `schema` keeps the contract files up to date; the others
live in `service.commands`. Write commands publish a control message and wait for its
reply, read commands query MongoDB, `dlq` works on the dead-letter queue. Settings come
from the worker's environment variables, overridden by the group's options. Every error
is one line on stderr and an exit code: 1 refused, failed or not found; 2 bad usage or
settings; 3 RabbitMQ or MongoDB unreachable, or no answer in time.
"""

import asyncio
import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from contracts import schema as contract_schema
from service import console
from service.commands import dlq, flows, runs, writes
from service.commands.common import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Overrides,
    RefusedReplyError,
    validation_summary,
)
from service.errors import FlowError, UnavailableError

KNOWN = (click.ClickException, FlowError, ValidationError)
"""Errors reported as one line; anything else is a bug, reported as one line too."""


class SettingsError(click.ClickException):
    """Settings a command can't start with: one line, exit 2."""

    exit_code = EXIT_USAGE


class FlowctlGroup(click.Group):
    """The root group: every error becomes one line on stderr and an exit code."""

    def main(  # type: ignore[override] # one body for both of click's overloads
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,  # noqa: FBT001, FBT002 - click's signature
        **extra: Any,
    ) -> Any:
        """Run the command; exit (or, if not `standalone_mode`, return) its code."""
        try:
            result = super().main(
                args, prog_name, complete_var, standalone_mode=False, **extra
            )
            code = result if isinstance(result, int) else 0
        except click.Abort:
            code = report(click.ClickException("aborted"))
        except KNOWN as exc:
            code = report(exc)
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            _silence_stdout()  # the reader went away (`flowctl runs | head`)
            code = EXIT_FAILED
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (*KNOWN, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except Exception as exc:
            overrides = ctx.find_object(Overrides)
            if overrides is not None and overrides.traceback:
                raise
            text = f"internal error: {type(exc).__name__}: {exc} (--traceback: where)"
            raise click.ClickException(text) from exc


def report(exc: BaseException) -> int:
    """Print `exc` as one line on stderr; its exit code."""
    code, text = _describe(exc)
    label = click.style("flowctl:", bold=True)
    kind = click.style("error:", fg="red", bold=True)
    if isinstance(exc, RefusedReplyError):
        kind = console.status(f"{exc.reply.status}:", like=exc.reply.status)
        text = exc.reply.message
    click.echo(f"{label} {kind} {' '.join(text.split())}", err=True)
    return code


def _describe(exc: BaseException) -> tuple[int, str]:
    match exc:
        case click.UsageError():
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            return EXIT_USAGE, exc.format_message() + hint
        case click.ClickException():
            return exc.exit_code, exc.format_message()
        case UnavailableError():
            return EXIT_UNAVAILABLE, str(exc)
        case ValidationError():
            return EXIT_USAGE, f"invalid settings: {validation_summary(exc)}"
        case _:
            return EXIT_FAILED, str(exc)


def _silence_stdout() -> None:
    # Python flushes stdout at exit; on a closed pipe that would print a traceback.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@click.group(
    name="flowctl",
    cls=FlowctlGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--amqp-url", metavar="URL", help="RabbitMQ URL [env AMQP_URL].")
@click.option(
    "--prefix", metavar="PREFIX", help="Exchange and queue prefix [env AMQP_PREFIX]."
)
@click.option("--mongodb-url", metavar="URL", help="MongoDB URL [env MONGODB_URL].")
@click.option(
    "--database", metavar="NAME", help="MongoDB database [env MONGODB_DATABASE]."
)
@click.option(
    "--color/--no-color",
    default=None,
    help="Colour on or off [default: on a terminal, unless NO_COLOR is set].",
)
# NO_COLOR means off whatever its value (no-color.org), which a boolean flag can't read.
@click.option("--no-color-env", hidden=True, envvar="NO_COLOR", default="")
@click.option("--traceback", is_flag=True, help="Show where an unexpected error rose.")
@click.pass_context
def flowctl(
    ctx: click.Context,
    *,
    amqp_url: str | None,
    prefix: str | None,
    mongodb_url: str | None,
    database: str | None,
    color: bool | None,
    no_color_env: str,
    traceback: bool,
) -> None:
    """Run and operate flow-orchestrator.

    Exit codes: 0 done; 1 refused, failed or not found; 2 bad usage or settings;
    3 RabbitMQ or MongoDB unreachable, or no reply in time.
    """
    ctx.obj = Overrides(amqp_url, prefix, mongodb_url, database, traceback=traceback)
    if color is not None:
        ctx.color = color
    elif no_color_env:
        ctx.color = False


@flowctl.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a worker until SIGTERM (the same as `python -m service`)."""
    # Imported here: the whole service takes a second to import, which every other
    # command would pay for nothing.
    from service import app

    settings = (ctx.find_object(Overrides) or Overrides()).settings()
    asyncio.run(app.main(settings))


@flowctl.command()
@click.pass_context
def dashboard(ctx: click.Context) -> None:
    """Serve the web console on DASHBOARD_HOST:DASHBOARD_PORT until SIGTERM.

    It reads MongoDB and publishes control messages; it never runs a step.
    """
    from service.dashboard import server  # imported here, like the worker

    settings = (ctx.find_object(Overrides) or Overrides()).settings()
    try:
        server.main(settings)
    except server.DashboardSettingsError as exc:
        raise SettingsError(f"the dashboard refuses to start: {exc}") from None


@flowctl.command("dashboard-user")
@click.argument("name")
@click.argument("role", type=click.Choice(["viewer", "operator"]))
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input."
)
def dashboard_user(name: str, role: str, *, password_stdin: bool) -> None:
    """Print a DASHBOARD_USERS entry for NAME with ROLE (the password is hashed)."""
    from service.dashboard import auth

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < auth.SHORTEST_PASSWORD:
        raise click.UsageError(
            f"the password needs {auth.SHORTEST_PASSWORD} characters or more"
        )
    entry = f"{name}:{role}:{auth.hash_password(password)}"
    try:
        auth.parse_users(entry)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(entry)


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


for command in (
    *writes.COMMANDS,
    runs.runs,
    runs.show_run,
    flows.flows,
    flows.schedules,
    dlq.dlq,
):
    flowctl.add_command(command)


def main() -> None:
    """The `flowctl` entry point."""
    flowctl(prog_name="flowctl")
