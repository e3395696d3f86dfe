"""The contract of `EventStore`: per-run sequence numbers, in order, paged."""

import asyncio
from datetime import timedelta

from service.adapters.clock import FrozenClock
from service.engine.records import Event, NewEvent
from service.ports.stores import Stores
from tests.contract.builders import a_run_id

CROWD = 64


class EventStoreContract:
    async def test_appended_events_are_numbered_from_one(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()
        started = NewEvent("run.started", clock.now())
        fetched = NewEvent("step.completed", clock.now(), "fetch", "Succeeded")

        await stores.events.append(run_id, [started, fetched])

        assert await stores.events.events(run_id) == [
            Event(run_id, 1, "run.started", clock.now(), "__run", ""),
            Event(run_id, 2, "step.completed", clock.now(), "fetch", "Succeeded"),
        ]

    async def test_a_keyed_event_is_stored_once(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()
        done = NewEvent("run.completed", clock.now(), key="run.completed:1")

        await stores.events.append(run_id, [done])
        await stores.events.append(
            run_id, [NewEvent("step.completed", clock.now(), "late"), done]
        )

        events = await stores.events.events(run_id)
        assert [e.type for e in events] == ["run.completed", "step.completed"]
        assert [e.seq for e in events] == sorted({e.seq for e in events})

    async def test_a_later_append_continues_the_sequence(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()
        await stores.events.append(run_id, [NewEvent("run.started", clock.now())])
        clock.advance(timedelta(seconds=1))

        await stores.events.append(
            run_id,
            [
                NewEvent("step.started", clock.now(), "fetch"),
                NewEvent("step.completed", clock.now(), "fetch"),
            ],
        )

        events = await stores.events.events(run_id)
        assert [(e.seq, e.type) for e in events] == [
            (1, "run.started"),
            (2, "step.started"),
            (3, "step.completed"),
        ]

    async def test_appending_nothing_changes_nothing(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()
        await stores.events.append(run_id, [])
        await stores.events.append(run_id, [NewEvent("run.started", clock.now())])

        events = await stores.events.events(run_id)

        assert [e.seq for e in events] == [1]

    async def test_each_run_has_its_own_sequence(
        self, stores: Stores, clock: FrozenClock
    ):
        first, second = a_run_id(), a_run_id()
        await stores.events.append(first, [NewEvent("run.started", clock.now())] * 2)

        await stores.events.append(second, [NewEvent("run.started", clock.now())])

        assert [e.seq for e in await stores.events.events(first)] == [1, 2]
        assert [(e.run_id, e.seq) for e in await stores.events.events(second)] == [
            (second, 1)
        ]

    async def test_events_are_read_a_page_at_a_time(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()
        await stores.events.append(
            run_id, [NewEvent(f"e{n}", clock.now()) for n in range(1, 8)]
        )

        page = await stores.events.events(run_id, skip=2, limit=3)
        tail = await stores.events.events(run_id, skip=6, limit=3)

        assert [e.seq for e in page] == [3, 4, 5]
        assert [e.type for e in tail] == ["e7"]

    async def test_a_run_without_events_has_none(self, stores: Stores):
        events = await stores.events.events(a_run_id())

        assert events == []

    async def test_64_concurrent_appends_never_share_a_sequence_number(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()

        await asyncio.gather(
            *(
                stores.events.append(run_id, [NewEvent(f"e{n}", clock.now())])
                for n in range(CROWD)
            )
        )

        events = await stores.events.events(run_id, limit=CROWD * 2)
        assert len({e.seq for e in events}) == CROWD
        assert [e.seq for e in events] == sorted(e.seq for e in events)
