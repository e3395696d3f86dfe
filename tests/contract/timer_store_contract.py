"""The contract of `TimerStore`: upserts, and due timers each handed to one claimer."""

import asyncio
from datetime import timedelta

from service.adapters.clock import FrozenClock
from service.engine.records import TimerKind
from service.ports.stores import Stores
from tests.contract.builders import a_run_id, a_timer

LEASE = timedelta(seconds=30)
CROWD = 64


class TimerStoreContract:
    async def test_a_due_timer_is_claimed(self, stores: Stores, clock: FrozenClock):
        timer = a_timer(a_run_id(), kind=TimerKind.DEADLINE, step_key=None)
        await stores.timers.set(timer)

        claimed = await stores.timers.claim_due(
            clock.now(), owner="w1", lease=LEASE, limit=10
        )

        assert claimed == [timer]

    async def test_a_timer_not_yet_due_is_not_claimed(
        self, stores: Stores, clock: FrozenClock
    ):
        later = clock.now() + timedelta(seconds=1)
        await stores.timers.set(a_timer(a_run_id(), due_at=later))

        claimed = await stores.timers.claim_due(
            clock.now(), owner="w1", lease=LEASE, limit=10
        )

        assert claimed == []

    async def test_a_claimed_timer_is_not_handed_out_while_its_lease_lasts(
        self, stores: Stores, clock: FrozenClock
    ):
        await stores.timers.set(a_timer(a_run_id()))
        await stores.timers.claim_due(clock.now(), owner="w1", lease=LEASE, limit=10)
        clock.advance(LEASE - timedelta(seconds=1))

        claimed = await stores.timers.claim_due(
            clock.now(), owner="w2", lease=LEASE, limit=10
        )

        assert claimed == []

    async def test_a_timer_is_claimed_again_once_its_lease_ended(
        self, stores: Stores, clock: FrozenClock
    ):
        timer = a_timer(a_run_id())
        await stores.timers.set(timer)
        await stores.timers.claim_due(clock.now(), owner="w1", lease=LEASE, limit=10)
        clock.advance(LEASE)

        claimed = await stores.timers.claim_due(
            clock.now(), owner="w2", lease=LEASE, limit=10
        )

        assert claimed == [timer]

    async def test_setting_a_timer_again_replaces_it_and_frees_its_lease(
        self, stores: Stores, clock: FrozenClock
    ):
        timer = a_timer(a_run_id())
        await stores.timers.set(timer)
        await stores.timers.claim_due(clock.now(), owner="w1", lease=LEASE, limit=10)
        moved = a_timer(timer.run_id, id=timer.id, due_at=clock.now())

        await stores.timers.set(moved)

        claimed = await stores.timers.claim_due(
            clock.now(), owner="w2", lease=LEASE, limit=10
        )
        assert claimed == [moved]

    async def test_a_timer_set_later_is_not_due_until_its_new_time(
        self, stores: Stores, clock: FrozenClock
    ):
        timer = a_timer(a_run_id())
        await stores.timers.set(timer)
        later = a_timer(timer.run_id, id=timer.id, due_at=clock.now() + LEASE)

        await stores.timers.set(later)

        now = await stores.timers.claim_due(
            clock.now(), owner="w1", lease=LEASE, limit=10
        )
        clock.advance(LEASE)
        then = await stores.timers.claim_due(
            clock.now(), owner="w1", lease=LEASE, limit=10
        )
        assert (now, then) == ([], [later])

    async def test_the_earliest_due_timers_are_claimed_first_up_to_the_limit(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()
        timers = [
            a_timer(run_id, due_at=clock.now() - timedelta(seconds=s))
            for s in (1, 3, 2)
        ]
        for timer in timers:
            await stores.timers.set(timer)

        first = await stores.timers.claim_due(
            clock.now(), owner="w1", lease=LEASE, limit=2
        )
        rest = await stores.timers.claim_due(
            clock.now(), owner="w2", lease=LEASE, limit=2
        )

        assert first == [timers[1], timers[2]]
        assert rest == [timers[0]]

    async def test_a_deleted_timer_is_never_claimed(
        self, stores: Stores, clock: FrozenClock
    ):
        timer = a_timer(a_run_id())
        await stores.timers.set(timer)

        await stores.timers.delete(timer.id)
        await stores.timers.delete(timer.id)
        await stores.timers.delete("never-set")

        claimed = await stores.timers.claim_due(
            clock.now(), owner="w1", lease=LEASE, limit=10
        )
        assert claimed == []

    async def test_each_due_timer_goes_to_one_of_64_concurrent_claimers(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()
        timers = [a_timer(run_id) for _ in range(10)]
        for timer in timers:
            await stores.timers.set(timer)

        batches = await asyncio.gather(
            *(
                stores.timers.claim_due(
                    clock.now(), owner=f"w{n}", lease=LEASE, limit=3
                )
                for n in range(CROWD)
            )
        )

        handed = [timer.id for batch in batches for timer in batch]
        assert sorted(handed) == sorted(timer.id for timer in timers)
