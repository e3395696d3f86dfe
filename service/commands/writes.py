"""The write commands on runs: trigger, retry, cancel, signal, rerun.

Each first resolves what it names in MongoDB (the run, as `flowctl run` reads a
reference; the flow and its trigger), so an unknown one is answered here (exit 1) and
never published. Then it publishes one control message (`trigger`, `retry_step`,
`cancel_run`, `signal`, `rerun`) and prints the worker's reply; `--wait` then follows
the run in MongoDB until it is final and shows it like `flowctl run`.
"""

from datetime import timedelta
from typing import IO, TYPE_CHECKING, Final

import click

from service.commands.common import (
    CommandError,
    control,
    echo_json,
    json_value,
    message,
    now,
    reply_options,
    resolve_flow,
    resolve_run,
    run,
    target,
)
from service.engine.model import RunStatus

if TYPE_CHECKING:
    from contracts import Reply
    from service.adapters.mongo.queries import RunDetail

WELL: Final = frozenset({RunStatus.SUCCEEDED, RunStatus.SKIPPED})
"""Final statuses `--wait` exits 0 on."""
SHOWN_EVENTS: Final = 50


def _wait_options(function: click.decorators.FC) -> click.decorators.FC:
    function = click.option(
        "--wait-timeout",
        type=click.FloatRange(min=0.1),
        default=300.0,
        show_default=True,
        metavar="SECONDS",
        help="How long --wait waits.",
    )(function)
    return click.option(
        "--wait",
        is_flag=True,
        help="Follow the run until it is final, show it; exit 1 unless it succeeded.",
    )(function)


def _headers(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"'{item}' is not NAME=VALUE", ctx, param)
        found[name.strip()] = value
    return found


@click.command()
@click.argument("flow")
@click.option("--trigger-key", default="manual", show_default=True, metavar="KEY")
@click.option("--body", metavar="JSON", help="The trigger body, inline.")
@click.option(
    "--body-file",
    type=click.File("r", encoding="utf-8"),
    metavar="PATH",
    help="Read the body from a file ('-': standard input).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=_headers,
    metavar="NAME=VALUE",
    help="A trigger header (repeatable).",
)
@click.option("--idempotency-key", metavar="KEY", help="At most one run per key.")
@_wait_options
@reply_options
@click.pass_context
def trigger(
    ctx: click.Context,
    flow: str,
    *,
    trigger_key: str,
    body: str | None,
    body_file: IO[str] | None,
    headers: dict[str, str],
    idempotency_key: str | None,
    wait: bool,
    wait_timeout: float,
    timeout: float,
    as_json: bool,
) -> None:
    """Start a run of FLOW (an id or a name) and print its run id."""
    from contracts.messages import TriggerMessage
    from service.adapters.amqp.topology import trigger_routing_key

    if body is not None and body_file is not None:
        raise click.UsageError("give --body or --body-file, not both")
    value = None
    if body is not None:
        value = json_value(body, what="--body")
    elif body_file is not None:
        value = json_value(body_file.read(), what="--body-file")
    resolve_flow(ctx, flow, trigger_key=trigger_key)
    request = message(
        TriggerMessage,
        flow=flow,
        trigger_key=trigger_key,
        body=value,
        headers=headers,
        idempotency_key=idempotency_key,
    )
    reply = control(
        ctx,
        "trigger",
        request,
        timeout=timeout,
        as_json=as_json,
        routing_key=trigger_routing_key(flow),
        echo=not (wait and as_json),  # one JSON document: the reply and the run
    )
    if wait:
        _follow(ctx, reply, within=wait_timeout, as_json=as_json)


@click.command()
@click.argument("run_id")
@click.argument("step_key")
@reply_options
@click.pass_context
def retry(
    ctx: click.Context, run_id: str, step_key: str, *, timeout: float, as_json: bool
) -> None:
    """Retry the Failed step STEP_KEY of a run (RUN_ID: as `flowctl run` takes it)."""
    from contracts.messages import RetryStepMessage

    request = message(
        RetryStepMessage, run_id=resolve_run(ctx, run_id), step_key=step_key
    )
    control(ctx, "retry_step", request, timeout=timeout, as_json=as_json)


@click.command()
@click.argument("run_id")
@click.option("--reason", metavar="TEXT", help="Why, recorded on the run.")
@reply_options
@click.pass_context
def cancel(
    ctx: click.Context,
    run_id: str,
    *,
    reason: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Cancel a Running run (parked steps stop at once).

    RUN_ID may be a run id, its start, a job id or an idempotency key, as for
    `flowctl run`.
    """
    from contracts.messages import CancelRunMessage

    request = message(CancelRunMessage, run_id=resolve_run(ctx, run_id), reason=reason)
    control(ctx, "cancel_run", request, timeout=timeout, as_json=as_json)


@click.command()
@click.argument("run_id")
@click.argument("name")
@click.option("--payload", metavar="JSON", help="The signal's payload.")
@reply_options
@click.pass_context
def signal(
    ctx: click.Context,
    run_id: str,
    name: str,
    *,
    payload: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Deliver the signal NAME to a run waiting for it (RUN_ID: as `flowctl run`)."""
    from contracts.messages import SignalMessage

    value = None if payload is None else json_value(payload, what="--payload")
    request = message(
        SignalMessage, run_id=resolve_run(ctx, run_id), signal=name, payload=value
    )
    control(ctx, "signal", request, timeout=timeout, as_json=as_json)


@click.command()
@click.argument("run_id")
@_wait_options
@reply_options
@click.pass_context
def rerun(
    ctx: click.Context,
    run_id: str,
    *,
    wait: bool,
    wait_timeout: float,
    timeout: float,
    as_json: bool,
) -> None:
    """Start a new run with the trigger (body, headers) of RUN_ID.

    RUN_ID may be a run id, its start, a job id or an idempotency key.
    """
    from contracts.messages import RerunMessage

    request = message(RerunMessage, run_id=resolve_run(ctx, run_id))
    reply = control(
        ctx,
        "rerun",
        request,
        timeout=timeout,
        as_json=as_json,
        echo=not (wait and as_json),  # one JSON document: the reply and the run
    )
    if wait:
        _follow(ctx, reply, within=wait_timeout, as_json=as_json)


COMMANDS: Final = (trigger, retry, cancel, signal, rerun)


def _follow(
    ctx: click.Context, reply: "Reply", *, within: float, as_json: bool
) -> None:
    """Follow the run of `reply` until it is final, show it; fail if it went badly."""
    from service import console, operations, views

    run_id = reply.run_id
    if run_id is None:
        raise CommandError("the reply names no run to wait for")
    where = target(ctx)

    async def follow() -> "RunDetail":
        async with (
            operations.database(where) as stores,
            console.progress(f"run {run_id}") as meter,
        ):
            return await operations.wait_for_run(
                stores,
                run_id,
                within=timedelta(seconds=within),
                seen=lambda detail: meter.update(_note(detail)),
            )

    detail = run(follow())
    if as_json:
        echo_json({"reply": reply.model_dump(mode="json"), **views.run_json(detail)})
    else:
        click.echo()
        click.echo(views.run_text(detail, now=now(), events=SHOWN_EVENTS))
    if detail.run.status not in WELL:
        raise CommandError(f"run {run_id} finished {detail.run.status}")


def _note(detail: "RunDetail") -> str:
    final = sum(1 for step in detail.steps if step.status.is_final)
    return f"{detail.run.status}, {final}/{len(detail.steps)} steps final,"
