"""`flowctl dlq`: list, show, replay and purge the dead-letter queue `<prefix>.dead`."""

import click

from service import console, operations, views
from service.adapters.amqp.deadletters import DeadLetter, Replayed
from service.commands.common import CommandError, echo_json, run, target


@click.group()
def dlq() -> None:
    """The dead-letter queue: list, show, replay, purge."""


@dlq.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (bodies included).")
@click.pass_context
def browse(ctx: click.Context, *, limit: int, as_json: bool) -> None:
    """List dead letters in queue order; they stay in the queue."""
    where = target(ctx)

    async def read() -> tuple[tuple[list[DeadLetter], int], str]:
        async with operations.dead_letters(where) as queue:
            return await queue.browse(limit), queue.name

    (letters, total), name = run(read())
    if as_json:
        echo_json(views.letters_json(letters, total, queue=name))
    else:
        click.echo(views.letters_text(letters, total, queue=name))


@dlq.command("show")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx: click.Context, message_id: str, *, as_json: bool) -> None:
    """Show one dead letter: why it died, its headers and its body."""
    where = target(ctx)

    async def read() -> list[DeadLetter]:
        async with operations.dead_letters(where) as queue:
            return await queue.find(message_id)

    found = run(read())
    if not found:
        raise CommandError(f"no dead letter '{message_id}' in {where.names.dead}")
    if as_json:
        echo_json(views.letter_json(found[0]))
        return
    click.echo(views.letter_text(found[0]))
    if len(found) > 1:
        click.echo(console.dim(f"\n{len(found) - 1} more dead letter(s) with this id"))


@dlq.command("replay")
@click.argument("message_id", required=False)
@click.option("--all", "every", is_flag=True, help="Replay every dead letter.")
@click.pass_context
def replay(ctx: click.Context, message_id: str | None, *, every: bool) -> None:
    """Republish a dead letter (or --all) to the ingress exchange, then remove it.

    The original body, properties, type and routing key are kept (not reply_to); the
    dead letter is acked only once the broker confirmed the republished message.
    """
    if every == (message_id is not None):
        raise click.UsageError("give a MESSAGE_ID or --all, not both or neither")
    where = target(ctx)

    async def republish() -> Replayed:
        async with operations.dead_letters(where) as queue:
            return await queue.replay(message_id)

    result = run(republish())
    if message_id is not None and not result.replayed and not result.failed:
        raise CommandError(f"no dead letter '{message_id}' in {where.names.dead}")
    click.echo(views.replayed_text(result))
    if result.failed:
        raise CommandError(f"{len(result.failed)} dead letter(s) not replayed")


@dlq.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, *, yes: bool) -> None:
    """Delete every dead letter."""
    where = target(ctx)
    if not yes:
        click.confirm(f"Delete every message in {where.names.dead}?", abort=True)

    async def empty() -> int:
        async with operations.dead_letters(where) as queue:
            return await queue.purge()

    click.echo(f"purged {run(empty())} dead letter(s) from {where.names.dead}")
