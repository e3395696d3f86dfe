"""WaitForSignal (decision 13): how the step waits, and how it goes on.

Running the step registers its waiter (once; with `timeoutSeconds`, a timer wakes it
just after the waiter expires) and parks it. A signal delivered to the waiter requeues
the step through the normal dispatch and claim path, and the next attempt succeeds with
the signal's payload; one that finds the waiter expired fails. A signal delivered while
the parking attempt still held its claim is caught when the step has parked: the waiter
is looked at once more.
"""

from datetime import datetime, timedelta

from service.engine import attempt
from service.engine.decision import (
    Decision,
    FinishStep,
    RegisterWaiter,
    Release,
    RequeueStep,
    SetTimer,
    Write,
    decided,
)
from service.engine.model import JobId, StepKey, StepStatus
from service.engine.records import Outcome, StepRecord, Timer, TimerKind, Waiter
from service.engine.rounds import (
    AwaitSignal,
    Load,
    Round,
    RunContext,
    SignalParked,
    following,
)

_PENDING = frozenset({StepStatus.PENDING})
EXPIRY_GRACE = timedelta(seconds=1)
"""The expiry timer fires this long after the waiter expires, so it finds it expired."""


def execute(ctx: RunContext, row: StepRecord) -> Round:
    """The step ran: look its waiter up first (a redelivery may have one)."""
    if _signal(row) is None:
        failed = Outcome(
            StepStatus.FAILED,
            error="WaitForSignal step requires a non-empty 'signalName' input.",
        )
        return attempt.finished(ctx, row, failed)
    return following(Load(waiter=row.key), AwaitSignal(row))


def decide(ctx: RunContext, row: StepRecord, waiter: Waiter | None) -> Round:
    """Succeed with the payload, fail past the deadline, or park (registering first)."""
    if waiter is None:
        return _register(ctx, row)
    if waiter.delivered_at is not None:
        return attempt.finished(ctx, row, Outcome(StepStatus.SUCCEEDED, waiter.payload))
    if waiter.expires_at is not None and ctx.now >= waiter.expires_at:
        seconds = round((waiter.expires_at - waiter.created_at).total_seconds())
        error = f"Signal '{waiter.signal}' not received within {seconds}s."
        return attempt.finished(ctx, row, Outcome(StepStatus.FAILED, error=error))
    return _park(ctx, row)


def after_park(ctx: RunContext, row: StepRecord, waiter: Waiter | None) -> Round:
    """Parked: a signal that came while this attempt held the claim wakes it now."""
    if waiter is None or waiter.delivered_at is None:
        return Round()
    return Round(wake(row.key, attempt=row.attempt))


def delivered(row: StepRecord | None) -> Decision:
    """A signal reached this step's waiter: wake it if it is parked.

    If its attempt still holds the claim, the attempt finds the signal once parked.
    """
    if row is None or row.status is not StepStatus.PENDING:
        return Decision()
    return wake(row.key, attempt=row.attempt)


def wake(key: StepKey, *, attempt: int) -> Decision:
    """Requeue the parked step and publish its next attempt."""
    return decided(
        [RequeueStep(key, _PENDING, attempt)], releases=[Release(key, attempt + 1)]
    )


def _register(ctx: RunContext, row: StepRecord) -> Round:
    timeout = row.inputs.get("timeoutSeconds")
    expires = (
        ctx.now + timedelta(seconds=float(timeout))
        if isinstance(timeout, int | float)
        and not isinstance(timeout, bool)
        and timeout > 0
        else None
    )
    name = _signal(row) or ""
    first: list[Write] = [RegisterWaiter(row.key, name, expires)]
    if expires is not None:
        first.append(SetTimer(_expiry_timer(ctx, row.key, expires)))
    return Round(decided(first)).then(_park(ctx, row))


def _park(ctx: RunContext, row: StepRecord) -> Round:
    finish = FinishStep(
        row.key, Outcome(StepStatus.PENDING), row.attempt, row.job_id or JobId("")
    )
    parked = Round(attempt.parked(ctx, row, finish, None))
    return parked.then(following(Load(waiter=row.key), SignalParked(row)))


def _expiry_timer(ctx: RunContext, key: StepKey, expires: datetime) -> Timer:
    return Timer(
        f"signal:{ctx.run.run_id}:{key}",
        TimerKind.REQUEUE,
        expires + EXPIRY_GRACE,
        ctx.run.run_id,
        key,
        flow_id=ctx.run.flow_id,
        trace_context=ctx.trace,
    )


def _signal(row: StepRecord) -> str | None:
    name = row.inputs.get("signalName", "default")
    return name.strip() if isinstance(name, str) and name.strip() else None
