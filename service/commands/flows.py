"""`flowctl flows` and `flowctl schedules`: flows, their switches and cron triggers.

List and show flows, enable and disable them; pause, resume, fire or re-time a cron
trigger. Listing reads MongoDB; every change is a control message a worker answers.
"""

from typing import TYPE_CHECKING

import click

from service.commands.common import (
    CommandError,
    control,
    echo_json,
    message,
    now,
    reply_options,
    resolve_flow,
    run,
    target,
)

if TYPE_CHECKING:
    from service.flow_views import FlowView


def _stored_flows(ctx: click.Context) -> list["FlowView"]:
    from service import operations  # MongoDB's driver: only when it runs

    where = target(ctx)

    async def read() -> list["FlowView"]:
        async with operations.database(where) as stores:
            return await operations.flow_views(stores)

    return run(read())


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def flows(ctx: click.Context, *, as_json: bool) -> None:
    """List flows: version, enabled, triggers and schedules.

    Subcommands show one flow, or enable or disable it.
    """
    if ctx.invoked_subcommand is not None:
        return
    from service import flow_views

    found = _stored_flows(ctx)
    if as_json:
        echo_json(flow_views.flows_json(found))
    else:
        click.echo(flow_views.flows_text(found, now=now()))


@flows.command("show")
@click.argument("flow")
@click.option("--mermaid", is_flag=True, help="Print a Mermaid flowchart instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the manifest).")
@click.pass_context
def show(ctx: click.Context, flow: str, *, mermaid: bool, as_json: bool) -> None:
    """Show one flow (an id or a name): steps, triggers, schedules."""
    from service import flow_views, operations
    from service.mermaid import to_mermaid

    where = target(ctx)

    async def read() -> "FlowView":
        async with operations.database(where) as stores:
            return await operations.find_flow(
                stores, flow, where=f"in database '{where.database}'"
            )

    view = run(read())
    if as_json:
        echo_json(flow_views.flow_json(view))
    elif not mermaid:
        click.echo(flow_views.flow_text(view, now=now()))
    elif view.flow is None:
        raise CommandError(f"the stored manifest of flow '{flow}' can't be read")
    else:
        click.echo(to_mermaid(view.flow), nl=False)


@flows.command("enable")
@click.argument("flow")
@reply_options
@click.pass_context
def enable(ctx: click.Context, flow: str, *, timeout: float, as_json: bool) -> None:
    """Enable FLOW: its triggers start runs again."""
    from contracts.messages import EnableFlowMessage

    resolve_flow(ctx, flow)
    request = message(EnableFlowMessage, flow=flow)
    control(ctx, "enable_flow", request, timeout=timeout, as_json=as_json)


@flows.command("disable")
@click.argument("flow")
@reply_options
@click.pass_context
def disable(ctx: click.Context, flow: str, *, timeout: float, as_json: bool) -> None:
    """Disable FLOW: its triggers and schedules start no run."""
    from contracts.messages import DisableFlowMessage

    resolve_flow(ctx, flow)
    request = message(DisableFlowMessage, flow=flow)
    control(ctx, "disable_flow", request, timeout=timeout, as_json=as_json)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def schedules(ctx: click.Context, *, as_json: bool) -> None:
    """List cron schedules. Subcommands pause, resume, fire or re-time one."""
    if ctx.invoked_subcommand is not None:
        return
    from service import flow_views, views

    found = [(view, s) for view in _stored_flows(ctx) for s in view.schedules]
    if as_json:
        echo_json(
            [dict(views.record_json(s), flow_name=v.record.name) for v, s in found]
        )
    elif not found:
        click.echo("no schedules")
    else:
        click.echo(flow_views.schedules_text(found, now=now()))


def cron_trigger(ctx: click.Context, flow: str, trigger_key: str | None) -> str:
    """The cron trigger of FLOW that a schedules command names, or the only one.

    Raises:
        click.UsageError: no key given and the flow has several cron triggers.
        CommandError: the flow has no cron trigger, or not this one.
    """
    view = resolve_flow(ctx, flow)
    name = view.record.name
    crons = [s.trigger_key for s in view.schedules]
    if trigger_key is None:
        if len(crons) == 1:
            return crons[0]
        if not crons:
            raise CommandError(f"flow '{name}' has no cron trigger")
        listed = ", ".join(crons)
        raise click.UsageError(
            f"flow '{name}' has {len(crons)} cron triggers ({listed}): name one"
        )
    if trigger_key not in crons:
        known = ", ".join(crons) or "none"
        raise CommandError(
            f"flow '{name}' has no cron trigger '{trigger_key}' (its cron triggers: "
            f"{known})"
        )
    return trigger_key


def _schedule_command(name: str, kind: str, model: str, summary: str) -> click.Command:
    """A schedules subcommand that publishes `kind`, a `contracts.messages.<model>`.

    The model is named, so that pydantic is imported only when the command runs.
    """

    @schedules.command(
        name,
        help=(
            f"{summary}. FLOW is an id or a name; TRIGGER_KEY may be left out when "
            "the flow has one cron trigger."
        ),
    )
    @click.argument("flow")
    @click.argument("trigger_key", required=False)
    @reply_options
    @click.pass_context
    def command(
        ctx: click.Context,
        flow: str,
        trigger_key: str | None,
        *,
        timeout: float,
        as_json: bool,
    ) -> None:
        from contracts import messages

        key = cron_trigger(ctx, flow, trigger_key)
        request = message(getattr(messages, model), flow=flow, trigger_key=key)
        control(ctx, kind, request, timeout=timeout, as_json=as_json)

    return command


pause = _schedule_command(
    "pause", "pause_schedule", "PauseScheduleMessage", "Pause a cron trigger"
)
resume = _schedule_command(
    "resume", "resume_schedule", "ResumeScheduleMessage", "Resume a paused cron trigger"
)
fire = _schedule_command(
    "trigger",
    "trigger_schedule_now",
    "TriggerScheduleNowMessage",
    "Fire a cron trigger once, now, paused or not",
)


@schedules.command("set-cron")
@click.argument("flow")
@click.argument("trigger_key", required=False)
@click.argument("cron", required=False)
@click.option("--clear", is_flag=True, help="Drop the override: the flow's cron again.")
@reply_options
@click.pass_context
def set_cron(
    ctx: click.Context,
    flow: str,
    trigger_key: str | None,
    cron: str | None,
    *,
    clear: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Override the cron of a trigger with CRON, or --clear the override.

    TRIGGER_KEY may be left out when the flow has one cron trigger
    (`flowctl schedules set-cron nightly "0 3 * * *"`).
    """
    from contracts.messages import SetCronMessage

    if cron is None and not clear and trigger_key is not None:
        trigger_key, cron = None, trigger_key  # FLOW CRON: the only cron trigger
    if clear == (cron is not None):
        raise click.UsageError("give a CRON expression or --clear, not both or neither")
    key = cron_trigger(ctx, flow, trigger_key)
    request = message(SetCronMessage, flow=flow, trigger_key=key, cron=cron)
    control(ctx, "set_cron", request, timeout=timeout, as_json=as_json)
