"""Driving the engine's rounds: save a decision, load what it asks next, decide again.

Every operation ends here (a step's result, a trigger, a timer, a stop, the
reconciler): each round's decision is saved, then its continuations, one after the
other and each to its end before the next (what they ask for is loaded, and the engine
resumes with it), and every release is published once everything is saved. Then the
effects on other runs (a child started or stopped, a parent woken, a slot freed) are
driven in their own runs. Nothing here decides anything.
"""

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from service.engine import cascade, continuation
from service.engine.decision import Effect, FinishStep, Release
from service.engine.model import StepStatus
from service.engine.rounds import Next, Round, RunContext
from service.orchestrator.effects import consequences
from service.orchestrator.reads import load
from service.orchestrator.runtime import Runtime
from service.orchestrator.writes import save
from service.ports.dispatch import Dispatch

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Driven:
    lost: bool = False
    """The first decision's result lost its claim: nothing was saved after it."""
    finished: tuple[FinishStep, ...] = ()
    """The results recorded, in order."""


async def drive(
    rt: Runtime, ctx: RunContext, first: Round, *, only_unclaimed: bool = False
) -> Driven:
    """Save `first` and everything that follows from it, then publish the releases.

    `only_unclaimed` (the reconciler): publish only releases whose step has no row yet,
    or a Queued one.
    """
    releases: list[Release] = []
    effects: list[Effect] = []
    finished: list[FinishStep] = []
    work: deque[Round | Next] = deque([first])
    while work:
        item = work.popleft()
        if isinstance(item, Next):
            loaded = await load(rt, ctx.run.run_id, item.load)
            work.appendleft(continuation.resume(ctx, item.resume, loaded))
            continue
        saved = await save(rt, ctx, item.decision)
        finished.extend(saved.finished)
        if saved.lost:
            return Driven(lost=True, finished=tuple(finished))
        if saved.stop is not None:
            # Saved as far as the result; what was decided after it is void.
            ctx = ctx.stopped(saved.stop)
            work.appendleft(cascade.close_stopped(saved.stop))
            continue
        releases.extend(item.decision.releases)
        effects.extend(item.decision.effects)
        work.extendleft(reversed(item.follow))
    if only_unclaimed:
        releases = await _unclaimed(rt, ctx, releases)
    await publish(rt, ctx, releases)
    if effects:
        await perform(rt, effects)
    return Driven(finished=tuple(finished))


async def perform(rt: Runtime, effects: Sequence[Effect]) -> None:
    """Drive what `effects` ask of other runs, one after the other."""
    for effect in effects:
        for other in await consequences(rt, effect):
            await drive(rt, other.ctx, other.first, only_unclaimed=other.only_unclaimed)


async def publish(rt: Runtime, ctx: RunContext, releases: list[Release]) -> None:
    """One `run_step` message per release (once each), confirmed by the broker."""
    if not releases:
        return
    unique = {(r.key, r.attempt): r for r in reversed(releases)}
    await rt.dispatcher.publish(
        [
            Dispatch(ctx.run.flow_id, ctx.run.run_id, key, attempt, release.links)
            for (key, attempt), release in reversed(unique.items())
        ]
    )


async def _unclaimed(
    rt: Runtime, ctx: RunContext, releases: list[Release]
) -> list[Release]:
    rows = await rt.stores.steps.steps(ctx.run.run_id, [r.key for r in releases])
    return [
        r
        for r in releases
        if r.key not in rows or rows[r.key].status is StepStatus.QUEUED
    ]
