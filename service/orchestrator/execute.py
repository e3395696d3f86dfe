"""`run_step`: claim a step, run it, record the outcome, then continue the run.

Order of effects: claim (guarded, with the run read beside it) -> handler -> the
wake-up timer of a step that parks for a delay -> finish (guarded) -> continuation.
A message that loses the claim is a duplicate; a redelivered one whose step is already
final (or parked) repeats what follows, which is safe to repeat.
"""

import asyncio
import contextlib
import json
import traceback
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from datetime import timedelta
from typing import TypeVar

import structlog

from service.engine.expressions import Facts, StepFacts, resolve, step_references
from service.engine.model import (
    WAIT_FOR_SIGNAL,
    Flow,
    JobId,
    Json,
    Step,
    StepKey,
    StepStatus,
    scope_of,
    template_parts,
)
from service.engine.records import (
    NewEvent,
    Outcome,
    RunRecord,
    StepRecord,
    Timer,
    TimerKind,
)
from service.errors import ExpressionError, UnavailableError, UnknownReferenceError
from service.orchestrator import advance as adv
from service.orchestrator.runtime import Runtime, StepRequest
from service.ports import Dispatch
from service.steps.handlers import (
    Failed,
    Pending,
    StepContext,
    StepResult,
    Succeeded,
    invoke,
)

log = structlog.get_logger()

_PARKED = frozenset({StepStatus.PENDING})

A = TypeVar("A")
B = TypeVar("B")


async def run_step(rt: Runtime, request: StepRequest) -> None:
    runs = rt.stores.runs
    now = rt.clock.now()
    # The run is read beside the claim, not after it: one round trip less per hop.
    claim, found = await _together(
        runs.claim(
            request.run_id,
            request.step_key,
            job_id=request.job_id,
            now=now,
            lease=rt.options.lease,
            take_over=request.redelivered,
        ),
        runs.get_run(request.run_id),
    )
    if claim.step is None:
        raise UnknownReferenceError("step", f"{request.run_id}/{request.step_key}")
    if not claim.won:
        if request.redelivered:
            await _recover(rt, claim.step)
        return
    step = claim.step
    run, flow = _with_flow(rt, step, found)
    # obs: attempt metrics and the attempt's span (issue 13)
    rt.telemetry.attempt_started(
        run.flow_id, ".".join(template_parts(step.key)), step.attempt
    )
    rt.tracer.attempt_started(run, step)
    cancelled = asyncio.Event()
    with structlog.contextvars.bound_contextvars(
        run_id=run.run_id, flow_id=run.flow_id, step_key=step.key, attempt=step.attempt
    ):
        async with _heartbeat(rt, step, cancelled):
            outcome, result = await _execute(rt, run, flow, step, cancelled)
            # A step that parks for a delay gets its wake-up before it parks: a crash
            # between the two must not leave it Pending with nothing to wake it.
            parked_for = (
                _park_delay(flow.find(step.key), step, result)
                if outcome.status is StepStatus.PENDING
                else None
            )
            timer = _requeue_timer(rt, run, step, parked_for)
            if timer is not None:
                await rt.stores.timers.set(timer)
            if context := rt.tracer.current():  # obs: a join links it (issue 13)
                outcome = replace(outcome, trace_context=context)
            finished = await runs.finish(
                run.run_id,
                step.key,
                outcome,
                job_id=request.job_id,
                attempt=step.attempt,
                now=rt.clock.now(),
            )
        rt.tracer.attempt_finished(outcome.status.value, outcome.error)  # obs
        if not finished:
            log.warning("step_result_discarded", reason="claim_lost")
            if timer is not None:
                await rt.stores.timers.delete(timer.id)
            return
        rt.telemetry.step_finished(
            run.flow_id,
            ".".join(template_parts(step.key)),
            outcome.status.value,
            seconds=(rt.clock.now() - (step.started_at or now)).total_seconds(),
        )
        await _after(rt, run, flow, step, outcome, result, cancelled, parked_for)


@contextlib.asynccontextmanager
async def _heartbeat(
    rt: Runtime, step: StepRecord, cancelled: asyncio.Event
) -> AsyncIterator[None]:
    """Keep the claim's lease alive from the claim to the recorded result.

    The beating starts after one heartbeat period: most steps are over before then,
    and pay for a timer handle instead of a task.
    """
    done = asyncio.Event()
    beating: list[asyncio.Task[None]] = []
    start = asyncio.get_running_loop().call_later(
        rt.options.heartbeat.total_seconds(),
        lambda: beating.append(asyncio.create_task(_beat(rt, step, cancelled, done))),
    )
    try:
        yield
    finally:
        start.cancel()
        done.set()
        for task in beating:
            await task


async def _beat(
    rt: Runtime, step: StepRecord, cancelled: asyncio.Event, done: asyncio.Event
) -> None:
    """Renew the lease every heartbeat; tell the handler when the run stops."""
    every = rt.options.heartbeat.total_seconds()
    while not done.is_set():
        try:
            until = rt.clock.now() + rt.options.lease
            await rt.stores.runs.extend_lease(
                step.run_id, step.key, job_id=step.job_id or JobId(""), until=until
            )
            run = await rt.stores.runs.get_run(step.run_id)
        except UnavailableError as exc:  # the next beat tries again
            log.warning("heartbeat_missed", error=str(exc))
        else:
            if run is not None and run.stop_status is not None:
                cancelled.set()
        try:
            await asyncio.wait_for(done.wait(), timeout=every)
        except TimeoutError:
            continue


async def _together(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results, awaited at once; if one raises, the other is cancelled."""
    one, two = asyncio.ensure_future(first), asyncio.ensure_future(second)
    try:
        return await one, await two
    except BaseException:
        one.cancel()
        two.cancel()
        raise


async def _load_run(rt: Runtime, step: StepRecord) -> tuple[RunRecord, Flow]:
    return _with_flow(rt, step, await rt.stores.runs.get_run(step.run_id))


def _with_flow(
    rt: Runtime, step: StepRecord, run: RunRecord | None
) -> tuple[RunRecord, Flow]:
    if run is None:
        raise UnknownReferenceError("run", step.run_id)
    flow = rt.catalog.get(run.flow_id)
    if flow is None:
        raise UnknownReferenceError("flow", run.flow_id)
    return run, flow


async def _recover(rt: Runtime, step: StepRecord) -> None:
    """Redelivered message for a step it cannot claim: finish what a crash cut short."""
    if step.status.is_final:
        run, flow = await _load_run(rt, step)
        await adv.step_settled(rt, run, flow, step.key, step.status, republish=True)
    elif step.status is StepStatus.PENDING:
        # Parked: a retry or poll has its timer already; a loop or a signal wait may
        # not have reached what follows the park.
        run, flow = await _load_run(rt, step)
        await _after_park(rt, run, flow, step)


async def _execute(
    rt: Runtime, run: RunRecord, flow: Flow, step: StepRecord, cancelled: asyncio.Event
) -> tuple[Outcome, StepResult | None]:
    manifest = flow.find(step.key)
    if manifest is None:
        return Outcome(StepStatus.SKIPPED, error="Step metadata not found."), None
    if run.stop_status is not None:
        return Outcome(StepStatus.SKIPPED, error=f"Run is {run.stop_status}."), None
    if manifest.is_loop:
        return await _run_loop(rt, run, flow, step, manifest), None
    if manifest.type.lower() == WAIT_FOR_SIGNAL.lower():
        return await _wait_for_signal(rt, run, step), None
    try:
        inputs = await _resolve_inputs(rt, run, flow, step)
    except ExpressionError as exc:
        return Outcome(StepStatus.FAILED, error=str(exc)), None
    result = await _invoke(rt, run, step, manifest, inputs, cancelled)
    return _outcome(rt, step, manifest, result, inputs), result


async def _resolve_inputs(
    rt: Runtime, run: RunRecord, flow: Flow, step: StepRecord
) -> dict[str, Json]:
    scope = flow.scope(_prefix(scope_of(step.key)))
    refs = step_references(dict(step.inputs)) & scope.steps.keys()
    rows = (
        await rt.stores.runs.steps(run.run_id, [scope.key(k) for k in refs])
        if refs
        else {}
    )
    facts = Facts(
        body=run.body,
        headers=run.headers,
        steps={
            scope.local(k): StepFacts(r.status.value, r.output, r.error)
            for k, r in rows.items()
        },
        declared=frozenset(scope.steps),
    )
    resolved = resolve(dict(step.inputs), facts)
    return resolved if isinstance(resolved, dict) else {}


async def _invoke(
    rt: Runtime,
    run: RunRecord,
    step: StepRecord,
    manifest: Step,
    inputs: dict[str, Json],
    cancelled: asyncio.Event,
) -> StepResult:
    handler = rt.handlers.get(manifest.type)
    if handler is None:  # validation at start makes this unreachable for known flows
        return Failed(f"No handler registered for type '{manifest.type}'.")
    ctx = StepContext(
        run_id=run.run_id,
        flow_id=run.flow_id,
        step_key=step.key,
        attempt=step.attempt,
        job_id=step.job_id or JobId(""),
        trigger_body=run.body,
        trigger_headers=run.headers,
        now=rt.clock.now(),
        cancelled=cancelled,
    )
    try:
        return await invoke(handler, ctx, inputs)
    except Exception as exc:  # a flow author's exception is a step result
        log.exception("step_handler_failed")
        # The exception first (what tables and events show), then where it came from.
        trace = "".join(traceback.format_exception(exc))
        return Failed(f"{type(exc).__name__}: {exc}\n\n{trace[-8000:]}")


def _outcome(
    rt: Runtime,
    step: StepRecord,
    manifest: Step,
    result: StepResult,
    inputs: dict[str, Json],
) -> Outcome:
    match result:
        case Succeeded(output=output):
            size = len(json.dumps(output))
            if size > rt.options.max_output_bytes:
                return Outcome(
                    StepStatus.FAILED,
                    error=(
                        f"Output of {size} bytes exceeds the limit of "
                        f"{rt.options.max_output_bytes} bytes."
                    ),
                    resolved_inputs=inputs,
                )
            return Outcome(StepStatus.SUCCEEDED, output, resolved_inputs=inputs)
        case Failed(reason=reason, output=output):
            if manifest.retry and manifest.retry.delay_after(step.attempt) is not None:
                return Outcome(
                    StepStatus.PENDING, output, reason, resolved_inputs=inputs
                )
            return Outcome(StepStatus.FAILED, output, reason, resolved_inputs=inputs)
        case Pending(output=output, inputs=next_inputs):
            return Outcome(
                StepStatus.PENDING,
                output,
                resolved_inputs=inputs,
                inputs=dict(next_inputs) if next_inputs is not None else None,
            )


async def _after(
    rt: Runtime,
    run: RunRecord,
    flow: Flow,
    step: StepRecord,
    outcome: Outcome,
    result: StepResult | None,
    cancelled: asyncio.Event,
    parked_for: timedelta | None,
) -> None:
    """Continue after the recorded outcome (`parked_for`: the delay of a park)."""
    log.info("step_finished", status=outcome.status.value)
    # step.started/completed/failed are read off the attempt entries (timeline.py).
    if outcome.status is StepStatus.PENDING:
        pending = NewEvent(
            "step.pending",
            rt.clock.now(),
            step.key,
            f"Step '{step.key}' pending for {parked_for or 'a signal or loop'}.",
        )
        await adv.record_events(rt, run, [pending])
        await _after_park(rt, run, flow, step)
        return
    delay_next = result.delay_next if isinstance(result, Succeeded) else None
    if cancelled.is_set():  # the heartbeat saw the run stop: don't dispatch for it
        run = await rt.stores.runs.get_run(run.run_id) or run
    done = replace(
        step,
        status=outcome.status,
        output=outcome.output,
        error=outcome.error,
        trace_context=outcome.trace_context,  # obs: a join links it (issue 13)
    )
    await adv.step_settled(
        rt, run, flow, step.key, outcome.status, delay=delay_next, row=done
    )


def _requeue_timer(
    rt: Runtime, run: RunRecord, step: StepRecord, delay: timedelta | None
) -> Timer | None:
    """The wake-up of a step this attempt parks for `delay` (a poll or a retry)."""
    if delay is None:
        return None
    return Timer(
        f"requeue:{run.run_id}:{step.key}:{step.attempt}",
        TimerKind.REQUEUE,
        rt.clock.now() + delay,
        run.run_id,
        step.key,
        attempt=step.attempt,
        trace_context=rt.tracer.current(),  # obs: the wake continues it (issue 13)
    )


def _park_delay(
    manifest: Step | None, step: StepRecord, result: StepResult | None
) -> timedelta | None:
    if isinstance(result, Pending):
        return result.delay
    if isinstance(result, Failed) and manifest is not None and manifest.retry:
        return manifest.retry.delay_after(step.attempt)
    return None  # loops and signal waits are woken by their own events


async def _after_park(
    rt: Runtime, run: RunRecord, flow: Flow, step: StepRecord
) -> None:
    manifest = flow.find(step.key)
    if manifest is None:
        return
    if manifest.is_loop:
        parked = step if step.loop is not None else None
        if parked is None:
            parked = (await rt.stores.runs.steps(run.run_id, [step.key])).get(step.key)
        if parked is not None:
            await _start_loop_iterations(rt, run, flow, parked)
    elif manifest.type.lower() == WAIT_FOR_SIGNAL.lower():
        # A signal that arrived while this attempt held the claim could not requeue the
        # step; look again now that it is parked (decision 13).
        waiter = await rt.stores.signals.waiter(run.run_id, step.key)
        if waiter is not None and waiter.delivered_at is not None:
            await wake(rt, run, step.key)


async def wake(
    rt: Runtime, run: RunRecord, key: StepKey, *, attempt: int | None = None
) -> bool:
    """Requeue a parked step (parked by `attempt`, if given) and publish it.

    False when it was not parked (or a later attempt parked it).
    """
    row = await rt.stores.runs.requeue(
        run.run_id, key, expected=_PARKED, now=rt.clock.now(), attempt=attempt
    )
    if row is None:
        return False
    await rt.dispatcher.publish(
        [Dispatch(run.flow_id, run.run_id, key, row.attempt + 1)]
    )
    return True


async def _run_loop(
    rt: Runtime, run: RunRecord, flow: Flow, step: StepRecord, manifest: Step
) -> Outcome:
    scope = flow.scope(_prefix(scope_of(step.key)))
    source = manifest.for_each
    try:
        refs = step_references(source) & scope.steps.keys()
        rows = (
            await rt.stores.runs.steps(run.run_id, [scope.key(k) for k in refs])
            if refs
            else {}
        )
        facts = Facts(
            run.body,
            run.headers,
            {
                scope.local(k): StepFacts(r.status.value, r.output, r.error)
                for k, r in rows.items()
            },
            frozenset(scope.steps),
        )
        items = resolve(source, facts)
    except ExpressionError as exc:
        return Outcome(StepStatus.FAILED, error=f"ForEach source: {exc}")
    if not isinstance(items, list) or not items:
        return Outcome(StepStatus.SUCCEEDED, {"iterations": 0})
    await rt.stores.runs.start_loop(
        run.run_id, step.key, items, concurrency=max(1, manifest.concurrency)
    )
    return Outcome(StepStatus.PENDING, {"iterations": len(items)})


async def _start_loop_iterations(
    rt: Runtime, run: RunRecord, flow: Flow, step: StepRecord
) -> None:
    """Start the first iteration of each lane; each finished one starts the next."""
    state = step.loop
    if state is None:
        return
    for index in range(min(state.total, state.concurrency)):
        await adv.start_iteration(rt, run, flow, step.key, index)


async def _wait_for_signal(rt: Runtime, run: RunRecord, step: StepRecord) -> Outcome:
    name = step.inputs.get("signalName", "default")
    if not isinstance(name, str) or not name.strip():
        return Outcome(
            StepStatus.FAILED,
            error=("WaitForSignal step requires a non-empty 'signalName' input."),
        )
    signals = rt.stores.signals
    now = rt.clock.now()
    waiter = await signals.waiter(run.run_id, step.key)
    if waiter is None:
        timeout = step.inputs.get("timeoutSeconds")
        expires = (
            now + timedelta(seconds=float(timeout))
            if isinstance(timeout, int | float)
            and not isinstance(timeout, bool)
            and timeout > 0
            else None
        )
        waiter = await signals.register(
            run.run_id, step.key, name.strip(), expires_at=expires, now=now
        )
        if expires is not None:
            await rt.stores.timers.set(
                Timer(
                    f"signal:{run.run_id}:{step.key}",
                    TimerKind.REQUEUE,
                    expires + timedelta(seconds=1),
                    run.run_id,
                    step.key,
                    trace_context=rt.tracer.current(),  # obs: issue 13
                )
            )
    if waiter.delivered_at is not None:
        return Outcome(StepStatus.SUCCEEDED, waiter.payload)
    if waiter.expires_at is not None and now >= waiter.expires_at:
        seconds = round((waiter.expires_at - waiter.created_at).total_seconds())
        return Outcome(
            StepStatus.FAILED,
            error=f"Signal '{waiter.signal}' not received within {seconds}s.",
        )
    return Outcome(StepStatus.PENDING)


def _prefix(scope_name: str) -> str:
    return f"{scope_name}." if scope_name else ""
