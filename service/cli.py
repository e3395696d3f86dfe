"""`flowctl`: the operators' commands, one per dashboard operation of FO (SPEC 7.1).

`worker` runs the service and `schema` keeps the contract files up to date; the others
live in `service.commands`. Write commands publish a control message and wait for its
reply, read commands query MongoDB, `dlq` works on the dead-letter queue. Settings come
from the worker's environment variables, overridden by the group's options. Every error
is one line on stderr and an exit code: 1 refused, failed or not found; 2 bad usage or
settings; 3 RabbitMQ or MongoDB unreachable, or no answer in time.
"""

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

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
from service.errors import (
    FlowDefinitionError,
    FlowError,
    SettingsError,
    UnavailableError,
)

if TYPE_CHECKING:
    from pydantic import ValidationError


def is_known(exc: BaseException) -> bool:
    """Whether `exc` is reported as itself; anything else is a bug (one line too)."""
    return isinstance(exc, click.ClickException | FlowError) or is_invalid(exc)


def is_invalid(exc: BaseException) -> bool:
    """Whether `exc` is pydantic's ValidationError (bad settings or arguments).

    Read off `sys.modules`: pydantic raises it only once imported, and importing it
    here would cost every command, `--help` included, a tenth of a second.
    """
    core = sys.modules.get("pydantic_core")
    invalid = getattr(core, "ValidationError", None)
    return isinstance(invalid, type) and isinstance(exc, invalid)


class OneLineErrors(click.Command):
    """A root command whose every error is one line on stderr and an exit code."""

    def main(  # type: ignore[override] # one body for both of click's overloads
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,  # noqa: FBT001, FBT002 - click's signature
        **extra: Any,
    ) -> Any:
        """Run the command; exit (or, if not `standalone_mode`, return) its code."""
        label = prog_name or self.name or "flowctl"
        console.ColourChoice.chosen = None  # until the options say otherwise
        try:
            result = super().main(
                args, prog_name, complete_var, standalone_mode=False, **extra
            )
            code = result if isinstance(result, int) else 0
        except click.Abort:
            code = report(click.ClickException("aborted"), label=label)
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            _silence_stdout()  # the reader went away (`flowctl runs | head`)
            code = EXIT_FAILED
        except Exception as exc:
            if not is_known(exc):
                raise
            code = report(exc, label=label)
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except Exception as exc:
            if is_known(exc):
                raise
            overrides = ctx.find_object(Overrides)
            if overrides is not None and overrides.traceback:
                raise
            cause = innermost(exc)
            if is_known(cause):
                raise cause from None  # a TaskGroup's wrapping hides a known error
            text = (
                f"internal error: {type(cause).__name__}: {cause} (--traceback: where)"
            )
            raise click.ClickException(text) from exc


class FlowctlGroup(OneLineErrors, click.Group):
    """The root group: every error becomes one line on stderr and an exit code."""


class WorkerCommand(OneLineErrors):
    """`flowctl worker`, which also runs alone as `python -m service`."""


def innermost(exc: BaseException) -> BaseException:
    """The error inside groups of one (`ExceptionGroup`), or `exc` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def report(exc: BaseException, *, label: str = "flowctl") -> int:
    """Print `exc` as one line on stderr; its exit code."""
    code, text = _describe(exc)
    prefix = click.style(f"{label}:", bold=True)
    kind = click.style("error:", fg="red", bold=True)
    if isinstance(exc, RefusedReplyError):
        kind = console.status(f"{exc.reply.status}:", like=exc.reply.status)
        text = exc.reply.message
    line = f"{prefix} {kind} {' '.join(text.split())}"
    click.echo(line, err=True, color=console.ColourChoice.allows())
    return code


def _describe(exc: BaseException) -> tuple[int, str]:
    if is_invalid(exc):
        names = getattr(exc, "title", "") == "Settings"  # the env spells them so
        problems = validation_summary(cast("ValidationError", exc), env=names)
        return EXIT_USAGE, f"invalid settings: {problems}"
    match exc:
        case click.UsageError():
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            return EXIT_USAGE, exc.format_message() + hint
        case click.ClickException():
            return exc.exit_code, exc.format_message()
        case UnavailableError():
            return EXIT_UNAVAILABLE, str(exc)
        case SettingsError():
            return EXIT_USAGE, f"the worker refuses to start: {exc}"
        case FlowDefinitionError():
            return EXIT_FAILED, f"the worker refuses to start: {exc}"
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
    console.ColourChoice.chosen = ctx.color


@flowctl.command(
    cls=WorkerCommand, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a worker until SIGTERM (`python -m service` is the same command).

    Every setting comes from the environment (AMQP_URL, MONGODB_URL, FLOW_MODULES,
    HEALTH_PORT, ...; the README's Configuration lists them all), overridden by
    flowctl's --amqp-url, --prefix, --mongodb-url and --database. While MongoDB or
    RabbitMQ does not answer, the worker logs which URL it tries and keeps trying.
    Exit codes: 0 stopped by SIGTERM or SIGINT; 1 an invalid flow; 2 bad usage or an
    invalid setting (a busy HEALTH_PORT included).
    """
    # Imported here: the whole service takes a second to import, which every other
    # command would pay for nothing.
    import asyncio

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
        raise SettingsError("the dashboard", f"refuses to start: {exc}") from None


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
    help="Where the `schemas/` folder lives [default: the contracts package].",
)
def schema(*, check: bool, directory: Path | None) -> None:
    """Write the JSON Schema and AsyncAPI files of every message kind."""
    from contracts import schema as contract_schema  # pydantic: on demand

    directory = directory or contract_schema.PACKAGE_DIRECTORY
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


def worker_main(args: list[str] | None = None) -> None:
    """`python -m service`: `flowctl worker` alone, with exactly its options."""
    worker.main(args, prog_name="python -m service")
