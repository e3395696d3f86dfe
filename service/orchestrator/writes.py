"""Saving what the engine decided: a decision's waves, each once the last is durable.

The writes of one wave go at once (the rows they insert in one call). A result that its
claim no longer owns stops everything after it: another attempt owns the step, and its
decision counts, not this one. A result on a row the run's stop marked stops the rest
too: the engine decides again, knowing the stop.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import assert_never

import structlog

from service.engine.decision import (
    AdmitRun,
    AppendEvents,
    CompleteRun,
    CreateRun,
    Decision,
    DeleteTimer,
    FinishStep,
    InsertSteps,
    MarkStopped,
    RegisterWaiter,
    RequeueStep,
    SetTimer,
    SettleStep,
    StartLoop,
    Wave,
    Write,
)
from service.engine.model import RunStatus, StepKey, StepStatus
from service.engine.records import NewEvent, NewStep, Recorded
from service.engine.rounds import RunContext
from service.orchestrator.runtime import Runtime
from service.orchestrator.together import every

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Saved:
    lost: bool = False
    """A result's claim was lost: nothing after it was saved."""
    stop: RunStatus | None = None
    """A result found its row stopped: it is saved, nothing after it was."""
    finished: tuple[FinishStep, ...] = ()
    """The results recorded."""


async def save(rt: Runtime, ctx: RunContext, decision: Decision) -> Saved:
    finished: list[FinishStep] = []
    for wave in decision.waves:
        writes = _merged(wave)
        answers = await every([_apply(rt, ctx, write) for write in writes])
        for write, answer in zip(writes, answers, strict=True):
            if not isinstance(answer, Recorded) or not isinstance(write, FinishStep):
                continue
            if not answer.won:
                return Saved(lost=True, finished=tuple(finished))
            finished.append(write)
            if answer.stop is not None:
                return Saved(stop=answer.stop, finished=tuple(finished))
    return Saved(finished=tuple(finished))


def _merged(wave: Wave) -> list[Write]:
    """The wave with its row inserts of one dispatch instant made one insert."""
    rows: dict[datetime | None, list[NewStep]] = {}
    others: list[Write] = []
    for write in wave:
        if isinstance(write, InsertSteps):
            rows.setdefault(write.at, []).extend(write.rows)
        else:
            others.append(write)
    inserts: list[Write] = [InsertSteps(tuple(r), at=at) for at, r in rows.items()]
    return inserts + others


async def _apply(rt: Runtime, ctx: RunContext, write: Write) -> object:  # noqa: C901 - one case per kind of write
    stores, run, now = rt.stores, ctx.run, ctx.now
    match write:
        case InsertSteps(rows=rows, at=at):
            inserted = await stores.steps.add_steps(run.run_id, rows, at=at or now)
            _skipped(rt, ctx, rows, inserted)
            return inserted
        case FinishStep():
            return await stores.steps.finish(
                run.run_id,
                write.key,
                write.outcome,
                job_id=write.job_id,
                attempt=write.attempt,
                now=now,
                released=write.released,
                recheck_at=write.recheck_at,
            )
        case SettleStep(key=key, outcome=outcome, expected=expected):
            return await stores.steps.settle(
                run.run_id, key, outcome, expected=expected, now=now
            )
        case RequeueStep(key=key, expected=expected, attempt=attempt):
            return await stores.steps.requeue(
                run.run_id, key, expected=expected, now=now, attempt=attempt
            )
        case SetTimer(timer=timer):
            await stores.timers.set(timer)
        case DeleteTimer(timer_id=timer_id):
            await stores.timers.delete(timer_id)
        case AppendEvents(events=events):
            await _best_effort(rt, ctx, events)
        case StartLoop(key=key, items=items, concurrency=concurrency):
            return await stores.loops.start_loop(
                run.run_id, key, items, concurrency=concurrency
            )
        case RegisterWaiter(key=key, signal=signal, expires_at=expires_at):
            return await stores.signals.register(
                run.run_id, key, signal, expires_at=expires_at, now=now
            )
        case MarkStopped(status=status, loops_only=loops_only):
            await stores.steps.mark_stopped(run.run_id, status, loops_only=loops_only)
        case CompleteRun():
            await _complete(rt, ctx, write)
        case CreateRun(run=child, recheck_at=recheck_at):
            await stores.runs.create_run(child, recheck_at=recheck_at)
        case AdmitRun():
            await _admitted(rt, ctx, write)
        case _:
            assert_never(write)
    return None


def _skipped(
    rt: Runtime, ctx: RunContext, rows: Sequence[NewStep], inserted: Sequence[StepKey]
) -> None:
    fresh = set(inserted)
    for row in rows:
        if row.status is StepStatus.SKIPPED and row.key in fresh:
            log.info("step_skipped", step_key=row.key, reason=row.error)
            rt.tracer.step_skipped(ctx.run, row.key, row.error)


async def _best_effort(
    rt: Runtime, ctx: RunContext, events: Sequence[NewEvent]
) -> None:
    """Events are telemetry: a failure to store them never fails the run (SPEC 9 #6)."""
    if not events:
        return
    try:
        await rt.stores.events.append(ctx.run.run_id, events)
    except Exception:  # noqa: BLE001 - best effort by design; logged below
        log.warning("events_not_recorded", run_id=ctx.run.run_id, count=len(events))


async def _admitted(rt: Runtime, ctx: RunContext, write: AdmitRun) -> None:
    admitted = await rt.stores.runs.admit_run(
        ctx.run.run_id,
        ticket=write.ticket,
        admitted=write.admitted,
        now=ctx.now,
        recheck_at=write.recheck_at,
    )
    if admitted is not None:
        log.info("run_admitted", run_id=ctx.run.run_id, ticket=write.ticket)


async def _complete(rt: Runtime, ctx: RunContext, write: CompleteRun) -> None:
    final = await rt.stores.runs.complete_run(
        ctx.run.run_id,
        write.status,
        now=ctx.now,
        outputs=write.outputs,
        recheck_at=write.recheck_at,
    )
    if final is None:
        return  # completed before (a repeated continuation), or reopened meanwhile
    log.info(
        "run_completed", run_id=ctx.run.run_id, flow_id=ctx.run.flow_id, status=final
    )
    rt.telemetry.run_completed(ctx.run.flow_id, final.value)
    rt.tracer.run_completed(ctx.run, final.value)
