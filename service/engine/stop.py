"""Stopping a run (decision 11): a cancel or a deadline, and how a stopped run closes.

The stop is recorded on the run first. Then nothing of the run may start any more: a
Skipped row ("Run is Cancelled.") goes to every step that could still be released and
has no row yet (each top-level step; each iteration its loop started; each step of an
iteration that is not final), and every row that is not final is marked with the stop,
so a claim refuses it and a result records no release. A release recorded before the
mark names a step that already has a row (its claim won: the mark reaches it, and its
handler sees `cancelled`) or gets its Skipped row now (its claim finds the row and
gives up): no step starts once the stop is done. Queued and parked steps are closed at
once, and the children of its ChildFlow steps are stopped too; the run completes, with
the stop as its status, once nothing of it is in flight.
"""

from collections.abc import Iterable, Sequence

from service.engine import child_flow, ending
from service.engine.decision import (
    InsertSteps,
    MarkStopped,
    SettleStep,
    decided,
)
from service.engine.model import (
    ITERATION,
    Flow,
    RunStatus,
    StepKey,
    StepStatus,
    iteration_key,
)
from service.engine.records import LoopState, NewStep, Outcome, StepRecord
from service.engine.rounds import (
    BuryStopped,
    CloseParked,
    CloseStopped,
    Load,
    Round,
    RunContext,
    following,
)

CLOSABLE = frozenset({StepStatus.QUEUED, StepStatus.PENDING})
"""What a stop closes at once: nobody is running these."""


def reason(status: RunStatus) -> str:
    return f"Run is {status}."


def tombstones(
    flow: Flow, rows: Sequence[StepRecord], status: RunStatus
) -> tuple[NewStep, ...]:
    """Skipped rows for every step of the run that could still be released."""
    why = reason(status)
    present = {row.key: row for row in rows}
    found = [
        NewStep(StepKey(key), step.type, StepStatus.SKIPPED, error=why)
        for key, step in flow.steps.items()
        if key not in present
    ]
    for row in rows:
        manifest = flow.find(row.key)
        if row.loop is None or row.status.is_final or manifest is None:
            continue
        for index in sorted(started(row.loop)):
            key = iteration_key(row.key, index)
            iteration = present.get(key)
            if iteration is None:
                found.append(NewStep(key, ITERATION, StepStatus.SKIPPED, error=why))
            elif iteration.status.is_final:
                continue
            found.extend(
                NewStep(
                    StepKey(f"{key}.{child}"), step.type, StepStatus.SKIPPED, error=why
                )
                for child, step in manifest.steps.items()
                if f"{key}.{child}" not in present
            )
    return tuple(found)


def started(loop: LoopState) -> set[int]:
    """The iterations a loop has started.

    Each lane's first, and the one after each iteration counted (`i` starts
    `i + concurrency`).
    """
    lanes = loop.concurrency
    first = set(range(min(lanes, loop.total)))
    return first | {i + lanes for i in loop.counted if i + lanes < loop.total}


def closing(rows: Iterable[StepRecord], status: RunStatus) -> tuple[SettleStep, ...]:
    """Close what nobody runs: Queued and parked rows become Skipped."""
    outcome = Outcome(StepStatus.SKIPPED, error=reason(status))
    return tuple(
        SettleStep(row.key, outcome, CLOSABLE) for row in rows if row.status in CLOSABLE
    )


def begin(status: RunStatus) -> Round:
    """Stop the run (the stop is recorded on it already): mark the loops first.

    Then no loop starts an iteration once the stop has read which ones did.
    """
    marked = decided([MarkStopped(status, loops_only=True)])
    return Round(marked).then(following(Load(all_rows=True), BuryStopped(status)))


def bury(ctx: RunContext, status: RunStatus, rows: Sequence[StepRecord]) -> Round:
    """Skipped rows for what could still start, then every row marked."""
    graves = tombstones(ctx.flow, rows, status)
    marked = decided([InsertSteps(graves)] if graves else [], [MarkStopped(status)])
    return Round(marked).then(following(Load(in_flight=True), CloseParked(status)))


def close_parked(status: RunStatus, rows: Sequence[StepRecord]) -> Round:
    """Close what nobody runs, stop the children; complete once nothing is in flight."""
    stops = child_flow.stop_children(rows, status)
    closes = Round(decided(closing(rows, status), effects=stops))
    return closes.then(following(Load(in_flight=True), CloseStopped(status)))


def close(ctx: RunContext, status: RunStatus, in_flight: Sequence[StepRecord]) -> Round:
    """Complete the stopped run once nothing of it is in flight."""
    if in_flight:
        return Round()
    return Round(ending.completion(ctx, status))
