"""`flowctl dlq`: list, show, replay and purge the dead-letter queue `<prefix>.dead`."""

from datetime import timedelta
from typing import TYPE_CHECKING

import click

from service.commands.common import CommandError, echo_json, run, target

if TYPE_CHECKING:
    from service.adapters.amqp.answers import ReplayOutcome
    from service.adapters.amqp.deadletters import DeadLetter


@click.group()
def dlq() -> None:
    """The dead-letter queue: list, show, replay, purge."""


def _filters(function: click.decorators.FC) -> click.decorators.FC:
    function = click.option(
        "--kind", metavar="TYPE", help="Only letters of this type (trigger, signal...)."
    )(function)
    return click.option(
        "--reason", metavar="REASON", help="Only letters dead for this reason."
    )(function)


@dlq.command("list")
@_filters
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (bodies included).")
@click.pass_context
def browse(
    ctx: click.Context,
    *,
    reason: str | None,
    kind: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List dead letters in queue order; they stay in the queue, unchanged."""
    from service import letter_views, operations
    from service.adapters.amqp.deadletters import Selection

    where = target(ctx)
    wanted = Selection(reason=reason, kind=kind)

    async def read() -> tuple[list["DeadLetter"], str]:
        async with operations.dead_letters(where) as queue:
            letters, _ = await queue.browse(operations.EVERY_LETTER)
            return [one for one in letters if wanted.wants(one)], queue.name

    letters, name = run(read())
    if as_json:
        echo_json(letter_views.letters_json(letters[:limit], len(letters), queue=name))
    else:
        click.echo(letter_views.letters_text(letters[:limit], len(letters), queue=name))


@dlq.command("show")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx: click.Context, message_id: str, *, as_json: bool) -> None:
    """Show one dead letter: why it died, its headers and its body (unchanged)."""
    from service import console, letter_views, operations

    where = target(ctx)

    async def read() -> list["DeadLetter"]:
        async with operations.dead_letters(where) as queue:
            return await queue.find(message_id)

    found = run(read())
    if not found:
        raise CommandError(f"no dead letter '{message_id}' in {where.names.dead}")
    if as_json:
        echo_json(letter_views.letter_json(found[0]))
        return
    click.echo(letter_views.letter_text(found[0]))
    if len(found) > 1:
        click.echo(console.dim(f"\n{len(found) - 1} more dead letter(s) with this id"))


@dlq.command("replay")
@click.argument("message_id", required=False)
@click.option("--all", "every", is_flag=True, help="Replay every letter selected.")
@_filters
@click.option("--limit", type=click.IntRange(min=1), help="Replay at most N letters.")
@click.option("--dry-run", is_flag=True, help="Change nothing; list what would go.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the workers' answers.",
)
@click.pass_context
def replay(
    ctx: click.Context,
    message_id: str | None,
    *,
    every: bool,
    reason: str | None,
    kind: str | None,
    limit: int | None,
    dry_run: bool,
    timeout: float,
) -> None:
    """Republish dead letters to the ingress exchange, then remove them.

    Give a MESSAGE_ID, or --all (narrowed by --reason, --kind and --limit). The
    original body, properties, type and routing key are kept; a letter is acked only
    once the broker confirmed its copy. Then each copy's fate is reported: answered
    by a worker, dead-lettered again (with the new reason; exit 1), or no answer in
    time (a run_step is never answered).
    """
    if every == (message_id is not None):
        raise click.UsageError("give a MESSAGE_ID or --all, not both or neither")
    from service import console, letter_views, replays
    from service.adapters.amqp.deadletters import Selection

    where = target(ctx)
    wanted = Selection(letter_id=message_id, reason=reason, kind=kind, limit=limit)
    within = timedelta(seconds=timeout)

    async def republish() -> list["ReplayOutcome"]:
        async with console.progress("waiting for the workers' answers"):
            return await replays.replay_letters(
                where, wanted, dry_run=dry_run, within=within
            )

    outcomes = run(republish())
    if message_id is not None and not outcomes:
        raise CommandError(f"no dead letter '{message_id}' in {where.names.dead}")
    click.echo(letter_views.replayed_text(outcomes))
    wrong = [one for one in outcomes if one.went_wrong]
    if wrong:
        raise CommandError(
            f"{len(wrong)} of {len(outcomes)} letter(s) not replayed well"
        )


@dlq.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, *, yes: bool) -> None:
    """Delete every dead letter."""
    from service import operations

    where = target(ctx)
    if not yes:
        click.confirm(f"Delete every message in {where.names.dead}?", abort=True)

    async def empty() -> int:
        async with operations.dead_letters(where) as queue:
            return await queue.purge()

    click.echo(f"purged {run(empty())} dead letter(s) from {where.names.dead}")
