"""The engine's entry points: a claimed step, its result, a step met again, a timer.

Each answers with a `Round` (see `rounds`); `resume` goes on from a `Next` once what it
asked for is loaded. The orchestrator calls these and does what they say; nothing here
waits, reads or writes.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import assert_never

from service.engine import (
    attempt,
    cascade,
    child_flow,
    ending,
    foreach,
    signal_wait,
    stop,
    timeouts,
)
from service.engine.decision import (
    Decision,
    Launch,
    Release,
    RequeueStep,
    SetTimer,
    decided,
)
from service.engine.expressions import Facts, StepFacts, resolve
from service.engine.model import (
    ITERATION,
    WAIT_FOR_SIGNAL,
    Json,
    RunId,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    scope_prefix,
)
from service.engine.planner import run_status
from service.engine.records import Outcome, StepRecord, Timer, TimerKind
from service.engine.results import Failed, StepResult, Succeeded
from service.engine.rounds import (
    AwaitChild,
    AwaitSignal,
    BuryStopped,
    ChildParked,
    CloseParked,
    CloseStopped,
    ContinueScope,
    EndScope,
    IterationCounted,
    Load,
    Loaded,
    RestartLanes,
    Resume,
    Round,
    RunContext,
    SignalParked,
    following,
)
from service.errors import ExpressionError

_PARKED = frozenset({StepStatus.PENDING})
PARKING_GRACE = timedelta(seconds=1)
"""A wake-up due while its attempt still records its park is tried again this late."""


@dataclass(frozen=True, slots=True)
class Invoke:
    """Run the step's handler with these inputs, then call `after_handler`.

    With a `timeout`, stop waiting for it that long after it starts and call
    `timed_out` instead (its handler sees `cancelled` first, then its task is
    cancelled after a grace).
    """

    manifest: Step
    inputs: dict[str, Json]
    timeout: timedelta | None = None


def start_run(ctx: RunContext) -> Round:
    """A new run: its deadline's timer, then its entry steps.

    Each entry step is released, or skipped by its When.
    """
    deadline = _deadline(ctx)
    if deadline is None:
        return cascade.start(ctx, "")
    return Round(deadline).then(cascade.start(ctx, ""))


def queue_run(ctx: RunContext) -> Round:
    """A new run that waits for a slot of its key: its deadline, then its place.

    The wait counts towards the deadline; the run starts (`start_run`) once it holds
    a slot of its key.
    """
    deadline = _deadline(ctx) or Decision()
    return Round(deadline.then(decided(effects=[Launch(ctx.run.run_id)])))


def _deadline(ctx: RunContext) -> Decision | None:
    deadline = ctx.run.deadline_at
    if deadline is None:
        return None
    timer = Timer(
        ending.deadline_timer_id(ctx.run.run_id),
        TimerKind.DEADLINE,
        deadline,
        ctx.run.run_id,
        flow_id=ctx.run.flow_id,
        trace_context=ctx.trace,
    )
    return decided([SetTimer(timer)])


def begin(ctx: RunContext, row: StepRecord, facts: Facts) -> Round | Invoke:
    """What a step this job just claimed does (`facts`: what its inputs may read)."""
    manifest = ctx.flow.find(row.key)
    if manifest is None:
        skipped = Outcome(StepStatus.SKIPPED, error="Step metadata not found.")
        return attempt.finished(ctx, row, skipped)
    halted = row.stop or ctx.stop or _past_deadline(ctx)
    if halted is not None:
        skipped = Outcome(StepStatus.SKIPPED, error=stop.reason(halted))
        return attempt.finished(ctx.stopped(halted), row, skipped)
    if row.lost_attempts >= ctx.limits.lost_attempts:
        error = (
            f"The worker running this step died during {row.lost_attempts} attempts."
        )
        return attempt.finished(ctx, row, Outcome(StepStatus.FAILED, error=error))
    if manifest.is_loop:
        return foreach.execute(ctx, row, manifest, facts)
    if manifest.type.lower() == WAIT_FOR_SIGNAL.lower():
        return signal_wait.execute(ctx, row)
    if manifest.is_child:
        return child_flow.execute(ctx, row, manifest, facts)
    try:
        resolved = resolve(dict(row.inputs), facts)
    except ExpressionError as exc:
        return attempt.finished(ctx, row, Outcome(StepStatus.FAILED, error=str(exc)))
    call = Invoke(manifest, resolved if isinstance(resolved, dict) else {})
    limit = timeouts.budget(ctx, manifest)
    if limit is None:
        return call
    left = timeouts.remaining(ctx, row, limit)
    if left <= timedelta(0):  # the attempts this one takes over from used it up
        return timed_out(ctx, row, call)
    return replace(call, timeout=left)


def timed_out(ctx: RunContext, row: StepRecord, call: Invoke) -> Round:
    """The handler outlived its timeout: the attempt failed (retries may follow)."""
    limit = timeouts.budget(ctx, call.manifest) or timedelta(0)
    return after_handler(ctx, row, call, Failed(timeouts.reason(limit)))


def after_handler(
    ctx: RunContext, row: StepRecord, call: Invoke, result: StepResult
) -> Round:
    """The handler returned `result`: record it and go on."""
    outcome, park = attempt.outcome_of(ctx, call.manifest, row, result, call.inputs)
    delay_next = result.delay_next if isinstance(result, Succeeded) else None
    return attempt.finished(ctx, row, outcome, park=park, delay_next=delay_next)


def recover(ctx: RunContext, row: StepRecord) -> Round:
    """A step met again that cannot be claimed: what follows its state, once more.

    For the redelivery of a message whose worker died after recording a result, and
    for the reconciler; everything it asks for is safe to repeat.
    """
    if row.stop is not None:
        ctx = ctx.stopped(row.stop)
        closes = stop.closing([row], row.stop)
        return Round(decided(closes)).then(cascade.close_stopped(row.stop))
    manifest = ctx.flow.find(row.key)
    if row.status.is_final:
        prefix = scope_prefix(row.key)
        local = ctx.flow.scope(prefix).local(row.key)
        state = ContinueScope(
            prefix,
            frozenset({local}),
            {local: row},
            seen=frozenset({local}),
            loop_inputs={
                k: row.inputs[k] for k in attempt.LOOP_INPUTS if k in row.inputs
            },
        )
        return cascade.resume(ctx, state, None)
    if row.status is not StepStatus.PENDING or manifest is None:
        return Round()
    if manifest.is_loop and row.loop is not None:
        load = foreach.restart_load(row.key, row.loop.concurrency, row.loop.total)
        return following(load, RestartLanes(row.key))
    if manifest.type.lower() == WAIT_FOR_SIGNAL.lower():
        return following(Load(waiter=row.key), SignalParked(row))
    child = row.inputs.get(child_flow.CHILD)
    if manifest.is_child and isinstance(child, str):
        return child_flow.recover(row, RunId(child))
    return Round()  # a retry or a poll: its timer was set before it parked


def resume(ctx: RunContext, state: Resume, loaded: Loaded) -> Round:
    """Go on from `state` with what was loaded for it."""
    match state:
        case ContinueScope():
            return cascade.resume(ctx, state, loaded)
        case EndScope():
            return _end_scope(ctx, state, loaded)
        case IterationCounted():
            return foreach.after_count(ctx, state, loaded)
        case RestartLanes():
            return foreach.restart(ctx, state.loop, loaded)
        case BuryStopped():
            return stop.bury(ctx, state.status, loaded.all_rows)
        case CloseParked():
            return stop.close_parked(state.status, loaded.in_flight)
        case CloseStopped():
            return stop.close(ctx, state.status, loaded.in_flight)
        case _:
            return _resume_wait(ctx, state, loaded)


def _resume_wait(
    ctx: RunContext,
    state: AwaitSignal | SignalParked | AwaitChild | ChildParked,
    loaded: Loaded,
) -> Round:
    """A step that waits (for a signal, for a child run), with what was loaded."""
    match state:
        case AwaitSignal():
            return signal_wait.decide(ctx, state.row, loaded.waiter)
        case SignalParked():
            return signal_wait.after_park(ctx, state.row, loaded.waiter)
        case AwaitChild():
            return child_flow.decide(ctx, state.row, loaded.child)
        case ChildParked():
            return child_flow.after_park(ctx, state.row, loaded.child)
        case _:
            assert_never(state)


def _end_scope(ctx: RunContext, state: EndScope, loaded: Loaded) -> Round:
    scope = ctx.flow.scope(state.prefix)
    if state.counted:
        if loaded.scope_final < len(scope.steps):
            return Round()
        return following(Load(scope=scope.name), EndScope(state.prefix))
    rows = [r for r in loaded.scope_rows if r.type != ITERATION]
    if sum(1 for r in rows if r.status.is_final) < len(scope.steps):
        return Round()
    halted = ctx.stop or next((r.stop for r in rows if r.stop), None)
    statuses = {scope.local(r.key): r.status for r in rows}
    status = run_status(scope.steps, statuses, stop=halted)
    if scope.prefix:
        return foreach.end_iteration(ctx, StepKey(scope.name), status)
    return Round(ending.completion(ctx, status, _outputs(ctx, rows, halted)))


def _outputs(ctx: RunContext, rows: list[StepRecord], halted: RunStatus | None) -> Json:
    """The flow's outputs over its top-level rows; a stopped run gives back nothing."""
    if not ctx.flow.outputs or halted is not None:
        return None
    scope = ctx.flow.scope("")
    facts = Facts(
        body=ctx.run.body,
        headers=ctx.run.headers,
        steps={
            scope.local(r.key): StepFacts(r.status.value, r.output, r.error)
            for r in rows
        },
        declared=frozenset(scope.steps),
    )
    return resolve(dict(ctx.flow.outputs), facts)


def ended(ctx: RunContext) -> Round:
    """A run that ended, met again by the reconciler: what its end sets off, again."""
    return Round(decided(effects=ending.after_end(ctx)))


def woken(timer: Timer, row: StepRecord | None, now: datetime) -> Decision:
    """A wake-up timer fired for `row`: requeue it, if the attempt it parked still is.

    A wake-up that finds its attempt still recording its park (the timer is set just
    before the park) is due again a moment later.
    """
    if row is None or timer.step_key is None:
        return Decision()
    parked_by_it = timer.attempt is None or row.attempt == timer.attempt
    if row.status is StepStatus.PENDING and parked_by_it:
        return decided(
            [RequeueStep(row.key, _PARKED, timer.attempt)],
            releases=[Release(row.key, row.attempt + 1)],
        )
    if row.status is StepStatus.RUNNING and timer.attempt == row.attempt:
        return decided([SetTimer(replace(timer, due_at=now + PARKING_GRACE))])
    return Decision()


def published(timer: Timer, row: StepRecord | None) -> Decision:
    """A delayed release is due: publish it, unless its step has moved on."""
    if timer.step_key is None:
        return Decision()
    if row is None:
        return decided(releases=[Release(timer.step_key)])
    if row.status is StepStatus.QUEUED:
        return decided(releases=[Release(row.key, row.attempt + 1)])
    return Decision()


def _past_deadline(ctx: RunContext) -> RunStatus | None:
    deadline = ctx.run.deadline_at
    return RunStatus.TIMED_OUT if deadline is not None and ctx.now >= deadline else None
