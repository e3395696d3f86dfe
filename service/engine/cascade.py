"""The cascade of one scope: what becomes of the steps that run after settled ones.

A scope is the top level of a run or one ForEach iteration. Once steps settle, each
step that runs after them is ready (Queued and released), blocked for good or skipped
by its When (a Skipped row with the reason), or waiting; a skipped step makes its own
dependents candidates, until nothing more moves (decision 1: the cascade is complete).
A candidate whose facts are not known yet (a join's other branches, the steps its When
reads) is asked for; a wide join is counted before its rows are read. A cascade that
released nothing and left no step waiting may have ended its scope: the scope's rows
are asked for next (a waiting step means one it waits for is still to run).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from service.engine.decision import (
    AppendEvents,
    Decision,
    InsertSteps,
    Release,
    SetTimer,
    Write,
    decided,
)
from service.engine.expressions import Facts, StepFacts, evaluate_when, when_references
from service.engine.model import (
    ENTRY_MARKER,
    Json,
    RunAfter,
    RunStatus,
    Scope,
    StepKey,
    StepStatus,
)
from service.engine.records import (
    PREREQUISITES_UNMET,
    NewEvent,
    NewStep,
    StepRecord,
    Timer,
    TimerKind,
)
from service.engine.rounds import (
    CloseStopped,
    ContinueScope,
    EndScope,
    Load,
    Loaded,
    Next,
    Round,
    RunContext,
    following,
)

WIDE = 16
"""A step with more dependencies (a scope with more steps) than this is counted before
its rows are read: a 1,000-way fan-in must not read 1,000 rows at each branch's end."""


def start(
    ctx: RunContext, prefix: str, loop_inputs: Mapping[str, Json] | None = None
) -> Round:
    """The entry steps of a scope that has no rows yet (a run, an iteration)."""
    state = ContinueScope(prefix, frozenset(), {}, loop_inputs=loop_inputs or {})
    return _cascade(ctx, state, _entries(ctx, prefix), {})


def resume(ctx: RunContext, state: ContinueScope, loaded: Loaded | None) -> Round:
    """Go on with the cascade from `state`, knowing what `loaded` says."""
    scope = ctx.flow.scope(state.prefix)
    known = dict(state.known)
    seen = set(state.seen)
    counts: dict[str, int] = {}
    if loaded is not None:
        for key, row in loaded.rows.items():
            known[scope.local(key)] = row
        seen |= state.asked  # asked for and not found: no row
        counts = dict(zip(state.counting, loaded.counts, strict=True))
    state = replace(
        state, known=known, seen=frozenset(seen), counting=(), asked=frozenset()
    )
    stop = ctx.stop or next((r.stop for r in known.values() if r.stop), None)
    if stop is not None:
        return close_stopped(stop)
    return _cascade(ctx, state, scope.dependents(state.settled), counts)


def close_stopped(status: RunStatus) -> Round:
    """A stopped run's continuation: complete the run once nothing is in flight."""
    return following(Load(in_flight=True), CloseStopped(status))


def end_scope(scope: Scope) -> Next:
    """Ask whether `scope` ended: its rows, or first their count for a wide one."""
    if len(scope.steps) > WIDE:
        return Next(Load(count_scope=scope.name), EndScope(scope.prefix, counted=True))
    return Next(Load(scope=scope.name), EndScope(scope.prefix))


@dataclass(slots=True)
class _Work:
    """What one round of the cascade decided so far."""

    rows: list[NewStep] = field(default_factory=list)
    released: list[StepKey] = field(default_factory=list)
    skipped: list[NewStep] = field(default_factory=list)
    rows_needed: set[str] = field(default_factory=set)
    counts_needed: dict[str, frozenset[str]] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)


def _cascade(
    ctx: RunContext,
    state: ContinueScope,
    candidates: set[str],
    counts: Mapping[str, int],
) -> Round:
    scope = ctx.flow.scope(state.prefix)
    known = dict(state.known)
    settled = set(state.settled)
    work = _Work()
    while candidates:
        open_ = {c for c in candidates if c not in known}
        decidable = {
            c
            for c in open_
            if _decidable(scope, c, known, settled, state, counts, work)
        }
        newly: list[str] = []
        for key in sorted(decidable, key=list(scope.steps).index):
            row = _verdict(ctx, scope, key, known, state, counts)
            if row is None:
                work.waiting.add(key)  # a dependency is not final (for now)
                continue
            work.waiting.discard(key)
            work.rows.append(row)
            known[key] = _as_record(ctx, row)
            if row.status is StepStatus.SKIPPED:
                work.skipped.append(row)
                newly.append(key)
            else:
                work.released.append(row.key)
        settled.update(newly)
        candidates = scope.dependents(newly)
    seen = state.seen | {scope.local(r.key) for r in work.rows}
    state = replace(
        state,
        settled=frozenset(settled),
        known=known,
        seen=seen,
        released=state.released or bool(work.released),
        # Still waiting at the end of the cascade: something it waits for is to run.
        waiting=state.waiting or bool(work.waiting),
    )
    return Round(_decision(ctx, state, work), _follow(ctx, scope, state, work))


def _decidable(
    scope: Scope,
    key: str,
    known: Mapping[str, StepRecord],
    settled: set[str],
    state: ContinueScope,
    counts: Mapping[str, int],
    work: _Work,
) -> bool:
    """Whether `key`'s fate can be told now; if not, note what would tell it."""
    step = scope.steps[key]
    deps = [d for d in step.conditions if d != ENTRY_MARKER]
    if _refused(step.conditions, known):
        if key in state.seen or not set(deps) - settled:
            return True  # blocked, whatever the others do
        # A dependency that ended before this continuation may have refused it
        # already: then it was skipped, and its dependents may have run since.
        # Its own row tells; if it has one, nothing follows from it again.
        work.rows_needed.add(key)
        return False
    unseen = {d for d in deps if d not in state.seen and d not in known}
    if len(deps) > WIDE and unseen:
        if key in counts:
            final = sum(1 for d in deps if d in known and known[d].status.is_final)
            if final + counts[key] < len(deps):
                return True  # waiting: the count says a dependency is not final
            work.rows_needed |= unseen
        else:
            work.counts_needed[key] = frozenset(unseen)
        return False
    reads = {r for c in step.conditions.values() if c.when for r in _refs(scope, c)}
    missing = unseen | {r for r in reads if r not in state.seen and r not in known}
    work.rows_needed |= missing
    return not missing


def _refs(scope: Scope, condition: RunAfter) -> set[str]:
    return when_references(condition.when or "") & scope.steps.keys()


def _refused(
    conditions: Mapping[str, RunAfter], known: Mapping[str, StepRecord]
) -> bool:
    return any(
        dep in known
        and known[dep].status.is_final
        and not condition.accepts(known[dep].status)
        for dep, condition in conditions.items()
    )


def _verdict(
    ctx: RunContext,
    scope: Scope,
    key: str,
    known: Mapping[str, StepRecord],
    state: ContinueScope,
    counts: Mapping[str, int],
) -> NewStep | None:
    """The row `key` gets (Queued, or Skipped with its reason), or None: waiting."""
    step = scope.steps[key]
    if _refused(step.conditions, known):
        return NewStep(
            scope.key(key), step.type, StepStatus.SKIPPED, error=PREREQUISITES_UNMET
        )
    for dep in step.conditions:
        if dep == ENTRY_MARKER:
            continue
        row = known.get(dep)
        if row is None or not row.status.is_final:
            return None
    reason, trace = _when_false(ctx, scope, step.conditions, known)
    if reason is not None:
        return NewStep(
            scope.key(key), step.type, StepStatus.SKIPPED, error=reason, trace=trace
        )
    inputs = {**step.inputs, **state.loop_inputs}
    return NewStep(scope.key(key), step.type, StepStatus.QUEUED, inputs=inputs)


def _when_false(
    ctx: RunContext,
    scope: Scope,
    conditions: Mapping[str, RunAfter],
    known: Mapping[str, StepRecord],
) -> tuple[str | None, Json]:
    whens = [c.when for c in conditions.values() if c.when]
    if not whens:
        return None, None
    facts = Facts(
        body=ctx.run.body,
        headers=ctx.run.headers,
        steps={
            k: StepFacts(r.status.value, r.output, r.error) for k, r in known.items()
        },
        declared=frozenset(scope.steps),
    )
    for text in whens:
        result = evaluate_when(text, facts)
        if not result.result:
            resolved = result.trace.get("resolved")
            return (
                f"When clause '{text}' evaluated to false ({resolved}).",
                result.trace,
            )
    return None, None


def _entries(ctx: RunContext, prefix: str) -> set[str]:
    return {k for k, s in ctx.flow.scope(prefix).steps.items() if s.is_entry}


def _as_record(ctx: RunContext, row: NewStep) -> StepRecord:
    return StepRecord(
        ctx.run.run_id,
        row.key,
        row.type,
        row.status,
        ctx.now,
        inputs=row.inputs,
        error=row.error,
        trace=row.trace,
    )


def _decision(ctx: RunContext, state: ContinueScope, work: _Work) -> Decision:
    if not work.rows:
        return Decision()
    events = tuple(
        NewEvent(
            "step.skipped", ctx.now, row.key, f"Step '{row.key}' skipped: {row.error}"
        )
        for row in work.skipped
    )
    due = ctx.now + state.delay if state.delay else None
    wave: list[Write] = [InsertSteps(tuple(work.rows), at=due)]
    if events:
        wave.append(AppendEvents(events))
    if due is not None:
        # Published by a timer: the released rows (Queued) are due then, too.
        return decided(
            wave, [SetTimer(publish_timer(ctx, k, due)) for k in work.released]
        )
    links = {row.key: _links(ctx, row, state) for row in work.rows}
    return decided(wave, releases=[Release(k, links=links[k]) for k in work.released])


def _links(
    ctx: RunContext, row: NewStep, state: ContinueScope
) -> tuple[Mapping[str, str], ...]:
    """A join's predecessors' trace contexts (its span links them); () otherwise."""
    scope = ctx.flow.scope(state.prefix)
    deps = [d for d in scope.steps[scope.local(row.key)].conditions if d in state.known]
    if len(deps) < 2:
        return ()
    return tuple(c for d in deps if (c := state.known[d].trace_context))


def publish_timer(ctx: RunContext, key: StepKey, due: datetime) -> Timer:
    """The timer that publishes a step released with a delay (DelayNextStep)."""
    return Timer(
        f"publish:{ctx.run.run_id}:{key}",
        TimerKind.PUBLISH,
        due,
        ctx.run.run_id,
        key,
        flow_id=ctx.run.flow_id,
        trace_context=ctx.trace,
    )


def _follow(
    ctx: RunContext, scope: Scope, state: ContinueScope, work: _Work
) -> tuple[Next, ...]:
    if work.rows_needed or work.counts_needed:
        counting = tuple(work.counts_needed)
        load = Load(
            rows=frozenset(scope.key(k) for k in work.rows_needed),
            counts=tuple(
                frozenset(scope.key(k) for k in work.counts_needed[c]) for c in counting
            ),
        )
        asked = frozenset(work.rows_needed)
        return (Next(load, replace(state, counting=counting, asked=asked)),)
    if state.released or state.waiting:
        return ()  # something of the scope is still to run: it has not ended
    return (end_scope(scope),)
