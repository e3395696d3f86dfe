"""Timers, cron schedules and flow switches.

Called by the scheduler loop of every worker; every action is guarded, so any number of
replicas may run them at once and each timer, tick or repair happens once.
"""

from datetime import datetime

import structlog

from service.engine import continuation, manifest
from service.engine.cron import catch_up, check_cron, next_fire
from service.engine.decision import Decision, SetTimer
from service.engine.model import Flow, JobId, Json, TriggerKey, TriggerType
from service.engine.records import (
    NO_CONTEXT,
    FlowRecord,
    RunRecord,
    Schedule,
    Timer,
    TimerKind,
    schedule_job_id,
)
from service.engine.rounds import Round
from service.orchestrator import control
from service.orchestrator.driver import drive
from service.orchestrator.runtime import ControlResult, Runtime, TriggerRequest

log = structlog.get_logger()


async def fire_timer(rt: Runtime, timer: Timer) -> None:
    """A due timer: wake a parked step, publish a delayed release, time a run out."""
    run = await rt.stores.runs.get_run(timer.run_id)
    # A wake continues the trace of what set the timer.
    parent = timer.trace_context or (run.trace_context if run else NO_CONTEXT)
    with rt.tracer.resumed(f"timer {timer.kind}", parent):
        await _fire_timer(rt, timer, run)


async def _fire_timer(rt: Runtime, timer: Timer, run: RunRecord | None) -> None:
    if timer.kind is TimerKind.DEADLINE:
        await control.time_out(rt, timer.run_id)
        await rt.stores.timers.delete(timer.id)
        return
    key = timer.step_key
    flow = rt.catalog.get(run.flow_id) if run is not None else None
    if run is None or flow is None or key is None:
        await rt.stores.timers.delete(timer.id)  # its run is gone (retention)
        return
    row = (await rt.stores.steps.steps(run.run_id, [key])).get(key)
    now = rt.clock.now()
    if timer.kind is TimerKind.REQUEUE:
        decision = continuation.woken(timer, row, now)
    else:
        decision = continuation.published(timer, row)
    ctx = rt.context(flow, run.facts, run.stop_status, now=now)
    await drive(rt, ctx, Round(decision))
    if not _postponed(decision, timer):
        await rt.stores.timers.delete(timer.id)


def _postponed(decision: Decision, timer: Timer) -> bool:
    """Whether `decision` set this timer again, for later."""
    return any(
        isinstance(w, SetTimer) and w.timer.id == timer.id for w in decision.writes()
    )


async def sync_flows(rt: Runtime) -> None:
    """At start: store every flow's manifest and make its cron schedules known."""
    now = rt.clock.now()
    for flow in rt.catalog:
        await rt.stores.flows.save(
            FlowRecord(
                flow.id,
                flow.name,
                flow.version,
                manifest.to_manifest(flow),
                updated_at=now,
            )
        )
        for key, trig in flow.triggers.items():
            if trig.type is TriggerType.CRON and trig.cron:
                await rt.stores.schedules.sync(
                    Schedule(
                        schedule_job_id(flow.id, key),
                        flow.id,
                        TriggerKey(key),
                        trig.cron,
                        next_fire(trig.cron, after=now),
                    )
                )


async def fire_schedules(rt: Runtime, *, limit: int = 100) -> int:
    """Fire each due cron tick once across replicas.

    Triggers first (idempotent by the tick's key), then moves the schedule on; a late
    tick fires one catch-up run.
    """
    now = rt.clock.now()
    fired = 0
    for schedule in await rt.stores.schedules.due(now, limit=limit):
        flow = rt.catalog.get(schedule.flow_id)
        tick = schedule.next_fire_at
        if flow is None or tick is None:
            continue
        if await _flow_enabled(rt, flow):
            await _fire(rt, flow, schedule, tick)
            fired += 1
        after = catch_up(schedule.effective_cron, scheduled_for=tick, now=now)
        await rt.stores.schedules.advance(
            schedule.job_id, fired_at=tick, next_fire_at=after
        )
    return fired


async def _fire(rt: Runtime, flow: Flow, schedule: Schedule, tick: datetime) -> None:
    key = f"cron:{flow.id}:{schedule.trigger_key}:{tick.isoformat()}"
    lag = (rt.clock.now() - tick).total_seconds()
    rt.telemetry.timer_fired("cron", lag_seconds=lag)
    with rt.tracer.resumed(f"cron {flow.name}", NO_CONTEXT):  # a new trace
        await control.trigger(
            rt,
            TriggerRequest(flow.id, schedule.trigger_key, idempotency_key=key),
            job_id=JobId(key),
        )


async def _flow_enabled(rt: Runtime, flow: Flow) -> bool:
    record = await rt.stores.flows.get(flow.id)
    return record is None or record.enabled


async def set_enabled(rt: Runtime, flow_ref: str, *, enabled: bool) -> ControlResult:
    flow = rt.catalog.find(flow_ref)
    if flow is None or not await rt.stores.flows.set_enabled(flow.id, enabled=enabled):
        return ControlResult("not_found", f"Flow '{flow_ref}' not found.")
    word = "enabled" if enabled else "disabled"
    log.info("flow_switched", flow_id=flow.id, enabled=enabled)
    return ControlResult(
        "accepted", f"Flow '{flow.name}' {word}.", data={"flow_id": flow.id}
    )


async def update_schedule(
    rt: Runtime,
    flow_ref: str,
    trigger_key: str,
    *,
    paused: bool | None = None,
    cron: str | None = None,
    clear_cron: bool = False,
) -> ControlResult:
    """Pause, resume or override the cron of a schedule; every replica obeys it."""
    flow = rt.catalog.find(flow_ref)
    job = schedule_job_id(flow.id, trigger_key) if flow else ""
    schedule = await rt.stores.schedules.get(job) if flow else None
    if schedule is None:
        return ControlResult(
            "not_found", f"No schedule '{trigger_key}' on flow '{flow_ref}'."
        )
    override = None if clear_cron else (cron or schedule.cron_override)
    if cron is not None:
        try:
            check_cron(cron)
        except ValueError as exc:
            return ControlResult("refused", f"Invalid cron: {exc}")
    is_paused = schedule.paused if paused is None else paused
    effective = override or schedule.cron
    upcoming = None if is_paused else next_fire(effective, after=rt.clock.now())
    stored = await rt.stores.schedules.update(
        job, paused=is_paused, cron_override=override, next_fire_at=upcoming
    )
    data: dict[str, Json] = {
        "flow": schedule_flow_name(flow),
        "trigger": trigger_key,
        "paused": is_paused,
        "cron": effective,
        "next_fire_at": upcoming.isoformat() if upcoming else None,
    }
    log.info("schedule_updated", job_id=job, paused=is_paused, cron=effective)
    # Named as operators name it (flow and trigger), never by the internal job id.
    done = "paused" if paused else "resumed" if paused is False else "updated"
    said = f"Schedule '{trigger_key}' of flow '{schedule_flow_name(flow)}' {done}."
    return ControlResult("accepted" if stored else "not_found", said, data=data)


def schedule_flow_name(flow: Flow | None) -> str:
    return flow.name if flow is not None else ""


async def trigger_schedule_now(
    rt: Runtime, flow_ref: str, trigger_key: str, *, job_id: JobId
) -> ControlResult:
    flow = rt.catalog.find(flow_ref)
    if flow is None or trigger_key not in flow.triggers:
        return ControlResult(
            "not_found", f"No trigger '{trigger_key}' on flow '{flow_ref}'."
        )
    result = await control.trigger(
        rt, TriggerRequest(flow.id, trigger_key), job_id=job_id
    )
    if result.disabled:
        return ControlResult("disabled", f"Flow '{flow.name}' is disabled.")
    return ControlResult(
        "duplicate" if result.duplicate else "accepted", "Run started.", result.run_id
    )
