"""The continuation: what happens in a scope once steps settle, up to run completion.

Every write here is insert-if-absent or guarded, so a continuation that runs twice (a
redelivered message, two branches finishing together) dispatches and completes once.
"""

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from service.engine import planner
from service.engine.expressions import Facts, StepFacts, evaluate_when, when_references
from service.engine.model import (
    ENTRY_MARKER,
    ITERATION,
    Flow,
    Json,
    RunAfter,
    RunStatus,
    Scope,
    StepKey,
    StepStatus,
    scope_of,
)
from service.engine.records import (
    PREREQUISITES_UNMET,
    NewEvent,
    NewStep,
    Outcome,
    RunRecord,
    StepRecord,
    Timer,
    TimerKind,
)
from service.engine.timeline import completed_message
from service.orchestrator.runtime import Runtime
from service.ports import Dispatch

log = structlog.get_logger()

_STEP_STATUS = {
    RunStatus.SUCCEEDED: StepStatus.SUCCEEDED,
    RunStatus.FAILED: StepStatus.FAILED,
    RunStatus.SKIPPED: StepStatus.SKIPPED,
}


@dataclass(frozen=True, slots=True)
class Plan:
    """The rows one planning round inserts, and which of them to publish."""

    rows: list[NewStep]
    skipped_for: dict[str, str]


async def advance(
    rt: Runtime,
    run: RunRecord,
    flow: Flow,
    scope: Scope,
    settled: Iterable[str] | None,
    *,
    delay: timedelta | None = None,
    republish: bool = False,
    held: Iterable[StepRecord] = (),
) -> None:
    """Dispatch what became ready in `scope` once `settled` (local keys) are final.

    `settled=None` starts the scope (its entry steps). With `republish`, steps planned
    again are published even if an earlier attempt inserted them (crash recovery).
    `held` are rows the caller holds already (the step that just finished), so a
    linear chain continues without reading anything back.
    """
    if run.stop_status is not None:
        await close_stopped(rt, run, flow)
        return
    candidates = (
        set(planner.entry_steps(scope.steps))
        if settled is None
        else planner.next_candidates(scope.steps, settled)
    )
    loop_inputs = await _loop_inputs(rt, run, scope)
    known = {scope.local(row.key): row for row in held}
    queued_any = False
    while candidates:
        candidates -= await _waiting_joins(rt, run, scope, candidates, known)
        if not candidates:
            break
        await _load(rt, run, scope, candidates, known, with_candidates=republish)
        if republish:
            await _republish_queued(
                rt, run, [known[k] for k in candidates if k in known]
            )
        rows = _plan(run, scope, candidates, known, loop_inputs)
        if not rows:
            break
        at = rt.clock.now()
        inserted = set(
            await rt.stores.runs.add_steps(
                run.run_id, rows, at=at + (delay or timedelta())
            )
        )
        queued = [
            r
            for r in rows
            if r.status is StepStatus.QUEUED and (republish or r.key in inserted)
        ]
        queued_any = queued_any or any(r.status is StepStatus.QUEUED for r in rows)
        links = _join_links(scope, queued, known)  # obs: issue 13
        await _dispatch(rt, run, queued, delay=delay, at=at, links=links)
        skipped = [
            r for r in rows if r.status is StepStatus.SKIPPED and r.key in inserted
        ]
        await _record_skips(rt, run, skipped, at=at)
        for row in rows:
            if row.key in inserted:
                known[scope.local(row.key)] = _as_record(run, row, at)
        candidates = planner.next_candidates(
            scope.steps, [scope.local(r.key) for r in skipped]
        )
    if not queued_any:
        await settle_scope(rt, run, flow, scope, repeat=republish)


async def _republish_queued(
    rt: Runtime, run: RunRecord, rows: Sequence[StepRecord]
) -> None:
    """Publish again steps an interrupted attempt inserted but may never have sent."""
    queued = [r for r in rows if r.status is StepStatus.QUEUED]
    if queued:
        await rt.dispatcher.publish(
            [Dispatch(run.flow_id, run.run_id, r.key, r.attempt + 1) for r in queued]
        )


_COUNT_JOINS_OVER = 16
"""A step with more dependencies (a scope with more steps) than this is counted before
its rows are read; below, reading them costs the same one round trip."""


async def _waiting_joins(
    rt: Runtime,
    run: RunRecord,
    scope: Scope,
    candidates: set[str],
    known: Mapping[str, StepRecord],
) -> set[str]:
    """The wide joins among `candidates` that cannot be ready yet, found by a count.

    Each finished branch of a 1,000-way fan-out makes its join a candidate; reading
    the 1,000 rows each time would make the fan-in quadratic. A dependency that
    settled with a status its condition refuses blocks the step at once (the planner
    decides that from the rows); else the step can only become ready, which needs every
    dependency final, and one count tells.
    """
    waiting: set[str] = set()
    for key in candidates:
        conditions = scope.steps[key].conditions
        deps = [dep for dep in conditions if dep != ENTRY_MARKER]
        if len(deps) <= _COUNT_JOINS_OVER:
            continue
        held = [known[dep] for dep in deps if dep in known]
        if any(
            row.status.is_final
            and not conditions[scope.local(row.key)].accepts(row.status)
            for row in held
        ):
            continue
        unread = [scope.key(dep) for dep in deps if dep not in known]
        final = sum(1 for row in held if row.status.is_final)
        if unread:
            final += await rt.stores.runs.count_final_of(run.run_id, unread)
        if final < len(deps):
            waiting.add(key)
    return waiting


async def _load(
    rt: Runtime,
    run: RunRecord,
    scope: Scope,
    candidates: set[str],
    known: dict[str, StepRecord],
    *,
    with_candidates: bool,
) -> None:
    """Read the rows that decide the candidates: their dependencies and When inputs.

    The candidates' own rows are read only `with_candidates` (to republish them): else
    a row that exists already simply refuses the insert-if-absent.
    """
    needed = planner.dependencies(scope.steps, candidates)
    if with_candidates:
        needed |= candidates
    for key in candidates:
        for condition in scope.steps[key].conditions.values():
            if condition.when:
                needed |= when_references(condition.when) & scope.steps.keys()
    missing = [scope.key(k) for k in needed if k not in known]
    if missing:
        rows = await rt.stores.runs.steps(run.run_id, missing)
        known.update({scope.local(k): row for k, row in rows.items()})


def _plan(
    run: RunRecord,
    scope: Scope,
    candidates: set[str],
    known: Mapping[str, StepRecord],
    loop_inputs: Mapping[str, Json],
) -> list[NewStep]:
    statuses = {k: r.status for k, r in known.items()}
    verdict = planner.readiness(scope.steps, statuses, candidates)
    rows = [
        NewStep(
            scope.key(k),
            scope.steps[k].type,
            StepStatus.SKIPPED,
            error=PREREQUISITES_UNMET,
        )
        for k in verdict.blocked
    ]
    facts = Facts(
        body=run.body,
        headers=run.headers,
        steps={
            k: StepFacts(r.status.value, r.output, r.error) for k, r in known.items()
        },
        declared=frozenset(scope.steps),
    )
    for key in verdict.ready:
        step = scope.steps[key]
        reason, trace = _when_false(step.conditions, facts)
        if reason is not None:
            rows.append(
                NewStep(
                    scope.key(key),
                    step.type,
                    StepStatus.SKIPPED,
                    error=reason,
                    trace=trace,
                )
            )
        else:
            inputs = {**step.inputs, **loop_inputs}
            rows.append(
                NewStep(scope.key(key), step.type, StepStatus.QUEUED, inputs=inputs)
            )
    return rows


def _when_false(
    conditions: Mapping[str, RunAfter], facts: Facts
) -> tuple[str | None, Json]:
    for condition in conditions.values():
        if not condition.when:
            continue
        result = evaluate_when(condition.when, facts)
        if not result.result:
            reason = (
                f"When clause '{condition.when}' evaluated to false "
                f"({result.trace.get('resolved')})."
            )
            return reason, result.trace
    return None, None


async def _loop_inputs(rt: Runtime, run: RunRecord, scope: Scope) -> Mapping[str, Json]:
    """Children of a ForEach iteration get its `__loopItem` and `__loopIndex`."""
    if not scope.prefix:
        return {}
    key = StepKey(scope.name)
    rows = await rt.stores.runs.steps(run.run_id, [key])
    row = rows.get(key)
    return dict(row.inputs) if row is not None else {}


def _join_links(
    scope: Scope, rows: Sequence[NewStep], known: Mapping[str, StepRecord]
) -> dict[str, tuple[Mapping[str, str], ...]]:
    """The trace contexts of a join's predecessors, by row key (obs: issue 13).

    Only steps with two or more dependencies are joins; rows not read (a wide join's
    counted ones) and rows without a context are left out.
    """
    links: dict[str, tuple[Mapping[str, str], ...]] = {}
    for row in rows:
        deps = [d for d in scope.steps[scope.local(row.key)].conditions if d in known]
        if len(deps) > 1:
            contexts = tuple(c for d in deps if (c := known[d].trace_context))
            if contexts:
                links[row.key] = contexts
    return links


async def _dispatch(
    rt: Runtime,
    run: RunRecord,
    rows: Sequence[NewStep],
    *,
    delay: timedelta | None,
    at: datetime,
    links: Mapping[str, tuple[Mapping[str, str], ...]],
) -> None:
    if not rows:
        return
    if delay:
        for row in rows:
            await rt.stores.timers.set(
                Timer(
                    f"publish:{run.run_id}:{row.key}",
                    TimerKind.PUBLISH,
                    at + delay,
                    run.run_id,
                    row.key,
                    trace_context=rt.tracer.current(),  # obs: issue 13
                )
            )
        return
    await rt.dispatcher.publish(
        [
            Dispatch(run.flow_id, run.run_id, row.key, 1, links.get(row.key, ()))
            for row in rows
        ]
    )


async def _record_skips(
    rt: Runtime, run: RunRecord, rows: Sequence[NewStep], *, at: datetime
) -> None:
    if rows:
        for row in rows:
            log.info(
                "step_skipped", run_id=run.run_id, step_key=row.key, reason=row.error
            )
            rt.tracer.step_skipped(run, row.key, row.error)  # obs: issue 13
        await record_events(
            rt,
            run,
            [
                NewEvent(
                    "step.skipped",
                    at,
                    row.key,
                    f"Step '{row.key}' skipped: {row.error}",
                )
                for row in rows
            ],
        )


def _as_record(run: RunRecord, row: NewStep, at: datetime) -> StepRecord:
    return StepRecord(
        run.run_id,
        row.key,
        row.type,
        row.status,
        at,
        inputs=row.inputs,
        error=row.error,
        trace=row.trace,
    )


async def settle_scope(
    rt: Runtime, run: RunRecord, flow: Flow, scope: Scope, *, repeat: bool = False
) -> None:
    """Complete the scope (the run, or a ForEach iteration) once every step is final.

    `repeat`: this may be a continuation a crash cut short, so finish what it began.
    """
    runs = rt.stores.runs
    if len(scope.steps) > _COUNT_JOINS_OVER and await runs.count_final(
        run.run_id, scope.name
    ) < len(scope.steps):
        return  # a count, not a read of every row, while a wide scope is not done
    rows = await runs.scope_steps(run.run_id, scope.name)
    if sum(1 for row in rows if row.status.is_final) < len(scope.steps):
        return
    statuses = {scope.local(r.key): r.status for r in rows if r.type != ITERATION}
    status = planner.run_status(scope.steps, statuses)
    if not scope.prefix:
        await complete_run(rt, run, run.stop_status or status)
    else:
        await finish_iteration(rt, run, flow, scope, status, repeat=repeat)


async def complete_run(rt: Runtime, run: RunRecord, status: RunStatus) -> None:
    """Complete the run once (its `run.completed` event is read off the run record).

    Safe to repeat: a redelivery after a crash finds the run complete and only tidies
    up the deadline timer.
    """
    if await rt.stores.runs.complete_run(run.run_id, status, now=rt.clock.now()):
        log.info(
            "run_completed", run_id=run.run_id, flow_id=run.flow_id, status=status.value
        )
        rt.telemetry.run_completed(run.flow_id, status.value)
        rt.tracer.run_completed(run, status.value)  # obs: issue 13
    if run.deadline_at is not None:
        await rt.stores.timers.delete(f"deadline:{run.run_id}")


def completion_event(run: RunRecord) -> NewEvent | None:
    """The stored form of the run's completion, kept when a retry reopens the run."""
    if run.completed_at is None:
        return None
    return NewEvent(
        "run.completed",
        run.completed_at,
        message=completed_message(run.status),
        key=f"run.completed:{_millis(run.completed_at)}",
    )


def _millis(at: datetime) -> int:
    """Milliseconds since the epoch, exactly as MongoDB stores the instant."""
    return calendar.timegm(at.utctimetuple()) * 1000 + at.microsecond // 1000


async def finish_iteration(
    rt: Runtime,
    run: RunRecord,
    flow: Flow,
    scope: Scope,
    status: RunStatus,
    *,
    repeat: bool = False,
) -> None:
    """An iteration is done: settle it, count it, start its successor, end the loop.

    Iteration i's successor is i + concurrency (the loop runs `concurrency` lanes), so
    what it starts does not depend on when it finished: every write below is guarded
    or insert-if-absent, and a `repeat` (the redelivery of a continuation a crash cut
    short) redoes all of them, whoever settled the iteration first.
    """
    runs = rt.stores.runs
    now = rt.clock.now()
    outcome = Outcome(_STEP_STATUS.get(status, StepStatus.FAILED))
    won = await runs.settle(
        run.run_id,
        StepKey(scope.name),
        outcome,
        expected=frozenset({StepStatus.PENDING}),
        now=now,
    )
    if not (won or repeat):
        return  # a concurrent continuation of this iteration settled it
    loop_key = StepKey(scope_of(scope.name))
    index = int(scope.name.rpartition(".")[2])
    state = await runs.advance_loop(
        run.run_id, loop_key, index=index, failed=status is RunStatus.FAILED
    )
    if index + state.concurrency < state.total:
        await start_iteration(rt, run, flow, loop_key, index + state.concurrency)
    if not state.is_done:
        return
    loop_status = StepStatus.FAILED if state.failed else StepStatus.SUCCEEDED
    output: Json = {"iterations": state.total, "failed": state.failed}
    error = (
        f"{state.failed} of {state.total} iterations failed." if state.failed else None
    )
    settled = await runs.settle(
        run.run_id,
        loop_key,
        Outcome(loop_status, output, error),
        expected=frozenset({StepStatus.PENDING}),
        now=now,
    )
    if settled or repeat:
        await step_settled(rt, run, flow, loop_key, loop_status, republish=not settled)


async def start_iteration(
    rt: Runtime, run: RunRecord, flow: Flow, loop_key: StepKey, index: int
) -> None:
    """Insert iteration `index` and start its steps; a finished one is left alone."""
    runs = rt.stores.runs
    key = StepKey(f"{loop_key}.{index}")
    item = await runs.loop_item(run.run_id, loop_key, index)
    inputs: dict[str, Json] = {"__loopItem": item, "__loopIndex": index}
    row = NewStep(key, ITERATION, StepStatus.PENDING, inputs=inputs)
    inserted = bool(await runs.add_steps(run.run_id, [row], at=rt.clock.now()))
    if not inserted:
        existing = (await runs.steps(run.run_id, [key])).get(key)
        if existing is None or existing.status.is_final:
            return  # its own continuation counted it (or will, on redelivery)
    # Started before (by an attempt a crash cut short): publish its steps again.
    await advance(rt, run, flow, flow.scope(f"{key}."), None, republish=not inserted)


async def step_settled(
    rt: Runtime,
    run: RunRecord,
    flow: Flow,
    key: StepKey,
    status: StepStatus,
    *,
    delay: timedelta | None = None,
    republish: bool = False,
    row: StepRecord | None = None,
) -> None:
    """Continue the scope of `key` now that it is final (`row`: its row, if held)."""
    scope = flow.scope(_prefix(scope_of(key)))
    await advance(
        rt,
        run,
        flow,
        scope,
        [scope.local(key)],
        delay=delay,
        republish=republish,
        held=[row] if row is not None else [],
    )


def _prefix(scope_name: str) -> str:
    return f"{scope_name}." if scope_name else ""


async def close_stopped(rt: Runtime, run: RunRecord, flow: Flow) -> None:
    """A cancelled or timed-out run completes once nothing of it is in flight."""
    status = run.stop_status
    if status is None or await rt.stores.runs.in_flight(run.run_id):
        return
    rows = await rt.stores.runs.scope_steps(run.run_id, "")
    present = {r.key for r in rows}
    reason = f"Run is {status}."
    missing = [
        NewStep(StepKey(k), s.type, StepStatus.SKIPPED, error=reason)
        for k, s in flow.steps.items()
        if k not in present
    ]
    if missing:
        await rt.stores.runs.add_steps(run.run_id, missing, at=rt.clock.now())
    await complete_run(rt, run, status)


async def record_events(
    rt: Runtime, run: RunRecord, events: Sequence[NewEvent]
) -> None:
    """Events are telemetry: a failure to store them never fails the run (SPEC 9 #6)."""
    if not events:
        return
    try:
        await rt.stores.events.append(run.run_id, events)
    except Exception:  # noqa: BLE001 - best effort by design; logged below
        log.warning("events_not_recorded", run_id=run.run_id, count=len(events))
