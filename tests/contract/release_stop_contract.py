"""The contract of `StepStore` for released steps, results' rechecks and a run's stop.

A top-level step released by a result has no row until its claim creates it; a stop
marks the rows that are not final, and a marked row is never claimed again, takes a
result without its releases, and tells the heartbeat. Not collected on its own.
"""

import asyncio
from datetime import timedelta

from service.adapters.clock import FrozenClock
from service.engine.model import JobId, RunStatus, StepKey, StepStatus
from service.engine.records import NewStep, Outcome
from service.ports.stores import Stores
from tests.contract.builders import a_run, a_step
from tests.contract.step_contract import (
    CROWD,
    DONE,
    FETCH,
    JOB,
    LEASE,
    LOOP,
    a_claimed_step,
    a_loop,
    a_run_with,
    row_of,
)

RELEASED = NewStep(StepKey("ship"), "Ship", StepStatus.QUEUED, {"to": "Ada"})


class ReleaseStopContract:
    async def test_a_released_step_gets_its_row_from_its_claim(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(a_run())

        claim = await stores.steps.claim(
            run.run_id,
            RELEASED.key,
            job_id=JOB,
            now=clock.now(),
            lease=LEASE,
            new=RELEASED,
        )

        assert claim.won
        assert claim.step == await row_of(stores, run.run_id, "ship")
        assert claim.step is not None
        assert (claim.step.status, claim.step.attempt, claim.step.type) == (
            StepStatus.RUNNING,
            1,
            "Ship",
        )
        assert claim.step.inputs == {"to": "Ada"}
        assert claim.step.job_id == JOB

    async def test_a_claim_that_would_create_a_row_loses_to_the_row_there(
        self, stores: Stores, clock: FrozenClock
    ):
        skipped = NewStep(RELEASED.key, "Ship", StepStatus.SKIPPED, error="Run is X.")
        run_id = await a_run_with(stores, clock, skipped)

        claim = await stores.steps.claim(
            run_id,
            RELEASED.key,
            job_id=JOB,
            now=clock.now(),
            lease=LEASE,
            new=RELEASED,
        )

        assert not claim.won
        assert claim.step is not None
        assert claim.step.status is StepStatus.SKIPPED

    async def test_one_of_64_concurrent_claims_of_a_released_step_creates_it(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(a_run())

        claims = await asyncio.gather(
            *(
                stores.steps.claim(
                    run.run_id,
                    RELEASED.key,
                    job_id=JobId(f"job-{n}"),
                    now=clock.now(),
                    lease=LEASE,
                    new=RELEASED,
                )
                for n in range(CROWD)
            )
        )

        assert sum(1 for claim in claims if claim.won) == 1
        assert (await row_of(stores, run.run_id, "ship")).attempt == 1

    async def test_without_a_row_to_create_a_claim_finds_nothing(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(a_run())

        claim = await stores.steps.claim(
            run.run_id, RELEASED.key, job_id=JOB, now=clock.now(), lease=LEASE
        )

        assert (claim.step, claim.won) == (None, False)

    async def test_a_result_keeps_its_releases_and_is_rechecked_once(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        due = clock.now() + timedelta(seconds=30)

        recorded = await stores.steps.finish(
            run_id,
            FETCH,
            DONE,
            job_id=JOB,
            attempt=1,
            now=clock.now(),
            released=[StepKey("ship"), StepKey("bill")],
            recheck_at=due,
        )
        early = await stores.steps.due_rechecks(before=due, limit=10)
        found = await stores.steps.due_rechecks(
            before=due + timedelta(seconds=1), limit=10
        )
        await stores.steps.rechecked([(run_id, FETCH)])
        after = await stores.steps.due_rechecks(
            before=due + timedelta(seconds=1), limit=10
        )

        assert (recorded.won, recorded.stop) == (True, None)
        assert (await row_of(stores, run_id, "fetch")).released == ("ship", "bill")
        assert early == []
        assert [(r.run_id, r.key) for r in found] == [(run_id, FETCH)]
        assert after == []

    async def test_a_stopped_row_is_never_claimed(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(stores, clock)

        await stores.steps.mark_stopped(run_id, RunStatus.CANCELLED)
        claim = await stores.steps.claim(
            run_id, FETCH, job_id=JOB, now=clock.now(), lease=LEASE
        )

        assert not claim.won
        assert claim.step is not None
        assert (claim.step.status, claim.step.stop) == (
            StepStatus.QUEUED,
            RunStatus.CANCELLED,
        )

    async def test_a_result_on_a_stopped_row_is_recorded_without_its_releases(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        await stores.steps.mark_stopped(run_id, RunStatus.TIMED_OUT)

        recorded = await stores.steps.finish(
            run_id,
            FETCH,
            DONE,
            job_id=JOB,
            attempt=1,
            now=clock.now(),
            released=[StepKey("ship")],
        )

        row = await row_of(stores, run_id, "fetch")
        assert (recorded.won, recorded.stop) == (True, RunStatus.TIMED_OUT)
        assert (row.status, row.output, row.released) == (
            StepStatus.SUCCEEDED,
            DONE.output,
            (),
        )

    async def test_the_heartbeat_hears_of_the_stop(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        before = await stores.steps.extend_lease(
            run_id, FETCH, job_id=JOB, until=clock.now() + LEASE
        )
        await stores.steps.mark_stopped(run_id, RunStatus.CANCELLED)

        after = await stores.steps.extend_lease(
            run_id, FETCH, job_id=JOB, until=clock.now() + LEASE
        )

        assert (before.held, before.stop) == (True, None)
        assert (after.held, after.stop) == (True, RunStatus.CANCELLED)

    async def test_a_stopped_row_is_not_requeued(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id, _ = await a_claimed_step(stores, clock)
        parked = Outcome(StepStatus.PENDING)
        await stores.steps.finish(
            run_id, FETCH, parked, job_id=JOB, attempt=1, now=clock.now()
        )
        await stores.steps.mark_stopped(run_id, RunStatus.CANCELLED)

        moved = await stores.steps.requeue(
            run_id, FETCH, expected=frozenset({StepStatus.PENDING}), now=clock.now()
        )

        assert moved is None

    async def test_a_stop_marks_loops_first_and_never_final_rows(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(
            stores,
            clock,
            a_step("loop", type="ForEach"),
            a_step("fetch"),
            a_step("done", status=StepStatus.SKIPPED),
        )

        await stores.steps.mark_stopped(run_id, RunStatus.CANCELLED, loops_only=True)
        loops_only = {r.key: r.stop for r in await stores.steps.all_steps(run_id)}
        await stores.steps.mark_stopped(run_id, RunStatus.CANCELLED)
        every = {r.key: r.stop for r in await stores.steps.all_steps(run_id)}

        cancelled = RunStatus.CANCELLED
        assert loops_only == {"loop": cancelled, "fetch": None, "done": None}
        assert every == {"loop": cancelled, "fetch": cancelled, "done": None}

    async def test_a_stopped_loop_counts_no_more(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_loop(stores, clock, ["a", "b", "c"])
        await stores.loops.advance_loop(run_id, LOOP, index=0, failed=False)
        await stores.steps.mark_stopped(run_id, RunStatus.CANCELLED, loops_only=True)

        row = await stores.loops.advance_loop(run_id, LOOP, index=1, failed=False)

        assert row is not None
        assert row.stop is RunStatus.CANCELLED
        assert row.loop is not None
        assert (row.loop.finished, row.loop.counted) == (1, {0})

    async def test_all_steps_holds_every_row_of_the_run(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(
            stores, clock, a_step("loop"), a_step("loop.0"), a_step("loop.0.x")
        )
        await a_run_with(stores, clock, a_step("other"))

        rows = await stores.steps.all_steps(run_id)

        assert sorted(r.key for r in rows) == ["loop", "loop.0", "loop.0.x"]

    async def test_results_that_land_together_each_get_their_own_answer(
        self, stores: Stores, clock: FrozenClock
    ):
        # Written at once (group commit on MongoDB): a plain one, one on a row the
        # stop marked, one whose claim was lost.
        stopped, lost, plain = StepKey("a"), StepKey("b"), StepKey("c")
        run_id = await a_run_with(stores, clock, a_step("a"), a_step("b"))
        for key in (stopped, lost):
            await stores.steps.claim(
                run_id, key, job_id=JOB, now=clock.now(), lease=LEASE
            )
        await stores.steps.settle(
            run_id,
            lost,
            Outcome(StepStatus.SKIPPED),
            expected=frozenset({StepStatus.RUNNING}),
            now=clock.now(),
        )
        await stores.steps.mark_stopped(run_id, RunStatus.CANCELLED)
        await stores.steps.add_steps(run_id, [a_step("c")], at=clock.now())
        await stores.steps.claim(
            run_id, plain, job_id=JOB, now=clock.now(), lease=LEASE
        )

        answers = await asyncio.gather(
            *(
                stores.steps.finish(
                    run_id,
                    key,
                    DONE,
                    job_id=JOB,
                    attempt=1,
                    now=clock.now(),
                    released=[StepKey("next")],
                )
                for key in (stopped, lost, plain)
            )
        )

        assert [(a.won, a.stop) for a in answers] == [
            (True, RunStatus.CANCELLED),
            (False, None),
            (True, None),
        ]
        rows = await stores.steps.steps(run_id, [stopped, plain])
        assert (rows[stopped].released, rows[plain].released) == ((), ("next",))
        assert rows[stopped].status is rows[plain].status is StepStatus.SUCCEEDED
