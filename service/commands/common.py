"""What every `flowctl` command shares: settings overrides, event loop, replies, errors.

Commands build a `Target` from `Settings()` and the group's options, run one coroutine
with the drivers' own log lines silenced, and fail with a `CommandError` (one line on
stderr, an exit code) or a `RefusedReplyError` when a worker answers no.

Importing this module (and every command module) costs little more than click: the
drivers, pydantic and the wire contracts are imported inside the functions that use
them, so `flowctl --help` and a read command load only what they need.
"""

import contextlib
import json
import logging
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

    from contracts import Reply
    from service.flow_views import FlowView
    from service.operations import Target
    from service.settings import Settings

T = TypeVar("T")
M = TypeVar("M", bound="BaseModel")

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNAVAILABLE: Final = 3
QUIET_LOGGERS: Final = ("aio_pika", "aiormq", "pymongo", "asyncio")


class CommandError(click.ClickException):
    """A command that could not do its job: one line on stderr, exit 1."""

    exit_code = EXIT_FAILED


class RefusedReplyError(click.ClickException):
    """The worker answered, and the answer is no (refused, not found, disabled)."""

    exit_code = EXIT_FAILED

    def __init__(self, reply: "Reply") -> None:
        super().__init__(f"{reply.status}: {reply.message}")
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Overrides:
    """The group's options: settings that replace the environment's."""

    amqp_url: str | None = None
    prefix: str | None = None
    mongodb_url: str | None = None
    database: str | None = None
    traceback: bool = False

    def settings(self) -> "Settings":
        from service.settings import Settings  # pydantic, on demand

        given: dict[str, Any] = {
            "amqp_url": self.amqp_url,
            "amqp_prefix": self.prefix,
            "mongodb_url": self.mongodb_url,
            "mongodb_database": self.database,
        }
        return Settings(**{k: v for k, v in given.items() if v is not None})


def target(ctx: click.Context) -> "Target":
    """Where the workers are, from `Settings()` and the group's options."""
    from service.operations import Target  # the drivers, on demand

    settings = (ctx.find_object(Overrides) or Overrides()).settings()
    return Target(
        amqp_url=settings.amqp_url.get_secret_value(),
        prefix=settings.amqp_prefix,
        mongodb_url=settings.mongodb_url.get_secret_value(),
        database=settings.mongodb_database,
        mongodb_timeout=settings.mongodb_timeout,
    )


def resolve_run(ctx: click.Context, ref: str) -> str:
    """The id of the run `ref` names, as `flowctl run` reads it.

    An id, its start, a job id or an idempotency key; else a `NotFoundError` (exit 1)
    before anything is published, so an operator's typo never reaches a worker or the
    dead-letter queue.
    """
    from service import operations  # the drivers, on demand

    where = target(ctx)

    async def look() -> str:
        async with operations.database(where) as stores:
            found = await operations.resolve_run(
                stores, ref, where=f"in database '{where.database}'"
            )
            return found.run_id

    return run(look())


def resolve_flow(
    ctx: click.Context, ref: str, *, trigger_key: str | None = None
) -> "FlowView":
    """The stored flow `ref` names (and its trigger), checked like `resolve_run`."""
    from service import operations  # the drivers, on demand

    where = target(ctx)

    async def look() -> "FlowView":
        async with operations.database(where) as stores:
            return await operations.resolve_flow(
                stores,
                ref,
                where=f"in database '{where.database}'",
                trigger_key=trigger_key,
            )

    return run(look())


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on a new event loop, with the drivers' own log lines silenced."""
    import asyncio  # only commands that do I/O need an event loop

    with _quiet_drivers():
        return asyncio.run(work)


@contextlib.contextmanager
def _quiet_drivers() -> Iterator[None]:
    # The drivers log connection trouble themselves; flowctl says it once, in one line.
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def now() -> datetime:
    from service.adapters.clock import SystemClock  # the one clock

    return SystemClock().now()


def echo_json(value: object) -> None:
    from service.views import dumps  # on demand

    click.echo(dumps(value))


def validation_summary(exc: "ValidationError", *, env: bool = False) -> str:
    """The first few problems of `exc`, without the values.

    `env` names each field as its environment variable (`HEALTH_PORT`).
    """
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(part) for part in error["loc"]) or "value"
        problems.append(f"{where.upper() if env else where}: {error['msg']}")
    return "; ".join(problems)


def message(model: type[M], **fields: Any) -> M:
    """The wire message, or a usage error saying which argument is wrong."""
    from pydantic import ValidationError  # on demand

    try:
        return model(**fields)
    except ValidationError as exc:
        raise click.UsageError(validation_summary(exc)) from None


def json_value(text: str, *, what: str) -> Any:
    """`text` parsed as JSON, or a usage error naming the option."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=what) from None


def reply_options(function: Callable[..., T]) -> Callable[..., T]:
    """`--timeout` and `--json`, the options of every write command."""
    function = click.option(
        "--json", "as_json", is_flag=True, help="Print the reply as JSON."
    )(function)
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait for the worker's reply.",
    )(function)


def control(
    ctx: click.Context,
    kind: str,
    body: "BaseModel",
    *,
    timeout: float,
    as_json: bool,
    routing_key: str | None = None,
    echo: bool = True,
) -> "Reply":
    """Publish a control request and print the reply (`echo=False`: only a refusal).

    Raises:
        RefusedReplyError: the reply is not ok (after printing it with `as_json`).
    """
    from service import console, operations, views  # on demand
    from service.adapters.amqp.topology import control_routing_key

    where = target(ctx)

    async def ask() -> "Reply":
        async with console.progress(f"waiting for the reply to {kind}"):
            return await operations.request(
                where,
                routing_key or control_routing_key(kind),
                body,
                kind=kind,
                within=timedelta(seconds=timeout),
            )

    reply = run(ask())
    if as_json and (echo or not reply.ok):
        echo_json(reply.model_dump(mode="json"))
    elif reply.ok and echo:
        click.echo(views.reply_text(reply))
    if not reply.ok:
        raise RefusedReplyError(reply)
    return reply
