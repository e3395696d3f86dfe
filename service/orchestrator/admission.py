"""Admission: which runs of a concurrency key start, as its slots free, in their order.

A Queued run joins its key's queue; then, while a slot is free, the head of the queue
takes it, and its start is handed back to be driven, followed by its mark as Running
(guarded: not a run stopped meanwhile). Every look at the slots first frees those held
by runs that ended or are gone, and starts again any holder still Queued (its
admission was cut short), so a crash anywhere leaves nothing that the next admission
of the key (a redelivery, a run's end, the reconciler) does not finish. What
to do is the engine's (`concurrency.admission`); this reads and writes.
"""

from typing import Final

import structlog

from service.engine import concurrency, continuation
from service.engine.concurrency import Slots, Ticket
from service.engine.decision import AdmitRun, decided
from service.engine.model import Flow, FlowId, RunId, RunStatus
from service.engine.records import RunRecord
from service.engine.rounds import Round
from service.engine.validation import MAX_CONCURRENCY_LIMIT
from service.orchestrator.runtime import Driving, Runtime

log = structlog.get_logger()

LOOKS: Final = 64
"""Looks at one key's slots in one admission; races beyond it are left to the next
admission of the key (a run's end, the reconciler)."""


async def admit(rt: Runtime, flow: Flow, run: RunRecord) -> list[Driving]:
    """`run` (Queued) joins its key's queue; then the queue's heads take free slots."""
    if run.concurrency_key is None:
        return []
    now = rt.clock.now()
    slots = await rt.stores.slots.join(
        flow.id, run.concurrency_key, run.run_id, now=now
    )
    return await _fill(rt, flow, slots)


async def freed(rt: Runtime, flow_id: FlowId, key: str, run_id: RunId) -> list[Driving]:
    """`run_id` ended: its slot (or its place in the queue) is free for the next."""
    flow = rt.catalog.get(flow_id)
    slots = await rt.stores.slots.free(flow_id, key, [run_id], now=rt.clock.now())
    if flow is None or slots is None:
        return []
    return await _fill(rt, flow, slots)


async def _fill(rt: Runtime, flow: Flow, slots: Slots) -> list[Driving]:
    # A flow whose key was removed by a deploy lets what waits start.
    limit = flow.concurrency.limit if flow.concurrency else MAX_CONCURRENCY_LIMIT
    started: list[Driving] = []
    for _ in range(LOOKS):
        holders = [t.run_id for t in slots.holders]
        statuses = await rt.stores.runs.statuses(holders) if holders else {}
        plan = concurrency.admission(slots, statuses, limit)
        now = rt.clock.now()
        if plan.free:
            log.info("slots_freed", key=slots.key, runs=list(plan.free))
            found = await rt.stores.slots.free(flow.id, slots.key, plan.free, now=now)
        else:
            for ticket in plan.resume:
                started.extend(await _start(rt, flow, ticket))
            if plan.take is None:
                return started
            found = await rt.stores.slots.take(
                slots, plan.take.run_id, limit=limit, now=now
            )
            if found is not None:
                started.extend(await _start(rt, flow, _held(found, plan.take)))
            else:  # another admission moved first: look again
                found = await rt.stores.slots.slots(flow.id, slots.key)
        if found is None:
            return started
        slots = found
    log.warning("admission_cut_short", flow_id=flow.id, key=slots.key)
    return started


def _held(slots: Slots, taken: Ticket) -> Ticket:
    return next(t for t in slots.holders if t.run_id == taken.run_id)


async def _start(rt: Runtime, flow: Flow, ticket: Ticket) -> list[Driving]:
    """The start of a holder still Queued, then its mark as Running.

    The start first (only what it has not published yet), so that a worker dying in
    between leaves a Queued holder, which the next admission of the key starts again;
    nothing for a holder that was stopped meanwhile (its end frees the slot).
    """
    run = await rt.stores.runs.get_run(ticket.run_id)
    if run is None or run.status is not RunStatus.QUEUED or run.cancel_requested:
        return []
    now = rt.clock.now()
    ctx = rt.context(flow, run.facts, run.stop_status, now=now)
    mark = AdmitRun(
        ticket.number, ticket.admitted or 0, now + rt.options.reconcile_after
    )
    return [
        Driving(ctx, continuation.start_run(ctx), only_unclaimed=True),
        Driving(ctx, Round(decided([mark]))),
    ]
