"""The contract of `RunStore` for settled and requeued steps, scopes and resets.

Part of `RunStoreContract` (in `run_store_contract.py`); not collected on its own.
"""

from datetime import timedelta

from service.adapters.clock import FrozenClock
from service.engine.model import StepKey, StepStatus
from service.engine.records import PREREQUISITES_UNMET, LoopState, Outcome
from service.ports.stores import Stores
from tests.contract.builders import a_step
from tests.contract.step_contract import (
    FETCH,
    JOB,
    LEASE,
    LOOP,
    a_claimed_step,
    a_loop,
    a_run_with,
    row_of,
)


class StepStateContract:
    async def test_settle_records_an_outcome_on_a_step_in_an_expected_status(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(
            stores,
            clock,
            a_step("loop.0", type="__iteration", status=StepStatus.PENDING),
        )

        settled = await stores.steps.settle(
            run_id,
            StepKey("loop.0"),
            Outcome(StepStatus.SUCCEEDED, output=["a"]),
            expected=frozenset({StepStatus.PENDING}),
            now=clock.now(),
        )

        step = await row_of(stores, run_id, "loop.0")
        assert settled
        assert (step.status, step.output, step.completed_at, step.attempts) == (
            StepStatus.SUCCEEDED,
            ["a"],
            clock.now(),
            (),
        )

    async def test_settle_refuses_a_step_in_another_status(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(stores, clock)
        before = await row_of(stores, run_id, "fetch")

        settled = [
            await stores.steps.settle(
                run_id,
                key,
                Outcome(StepStatus.SKIPPED, error="Run cancelled."),
                expected=frozenset({StepStatus.PENDING, StepStatus.RUNNING}),
                now=clock.now(),
            )
            for key in (FETCH, StepKey("missing"))
        ]

        assert settled == [False, False]
        assert await row_of(stores, run_id, "fetch") == before

    async def test_settle_closes_an_open_attempt(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        clock.advance(timedelta(seconds=1))

        await stores.steps.settle(
            run_id,
            FETCH,
            Outcome(StepStatus.SKIPPED, error="Run cancelled."),
            expected=frozenset({StepStatus.RUNNING}),
            now=clock.now(),
        )

        step = await row_of(stores, run_id, "fetch")
        assert (step.status, step.lease_until) == (StepStatus.SKIPPED, None)
        assert (step.attempts[-1].status, step.attempts[-1].completed_at) == (
            StepStatus.SKIPPED,
            clock.now(),
        )

    async def test_settle_leaves_a_closed_attempt_as_it_was(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        parked = Outcome(StepStatus.PENDING)
        await stores.steps.finish(
            run_id, FETCH, parked, job_id=JOB, attempt=1, now=clock.now()
        )
        closed = (await row_of(stores, run_id, "fetch")).attempts
        clock.advance(timedelta(seconds=1))

        await stores.steps.settle(
            run_id,
            FETCH,
            Outcome(StepStatus.SKIPPED, error="Run cancelled."),
            expected=frozenset({StepStatus.PENDING}),
            now=clock.now(),
        )

        step = await row_of(stores, run_id, "fetch")
        assert (step.status, step.completed_at) == (StepStatus.SKIPPED, clock.now())
        assert step.attempts == closed

    async def test_a_failed_step_is_requeued_with_its_output_and_error(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        failed = Outcome(StepStatus.FAILED, output={"status": 503}, error="HTTP 503")
        await stores.steps.finish(
            run_id, FETCH, failed, job_id=JOB, attempt=1, now=clock.now()
        )
        clock.advance(timedelta(seconds=5))

        step = await stores.steps.requeue(
            run_id, FETCH, expected=frozenset({StepStatus.FAILED}), now=clock.now()
        )

        assert step is not None
        assert step == await row_of(stores, run_id, "fetch")
        assert (step.status, step.dispatched_at, step.attempt) == (
            StepStatus.QUEUED,
            clock.now(),
            1,
        )
        assert (step.output, step.error) == ({"status": 503}, "HTTP 503")

    async def test_a_requeued_running_step_loses_its_lease(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)

        step = await stores.steps.requeue(
            run_id, FETCH, expected=frozenset({StepStatus.RUNNING}), now=clock.now()
        )

        assert step is not None
        assert (step.status, step.lease_until) == (StepStatus.QUEUED, None)

    async def test_requeue_refuses_a_step_in_another_status(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, claimed = await a_claimed_step(stores, clock)

        moved = [
            await stores.steps.requeue(
                run_id, key, expected=frozenset({StepStatus.PENDING}), now=clock.now()
            )
            for key in (FETCH, StepKey("missing"))
        ]

        assert moved == [None, None]
        assert await row_of(stores, run_id, "fetch") == claimed

    async def test_requeue_of_one_attempt_refuses_another(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        await stores.steps.finish(
            run_id,
            FETCH,
            Outcome(StepStatus.PENDING),
            job_id=JOB,
            attempt=1,
            now=clock.now(),
        )
        parked = frozenset({StepStatus.PENDING})

        stale = await stores.steps.requeue(
            run_id, FETCH, expected=parked, now=clock.now(), attempt=2
        )
        current = await stores.steps.requeue(
            run_id, FETCH, expected=parked, now=clock.now(), attempt=1
        )

        assert stale is None
        assert current is not None
        assert current.status is StepStatus.QUEUED

    async def test_steps_returns_the_rows_that_exist(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(stores, clock, a_step("a"), a_step("b"))

        rows = await stores.steps.steps(run_id, [StepKey("a"), StepKey("zzz")])

        assert list(rows) == ["a"]
        assert rows[StepKey("a")].key == "a"

    async def test_scope_queries_see_the_rows_directly_in_a_scope(
        self, stores: Stores, clock: FrozenClock
    ):
        done = {"status": StepStatus.SUCCEEDED}
        run_id = await a_run_with(
            stores,
            clock,
            a_step("fetch", **done),
            a_step("loop", type="ForEach", status=StepStatus.PENDING),
            a_step("loop.0", type="__iteration", **done),
            a_step("loop.1", type="__iteration", status=StepStatus.PENDING),
            a_step("loop.0.child", **done),
            a_step("loop.1.child", status=StepStatus.SKIPPED),
            a_step("loop.1.after"),
        )
        other = await a_run_with(stores, clock, a_step("loop.0", **done))

        scopes = {
            scope: sorted(
                row.key for row in await stores.steps.scope_steps(run_id, scope)
            )
            for scope in ("", "loop", "loop.1", "nope")
        }
        counts = [
            await stores.steps.count_final(run_id, scope)
            for scope in ("", "loop", "loop.0", "loop.1", "nope")
        ]

        assert scopes == {
            "": ["fetch", "loop"],
            "loop": ["loop.0", "loop.1"],
            "loop.1": ["loop.1.after", "loop.1.child"],
            "nope": [],
        }
        assert counts == [1, 1, 1, 1, 0]
        assert await stores.steps.count_final(other, "loop") == 1

    async def test_in_flight_lists_unfinished_rows_at_every_depth(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(
            stores,
            clock,
            a_step("fetch", status=StepStatus.SUCCEEDED),
            a_step("loop", type="ForEach", status=StepStatus.PENDING),
            a_step("loop.0", type="__iteration", status=StepStatus.PENDING),
            a_step("loop.0.child"),
            a_step("loop.0.skipped", status=StepStatus.SKIPPED),
            a_step("other"),
        )
        await stores.steps.claim(
            run_id, StepKey("other"), job_id=JOB, now=clock.now(), lease=LEASE
        )
        await a_run_with(stores, clock, a_step("elsewhere"))

        rows = await stores.steps.in_flight(run_id)

        assert sorted((row.key, row.status) for row in rows) == [
            ("loop", StepStatus.PENDING),
            ("loop.0", StepStatus.PENDING),
            ("loop.0.child", StepStatus.QUEUED),
            ("other", StepStatus.RUNNING),
        ]

    async def test_a_reset_deletes_a_row_and_every_row_below_it(
        self, stores: Stores, clock: FrozenClock
    ):
        keys = ["loop", "loop.0", "loop.0.child", "loop.1", "loop2", "loop2.0", "fetch"]
        run_id = await a_run_with(stores, clock, *(a_step(k) for k in keys))

        deleted = await stores.steps.reset_steps(
            run_id, [StepKey("loop"), StepKey("missing")]
        )

        left = await stores.steps.steps(run_id, [StepKey(k) for k in keys])
        assert deleted == ["loop"]
        assert sorted(left) == ["fetch", "loop2", "loop2.0"]
        assert await stores.steps.scope_steps(run_id, "loop") == []
        assert await stores.steps.scope_steps(run_id, "loop.0") == []

    async def test_a_reset_step_can_be_dispatched_again(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        await stores.steps.reset_steps(run_id, [FETCH])

        inserted = await stores.steps.add_steps(run_id, [a_step()], at=clock.now())

        step = await row_of(stores, run_id, "fetch")
        assert inserted == ["fetch"]
        assert (step.status, step.attempt, step.attempts) == (
            StepStatus.QUEUED,
            0,
            (),
        )

    async def test_a_reset_with_an_error_deletes_only_rows_skipped_for_it(
        self, stores: Stores, clock: FrozenClock
    ):
        skipped = {"status": StepStatus.SKIPPED, "error": PREREQUISITES_UNMET}
        run_id = await a_run_with(
            stores,
            clock,
            a_step("cascaded", **skipped),
            a_step("cascaded.0", **skipped),
            a_step("when_false", status=StepStatus.SKIPPED, error="When was false"),
            a_step("failed", status=StepStatus.FAILED, error=PREREQUISITES_UNMET),
        )
        keys = [StepKey(k) for k in ("cascaded", "when_false", "failed")]

        deleted = await stores.steps.reset_steps(
            run_id, keys, only_error=PREREQUISITES_UNMET
        )

        left = await stores.steps.steps(run_id, [*keys, StepKey("cascaded.0")])
        assert deleted == ["cascaded"]
        assert sorted(left) == ["failed", "when_false"]

    async def test_a_reset_loop_forgets_its_items(
        self, stores: Stores, clock: FrozenClock
    ):
        # Reading: a loop's items belong to its row; a reset loop starts afresh.
        run_id = await a_loop(stores, clock, ["a", "b"])
        await stores.steps.reset_steps(run_id, [LOOP])
        await stores.steps.add_steps(run_id, [a_step("loop")], at=clock.now())

        state = await stores.loops.start_loop(run_id, LOOP, ["c"], concurrency=1)

        assert state == LoopState(total=1, concurrency=1)
        assert await stores.loops.loop_item(run_id, LOOP, 0) == "c"
