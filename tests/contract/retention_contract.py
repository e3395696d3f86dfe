"""The contract of `Stores.purge`: old finished runs go with all they own."""

from datetime import timedelta

from service.adapters.clock import FrozenClock
from service.engine.model import FlowId, RunId, RunStatus, StepKey
from service.engine.records import NewEvent
from service.errors import UnknownReferenceError
from service.ports.stores import Stores
from tests.contract.builders import a_run, a_step, a_timer

DAY = timedelta(days=1)
LEASE = timedelta(seconds=30)
FETCH, LOOP, APPROVE = StepKey("fetch"), StepKey("loop"), StepKey("approve")


async def a_full_run(
    stores: Stores, clock: FrozenClock, *, status: RunStatus | None, key: str
) -> RunId:
    """A run with a step row, loop items, events, a waiter and a timer; completed with
    `status` at `clock.now()` unless `status` is None.
    """
    run, _ = await stores.runs.create_run(a_run(idempotency_key=key))
    run_id = run.run_id
    now = clock.now()
    await stores.steps.add_steps(
        run_id, [a_step(), a_step("loop", type="ForEach")], at=now
    )
    await stores.loops.start_loop(run_id, LOOP, ["a"], concurrency=1)
    await stores.events.append(run_id, [NewEvent("run.started", now)])
    await stores.signals.register(run_id, APPROVE, "Approved", expires_at=None, now=now)
    await stores.timers.set(a_timer(run_id, id=f"timer-{key}", due_at=now))
    if status is not None:
        await stores.runs.complete_run(run_id, status, now=now)
    return run_id


async def leftovers(
    stores: Stores, clock: FrozenClock, *run_ids: RunId
) -> list[list[str]]:
    """What is left of each run in every store; its timer counts if it can be claimed
    (once per call: a claim holds the timers until their lease ends).
    """
    timers = await stores.timers.claim_due(
        clock.now() + DAY * 365, owner="check", lease=LEASE, limit=100
    )
    left = []
    for run_id in run_ids:
        found = {
            "run": await stores.runs.get_run(run_id) is not None,
            "steps": bool(await stores.steps.steps(run_id, [FETCH, LOOP])),
            "items": await _has_items(stores, run_id),
            "events": bool(await stores.events.events(run_id)),
            "waiter": await stores.signals.waiter(run_id, APPROVE) is not None,
            "timer": any(timer.run_id == run_id for timer in timers),
        }
        left.append(sorted(name for name, present in found.items() if present))
    return left


async def _has_items(stores: Stores, run_id: RunId) -> bool:
    try:
        await stores.loops.loop_item(run_id, LOOP, 0)
    except UnknownReferenceError:
        return False
    return True


EVERYTHING = ["events", "items", "run", "steps", "timer", "waiter"]


class RetentionContract:
    async def test_purge_deletes_a_finished_run_with_all_it_owns(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_full_run(stores, clock, status=RunStatus.SUCCEEDED, key="k1")
        clock.advance(DAY)

        purged = await stores.purge(before=clock.now(), limit=10)

        assert purged == 1
        assert await leftovers(stores, clock, run_id) == [[]]

    async def test_a_purged_run_frees_its_idempotency_key(
        self, stores: Stores, clock: FrozenClock
    ):
        await a_full_run(stores, clock, status=RunStatus.FAILED, key="k1")
        clock.advance(DAY)
        await stores.purge(before=clock.now(), limit=10)

        _, created = await stores.runs.create_run(a_run(idempotency_key="k1"))

        assert created

    async def test_purge_never_deletes_a_running_run(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_full_run(stores, clock, status=None, key="k1")
        clock.advance(DAY * 30)

        purged = await stores.purge(before=clock.now(), limit=10)

        assert purged == 0
        assert await leftovers(stores, clock, run_id) == [EVERYTHING]

    async def test_purge_never_deletes_a_queued_run(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(
            a_run(status=RunStatus.QUEUED, concurrency_key="c-1")
        )
        clock.advance(DAY * 30)

        purged = await stores.purge(before=clock.now(), limit=10)

        assert purged == 0
        assert await stores.runs.get_run(run.run_id) is not None

    async def test_purge_drops_idle_keys_and_keeps_the_busy_ones(
        self, stores: Stores, clock: FrozenClock
    ):
        flow = FlowId("orders")
        await stores.slots.join(flow, "idle", RunId("r1"), now=clock.now())
        await stores.slots.free(flow, "idle", [RunId("r1")], now=clock.now())
        await stores.slots.join(flow, "busy", RunId("r2"), now=clock.now())
        clock.advance(DAY)

        await stores.purge(before=clock.now(), limit=10)

        assert await stores.slots.slots(flow, "idle") is None
        assert await stores.slots.slots(flow, "busy") is not None

    async def test_purge_keeps_runs_completed_at_or_after_the_cutoff(
        self, stores: Stores, clock: FrozenClock
    ):
        at_cutoff = await a_full_run(
            stores, clock, status=RunStatus.CANCELLED, key="k1"
        )
        cutoff = clock.now()
        clock.advance(timedelta(seconds=1))
        after = await a_full_run(stores, clock, status=RunStatus.SUCCEEDED, key="k2")

        purged = await stores.purge(before=cutoff, limit=10)

        assert purged == 0
        assert await leftovers(stores, clock, at_cutoff, after) == [EVERYTHING] * 2

    async def test_purge_deletes_at_most_limit_runs(
        self, stores: Stores, clock: FrozenClock
    ):
        for n in range(3):
            await a_full_run(stores, clock, status=RunStatus.SUCCEEDED, key=f"k{n}")
        clock.advance(DAY)

        counts = [await stores.purge(before=clock.now(), limit=2) for _ in range(3)]

        assert counts == [2, 1, 0]

    async def test_purge_leaves_the_runs_it_keeps_untouched(
        self, stores: Stores, clock: FrozenClock
    ):
        old = await a_full_run(stores, clock, status=RunStatus.TIMED_OUT, key="k1")
        clock.advance(DAY)
        cutoff = clock.now()
        running = await a_full_run(stores, clock, status=None, key="k2")
        recent = await a_full_run(stores, clock, status=RunStatus.SUCCEEDED, key="k3")

        purged = await stores.purge(before=cutoff, limit=10)

        assert purged == 1
        assert await leftovers(stores, clock, old, running, recent) == [
            [],
            EVERYTHING,
            EVERYTHING,
        ]
