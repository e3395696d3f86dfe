"""A run's end: its completion, and what it sets off beyond the run.

A child's end wakes the parent step that waits for it; a keyed run's end frees its slot
for the next run of its key. Both are effects, safe to repeat; the completion asks the
reconciler to check on them (`recheck_at`), so a worker dying between the completion
and its effects delays them, never loses them.
"""

from service.engine.decision import (
    CompleteRun,
    Decision,
    DeleteTimer,
    Effect,
    FreeSlot,
    WakeParent,
    Write,
    decided,
)
from service.engine.model import Json, RunStatus
from service.engine.rounds import RunContext


def completion(ctx: RunContext, status: RunStatus, outputs: Json = None) -> Decision:
    """Complete the run (a stop recorded on it wins), then tidy its deadline timer."""
    effects = after_end(ctx)
    recheck = ctx.now + ctx.limits.reconcile_after if effects else None
    later: list[Write] = []
    if ctx.run.deadline_at is not None:
        later.append(DeleteTimer(deadline_timer_id(ctx.run.run_id)))
    return decided(
        [CompleteRun(status, outputs, recheck_at=recheck)], later, effects=effects
    )


def after_end(ctx: RunContext) -> tuple[Effect, ...]:
    """What the end of this run sets off: its parent woken, its slot freed."""
    run = ctx.run
    effects: list[Effect] = []
    if run.parent is not None:
        effects.append(WakeParent(run.parent.run_id, run.parent.step_key, run.run_id))
    if run.concurrency_key is not None:
        effects.append(FreeSlot(run.flow_id, run.concurrency_key, run.run_id))
    return tuple(effects)


def deadline_timer_id(run_id: str) -> str:
    return f"deadline:{run_id}"
