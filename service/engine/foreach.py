"""ForEach (decision 12): how a loop step starts, how its iterations go on and end.

Running the step resolves its source: nothing to iterate succeeds at once; otherwise
the items and counters are stored, the step parks (Pending) and `concurrency` lanes
start: iteration i runs its body as the scope `<loop>.<i>.` (children get `__loopItem`
and `__loopIndex`), and when it ends, iteration `i + concurrency` starts, so a lane
never depends on when another finished and a repeated continuation starts exactly
what the first one did. An ended iteration is settled, then counted once (a bitmap on
the loop row); the count that reaches the total settles the loop, and the loop's own
scope goes on. A stopped run counts no more and starts nothing.
"""

from collections.abc import Mapping
from dataclasses import replace

from service.engine import attempt, cascade
from service.engine.decision import (
    FinishStep,
    InsertSteps,
    SettleStep,
    StartLoop,
    decided,
)
from service.engine.expressions import Facts, resolve
from service.engine.model import (
    ITERATION,
    JobId,
    Json,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    iteration_key,
    scope_of,
    scope_prefix,
)
from service.engine.records import NewStep, Outcome, StepRecord
from service.engine.rounds import (
    ContinueScope,
    CountIteration,
    IterationCounted,
    Load,
    Loaded,
    Round,
    RunContext,
    following,
)
from service.errors import ExpressionError

_PENDING = frozenset({StepStatus.PENDING})
_ITERATION_STATUS = {
    RunStatus.SUCCEEDED: StepStatus.SUCCEEDED,
    RunStatus.SKIPPED: StepStatus.SKIPPED,
}


def execute(ctx: RunContext, row: StepRecord, manifest: Step, facts: Facts) -> Round:
    """The loop step ran: start its lanes, or end at once."""
    try:
        items = resolve(manifest.for_each, facts)
    except ExpressionError as exc:
        failed = Outcome(StepStatus.FAILED, error=f"ForEach source: {exc}")
        return attempt.finished(ctx, row, failed)
    if not isinstance(items, list) or not items:
        done = Outcome(StepStatus.SUCCEEDED, {"iterations": 0})
        return attempt.finished(ctx, row, done)
    concurrency = max(1, manifest.concurrency)
    pending = Outcome(StepStatus.PENDING, {"iterations": len(items)})
    finish = FinishStep(row.key, pending, row.attempt, row.job_id or JobId(""))
    park = attempt.parked(ctx, row, finish, None)
    lanes = [
        start_iteration(ctx, row.key, index, items[index])
        for index in range(min(concurrency, len(items)))
    ]
    first = decided([StartLoop(row.key, tuple(items), concurrency)])
    return _all(Round(first.then(park)), lanes)


def start_iteration(ctx: RunContext, loop: StepKey, index: int, item: Json) -> Round:
    """Iteration `index`: its bookkeeping row (Pending), then its entry steps."""
    key = iteration_key(loop, index)
    inputs: dict[str, Json] = {"__loopItem": item, "__loopIndex": index}
    row = NewStep(key, ITERATION, StepStatus.PENDING, inputs=inputs)
    body = cascade.start(ctx, f"{key}.", inputs)
    return Round(decided([InsertSteps((row,))]).then(body.decision), body.follow)


def restart(ctx: RunContext, loop: StepKey, loaded: Loaded) -> Round:
    """A parked loop's message again: start every lane that did not start.

    A lane whose first iteration is final went on by itself; one that is not is
    started again (every write is insert-if-absent; its steps are published again).
    """
    lanes = []
    for (_, index), item in sorted(loaded.items.items(), key=lambda kv: kv[0][1]):
        row = loaded.rows.get(iteration_key(loop, index))
        if row is None or not row.status.is_final:
            lanes.append(start_iteration(ctx, loop, index, item))
    return _all(Round(), lanes)


def restart_load(loop: StepKey, concurrency: int, total: int) -> Load:
    first = range(min(concurrency, total))
    return Load(
        rows=frozenset(iteration_key(loop, i) for i in first),
        items=frozenset((loop, i) for i in first),
    )


def end_iteration(ctx: RunContext, key: StepKey, status: RunStatus) -> Round:
    """Iteration `key` ended with `status`: settle it, then count it."""
    loop = StepKey(scope_of(key))
    index = int(key.rpartition(".")[2])
    manifest = ctx.flow.find(loop)
    lane = max(1, manifest.concurrency) if manifest is not None else 1
    outcome = Outcome(_ITERATION_STATUS.get(status, StepStatus.FAILED))
    settle = decided([SettleStep(key, outcome, _PENDING)])
    failed = status is RunStatus.FAILED
    load = Load(
        count_iteration=CountIteration(loop, index, failed),
        items=frozenset({(loop, index + lane)}),
    )
    return Round(settle).then(following(load, IterationCounted(loop, index)))


def after_count(ctx: RunContext, state: IterationCounted, loaded: Loaded) -> Round:
    """Counted: start this lane's next iteration; the last count ends the loop."""
    row = loaded.loop
    if row is None or row.loop is None:
        return Round()  # reset by a retry meanwhile: nothing of this loop goes on
    counters = row.loop
    stop = counters.stop or row.stop
    if stop is not None:
        return cascade.close_stopped(stop)
    following_index = state.index + counters.concurrency
    rounds = []
    item = loaded.items.get((state.loop, following_index))
    if following_index < counters.total:
        rounds.append(start_iteration(ctx, state.loop, following_index, item))
    if counters.is_done:
        rounds.append(_end_loop(ctx, row))
    return _all(Round(), rounds)


def _end_loop(ctx: RunContext, row: StepRecord) -> Round:
    """Every iteration counted: settle the loop step, then its scope goes on."""
    counters = row.loop
    assert counters is not None  # noqa: S101 - checked by the caller
    status = StepStatus.FAILED if counters.failed else StepStatus.SUCCEEDED
    output: Json = {"iterations": counters.total, "failed": counters.failed}
    failures = counters.failed
    error = f"{failures} of {counters.total} iterations failed." if failures else None
    outcome = Outcome(status, output, error)
    settle = decided([SettleStep(row.key, outcome, _PENDING)])
    done = replace(row, status=status, output=output, error=error)
    scope = ctx.flow.scope(scope_prefix(row.key))
    local = scope.local(row.key)
    state = ContinueScope(
        scope.prefix,
        frozenset({local}),
        {local: done},
        seen=frozenset({local}),
        loop_inputs=_loop_inputs(row.inputs),
    )
    return Round(settle).then(cascade.resume(ctx, state, None))


def _loop_inputs(inputs: Mapping[str, Json]) -> dict[str, Json]:
    return {k: inputs[k] for k in attempt.LOOP_INPUTS if k in inputs}


def _all(first: Round, lanes: list[Round]) -> Round:
    """`first`, then the lanes side by side (each in its own order)."""
    if not lanes:
        return first
    side = lanes[0].decision.alongside(*(lane.decision for lane in lanes[1:]))
    follow = tuple(n for lane in lanes for n in lane.follow)
    return first.then(Round(side, follow))
