"""The contract of `SignalStore`: waiters, and a signal delivered once."""

import asyncio
from datetime import timedelta

from service.adapters.clock import FrozenClock
from service.engine.model import StepKey
from service.engine.records import Delivery, DeliveryStatus, Waiter
from service.ports.stores import Stores
from tests.contract.builders import a_run_id

APPROVE = StepKey("approve")
CROWD = 64


class SignalStoreContract:
    async def test_a_registered_waiter_can_be_read_back(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()
        expires = clock.now() + timedelta(hours=1)

        waiter = await stores.signals.register(
            run_id, APPROVE, "Approved", expires_at=expires, now=clock.now()
        )

        assert waiter == Waiter(run_id, APPROVE, "Approved", clock.now(), expires)
        assert await stores.signals.waiter(run_id, APPROVE) == waiter

    async def test_a_step_without_a_waiter_has_none(self, stores: Stores):
        waiter = await stores.signals.waiter(a_run_id(), APPROVE)

        assert waiter is None

    async def test_registering_again_keeps_created_at_and_takes_the_new_name(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()
        first = await stores.signals.register(
            run_id, APPROVE, "Approved", expires_at=None, now=clock.now()
        )
        clock.advance(timedelta(minutes=5))
        expires = clock.now() + timedelta(hours=1)

        again = await stores.signals.register(
            run_id, APPROVE, "Reviewed", expires_at=expires, now=clock.now()
        )

        assert again == Waiter(run_id, APPROVE, "Reviewed", first.created_at, expires)
        assert await stores.signals.waiter(run_id, APPROVE) == again

    async def test_a_signal_is_delivered_once(self, stores: Stores, clock: FrozenClock):
        run_id = a_run_id()
        await stores.signals.register(
            run_id, APPROVE, "Approved", expires_at=None, now=clock.now()
        )
        clock.advance(timedelta(seconds=3))
        delivered_at = clock.now()

        first = await stores.signals.deliver(
            run_id, "Approved", {"by": "ops"}, now=clock.now()
        )
        clock.advance(timedelta(seconds=3))
        second = await stores.signals.deliver(
            run_id, "Approved", {"by": "someone else"}, now=clock.now()
        )

        waiter = await stores.signals.waiter(run_id, APPROVE)
        assert first == Delivery(DeliveryStatus.DELIVERED, APPROVE, delivered_at)
        assert second == Delivery(
            DeliveryStatus.ALREADY_DELIVERED, APPROVE, delivered_at
        )
        assert waiter is not None
        assert (waiter.delivered_at, waiter.payload) == (delivered_at, {"by": "ops"})

    async def test_signal_names_match_whatever_their_case(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()
        await stores.signals.register(
            run_id, APPROVE, "Approved", expires_at=None, now=clock.now()
        )

        delivery = await stores.signals.deliver(
            run_id, "APPROVED", None, now=clock.now()
        )

        assert (delivery.status, delivery.step_key) == (
            DeliveryStatus.DELIVERED,
            APPROVE,
        )
        waiter = await stores.signals.waiter(run_id, APPROVE)
        assert waiter is not None
        assert waiter.signal == "Approved"

    async def test_a_signal_nobody_waits_for_is_not_found(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()
        await stores.signals.register(
            run_id, APPROVE, "Approved", expires_at=None, now=clock.now()
        )

        other_name = await stores.signals.deliver(
            run_id, "Rejected", None, now=clock.now()
        )
        other_run = await stores.signals.deliver(
            a_run_id(), "Approved", None, now=clock.now()
        )

        assert other_name == other_run == Delivery(DeliveryStatus.NOT_FOUND)
        waiter = await stores.signals.waiter(run_id, APPROVE)
        assert waiter is not None
        assert waiter.delivered_at is None

    async def test_waiters_of_one_name_take_signals_oldest_first(
        self, stores: Stores, clock: FrozenClock
    ):
        # Our rule (SPEC 2.13 asks for one): the oldest undelivered waiter is chosen,
        # so each ForEach iteration waiting for "approved" can be signalled in turn.
        run_id = a_run_id()
        older, newer = StepKey("manager"), StepKey("director")
        await stores.signals.register(
            run_id, older, "Approved", expires_at=None, now=clock.now()
        )
        clock.advance(timedelta(seconds=1))
        await stores.signals.register(
            run_id, newer, "approved", expires_at=None, now=clock.now()
        )
        await stores.signals.register(
            run_id, older, "Approved", expires_at=None, now=clock.now()
        )

        deliveries = [
            await stores.signals.deliver(run_id, "Approved", n, now=clock.now())
            for n in range(3)
        ]

        assert [(d.status, d.step_key) for d in deliveries[:2]] == [
            (DeliveryStatus.DELIVERED, older),
            (DeliveryStatus.DELIVERED, newer),
        ]
        assert deliveries[2].status is DeliveryStatus.ALREADY_DELIVERED
        waiter = await stores.signals.waiter(run_id, newer)
        assert waiter is not None
        assert waiter.payload == 1

    async def test_registering_a_delivered_waiter_again_keeps_the_delivery(
        self, stores: Stores, clock: FrozenClock
    ):
        # Reading: a parked step re-registers on every check; it must see the signal.
        run_id = a_run_id()
        await stores.signals.register(
            run_id, APPROVE, "Approved", expires_at=None, now=clock.now()
        )
        await stores.signals.deliver(run_id, "Approved", "yes", now=clock.now())
        clock.advance(timedelta(seconds=1))

        again = await stores.signals.register(
            run_id, APPROVE, "Approved", expires_at=None, now=clock.now()
        )

        assert (again.delivered_at, again.payload) == (
            clock.now() - timedelta(seconds=1),
            "yes",
        )

    async def test_one_of_64_concurrent_signals_is_delivered(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = a_run_id()
        await stores.signals.register(
            run_id, APPROVE, "Approved", expires_at=None, now=clock.now()
        )

        deliveries = await asyncio.gather(
            *(
                stores.signals.deliver(run_id, "Approved", n, now=clock.now())
                for n in range(CROWD)
            )
        )

        statuses = [d.status for d in deliveries]
        assert statuses.count(DeliveryStatus.DELIVERED) == 1
        assert statuses.count(DeliveryStatus.ALREADY_DELIVERED) == CROWD - 1
        waiter = await stores.signals.waiter(run_id, APPROVE)
        assert waiter is not None
        assert waiter.payload == statuses.index(DeliveryStatus.DELIVERED)
