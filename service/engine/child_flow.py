"""ChildFlow: a step that starts another flow's run and waits, parked, for its end.

The attempt that starts the child creates its run first: its id and idempotency key
derive from the parent run, the step and the attempt that began the chain of lost
attempts this one takes over, so a redelivery or a reclaim finds the same child and
never starts a second. Then the step parks, with the child's id in its inputs
(`__child`), and the child is launched. The child's end wakes the step through the
normal dispatch and claim path (`child_ended`); that attempt succeeds with the child's
outputs if it Succeeded, is Skipped if nothing of it ran, and fails otherwise (the
step's retry policy, counting children rather than wake-ups, then starts a new one).
A stopped parent stops its children.
"""

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Final

from service.engine import attempt, concurrency, signal_wait
from service.engine.decision import (
    CreateRun,
    Decision,
    FinishStep,
    Launch,
    Release,
    StopRun,
    decided,
)
from service.engine.expressions import Facts, resolve
from service.engine.model import (
    CHILD_FLOW,
    Flow,
    JobId,
    Json,
    RunId,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    TriggerKey,
)
from service.engine.records import Outcome, ParentRef, RunRecord, StepRecord
from service.engine.results import Succeeded
from service.engine.rounds import (
    AwaitChild,
    ChildParked,
    Load,
    Round,
    RunContext,
    following,
)
from service.errors import ExpressionError

CHILD: Final = "__child"
"""The input that carries the id of the child run a parked step waits for."""
TRIES: Final = "__tries"
"""The input that counts the children a step started and saw fail (its retries)."""
MAX_DEPTH: Final = 8
"""Runs started by runs started by ... a run: at most this deep (a flow may start
itself; this bound ends the recursion)."""
TRIGGER: Final = TriggerKey("parent")
"""The trigger key of a child run."""
_NAMESPACE: Final = uuid.UUID("8a0f6c2e-5d1b-4c3e-9f7a-1b2c3d4e5f60")


def execute(ctx: RunContext, row: StepRecord, manifest: Step, facts: Facts) -> Round:
    """The step ran: wait on the child it started, or start one."""
    started = row.inputs.get(CHILD)
    if isinstance(started, str):  # woken, or met again: its child exists
        return following(Load(child=RunId(started)), AwaitChild(row))
    target = row.inputs.get("flow")
    flow = ctx.flows(target) if isinstance(target, str) else None
    if flow is None:
        return _fail(ctx, row, manifest, f"Flow '{target}' is not known.", retry=False)
    if ctx.run.depth + 1 > MAX_DEPTH:
        reason = f"Child flows nest at most {MAX_DEPTH} deep; this run is at depth "
        return _fail(ctx, row, manifest, f"{reason}{ctx.run.depth}.", retry=False)
    try:
        body = resolve(row.inputs.get("inputs", {}), facts)
    except ExpressionError as exc:
        return _fail(ctx, row, manifest, str(exc), retry=False)
    child = child_run(ctx, row, flow, body)
    inputs = {**row.inputs, CHILD: child.run_id}
    parked = Outcome(
        StepStatus.PENDING,
        resolved_inputs={"flow": flow.name, "inputs": body},
        inputs=inputs,
    )
    finish = FinishStep(row.key, parked, row.attempt, row.job_id or JobId(""))
    create = decided([CreateRun(child, ctx.now + ctx.limits.reconcile_after)])
    park = attempt.parked(ctx, row, finish, None)
    launch = decided(effects=[Launch(child.run_id)])
    waiting = replace(row, status=StepStatus.PENDING, inputs=inputs)
    check = following(Load(child=child.run_id), ChildParked(waiting))
    return Round(create.then(park, launch)).then(check)


def child_run(ctx: RunContext, row: StepRecord, flow: Flow, body: Json) -> RunRecord:
    """The record of the child this attempt starts (the same for a lost chain)."""
    origin = _origin(row)
    timeout = flow.run_timeout or ctx.limits.default_run_timeout
    run = RunRecord(
        run_id=child_run_id(ctx.run.run_id, row.key, origin),
        flow_id=flow.id,
        flow_name=flow.name,
        trigger_key=TRIGGER,
        job_id=row.job_id or JobId(""),
        started_at=ctx.now,
        body=body,
        idempotency_key=f"child:{ctx.run.run_id}/{row.key}/{origin}",
        deadline_at=ctx.now + timeout if timeout else None,
        trace_context=ctx.trace,
        parent=ParentRef(ctx.run.run_id, row.key),
        depth=ctx.run.depth + 1,
    )
    return concurrency.queued(flow, run)


def child_run_id(parent: RunId, key: StepKey, origin: int) -> RunId:
    return RunId(str(uuid.uuid5(_NAMESPACE, f"{parent}/{key}/{origin}")))


def decide(ctx: RunContext, row: StepRecord, child: RunRecord | None) -> Round:
    """Woken: go on as the child ended, or park again if it has not."""
    manifest = ctx.flow.find(row.key) or Step(row.type)
    child_id = row.inputs.get(CHILD)
    if child is None:
        return _fail(ctx, row, manifest, f"Child run {child_id} is gone.")
    if not child.status.is_final:
        return _park_again(ctx, row)
    if child.status is RunStatus.SUCCEEDED:
        resolved = dict(row.resolved_inputs or {})
        result = Succeeded(child.outputs)
        outcome, _ = attempt.outcome_of(ctx, manifest, row, result, resolved)
        return attempt.finished(ctx, row, _forget_child(outcome, row.inputs))
    if child.status is RunStatus.SKIPPED:
        skipped = Outcome(
            StepStatus.SKIPPED, error=f"Child run {child.run_id} ran nothing."
        )
        return attempt.finished(ctx, row, _forget_child(skipped, row.inputs))
    reason = f"Child run {child.run_id} ended {child.status}."
    return _fail(ctx, row, manifest, reason, output=child.outputs)


def after_park(ctx: RunContext, row: StepRecord, child: RunRecord | None) -> Round:
    """Parked: a child that ended while this attempt held its claim wakes it now."""
    if child is None or not child.status.is_final:
        return Round()
    return Round(signal_wait.wake(row.key, attempt=row.attempt))


def recover(row: StepRecord, child: RunId) -> Round:
    """A parked step met again (a redelivery, the reconciler): launch its child again.

    The worker that parked it may have died before it launched the child; then look
    at the child, which may have ended.
    """
    launch = Round(decided(effects=[Launch(child)]))
    return launch.then(following(Load(child=child), ChildParked(row)))


def child_ended(row: StepRecord | None, child: RunId) -> Decision:
    """`child` ended: wake its parent's step if it is parked waiting for it.

    A step requeued for it already is published again: the worker that requeued it
    may have died before it published.
    """
    if row is None or row.inputs.get(CHILD) != child:
        return Decision()  # parked for something else (a retry's backoff), or gone
    if row.status is StepStatus.QUEUED:
        return decided(releases=[Release(row.key, row.attempt + 1)])
    if row.status is not StepStatus.PENDING:
        return Decision()
    return signal_wait.wake(row.key, attempt=row.attempt)


def stop_children(rows: Iterable[StepRecord], status: RunStatus) -> tuple[StopRun, ...]:
    """Stop the children of the ChildFlow rows of a stopped run that are not final.

    A parked row names its child; a running one may be creating it: its id is known.
    """
    stops: list[StopRun] = []
    for row in rows:
        if row.type.lower() != CHILD_FLOW.lower() or row.status.is_final:
            continue
        child = row.inputs.get(CHILD)
        if not isinstance(child, str):
            if row.status is not StepStatus.RUNNING:
                continue  # queued, or waiting out a retry's backoff: no child
            child = child_run_id(row.run_id, row.key, _origin(row))
        reason = f"Its parent run {row.run_id} is {status}."
        stops.append(StopRun(RunId(child), reason))
    return tuple(stops)


def _park_again(ctx: RunContext, row: StepRecord) -> Round:
    parked = Outcome(StepStatus.PENDING, inputs=row.inputs)
    finish = FinishStep(row.key, parked, row.attempt, row.job_id or JobId(""))
    park = Round(attempt.parked(ctx, row, finish, None))
    child = RunId(str(row.inputs.get(CHILD)))
    return park.then(following(Load(child=child), ChildParked(row)))


def _fail(
    ctx: RunContext,
    row: StepRecord,
    manifest: Step,
    reason: str,
    *,
    retry: bool = True,
    output: Json = None,
) -> Round:
    """A failed try: the retry policy counts children started, not wake-ups.

    A retry parks with the tries counted (`__tries`) and no child, so its next attempt
    starts a new one; the last failure keeps neither.
    """
    tries = _tries(row)
    policy = manifest.retry if retry else None
    backoff = policy.delay_after(tries) if policy else None
    inputs = {k: v for k, v in row.inputs.items() if k not in (CHILD, TRIES)}
    if backoff is not None:
        inputs[TRIES] = tries
    status = StepStatus.FAILED if backoff is None else StepStatus.PENDING
    outcome = Outcome(status, output, reason, inputs=inputs)
    return attempt.finished(ctx, row, outcome, park=backoff)


def _forget_child(outcome: Outcome, inputs: Mapping[str, Json]) -> Outcome:
    """A final outcome: the step's state (`__child`, `__tries`) is dropped."""
    if CHILD not in inputs and TRIES not in inputs:
        return outcome
    kept = {k: v for k, v in inputs.items() if k not in (CHILD, TRIES)}
    return replace(outcome, inputs=kept)


def _tries(row: StepRecord) -> int:
    """This try's number: children started by the step, this one's included."""
    done = row.inputs.get(TRIES, 0)
    return (done if isinstance(done, int) else 0) + 1


def _origin(row: StepRecord) -> int:
    """The attempt that began the chain of lost attempts `row`'s attempt takes over."""
    origin = row.attempt
    for earlier in reversed(row.attempts[:-1]):
        if earlier.status is not StepStatus.RUNNING:
            break
        origin = earlier.number
    return origin
