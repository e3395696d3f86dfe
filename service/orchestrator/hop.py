"""`run_step`: one delivery of a `run_step` message, from load to publish.

Load: the run's facts (remembered by this worker, else read) and the claim of the step,
with the rows its inputs read, at once. Decide: the engine says what the claimed step
does; its handler runs (the lease kept alive meanwhile), and the engine says what the
result means. Save and publish: `drive` saves that decision and whatever follows from
it, then publishes. A message that loses the claim is a duplicate; a redelivered one
whose step cannot be claimed repeats what follows the step's state (safe to repeat).
"""

import asyncio
import contextlib
import traceback
from collections.abc import Awaitable, Coroutine
from dataclasses import replace
from datetime import timedelta
from typing import Any

import structlog

from service.engine import continuation
from service.engine.continuation import Invoke
from service.engine.expressions import Facts, StepFacts, step_references
from service.engine.model import (
    Flow,
    JobId,
    RunId,
    Step,
    StepStatus,
    scope_prefix,
    template_parts,
)
from service.engine.records import Claim, NewStep, RunFacts, StepRecord
from service.engine.results import Failed, StepResult
from service.engine.rounds import RunContext
from service.errors import UnavailableError, UnknownReferenceError
from service.orchestrator.driver import drive
from service.orchestrator.heartbeat import Heartbeat
from service.orchestrator.runtime import Runtime, StepRequest
from service.orchestrator.together import both
from service.steps.handlers import NonRetryable, StepContext, invoke

log = structlog.get_logger()


async def run_step(rt: Runtime, request: StepRequest) -> None:
    facts = await run_facts(rt, request.run_id)
    flow = rt.catalog.get(facts.flow_id)
    if flow is None:
        raise UnknownReferenceError("flow", facts.flow_id)
    manifest = flow.find(request.step_key)
    if manifest is None:
        raise UnknownReferenceError("step", f"{request.run_id}/{request.step_key}")
    claim, reads = await _claim(rt, flow, manifest, request)
    if claim.step is None:
        raise UnknownReferenceError("step", f"{request.run_id}/{request.step_key}")
    ctx = rt.context(flow, facts)
    if not claim.won:
        if request.redelivered or claim.step.stop is not None:
            await drive(rt, ctx, continuation.recover(ctx, claim.step))
        return
    row = claim.step
    template = ".".join(template_parts(row.key))
    rt.telemetry.attempt_started(flow.id, template, row.attempt)
    rt.tracer.attempt_started(facts, row)
    ctx = replace(ctx, trace=rt.tracer.current())
    with structlog.contextvars.bound_contextvars(
        run_id=row.run_id, flow_id=flow.id, step_key=row.key, attempt=row.attempt
    ):
        async with Heartbeat(rt, row, facts, let_go=request.let_go) as cancelled:
            begun = continuation.begin(ctx, row, _facts(flow, facts, row, reads))
            if isinstance(begun, Invoke):
                result = await _invoke(rt, facts, row, begun, cancelled=cancelled)
                ctx = replace(ctx, now=rt.clock.now())
                if result is None:
                    begun = continuation.timed_out(ctx, row, begun)
                else:
                    begun = continuation.after_handler(ctx, row, begun, result)
            driven = await drive(rt, ctx, begun)
        mine = [f for f in driven.finished if f.key == row.key]
        if driven.lost or not mine:
            rt.tracer.attempt_finished("lost", None)
            await _lost(rt, row)
            return
        outcome = mine[0].outcome
        rt.tracer.attempt_finished(outcome.status.value, outcome.error)
        _report(rt, ctx, row, outcome.status)


async def run_facts(rt: Runtime, run_id: RunId) -> RunFacts:
    """The run's immutable facts: remembered, else read (and remembered)."""
    facts = rt.runs.get(run_id)
    if facts is None:
        run = await rt.stores.runs.get_run(run_id)
        if run is None:
            raise UnknownReferenceError("run", run_id)
        facts = run.facts
        rt.runs.put(facts)
    return facts


async def _claim(
    rt: Runtime, flow: Flow, manifest: Step, request: StepRequest
) -> tuple[Claim, dict[str, StepRecord]]:
    """Claim the step and read the rows its inputs read, at once."""
    scope = flow.scope(scope_prefix(request.step_key))
    refs = _references(manifest) & scope.steps.keys()
    top_level = "." not in request.step_key
    new = (
        NewStep(
            request.step_key, manifest.type, StepStatus.QUEUED, dict(manifest.inputs)
        )
        if top_level
        else None
    )
    claiming = rt.stores.steps.claim(
        request.run_id,
        request.step_key,
        job_id=request.job_id,
        now=rt.clock.now(),
        lease=rt.options.lease,
        take_over=request.redelivered,
        dispatch_id=request.dispatch_id,
        new=new,
    )
    if not refs:
        return await claiming, {}
    reading = rt.stores.steps.steps(request.run_id, [scope.key(k) for k in refs])
    claim, rows = await both(claiming, reading)
    return claim, {scope.local(k): r for k, r in rows.items()}


def _references(manifest: Step) -> set[str]:
    return step_references(dict(manifest.inputs)) | step_references(manifest.for_each)


def _facts(
    flow: Flow, run: RunFacts, row: StepRecord, reads: dict[str, StepRecord]
) -> Facts:
    scope = flow.scope(scope_prefix(row.key))
    return Facts(
        body=run.body,
        headers=run.headers,
        steps={
            k: StepFacts(r.status.value, r.output, r.error) for k, r in reads.items()
        },
        declared=frozenset(scope.steps),
    )


async def _invoke(
    rt: Runtime,
    run: RunFacts,
    row: StepRecord,
    call: Invoke,
    *,
    cancelled: asyncio.Event,
) -> StepResult | None:
    """The handler's result; None when it outlived `call.timeout`."""
    handler = rt.handlers.get(call.manifest.type)
    if handler is None:  # validation at start makes this unreachable for known flows
        return Failed(f"No handler registered for type '{call.manifest.type}'.")
    ctx = StepContext(
        run_id=run.run_id,
        flow_id=run.flow_id,
        step_key=row.key,
        attempt=row.attempt,
        job_id=row.job_id or JobId(""),
        trigger_body=run.body,
        trigger_headers=run.headers,
        now=rt.clock.now(),
        cancelled=cancelled,
    )
    running = _caught(invoke(handler, ctx, call.inputs))
    if call.timeout is None:
        return await running
    return await _within(
        running, call.timeout, grace=rt.options.timeout_grace, cancelled=cancelled
    )


async def _caught(running: Awaitable[StepResult]) -> StepResult:
    try:
        return await running
    except Exception as exc:  # a flow author's exception is a step result
        log.exception("step_handler_failed")
        # The exception first (what tables and events show), then where it came from.
        trace = "".join(traceback.format_exception(exc))
        return Failed(
            f"{type(exc).__name__}: {exc}\n\n{trace[-8000:]}",
            retry=not isinstance(exc, NonRetryable),
        )


async def _within(
    running: Coroutine[Any, Any, StepResult],
    limit: timedelta,
    *,
    grace: timedelta,
    cancelled: asyncio.Event,
) -> StepResult | None:
    """`running`'s result, or None once `limit` passed.

    Then `cancelled` is set, and after `grace` the handler's task is cancelled. A plain
    `def` handler's thread can't be stopped: it runs on, and what it returns is lost.
    """
    task = asyncio.create_task(running)
    try:
        done, _ = await asyncio.wait({task}, timeout=limit.total_seconds())
        if task in done:
            return task.result()
        log.warning("step_timed_out", after_seconds=limit.total_seconds())
        cancelled.set()
        await asyncio.wait({task}, timeout=grace.total_seconds())
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None


async def _lost(rt: Runtime, row: StepRecord) -> None:
    """The result was refused: the claim is another's now, or it vanished.

    A claim is acknowledged by the primary alone; one a failover rolled back leaves
    the row as it was before it (absent, Queued, an earlier attempt). Then the step is
    nobody's: the delivery is tried again (it runs the step again, as at-least-once
    allows), instead of being acknowledged as a duplicate and lost.
    """
    now = (await rt.stores.steps.steps(row.run_id, [row.key])).get(row.key)
    if now is None or now.attempt < row.attempt or now.status is StepStatus.QUEUED:
        raise UnavailableError(f"the claim of {row.key} was rolled back; trying again")
    log.warning("step_result_discarded", reason="claim_lost")


def _report(rt: Runtime, ctx: RunContext, row: StepRecord, status: StepStatus) -> None:
    log.info("step_finished", status=status.value)
    seconds = (ctx.now - (row.started_at or ctx.now)).total_seconds()
    template = ".".join(template_parts(row.key))  # labels: `loop.child`, not `loop.7`
    rt.telemetry.step_finished(ctx.run.flow_id, template, status.value, seconds=seconds)
