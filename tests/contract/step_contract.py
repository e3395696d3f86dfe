"""The contract of `StepStore` for step rows: the dispatch ledger, claims, results.

With the helpers the other step suites share; not collected on its own: a `Test...`
class per store inherits it.
"""

import asyncio
from datetime import timedelta

import pytest

from service.adapters.clock import FrozenClock
from service.engine.model import JobId, RunId, StepKey, StepStatus
from service.engine.records import PREREQUISITES_UNMET, Claim, NewStep, Outcome
from service.engine.records import StepRecord as Row
from service.ports.stores import Stores
from tests.contract.builders import a_run, a_run_id, a_step

LEASE = timedelta(seconds=30)
JOB = JobId("job-1")
OTHER_JOB = JobId("job-2")
FETCH = StepKey("fetch")
LOOP = StepKey("loop")
CROWD = 64
DONE = Outcome(StepStatus.SUCCEEDED, output={"total": 3})


async def a_run_with(stores: Stores, clock: FrozenClock, *steps: NewStep) -> RunId:
    """A new run with the rows `steps` (or one `fetch`) dispatched at `clock.now()`."""
    run, _ = await stores.runs.create_run(a_run())
    await stores.steps.add_steps(run.run_id, list(steps) or [a_step()], at=clock.now())
    return run.run_id


async def a_claimed_step(
    stores: Stores, clock: FrozenClock, *, job: JobId = JOB
) -> tuple[RunId, Row]:
    run_id = await a_run_with(stores, clock)
    claim = await stores.steps.claim(
        run_id, FETCH, job_id=job, now=clock.now(), lease=LEASE
    )
    assert claim.won
    assert claim.step is not None
    return run_id, claim.step


async def row_of(stores: Stores, run_id: RunId, key: str) -> Row:
    return (await stores.steps.steps(run_id, [StepKey(key)]))[StepKey(key)]


async def a_loop(stores: Stores, clock: FrozenClock, items: list[str]) -> RunId:
    run_id = await a_run_with(stores, clock, a_step("loop", type="ForEach"))
    await stores.loops.start_loop(run_id, LOOP, list(items), concurrency=2)
    return run_id


class StepRowContract:
    async def test_add_steps_inserts_rows_dispatched_at_the_given_instant(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(a_run())
        skipped = a_step(
            "notify",
            status=StepStatus.SKIPPED,
            error=PREREQUISITES_UNMET,
            trace={"when": False},
        )

        inserted = await stores.steps.add_steps(
            run.run_id, [a_step(), skipped], at=clock.now()
        )

        rows = await stores.steps.steps(run.run_id, inserted)
        assert inserted == ["fetch", "notify"]
        assert rows[FETCH] == Row(
            run_id=run.run_id,
            key=FETCH,
            type="Http",
            status=StepStatus.QUEUED,
            dispatched_at=clock.now(),
            inputs={"url": "https://shop.test/orders/42"},
        )
        notify = rows[StepKey("notify")]
        assert (notify.status, notify.error, notify.trace, notify.attempt) == (
            StepStatus.SKIPPED,
            PREREQUISITES_UNMET,
            {"when": False},
            0,
        )

    async def test_add_steps_leaves_existing_rows_untouched(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(stores, clock, a_step("a"))
        before = await row_of(stores, run_id, "a")
        clock.advance(timedelta(seconds=5))

        inserted = await stores.steps.add_steps(
            run_id,
            [a_step("a", status=StepStatus.SKIPPED), a_step("b"), a_step("b")],
            at=clock.now(),
        )

        assert inserted == ["b"]
        assert await row_of(stores, run_id, "a") == before

    async def test_one_of_64_concurrent_dispatches_inserts_the_row(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(a_run())

        results = await asyncio.gather(
            *(
                stores.steps.add_steps(run.run_id, [a_step()], at=clock.now())
                for _ in range(CROWD)
            )
        )

        assert sorted(results) == [[]] * (CROWD - 1) + [["fetch"]]

    async def test_a_queued_step_is_claimed(self, stores: Stores, clock: FrozenClock):
        run_id = await a_run_with(stores, clock)
        clock.advance(timedelta(seconds=2))

        claim = await stores.steps.claim(
            run_id, FETCH, job_id=JOB, now=clock.now(), lease=LEASE
        )

        assert claim.won
        step = claim.step
        assert step is not None
        assert step.status is StepStatus.RUNNING
        assert (step.attempt, step.job_id) == (1, JOB)
        assert (step.started_at, step.lease_until) == (clock.now(), clock.now() + LEASE)
        assert [(a.number, a.job_id, a.started_at) for a in step.attempts] == [
            (1, JOB, clock.now())
        ]
        assert step.attempts[0].status is StepStatus.RUNNING
        assert step.attempts[0].completed_at is None
        assert await row_of(stores, run_id, "fetch") == step

    async def test_a_claim_on_a_missing_step_finds_nothing(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(stores, clock)

        claims = [
            await stores.steps.claim(run, key, job_id=JOB, now=clock.now(), lease=LEASE)
            for run, key in ((run_id, StepKey("nope")), (a_run_id(), FETCH))
        ]

        assert [(c.step, c.won) for c in claims] == [(None, False), (None, False)]

    async def test_a_step_with_a_live_lease_is_not_claimed(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, claimed = await a_claimed_step(stores, clock)
        clock.advance(LEASE - timedelta(seconds=1))

        claim = await stores.steps.claim(
            run_id, FETCH, job_id=OTHER_JOB, now=clock.now(), lease=LEASE
        )

        assert (claim.step, claim.won) == (claimed, False)

    async def test_a_redelivery_takes_over_its_own_live_claim(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)

        other = await stores.steps.claim(
            run_id,
            FETCH,
            job_id=OTHER_JOB,
            now=clock.now(),
            lease=LEASE,
            take_over=True,
        )
        own = await stores.steps.claim(
            run_id, FETCH, job_id=JOB, now=clock.now(), lease=LEASE, take_over=True
        )

        assert not other.won
        assert own.won
        assert own.step is not None
        assert (own.step.attempt, own.step.job_id) == (2, JOB)

    async def test_only_the_copy_that_claimed_takes_its_live_claim_over(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(stores, clock)

        async def claim(copy: str, *, redelivered: bool) -> Claim:
            return await stores.steps.claim(
                run_id,
                FETCH,
                job_id=JOB,
                now=clock.now(),
                lease=LEASE,
                take_over=redelivered,
                dispatch_id=copy,
            )

        first = await claim("c1", redelivered=False)
        # A repair published the dispatch again: same job id, another copy.
        other_copy = await claim("c2", redelivered=True)
        same_copy = await claim("c1", redelivered=True)

        assert first.won
        assert (other_copy.step, other_copy.won) == (first.step, False)
        assert same_copy.won
        assert same_copy.step is not None
        assert same_copy.step.attempt == 2

    async def test_without_take_over_its_own_live_claim_is_not_claimed(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, claimed = await a_claimed_step(stores, clock)

        claim = await stores.steps.claim(
            run_id, FETCH, job_id=JOB, now=clock.now(), lease=LEASE
        )

        assert (claim.step, claim.won) == (claimed, False)

    async def test_a_step_whose_lease_ended_is_claimed_by_another_job(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, first = await a_claimed_step(stores, clock)
        clock.advance(LEASE)

        claim = await stores.steps.claim(
            run_id, FETCH, job_id=OTHER_JOB, now=clock.now(), lease=LEASE
        )

        assert claim.won
        assert claim.step is not None
        assert (claim.step.attempt, claim.step.job_id) == (2, OTHER_JOB)
        assert claim.step.lease_until == clock.now() + LEASE
        assert [a.number for a in claim.step.attempts] == [1, 2]
        assert claim.step.attempts[0] == first.attempts[0]

    @pytest.mark.parametrize(
        "status",
        [
            StepStatus.SUCCEEDED,
            StepStatus.FAILED,
            StepStatus.SKIPPED,
            StepStatus.PENDING,
        ],
        ids=str,
    )
    async def test_a_step_that_is_not_queued_is_not_claimed(
        self, stores: Stores, clock: FrozenClock, status: StepStatus
    ):
        run_id = await a_run_with(stores, clock, a_step(status=status))

        claim = await stores.steps.claim(
            run_id, FETCH, job_id=JOB, now=clock.now(), lease=LEASE
        )

        assert not claim.won
        assert claim.step is not None
        assert (claim.step.status, claim.step.attempt) == (status, 0)

    async def test_a_step_keeps_its_latest_50_attempts(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(stores, clock)

        for n in range(55):
            await stores.steps.claim(
                run_id, FETCH, job_id=JobId(f"job-{n}"), now=clock.now(), lease=LEASE
            )
            clock.advance(LEASE)

        step = await row_of(stores, run_id, "fetch")
        assert step.attempt == 55
        assert [a.number for a in step.attempts] == list(range(6, 56))
        assert step.attempts[-1].job_id == "job-54"

    async def test_one_of_64_concurrent_claims_wins(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(stores, clock)

        claims = await asyncio.gather(
            *(
                stores.steps.claim(
                    run_id,
                    FETCH,
                    job_id=JobId(f"job-{n}"),
                    now=clock.now(),
                    lease=LEASE,
                )
                for n in range(CROWD)
            )
        )

        winners = [c.step for c in claims if c.won]
        assert len(winners) == 1
        assert winners[0] is not None
        assert winners[0].attempt == 1

    async def test_the_owner_extends_its_lease(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        until = clock.now() + LEASE * 2

        extended = await stores.steps.extend_lease(
            run_id, FETCH, job_id=JOB, until=until
        )

        assert extended.held
        assert (await row_of(stores, run_id, "fetch")).lease_until == until

    async def test_another_job_cannot_extend_the_lease(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, claimed = await a_claimed_step(stores, clock)

        extended = await stores.steps.extend_lease(
            run_id, FETCH, job_id=OTHER_JOB, until=clock.now() + LEASE * 2
        )

        assert not extended.held
        assert await row_of(stores, run_id, "fetch") == claimed

    async def test_a_finished_step_has_no_lease_to_extend(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        await stores.steps.finish(
            run_id, FETCH, DONE, job_id=JOB, attempt=1, now=clock.now()
        )

        extended = await stores.steps.extend_lease(
            run_id, FETCH, job_id=JOB, until=clock.now() + LEASE
        )

        assert not extended.held
        assert (await row_of(stores, run_id, "fetch")).lease_until is None

    async def test_finishing_the_running_attempt_records_its_outcome(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, claimed = await a_claimed_step(stores, clock)
        clock.advance(timedelta(seconds=3))
        outcome = Outcome(
            StepStatus.SUCCEEDED,
            output={"total": 3},
            trace={"inputs": "ok"},
            resolved_inputs={"url": "https://shop.test/orders/42"},
        )

        finished = await stores.steps.finish(
            run_id, FETCH, outcome, job_id=JOB, attempt=1, now=clock.now()
        )

        step = await row_of(stores, run_id, "fetch")
        assert finished.won
        assert (step.status, step.output, step.error, step.trace) == (
            StepStatus.SUCCEEDED,
            {"total": 3},
            None,
            {"inputs": "ok"},
        )
        assert step.resolved_inputs == {"url": "https://shop.test/orders/42"}
        assert step.inputs == claimed.inputs
        assert (step.lease_until, step.completed_at) == (None, clock.now())
        assert step.attempts[-1].status is StepStatus.SUCCEEDED
        assert step.attempts[-1].completed_at == clock.now()

    async def test_a_failed_attempt_keeps_its_error(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        failed = Outcome(StepStatus.FAILED, error="HTTP 503")

        await stores.steps.finish(
            run_id, FETCH, failed, job_id=JOB, attempt=1, now=clock.now()
        )

        step = await row_of(stores, run_id, "fetch")
        assert (step.status, step.error) == (StepStatus.FAILED, "HTTP 503")
        assert (step.attempts[-1].status, step.attempts[-1].error) == (
            StepStatus.FAILED,
            "HTTP 503",
        )

    async def test_a_pending_outcome_parks_the_step_with_its_next_inputs(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        parked = Outcome(StepStatus.PENDING, inputs={"pollState": {"tries": 1}})

        await stores.steps.finish(
            run_id, FETCH, parked, job_id=JOB, attempt=1, now=clock.now()
        )

        step = await row_of(stores, run_id, "fetch")
        assert (step.status, step.completed_at, step.lease_until) == (
            StepStatus.PENDING,
            None,
            None,
        )
        assert step.inputs == {"pollState": {"tries": 1}}
        assert step.attempts[-1].completed_at == clock.now()

    async def test_a_finish_by_another_job_writes_nothing(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, claimed = await a_claimed_step(stores, clock)

        finished = await stores.steps.finish(
            run_id, FETCH, DONE, job_id=OTHER_JOB, attempt=1, now=clock.now()
        )

        assert not finished.won
        assert await row_of(stores, run_id, "fetch") == claimed

    async def test_a_finish_of_an_earlier_attempt_writes_nothing(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        clock.advance(LEASE)
        again = await stores.steps.claim(
            run_id, FETCH, job_id=JOB, now=clock.now(), lease=LEASE
        )

        finished = await stores.steps.finish(
            run_id, FETCH, DONE, job_id=JOB, attempt=1, now=clock.now()
        )

        assert not finished.won
        assert await row_of(stores, run_id, "fetch") == again.step

    async def test_a_redelivered_result_is_recorded_once(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        first = await stores.steps.finish(
            run_id, FETCH, DONE, job_id=JOB, attempt=1, now=clock.now()
        )
        recorded = await row_of(stores, run_id, "fetch")

        second = await stores.steps.finish(
            run_id,
            FETCH,
            Outcome(StepStatus.FAILED, error="late"),
            job_id=JOB,
            attempt=1,
            now=clock.now(),
        )

        assert (first.won, second.won) == (True, False)
        assert await row_of(stores, run_id, "fetch") == recorded

    async def test_one_of_64_concurrent_finishes_records_the_outcome(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)

        results = await asyncio.gather(
            *(
                stores.steps.finish(
                    run_id,
                    FETCH,
                    Outcome(StepStatus.SUCCEEDED, output=n),
                    job_id=JOB,
                    attempt=1,
                    now=clock.now(),
                )
                for n in range(CROWD)
            )
        )

        won = [result.won for result in results]
        assert won.count(True) == 1
        assert (await row_of(stores, run_id, "fetch")).output == won.index(True)

    async def test_a_queued_step_cannot_be_finished(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(stores, clock)

        finished = await stores.steps.finish(
            run_id, FETCH, DONE, job_id=JOB, attempt=0, now=clock.now()
        )

        assert not finished.won
        assert (await row_of(stores, run_id, "fetch")).status is StepStatus.QUEUED
