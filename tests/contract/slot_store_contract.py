"""The contract of `SlotStore`: the queue and the slots of a concurrency key.

Not collected on its own: a `Test...` class per store inherits it and gives the
`stores` fixture; `clock` comes from `conftest.py`.
"""

import asyncio

import pytest

from service.adapters.clock import FrozenClock
from service.engine.concurrency import Slots
from service.engine.model import FlowId, RunId
from service.errors import QueueFullError
from service.ports.stores import Stores

FLOW = FlowId("orders")
CROWD = 64


def runs(count: int) -> list[RunId]:
    return [RunId(f"run-{n}") for n in range(1, count + 1)]


async def joined(stores: Stores, clock: FrozenClock, *run_ids: RunId) -> Slots:
    slots = None
    for run_id in run_ids:
        slots = await stores.slots.join(FLOW, "c-1", run_id, now=clock.now())
    assert slots is not None
    return slots


class SlotStoreContract:
    async def test_runs_join_the_queue_with_tickets_in_order(
        self, stores: Stores, clock: FrozenClock
    ):
        slots = await joined(stores, clock, *runs(3))

        assert [(t.run_id, t.number) for t in slots.waiting] == [
            ("run-1", 1),
            ("run-2", 2),
            ("run-3", 3),
        ]
        assert (slots.holders, slots.tickets, slots.admitted) == ((), 3, 0)
        assert await stores.slots.slots(FLOW, "c-1") == slots

    async def test_joining_twice_keeps_the_first_place(
        self, stores: Stores, clock: FrozenClock
    ):
        first, second = runs(2)
        await joined(stores, clock, first, second)

        again = await stores.slots.join(FLOW, "c-1", first, now=clock.now())

        assert [t.run_id for t in again.waiting] == [first, second]
        assert again.tickets == 2

    async def test_a_run_holding_a_slot_does_not_join_again(
        self, stores: Stores, clock: FrozenClock
    ):
        [run] = runs(1)
        slots = await joined(stores, clock, run)
        await stores.slots.take(slots, run, limit=1, now=clock.now())

        again = await stores.slots.join(FLOW, "c-1", run, now=clock.now())

        assert again.waiting == ()
        assert [t.run_id for t in again.holders] == [run]

    async def test_a_full_queue_refuses_a_new_run_and_keeps_those_it_has(
        self, stores: Stores, clock: FrozenClock
    ):
        first, second, third = runs(3)
        for run in (first, second):
            await stores.slots.join(FLOW, "c-1", run, now=clock.now(), room=2)

        with pytest.raises(QueueFullError):
            await stores.slots.join(FLOW, "c-1", third, now=clock.now(), room=2)
        again = await stores.slots.join(FLOW, "c-1", first, now=clock.now(), room=2)

        assert [t.run_id for t in again.waiting] == [first, second]

    async def test_keys_and_flows_have_their_own_queues(
        self, stores: Stores, clock: FrozenClock
    ):
        await joined(stores, clock, *runs(2))

        other_key = await stores.slots.join(FLOW, "c-2", RunId("x"), now=clock.now())
        other_flow = await stores.slots.join(
            FlowId("refunds"), "c-1", RunId("y"), now=clock.now()
        )

        assert other_key.tickets == other_flow.tickets == 1
        assert await stores.slots.slots(FLOW, "nobody") is None

    async def test_only_the_head_takes_a_slot_and_gets_the_next_admission(
        self, stores: Stores, clock: FrozenClock
    ):
        first, second = runs(2)
        slots = await joined(stores, clock, first, second)

        jumped = await stores.slots.take(slots, second, limit=2, now=clock.now())
        taken = await stores.slots.take(slots, first, limit=2, now=clock.now())

        assert jumped is None
        assert taken is not None
        assert [(t.run_id, t.number, t.admitted) for t in taken.holders] == [
            (first, 1, 1)
        ]
        assert [t.run_id for t in taken.waiting] == [second]
        assert taken.admitted == 1

    async def test_no_slot_is_taken_past_the_limit(
        self, stores: Stores, clock: FrozenClock
    ):
        first, second = runs(2)
        slots = await joined(stores, clock, first, second)
        slots = await stores.slots.take(slots, first, limit=1, now=clock.now()) or slots

        refused = await stores.slots.take(slots, second, limit=1, now=clock.now())

        after = await stores.slots.slots(FLOW, "c-1")
        assert refused is None
        assert after is not None
        assert [t.run_id for t in after.holders] == [first]

    async def test_a_take_from_a_stale_look_is_refused(
        self, stores: Stores, clock: FrozenClock
    ):
        first, second = runs(2)
        stale = await joined(stores, clock, first, second)
        await stores.slots.take(stale, first, limit=2, now=clock.now())
        await stores.slots.free(FLOW, "c-1", [first], now=clock.now())

        refused = await stores.slots.take(stale, second, limit=2, now=clock.now())

        assert refused is None

    async def test_freeing_removes_holders_and_waiting_runs(
        self, stores: Stores, clock: FrozenClock
    ):
        first, second, third = runs(3)
        slots = await joined(stores, clock, first, second, third)
        await stores.slots.take(slots, first, limit=1, now=clock.now())

        freed = await stores.slots.free(FLOW, "c-1", [first, third], now=clock.now())
        again = await stores.slots.free(FLOW, "c-1", [first], now=clock.now())

        assert freed is not None
        assert freed.holders == ()
        assert [t.run_id for t in freed.waiting] == [second]
        assert again == freed
        assert await stores.slots.free(FLOW, "none", [first], now=clock.now()) is None

    async def test_concurrent_joins_number_every_ticket_once(
        self, stores: Stores, clock: FrozenClock
    ):
        crowd = runs(CROWD)

        await asyncio.gather(
            *(stores.slots.join(FLOW, "new", r, now=clock.now()) for r in crowd)
        )
        slots = await stores.slots.slots(FLOW, "new")

        assert slots is not None
        assert sorted(t.run_id for t in slots.waiting) == sorted(crowd)
        assert [t.number for t in slots.waiting] == list(range(1, CROWD + 1))

    async def test_racing_takes_never_exceed_the_limit(
        self, stores: Stores, clock: FrozenClock
    ):
        slots = await joined(stores, clock, *runs(4))

        async def take_head() -> Slots | None:
            return await stores.slots.take(
                slots, slots.waiting[0].run_id, limit=2, now=clock.now()
            )

        results = await asyncio.gather(*(take_head() for _ in range(CROWD)))
        after = await stores.slots.slots(FLOW, "c-1")

        assert sum(r is not None for r in results) == 1
        assert after is not None
        assert len(after.holders) == 1
