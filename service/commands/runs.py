"""`flowctl runs` and `flowctl run`: find runs and show one in full, from MongoDB."""

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

import click

from service.commands.common import echo_json, now, run, target
from service.engine.model import RunStatus

if TYPE_CHECKING:
    from service.adapters.mongo.queries import RunDetail
    from service.engine.records import RunRecord

_AGE: Final = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def instant(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> datetime | None:
    """An ISO 8601 instant (UTC unless it says otherwise), or an age: 90s, 15m, 2h."""
    if value is None:
        return None
    text = value.strip()
    if found := _AGE.match(text):
        amount, unit = found.groups()
        return now() - timedelta(seconds=float(amount) * _UNIT_SECONDS[unit])
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        message = f"'{text}' is neither ISO 8601 nor an age like 15m"
        raise click.BadParameter(message, ctx, param) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@click.command()
@click.option("--flow", metavar="FLOW", help="Runs of this flow (an id or a name).")
@click.option(
    "--status",
    type=click.Choice([s.value for s in RunStatus], case_sensitive=False),
    help="Runs with this status.",
)
@click.option(
    "--since", callback=instant, metavar="WHEN", help="Started at or after (ISO, 2h)."
)
@click.option(
    "--until", callback=instant, metavar="WHEN", help="Started before (ISO, 2h)."
)
@click.option(
    "--search", metavar="TEXT", help="Run id, job id or idempotency key starts so."
)
@click.option(
    "--source",
    metavar="RUN",
    help="Runs re-run from this run (a run reference, as `flowctl run` takes).",
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--skip", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def runs(
    ctx: click.Context,
    *,
    flow: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
    search: str | None,
    source: str | None,
    limit: int,
    skip: int,
    as_json: bool,
) -> None:
    """List runs, newest first, with the number that match."""
    from service import operations, views  # MongoDB's driver: only when it runs

    where = target(ctx)
    wanted = None if status is None else RunStatus(_spelt(status))

    async def read() -> tuple[list["RunRecord"], int]:
        async with operations.database(where) as stores:
            origin = None
            if source is not None:
                found = await operations.find_run(
                    stores, source, where=f"in database '{where.database}'"
                )
                origin = found.run.run_id
            return await operations.find_runs(
                stores,
                source=origin,
                flow=flow,
                status=wanted,
                since=since,
                until=until,
                text=search,
                skip=skip,
                limit=limit,
            )

    found, total = run(read())
    if as_json:
        echo_json(views.runs_json(found, total, skip=skip, limit=limit))
    else:
        click.echo(views.runs_text(found, total, skip=skip, now=now()))


def _spelt(text: str) -> str:
    """The status as the enum spells it (`--status failed` -> `Failed`)."""
    return next(s.value for s in RunStatus if s.value.lower() == text.lower())


@click.command("run")
@click.argument("run_id")
@click.option(
    "--events",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Show the latest N events (0: all).",
)
@click.option(
    "--iterations", is_flag=True, help="List every ForEach iteration's steps."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (all of it).")
@click.pass_context
def show_run(
    ctx: click.Context, run_id: str, *, events: int, iterations: bool, as_json: bool
) -> None:
    """Show one run: header, lineage, steps in DAG order, attempts and events.

    RUN_ID may also be the start of a run id, a job id or an idempotency key that
    only one run has. ForEach iterations are one line per body step, with counts
    by status, unless --iterations lists them all.
    """
    from service import operations, views  # MongoDB's driver: only when it runs

    where = target(ctx)

    async def read() -> "RunDetail":
        async with operations.database(where) as stores:
            return await operations.find_run(
                stores, run_id, where=f"in database '{where.database}'"
            )

    detail = run(read())
    if as_json:
        echo_json(views.run_json(detail))
    else:
        click.echo(
            views.run_text(detail, now=now(), events=events, iterations=iterations)
        )
