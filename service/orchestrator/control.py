"""Starting runs and the operators' control operations: retry, cancel, signal, rerun.

Each operation validates like FO's dashboard endpoints and answers with a ControlResult;
a refused operation is an answer, not an error.
"""

import uuid
from collections.abc import Mapping
from datetime import timedelta

import structlog

from service.engine import headers as trigger_headers
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
    Outcome,
    RunRecord,
    Timer,
    TimerKind,
)
from service.errors import UnknownReferenceError
from service.orchestrator import advance as adv
from service.orchestrator.execute import wake
from service.orchestrator.runtime import (
    ControlResult,
    Runtime,
    TriggerRequest,
    TriggerResult,
)
from service.ports import Dispatch

log = structlog.get_logger()

_STOPPABLE = frozenset({StepStatus.QUEUED, StepStatus.PENDING})


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
    flow = rt.catalog.find(request.flow)
    if flow is None:
        raise UnknownReferenceError("flow", request.flow)
    if request.trigger_key not in flow.triggers:
        raise UnknownReferenceError("trigger", f"{flow.name}/{request.trigger_key}")
    record = await rt.stores.flows.get(flow.id)
    if record is not None and not record.enabled:
        log.warning("trigger_rejected_disabled_flow", flow_id=flow.id)
        return TriggerResult(None, disabled=True)
    headers = trigger_headers.capture(request.headers)
    now = rt.clock.now()
    timeout = _run_timeout(request, flow, rt)
    run = RunRecord(
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
    stored, created = await rt.stores.runs.create_run(run)
    if not created:
        if stored.status is RunStatus.RUNNING and not stored.started:
            await start(rt, stored, flow)
        return TriggerResult(stored.run_id, duplicate=True)
    log.info(
        "run_started",
        run_id=run.run_id,
        flow_id=flow.id,
        trigger_key=request.trigger_key,
    )
    rt.telemetry.run_started(flow.id, request.trigger_key)
    await start(rt, run, flow)
    return TriggerResult(run.run_id)


def _run_timeout(request: TriggerRequest, flow: Flow, rt: Runtime) -> timedelta | None:
    body = request.body
    if isinstance(body, dict):
        seconds = body.get("runTimeoutSeconds")
        if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0:
            return timedelta(seconds=seconds)
    return flow.run_timeout or rt.options.default_run_timeout


async def start(rt: Runtime, run: RunRecord, flow: Flow) -> None:
    """Dispatch the entry steps (safe to repeat: a redelivered trigger redoes it)."""
    if run.deadline_at is not None:
        await rt.stores.timers.set(
            Timer(
                f"deadline:{run.run_id}",
                TimerKind.DEADLINE,
                run.deadline_at,
                run.run_id,
            )
        )
    await adv.advance(rt, run, flow, flow.scope(), None, republish=True)
    await rt.stores.runs.mark_started(run.run_id)  # run.started: see timeline.py


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
    row = (await rt.stores.runs.steps(run_id, [key])).get(key)
    if row is None or row.status is not StepStatus.FAILED:
        status = row.status if row else "not started"
        return ControlResult(
            "refused",
            f"Only a Failed step can be retried (status: {status}).",
            run_id,
            key,
        )
    runs = rt.stores.runs
    completed = adv.completion_event(run)
    if completed is not None:  # the record is about to forget this completion
        await adv.record_events(rt, run, [completed])
    await runs.reopen_run(run_id)
    await runs.reset_steps(
        run_id,
        [StepKey(d) for d in descendants(flow.steps, key)],
        only_error=PREREQUISITES_UNMET,
    )
    if flow.steps[key].is_loop:
        await runs.reset_steps(run_id, [key])
        await runs.add_steps(
            run_id,
            [
                NewStep(
                    key,
                    flow.steps[key].type,
                    StepStatus.QUEUED,
                    inputs=dict(flow.steps[key].inputs),
                )
            ],
            at=rt.clock.now(),
        )
        await rt.dispatcher.publish([Dispatch(run.flow_id, run_id, key, 1)])
    else:
        moved = await runs.requeue(
            run_id, key, expected=frozenset({StepStatus.FAILED}), now=rt.clock.now()
        )
        if moved is not None:
            await rt.dispatcher.publish(
                [Dispatch(run.flow_id, run_id, key, moved.attempt + 1)]
            )
    await adv.record_events(
        rt,
        run,
        [NewEvent("step.retried", rt.clock.now(), key, f"Step '{key}' retried.")],
    )
    log.info("step_retried", run_id=run_id, step_key=key)
    return ControlResult("accepted", f"Step '{key}' retry enqueued.", run_id, key)


async def cancel_run(rt: Runtime, run_id: RunId, reason: str | None) -> ControlResult:
    run, flow = await _run_and_flow(rt, run_id)
    if run is None or flow is None:
        return ControlResult("not_found", f"Run '{run_id}' not found.", run_id)
    if run.status is not RunStatus.RUNNING:
        return ControlResult(
            "refused", f"Run is not active (status: {run.status}).", run_id
        )
    first = await rt.stores.runs.request_cancel(
        run_id, reason or "Cancelled by an operator.", now=rt.clock.now()
    )
    await stop_run(rt, run_id, flow)
    log.info("run_cancel_requested", run_id=run_id, first=first)
    return ControlResult(
        "accepted" if first else "duplicate", "Cancel requested.", run_id
    )


async def stop_run(rt: Runtime, run_id: RunId, flow: Flow) -> None:
    """Close parked and queued steps of a cancelled or timed-out run.

    Then close the run itself when nothing runs any more (decision 11).
    """
    run = await rt.stores.runs.get_run(run_id)
    if run is None or run.stop_status is None:
        return
    outcome = Outcome(StepStatus.SKIPPED, error=f"Run is {run.stop_status}.")
    for row in await rt.stores.runs.in_flight(run_id):
        if row.status in _STOPPABLE:
            await rt.stores.runs.settle(
                run_id, row.key, outcome, expected=_STOPPABLE, now=rt.clock.now()
            )
    await adv.close_stopped(rt, run, flow)


async def time_out(rt: Runtime, run_id: RunId) -> None:
    run, flow = await _run_and_flow(rt, run_id)
    if run is None or flow is None or run.status is not RunStatus.RUNNING:
        return
    if await rt.stores.runs.mark_timed_out(run_id, now=rt.clock.now()):
        log.info("run_timed_out", run_id=run_id)
    await stop_run(rt, run_id, flow)


async def signal(rt: Runtime, run_id: RunId, name: str, payload: Json) -> ControlResult:
    if not name.strip():
        return ControlResult("refused", "A signal needs a name.", run_id)
    run = await rt.stores.runs.get_run(run_id)
    if run is None:
        return ControlResult("not_found", f"Run '{run_id}' not found.", run_id)
    if run.status is not RunStatus.RUNNING:
        return ControlResult(
            "refused", f"Run is not active (status: {run.status}).", run_id
        )
    delivery = await rt.stores.signals.deliver(
        run_id, name.strip(), payload, now=rt.clock.now()
    )
    match delivery.status:
        case DeliveryStatus.NOT_FOUND:
            return ControlResult(
                "not_found",
                f"No waiter registered for signal '{name}' on this run.",
                run_id,
            )
        case DeliveryStatus.ALREADY_DELIVERED:
            return ControlResult(
                "duplicate",
                f"Signal '{name}' was delivered already.",
                run_id,
                delivery.step_key,
            )
    if delivery.step_key is not None:
        await wake(rt, run, delivery.step_key)
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
