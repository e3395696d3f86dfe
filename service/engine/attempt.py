"""One attempt's end: its outcome under the step's policies, and what follows it.

A handler's result becomes the attempt's outcome: an output past the size limit fails
it; a failure with attempts left under the retry policy parks it for the backoff
(unless it is non-retryable: `Failed(retry=False)`); a Pending parks it for its delay.
A parked attempt gets its wake-up timer before it parks.
What follows a final outcome is its scope's cascade, decided before the outcome is saved
wherever it can be: the top-level steps it releases are then recorded by the same write
as the outcome, and their rows come with their claims (one write per step, not two).
"""

import json
from dataclasses import replace
from datetime import timedelta

from service.engine import cascade
from service.engine.decision import (
    AppendEvents,
    Decision,
    FinishStep,
    InsertSteps,
    SetTimer,
    Write,
    decided,
)
from service.engine.model import JobId, Json, Step, StepKey, StepStatus, scope_prefix
from service.engine.records import (
    NewEvent,
    NewStep,
    Outcome,
    StepRecord,
    Timer,
    TimerKind,
)
from service.engine.results import Failed, Pending, StepResult, Succeeded
from service.engine.rounds import ContinueScope, Round, RunContext

LOOP_INPUTS = ("__loopItem", "__loopIndex")


def outcome_of(
    ctx: RunContext,
    manifest: Step,
    row: StepRecord,
    result: StepResult,
    inputs: dict[str, Json],
) -> tuple[Outcome, timedelta | None]:
    """The outcome a handler's `result` gives the attempt, and how long it parks."""
    match result:
        case Succeeded(output=output):
            size = len(json.dumps(output))
            if size > ctx.limits.max_output_bytes:
                error = (
                    f"Output of {size} bytes exceeds the limit of "
                    f"{ctx.limits.max_output_bytes} bytes."
                )
                return Outcome(
                    StepStatus.FAILED, error=error, resolved_inputs=inputs
                ), None
            return Outcome(StepStatus.SUCCEEDED, output, resolved_inputs=inputs), None
        case Failed(reason=reason, output=output, retry=retry):
            policy = manifest.retry if retry else None
            backoff = policy.delay_after(row.attempt) if policy else None
            status = StepStatus.FAILED if backoff is None else StepStatus.PENDING
            return Outcome(status, output, reason, resolved_inputs=inputs), backoff
        case Pending(delay=delay, output=output, inputs=next_inputs):
            given = dict(next_inputs) if next_inputs is not None else None
            parked = Outcome(
                StepStatus.PENDING, output, resolved_inputs=inputs, inputs=given
            )
            return parked, delay


def finished(
    ctx: RunContext,
    row: StepRecord,
    outcome: Outcome,
    *,
    park: timedelta | None = None,
    delay_next: timedelta | None = None,
) -> Round:
    """Save `outcome` of the attempt `row` is at (claimed by this job), then go on.

    `park`: how long a Pending outcome waits for its wake-up (None: a loop or a signal
    wait, woken by their own events); `delay_next`: DelayNextStep of a success.
    """
    if ctx.trace:  # a join links this attempt's span
        outcome = replace(outcome, trace_context=ctx.trace)
    finish = FinishStep(row.key, outcome, row.attempt, row.job_id or JobId(""))
    if outcome.status is StepStatus.PENDING:
        return Round(parked(ctx, row, finish, park))
    prefix = scope_prefix(row.key)
    scope = ctx.flow.scope(prefix)
    local = scope.local(row.key)
    done = replace(
        row,
        status=outcome.status,
        output=outcome.output,
        error=outcome.error,
        trace_context=outcome.trace_context,
    )
    state = ContinueScope(
        prefix,
        frozenset({local}),
        {local: done},
        seen=frozenset({local}),
        loop_inputs={k: row.inputs[k] for k in LOOP_INPUTS if k in row.inputs},
        delay=delay_next,
    )
    after = cascade.resume(ctx, state, None)
    recheck = ctx.now + (delay_next or timedelta()) + ctx.limits.reconcile_after
    if prefix:
        finish = replace(finish, recheck_at=recheck)
        return Round(decided([finish]).then(after.decision), after.follow)
    released, rest = fold(after.decision)
    finish = replace(finish, released=released, recheck_at=recheck)
    return Round(decided([finish]).then(rest), after.follow)


def parked(
    ctx: RunContext, row: StepRecord, finish: FinishStep, park: timedelta | None
) -> Decision:
    """Park the step: its wake-up timer first (a crash must not leave it asleep).

    Then the park itself, then its event.
    """
    first: list[Write] = []
    if park is not None:
        first.append(SetTimer(requeue_timer(ctx, row.key, row.attempt, park)))
    else:
        finish = replace(finish, recheck_at=ctx.now + ctx.limits.reconcile_after)
    what = park if park is not None else "a signal or loop"
    event = NewEvent(
        "step.pending", ctx.now, row.key, f"Step '{row.key}' pending for {what}."
    )
    return decided(first, [finish], [AppendEvents((event,))])


def requeue_timer(
    ctx: RunContext, key: StepKey, attempt: int, delay: timedelta
) -> Timer:
    """The wake-up of a step its `attempt` parks for `delay` (a poll or a retry)."""
    return Timer(
        f"requeue:{ctx.run.run_id}:{key}:{attempt}",
        TimerKind.REQUEUE,
        ctx.now + delay,
        ctx.run.run_id,
        key,
        attempt=attempt,
        flow_id=ctx.run.flow_id,
        trace_context=ctx.trace,
    )


def fold(decision: Decision) -> tuple[tuple[StepKey, ...], Decision]:
    """Take the released top-level rows out of `decision`: the result records them.

    A step released with a delay keeps its publish timer; only its row goes.
    """
    released: list[StepKey] = []
    waves: list[tuple[Write, ...]] = []
    for wave in decision.waves:
        kept: list[Write] = []
        for write in wave:
            if isinstance(write, InsertSteps):
                queued = [r for r in write.rows if r.status is StepStatus.QUEUED]
                released.extend(r.key for r in queued)
                rest: tuple[NewStep, ...] = tuple(
                    r for r in write.rows if r not in queued
                )
                if rest:
                    kept.append(replace(write, rows=rest))
            else:
                kept.append(write)
        waves.append(tuple(kept))
    return tuple(released), decided(
        *waves, releases=decision.releases, effects=decision.effects
    )
