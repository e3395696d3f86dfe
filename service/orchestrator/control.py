"""Starting runs and the operators' control operations: retry, cancel, signal, rerun.

Each operation validates like FO's dashboard endpoints and answers with a ControlResult;
a refused operation is an answer, not an error. What an operation does to the run is
the engine's decision, saved and published by `drive`.
"""

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta

import structlog

from service.engine import attempt, concurrency, continuation, signal_wait, stop
from service.engine import headers as trigger_headers
from service.engine.decision import Release, decided
from service.engine.model import (
    Flow,
    JobId,
    Json,
    RunId,
    RunStatus,
    StepKey,
    StepStatus,
    TriggerKey,
    descendants,
)
from service.engine.records import (
    PREREQUISITES_UNMET,
    DeliveryStatus,
    NewEvent,
    NewStep,
    RunRecord,
    StepRecord,
)
from service.engine.rounds import Round, RunContext
from service.engine.timeline import stored_completion
from service.errors import UnknownReferenceError
from service.orchestrator.driver import drive
from service.orchestrator.runtime import (
    ControlResult,
    Runtime,
    TriggerRequest,
    TriggerResult,
)

log = structlog.get_logger()


def idempotency_key(
    request: TriggerRequest, headers: Mapping[str, str], *, header: str, job_id: JobId
) -> str:
    """Decision 5: explicit key, else an idempotency header, else the message id."""
    key = (
        request.idempotency_key
        or trigger_headers.find(headers, header)
        or trigger_headers.find(headers, "x-idempotency-key")
    )
    if key and key.strip():
        return key.strip().lower()
    return f"msg:{job_id}".lower()


async def trigger(
    rt: Runtime, request: TriggerRequest, *, job_id: JobId
) -> TriggerResult:
    """Create the run and start it; a duplicate answers with the first run's id.

    The run's creation records the entry steps it releases (their rows come with their
    claims), so a start is one write; the same trigger message again finishes a start
    its worker did not (a redelivery), any other duplicate changes nothing.
    """
    flow = rt.catalog.find(request.flow)
    if flow is None:
        raise UnknownReferenceError("flow", request.flow)
    if request.trigger_key not in flow.triggers:
        raise UnknownReferenceError("trigger", f"{flow.name}/{request.trigger_key}")
    record = await rt.stores.flows.get(flow.id)
    if record is not None and not record.enabled:
        log.warning("trigger_rejected_disabled_flow", flow_id=flow.id)
        return TriggerResult(None, disabled=True)
    run = _new_run(rt, flow, request, job_id=job_id)
    run = replace(run, trace_context=rt.tracer.current())
    ctx = _context(rt, flow, run)
    start = _start(ctx, run)
    released, rest = attempt.fold(start.decision)
    stored, created = await rt.stores.runs.create_run(
        replace(run, released=released),
        recheck_at=ctx.now + rt.options.reconcile_after,
    )
    if not created:
        if not stored.status.is_final and stored.job_id == job_id:
            again = _context(rt, flow, stored)
            await drive(rt, again, _start(again, stored))
        return TriggerResult(stored.run_id, duplicate=True)
    log.info(
        "run_started", run_id=run.run_id, flow_id=flow.id, trigger_key=run.trigger_key
    )
    rt.telemetry.run_started(flow.id, run.trigger_key)
    rt.tracer.run_started(run.facts)
    rt.runs.put(run.facts)
    await drive(rt, ctx, Round(rest, start.follow))
    return TriggerResult(run.run_id)


def _start(ctx: RunContext, run: RunRecord) -> Round:
    """Its entry steps; or, for a run of a keyed flow, its place in its key's queue."""
    if run.status is RunStatus.QUEUED:
        return continuation.queue_run(ctx)
    return continuation.start_run(ctx)


def _new_run(
    rt: Runtime, flow: Flow, request: TriggerRequest, *, job_id: JobId
) -> RunRecord:
    headers = trigger_headers.capture(request.headers)
    now = rt.clock.now()
    timeout = _run_timeout(request, flow, rt)
    record = RunRecord(
        run_id=request.run_id or RunId(str(uuid.uuid4())),
        flow_id=flow.id,
        flow_name=flow.name,
        trigger_key=TriggerKey(request.trigger_key),
        job_id=job_id,
        started_at=now,
        body=request.body,
        headers=headers,
        source_run_id=request.source_run_id,
        idempotency_key=idempotency_key(
            request, headers, header=rt.options.idempotency_header, job_id=job_id
        ),
        deadline_at=now + timeout if timeout else None,
    )
    return concurrency.queued(flow, record)  # a keyed flow's run waits for a slot


def _run_timeout(request: TriggerRequest, flow: Flow, rt: Runtime) -> timedelta | None:
    body = request.body
    if isinstance(body, dict):
        seconds = body.get("runTimeoutSeconds")
        if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0:
            return timedelta(seconds=seconds)
    return flow.run_timeout or rt.options.default_run_timeout


def _context(rt: Runtime, flow: Flow, run: RunRecord) -> RunContext:
    return rt.context(flow, run.facts, run.stop_status)


async def _run_and_flow(
    rt: Runtime, run_id: RunId
) -> tuple[RunRecord | None, Flow | None]:
    run = await rt.stores.runs.get_run(run_id)
    return run, (rt.catalog.get(run.flow_id) if run is not None else None)


async def retry_step(rt: Runtime, run_id: RunId, key: StepKey) -> ControlResult:
    run, flow = await _run_and_flow(rt, run_id)
    if run is None or flow is None:
        return ControlResult("not_found", f"Run '{run_id}' not found.", run_id)
    if "." in key or key not in flow.steps:
        return ControlResult(
            "refused",
            f"Step '{key}' is not a top-level step of flow '{flow.name}'.",
            run_id,
            key,
        )
    if run.stop_status is not None:
        return ControlResult("refused", f"Run is {run.stop_status}.", run_id, key)
    if run.concurrency_key is not None:
        # Reopened, it would run beside its key's limit; a rerun queues for a slot.
        return ControlResult(
            "refused",
            "A run of a flow with a concurrency key is not retried: rerun it "
            "(the new run waits for a slot of its key).",
            run_id,
            key,
        )
    steps = rt.stores.steps
    row = (await steps.steps(run_id, [key])).get(key)
    if row is None or row.status is not StepStatus.FAILED:
        status = row.status if row else "not started"
        return ControlResult(
            "refused",
            f"Only a Failed step can be retried (status: {status}).",
            run_id,
            key,
        )
    completed = stored_completion(run)
    if completed is not None:  # the record is about to forget this completion
        await rt.stores.events.append(run_id, [completed])
    if await rt.stores.runs.reopen_run(run_id):
        rt.telemetry.run_reopened(run.flow_id)
    # The retry continues the run's trace from the failed attempt.
    with rt.tracer.resumed("retry", row.trace_context or run.trace_context):
        await _requeue_failed(rt, run, flow, row)
    log.info("step_retried", run_id=run_id, step_key=key)
    return ControlResult("accepted", f"Step '{key}' retry enqueued.", run_id, key)


async def _requeue_failed(
    rt: Runtime, run: RunRecord, flow: Flow, row: StepRecord
) -> None:
    """Reset what the failed step blocked, then queue and publish it again."""
    steps, run_id, key = rt.stores.steps, run.run_id, row.key
    ctx = _context(rt, flow, run)
    await steps.reset_steps(
        run_id,
        [StepKey(d) for d in descendants(flow.steps, key)],
        only_error=PREREQUISITES_UNMET,
    )
    if flow.steps[key].is_loop:
        # A loop runs again from scratch: a fresh Queued row, published below.
        await steps.reset_steps(run_id, [key])
        step = flow.steps[key]
        fresh = NewStep(key, step.type, StepStatus.QUEUED, inputs=dict(step.inputs))
        await steps.add_steps(run_id, [fresh], at=ctx.now)
        attempt_next = 1
    else:
        moved = await steps.requeue(
            run_id, key, expected=frozenset({StepStatus.FAILED}), now=ctx.now
        )
        attempt_next = (moved.attempt if moved else row.attempt) + 1
    retried = NewEvent("step.retried", ctx.now, key, f"Step '{key}' retried.")
    await rt.stores.events.append(run_id, [retried])
    await drive(rt, ctx, Round(decided(releases=[Release(key, attempt_next)])))


async def cancel_run(rt: Runtime, run_id: RunId, reason: str | None) -> ControlResult:
    run, flow = await _run_and_flow(rt, run_id)
    if run is None or flow is None:
        return ControlResult("not_found", f"Run '{run_id}' not found.", run_id)
    if run.status.is_final:
        return ControlResult(
            "refused", f"Run is not active (status: {run.status}).", run_id
        )
    first = await rt.stores.runs.request_cancel(
        run_id, reason or "Cancelled by an operator.", now=rt.clock.now()
    )
    with rt.tracer.resumed("cancel", run.trace_context):
        await stop_run(rt, run_id, flow)
    log.info("run_cancel_requested", run_id=run_id, first=first)
    return ControlResult(
        "accepted" if first else "duplicate", "Cancel requested.", run_id
    )


async def stop_run(rt: Runtime, run_id: RunId, flow: Flow) -> None:
    """Stop a cancelled or timed-out run (decision 11).

    Nothing of it starts any more, parked and queued steps close now, and the run
    completes once nothing of it runs.
    """
    run = await rt.stores.runs.get_run(run_id)
    if run is None or run.stop_status is None:
        return
    ctx = _context(rt, flow, run)
    await drive(rt, ctx, stop.begin(run.stop_status))


async def time_out(rt: Runtime, run_id: RunId) -> None:
    run, flow = await _run_and_flow(rt, run_id)
    if run is None or flow is None or run.status.is_final:
        return
    if await rt.stores.runs.mark_timed_out(run_id, now=rt.clock.now()):
        log.info("run_timed_out", run_id=run_id)
    await stop_run(rt, run_id, flow)


async def signal(rt: Runtime, run_id: RunId, name: str, payload: Json) -> ControlResult:
    if not name.strip():
        return ControlResult("refused", "A signal needs a name.", run_id)
    run, flow = await _run_and_flow(rt, run_id)
    if run is None or flow is None:
        return ControlResult("not_found", f"Run '{run_id}' not found.", run_id)
    if run.status is not RunStatus.RUNNING:
        return ControlResult(
            "refused", f"Run is not active (status: {run.status}).", run_id
        )
    delivery = await rt.stores.signals.deliver(
        run_id, name.strip(), payload, now=rt.clock.now()
    )
    if delivery.status is DeliveryStatus.NOT_FOUND:
        return ControlResult(
            "not_found",
            f"No waiter registered for signal '{name}' on this run.",
            run_id,
        )
    if delivery.step_key is not None:
        # Also for a signal delivered before: its first delivery may have died
        # between recording the signal and waking the step (a wake is guarded).
        row = (await rt.stores.steps.steps(run_id, [delivery.step_key])).get(
            delivery.step_key
        )
        with rt.tracer.resumed("signal", run.trace_context):
            ctx = _context(rt, flow, run)
            await drive(rt, ctx, Round(signal_wait.delivered(row)))
    if delivery.status is DeliveryStatus.ALREADY_DELIVERED:
        return ControlResult(
            "duplicate",
            f"Signal '{name}' was delivered already.",
            run_id,
            delivery.step_key,
        )
    log.info("signal_delivered", run_id=run_id, step_key=delivery.step_key, signal=name)
    return ControlResult(
        "delivered", f"Signal '{name}' delivered.", run_id, delivery.step_key
    )


async def rerun(rt: Runtime, run_id: RunId, *, job_id: JobId) -> TriggerResult:
    run = await rt.stores.runs.get_run(run_id)
    if run is None:
        raise UnknownReferenceError("run", run_id)
    header = rt.options.idempotency_header
    headers = trigger_headers.without(run.headers, (header, "x-idempotency-key"))
    request = TriggerRequest(
        flow=run.flow_id,
        trigger_key=run.trigger_key,
        body=run.body,
        headers=headers,
        source_run_id=run.run_id,
    )
    return await trigger(rt, request, job_id=job_id)
