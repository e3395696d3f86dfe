"""The contract of `ScheduleStore`: synced crons, due fires, each fire taken once."""

import asyncio
from datetime import timedelta

from service.adapters.clock import FrozenClock
from service.engine.model import FlowId, TriggerKey
from service.engine.records import schedule_job_id
from service.ports.stores import Stores
from tests.contract.builders import a_schedule

CROWD = 64
HOUR = timedelta(hours=1)


class ScheduleStoreContract:
    async def test_sync_inserts_a_new_schedule(self, stores: Stores):
        schedule = a_schedule()

        stored = await stores.schedules.sync(schedule)

        assert stored == schedule
        assert await stores.schedules.get(schedule.job_id) == schedule

    async def test_an_unknown_schedule_reads_as_none(self, stores: Stores):
        found = await stores.schedules.get("flow-nope-nightly")

        assert found is None

    async def test_sync_with_the_same_cron_keeps_the_next_fire(
        self, stores: Stores, clock: FrozenClock
    ):
        first = await stores.schedules.sync(a_schedule())

        stored = await stores.schedules.sync(
            a_schedule(next_fire_at=clock.now() + HOUR)
        )

        assert stored == first

    async def test_sync_with_a_new_cron_takes_its_next_fire(
        self, stores: Stores, clock: FrozenClock
    ):
        await stores.schedules.sync(a_schedule())
        changed = a_schedule(
            cron="*/5 * * * *",
            next_fire_at=clock.now() + timedelta(minutes=5),
            flow_id=FlowId("orders-v2"),
        )

        stored = await stores.schedules.sync(changed)

        assert stored == changed
        assert await stores.schedules.get(changed.job_id) == changed

    async def test_sync_keeps_the_next_fire_an_operator_chose(
        self, stores: Stores, clock: FrozenClock
    ):
        paused = a_schedule(job_id="paused")
        overridden = a_schedule(job_id="overridden")
        for schedule in (paused, overridden):
            await stores.schedules.sync(schedule)
        await stores.schedules.update(
            "paused", paused=True, cron_override=None, next_fire_at=None
        )
        await stores.schedules.update(
            "overridden", paused=False, cron_override="0 * * * *", next_fire_at=None
        )
        new_cron = {"cron": "*/5 * * * *", "next_fire_at": clock.now() + HOUR}

        stored = [
            await stores.schedules.sync(a_schedule(job_id=job, **new_cron))
            for job in ("paused", "overridden")
        ]

        assert [(s.cron, s.next_fire_at, s.paused) for s in stored] == [
            ("*/5 * * * *", None, True),
            ("*/5 * * * *", None, False),
        ]
        assert stored[1].effective_cron == "0 * * * *"

    async def test_due_lists_unpaused_schedules_whose_fire_has_come(
        self, stores: Stores, clock: FrozenClock
    ):
        now = clock.now()
        fires = {"late": now - HOUR, "now": now, "later": now + HOUR, "off": now}
        for job, at in fires.items():
            await stores.schedules.sync(a_schedule(job_id=job, next_fire_at=at))
        await stores.schedules.update(
            "off", paused=True, cron_override=None, next_fire_at=now
        )
        await stores.schedules.sync(a_schedule(job_id="never", next_fire_at=None))

        due = await stores.schedules.due(now, limit=10)
        first = await stores.schedules.due(now, limit=1)

        assert [s.job_id for s in due] == ["late", "now"]
        assert [s.job_id for s in first] == ["late"]

    async def test_a_fire_advances_the_schedule_once(
        self, stores: Stores, clock: FrozenClock
    ):
        schedule = await stores.schedules.sync(a_schedule(next_fire_at=clock.now()))
        fired_at = clock.now()

        first = await stores.schedules.advance(
            schedule.job_id, fired_at=fired_at, next_fire_at=fired_at + HOUR
        )
        second = await stores.schedules.advance(
            schedule.job_id, fired_at=fired_at, next_fire_at=fired_at + HOUR * 2
        )

        found = await stores.schedules.get(schedule.job_id)
        assert (first, second) == (True, False)
        assert found is not None
        assert found.next_fire_at == fired_at + HOUR

    async def test_advancing_an_unknown_schedule_returns_false(
        self, stores: Stores, clock: FrozenClock
    ):
        advanced = await stores.schedules.advance(
            "flow-nope-nightly", fired_at=clock.now(), next_fire_at=clock.now() + HOUR
        )

        assert not advanced

    async def test_one_of_64_replicas_takes_a_fire(
        self, stores: Stores, clock: FrozenClock
    ):
        schedule = await stores.schedules.sync(a_schedule(next_fire_at=clock.now()))

        results = await asyncio.gather(
            *(
                stores.schedules.advance(
                    schedule.job_id,
                    fired_at=clock.now(),
                    next_fire_at=clock.now() + HOUR,
                )
                for _ in range(CROWD)
            )
        )

        assert results.count(True) == 1

    async def test_update_sets_pause_override_and_next_fire(
        self, stores: Stores, clock: FrozenClock
    ):
        schedule = await stores.schedules.sync(a_schedule())

        updated = await stores.schedules.update(
            schedule.job_id,
            paused=False,
            cron_override="*/10 * * * *",
            next_fire_at=clock.now() + timedelta(minutes=10),
        )

        expected = a_schedule(
            cron_override="*/10 * * * *",
            next_fire_at=clock.now() + timedelta(minutes=10),
        )
        assert updated == expected
        assert await stores.schedules.get(schedule.job_id) == expected

    async def test_updating_an_unknown_schedule_returns_none(self, stores: Stores):
        updated = await stores.schedules.update(
            "flow-nope-nightly", paused=True, cron_override=None, next_fire_at=None
        )

        assert updated is None

    async def test_all_lists_every_schedule(self, stores: Stores):
        schedules = [
            a_schedule(
                job_id=schedule_job_id("orders", key), trigger_key=TriggerKey(key)
            )
            for key in ("nightly", "hourly")
        ]
        for schedule in schedules:
            await stores.schedules.sync(schedule)

        found = await stores.schedules.all()

        assert sorted(found, key=lambda s: s.job_id) == sorted(
            schedules, key=lambda s: s.job_id
        )
