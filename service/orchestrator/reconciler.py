"""The reconciler: repairs what a lost message, a dead worker or a dead letter left.

Called by the scheduler loop of every worker (decisions 7 and 8); every repair is
guarded or safe to repeat, so replicas may run it at once:

- a Queued step dispatched long ago (`RECONCILE_AFTER`) is published again: its
  message may be lost;
- a Running step whose lease ended is requeued and published: its worker died;
- a run whose start is due a check gets its start again (what its entry steps need
  that they lack: a row, a message; a Queued run, its key's queue); a run whose end is
  due a check gets what its end sets off again (its parent woken, its slot freed);
- a result whose continuation is due a check gets its continuation again, unless its
  run has ended (then there is nothing to continue). A continuation cut short, a
  run-completion whose message was dead-lettered, a long step whose delivery was
  acknowledged early: all end here, found by an index, never by a scan of the runs.
"""

from collections.abc import Mapping, Sequence

import structlog

from service.engine import continuation
from service.engine.decision import Launch, Release
from service.engine.model import ACTIVE_RUN_STATUSES, RunId, RunStatus, StepStatus
from service.engine.records import RunRecord, StepRecord
from service.engine.rounds import RunContext
from service.errors import UnknownReferenceError
from service.orchestrator.driver import drive, perform, publish
from service.orchestrator.hop import run_facts
from service.orchestrator.runtime import Runtime

log = structlog.get_logger()


async def reconcile(rt: Runtime, *, limit: int = 100) -> int:
    """One pass of every repair; the number of repairs made."""
    republished = await _republish_lost(rt, limit)
    reclaimed = await _reclaim_expired(rt, limit)
    restarted = await _recheck_starts(rt, limit)
    continued = await _recheck_results(rt, limit)
    repairs = republished + reclaimed + restarted + continued
    if repairs:
        log.info(
            "reconciler_repaired",
            republished=republished,
            reclaimed=reclaimed,
            restarted=restarted,
            continued=continued,
        )
        rt.telemetry.repaired("republished", republished)
        rt.telemetry.repaired("reclaimed", reclaimed)
        rt.telemetry.repaired("restarted", restarted)
        rt.telemetry.repaired("continued", continued)
    return repairs


async def _republish_lost(rt: Runtime, limit: int) -> int:
    now = rt.clock.now()
    steps = rt.stores.steps
    repaired = 0
    for row in await steps.stale_queued(
        before=now - rt.options.reconcile_after, limit=limit
    ):
        queued = frozenset({StepStatus.QUEUED})
        moved = await steps.requeue(row.run_id, row.key, expected=queued, now=now)
        repaired += await _publish_next(rt, moved)
    return repaired


async def _reclaim_expired(rt: Runtime, limit: int) -> int:
    now = rt.clock.now()
    steps = rt.stores.steps
    repaired = 0
    for row in await steps.expired_leases(before=now, limit=limit):
        moved = await steps.requeue(
            row.run_id,
            row.key,
            expected=frozenset({StepStatus.RUNNING}),
            attempt=row.attempt,
            now=now,
        )
        repaired += await _publish_next(rt, moved)
    return repaired


async def _publish_next(rt: Runtime, row: StepRecord | None) -> int:
    if row is None:
        return 0
    ctx = await _context(rt, row.run_id)
    if ctx is None:
        return 0
    # The repair continues the step's trace.
    with rt.tracer.resumed("reconcile", row.trace_context or ctx.run.trace_context):
        await publish(rt, ctx, [Release(row.key, row.attempt + 1)])
    return 1


async def _recheck_starts(rt: Runtime, limit: int) -> int:
    runs = await rt.stores.runs.runs_to_recheck(before=rt.clock.now(), limit=limit)
    restarted = 0
    for run in runs:
        if await _restart(rt, run):
            restarted += 1
    await rt.stores.runs.rechecked([run.run_id for run in runs])
    return restarted


async def _restart(rt: Runtime, run: RunRecord) -> bool:
    """A run whose start (or end) is due a check: what it sets off, once more.

    A Running run: its entry steps not yet dispatched. A Queued run, or a child: its
    launch (its key's queue; a child of a stopped parent stops). An ended run: what
    its end sets off (its parent woken, its slot freed).
    """
    flow = rt.catalog.get(run.flow_id)
    if flow is None:
        return False
    ctx = rt.context(flow, run.facts, run.stop_status)
    if run.status.is_final:
        ended = continuation.ended(ctx)
        if ended.decision.is_empty:
            return False
        await drive(rt, ctx, ended)
    elif run.status is RunStatus.QUEUED or run.parent is not None:
        await perform(rt, [Launch(run.run_id)])
    else:
        await drive(rt, ctx, continuation.start_run(ctx), only_unclaimed=True)
    return True


async def _recheck_results(rt: Runtime, limit: int) -> int:
    rows = await rt.stores.steps.due_rechecks(before=rt.clock.now(), limit=limit)
    statuses = await rt.stores.runs.statuses({row.run_id for row in rows})
    continued = 0
    for row in _of_running_runs(rows, statuses):
        ctx = await _context(rt, row.run_id)
        if ctx is None:
            continue
        with rt.tracer.resumed("reconcile", row.trace_context or ctx.run.trace_context):
            await drive(rt, ctx, continuation.recover(ctx, row), only_unclaimed=True)
        continued += 1
    await rt.stores.steps.rechecked([(row.run_id, row.key) for row in rows])
    return continued


def _of_running_runs(
    rows: Sequence[StepRecord], statuses: Mapping[RunId, RunStatus]
) -> list[StepRecord]:
    """The rows whose run still runs: an ended run has nothing left to continue.

    A Queued run with rows is one whose start went out just before it was marked
    Running: it runs.
    """
    return [row for row in rows if statuses.get(row.run_id) in ACTIVE_RUN_STATUSES]


async def _context(rt: Runtime, run_id: RunId) -> RunContext | None:
    try:
        facts = await run_facts(rt, run_id)
    except UnknownReferenceError:
        return None  # removed by retention meanwhile
    flow = rt.catalog.get(facts.flow_id)
    if flow is None:
        return None
    return rt.context(flow, facts)
