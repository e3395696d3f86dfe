"""Effects: what a decision sets off beyond its own run.

A child to start or stop, a parent to wake, a key's slot to free. Each effect comes back
as the rounds to drive in other runs' contexts (`Driving`); `driver.perform` drives them
once the decision that set them off is saved and published. Every effect is safe to
repeat: the reconciler repeats those of a run whose start or end is due a check.
"""

from typing import assert_never

import structlog

from service.engine import child_flow, continuation, stop
from service.engine.decision import Effect, FreeSlot, Launch, StopRun, WakeParent
from service.engine.model import RunId, RunStatus
from service.engine.records import RunRecord
from service.engine.rounds import Round, RunContext
from service.orchestrator import admission
from service.orchestrator.runtime import Driving, Runtime

log = structlog.get_logger()


async def consequences(rt: Runtime, effect: Effect) -> list[Driving]:
    """The rounds `effect` asks for, in the runs they concern."""
    match effect:
        case Launch(run_id=run_id):
            return await launch(rt, run_id)
        case StopRun(run_id=run_id, reason=reason):
            return await _stop(rt, run_id, reason)
        case WakeParent():
            return await _wake(rt, effect)
        case FreeSlot(flow_id=flow_id, key=key, run_id=run_id):
            return await admission.freed(rt, flow_id, key, run_id)
        case _:
            assert_never(effect)


async def launch(rt: Runtime, run_id: RunId) -> list[Driving]:
    """Start a created run: Queued, it waits for a slot; Running, its entry steps go.

    Only those not dispatched yet; a child whose parent stopped is stopped instead.
    """
    run = await rt.stores.runs.get_run(run_id)
    flow = None if run is None else rt.catalog.get(run.flow_id)
    if run is None or flow is None or run.status.is_final:
        return []
    if run.status is RunStatus.QUEUED:
        return await admission.admit(rt, flow, run)
    if run.parent is not None:
        parent = await rt.stores.runs.get_run(run.parent.run_id)
        halted = RunStatus.CANCELLED if parent is None else parent.stop_status
        if halted is not None:
            reason = f"Its parent run {run.parent.run_id} is {halted}."
            return await _stop(rt, run_id, reason)
    ctx = _context(rt, run)
    if ctx is None:
        return []
    return [Driving(ctx, continuation.start_run(ctx), only_unclaimed=True)]


async def _stop(rt: Runtime, run_id: RunId, reason: str) -> list[Driving]:
    run = await rt.stores.runs.get_run(run_id)
    if run is None or run.status.is_final:
        return []
    if await rt.stores.runs.request_cancel(run_id, reason, now=rt.clock.now()):
        log.info("run_cancel_requested", run_id=run_id, reason=reason)
    stopped = await rt.stores.runs.get_run(run_id)
    ctx = None if stopped is None else _context(rt, stopped)
    if ctx is None or ctx.stop is None:
        return []
    return [Driving(ctx, stop.begin(ctx.stop))]


async def _wake(rt: Runtime, wake: WakeParent) -> list[Driving]:
    parent = await rt.stores.runs.get_run(wake.run_id)
    ctx = None if parent is None or parent.status.is_final else _context(rt, parent)
    if ctx is None:
        return []
    rows = await rt.stores.steps.steps(wake.run_id, [wake.step_key])
    decision = child_flow.child_ended(rows.get(wake.step_key), wake.child)
    if decision.is_empty:
        return []
    return [Driving(ctx, Round(decision))]


def _context(rt: Runtime, run: RunRecord) -> RunContext | None:
    flow = rt.catalog.get(run.flow_id)
    if flow is None:
        return None
    return rt.context(flow, run.facts, run.stop_status)
