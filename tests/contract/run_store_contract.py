"""The contract of `RunStore` for runs: creation, idempotency, completion, sweeps.

Its step rows and loops are in `step_contract.py`, `step_state_contract.py` and
`loop_contract.py`; `RunStoreContract` holds them all. Not collected on its own: a
`Test...` class per store inherits it and gives the `stores` fixture (an object
satisfying `service.ports.Stores`); `clock` comes from `conftest.py`.
"""

import asyncio
from datetime import timedelta

import pytest

from service.adapters.clock import FrozenClock
from service.engine.model import (
    FlowId,
    JobId,
    Json,
    RunStatus,
    StepKey,
    StepStatus,
    TriggerKey,
)
from service.engine.records import ParentRef
from service.ports.stores import Stores
from tests.contract.builders import a_run, a_run_id, a_step
from tests.contract.step_contract import LEASE, a_run_with

CROWD = 64
"""Coroutines racing for one guarded write in the concurrency checks."""


class RunStoreContract:
    async def test_a_created_run_can_be_read_back(self, stores: Stores):
        run = a_run(idempotency_key="order-42", deadline_at=None)

        stored, created = await stores.runs.create_run(run)
        found = await stores.runs.get_run(run.run_id)

        assert created
        assert stored == run
        assert found == run

    async def test_an_unknown_run_reads_as_none(self, stores: Stores):
        found = await stores.runs.get_run(a_run_id())

        assert found is None

    async def test_a_second_run_with_the_same_idempotency_key_returns_the_first(
        self, stores: Stores
    ):
        first, _ = await stores.runs.create_run(a_run(idempotency_key="order-42"))

        existing, created = await stores.runs.create_run(
            a_run(idempotency_key="order-42")
        )

        assert not created
        assert existing == first

    async def test_an_idempotency_key_is_scoped_to_its_flow_and_trigger(
        self, stores: Stores
    ):
        await stores.runs.create_run(a_run(idempotency_key="order-42"))
        other_trigger = a_run(idempotency_key="order-42", trigger_key=TriggerKey("api"))
        other_flow = a_run(idempotency_key="order-42", flow_id=FlowId("refunds"))

        results = [
            await stores.runs.create_run(other_trigger),
            await stores.runs.create_run(other_flow),
        ]

        assert [created for _, created in results] == [True, True]

    async def test_runs_without_an_idempotency_key_never_clash(self, stores: Stores):
        results = [await stores.runs.create_run(a_run()) for _ in range(3)]

        assert [created for _, created in results] == [True, True, True]

    async def test_a_run_id_used_twice_returns_the_existing_run(self, stores: Stores):
        first, _ = await stores.runs.create_run(a_run(body="first"))

        existing, created = await stores.runs.create_run(
            a_run(run_id=first.run_id, body="second")
        )

        assert not created
        assert existing == first

    async def test_concurrent_triggers_with_one_idempotency_key_create_one_run(
        self, stores: Stores
    ):
        runs = [a_run(idempotency_key="order-42") for _ in range(CROWD)]

        results = await asyncio.gather(*(stores.runs.create_run(r) for r in runs))

        assert sum(created for _, created in results) == 1
        assert len({run.run_id for run, _ in results}) == 1

    async def test_a_run_body_is_stored_by_value(self, stores: Stores):
        lines: list[Json] = [{"sku": "A-1"}]
        run, _ = await stores.runs.create_run(a_run(body={"order": 42, "lines": lines}))

        lines.append({"sku": "B-2"})
        found = await stores.runs.get_run(run.run_id)

        assert found is not None
        assert found.body == {"order": 42, "lines": [{"sku": "A-1"}]}

    async def test_a_start_is_rechecked_until_the_reconciler_says_it_checked_it(
        self, stores: Stores, clock: FrozenClock
    ):
        due = clock.now() + timedelta(seconds=30)
        run, _ = await stores.runs.create_run(
            a_run(released=(StepKey("a"), StepKey("b"))), recheck_at=due
        )
        unchecked, _ = await stores.runs.create_run(a_run())

        early = await stores.runs.runs_to_recheck(before=due, limit=10)
        found = await stores.runs.runs_to_recheck(
            before=due + timedelta(seconds=1), limit=10
        )
        await stores.runs.rechecked([run.run_id])
        after = await stores.runs.runs_to_recheck(
            before=due + timedelta(seconds=1), limit=10
        )

        assert early == []
        assert [r.run_id for r in found] == [run.run_id]
        assert found[0].released == ("a", "b")
        assert after == []
        assert unchecked.run_id not in {r.run_id for r in found}

    async def test_a_run_completes_once(self, stores: Stores, clock: FrozenClock):
        run, _ = await stores.runs.create_run(a_run())

        first = await stores.runs.complete_run(
            run.run_id, RunStatus.SUCCEEDED, now=clock.now()
        )
        clock.advance(timedelta(seconds=1))
        second = await stores.runs.complete_run(
            run.run_id, RunStatus.FAILED, now=clock.now()
        )

        found = await stores.runs.get_run(run.run_id)
        assert (first, second) == (RunStatus.SUCCEEDED, None)
        assert found is not None
        assert found.status is RunStatus.SUCCEEDED
        assert found.completed_at == clock.now() - timedelta(seconds=1)

    async def test_one_of_64_concurrent_completions_wins(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(a_run())

        results = await asyncio.gather(
            *(
                stores.runs.complete_run(
                    run.run_id, RunStatus.SUCCEEDED, now=clock.now()
                )
                for _ in range(CROWD)
            )
        )

        assert [r for r in results if r is not None] == [RunStatus.SUCCEEDED]

    @pytest.mark.parametrize(
        ("stop", "expected"),
        [("cancel", RunStatus.CANCELLED), ("time out", RunStatus.TIMED_OUT)],
        ids=["cancelled", "timed out"],
    )
    async def test_a_stopped_run_completes_with_its_stop_whatever_it_is_told(
        self, stores: Stores, clock: FrozenClock, stop: str, expected: RunStatus
    ):
        # A stop that lands while the last step runs: the completion still honours it.
        run, _ = await stores.runs.create_run(a_run())
        if stop == "cancel":
            await stores.runs.request_cancel(run.run_id, "no", now=clock.now())
        else:
            await stores.runs.mark_timed_out(run.run_id, now=clock.now())

        completed = await stores.runs.complete_run(
            run.run_id, RunStatus.SUCCEEDED, now=clock.now()
        )

        found = await stores.runs.get_run(run.run_id)
        assert completed is expected
        assert found is not None
        assert found.status is expected

    async def test_completing_an_unknown_run_returns_false(
        self, stores: Stores, clock: FrozenClock
    ):
        completed = await stores.runs.complete_run(
            a_run_id(), RunStatus.SUCCEEDED, now=clock.now()
        )

        assert completed is None

    async def test_a_finished_run_reopens_once(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(a_run())
        await stores.runs.complete_run(run.run_id, RunStatus.FAILED, now=clock.now())

        first = await stores.runs.reopen_run(run.run_id)
        second = await stores.runs.reopen_run(run.run_id)

        found = await stores.runs.get_run(run.run_id)
        assert (first, second) == (True, False)
        assert found is not None
        assert (found.status, found.completed_at) == (RunStatus.RUNNING, None)

    async def test_a_reopened_run_can_complete_again(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(a_run())
        await stores.runs.complete_run(run.run_id, RunStatus.FAILED, now=clock.now())
        await stores.runs.reopen_run(run.run_id)

        completed = await stores.runs.complete_run(
            run.run_id, RunStatus.SUCCEEDED, now=clock.now()
        )

        assert completed

    async def test_unknown_runs_are_not_reopened(self, stores: Stores):
        reopened = await stores.runs.reopen_run(a_run_id())

        assert not reopened

    async def test_the_first_cancel_request_wins(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(a_run())

        first = await stores.runs.request_cancel(
            run.run_id, "operator", now=clock.now()
        )
        second = await stores.runs.request_cancel(
            run.run_id, "another operator", now=clock.now()
        )

        found = await stores.runs.get_run(run.run_id)
        assert (first, second) == (True, False)
        assert found is not None
        assert (found.cancel_requested, found.cancel_reason) == (True, "operator")
        assert found.stop_status is RunStatus.CANCELLED

    async def test_cancelling_an_unknown_run_returns_false(
        self, stores: Stores, clock: FrozenClock
    ):
        cancelled = await stores.runs.request_cancel(
            a_run_id(), "operator", now=clock.now()
        )

        assert not cancelled

    async def test_a_run_times_out_once(self, stores: Stores, clock: FrozenClock):
        run, _ = await stores.runs.create_run(a_run())

        first = await stores.runs.mark_timed_out(run.run_id, now=clock.now())
        clock.advance(timedelta(seconds=1))
        second = await stores.runs.mark_timed_out(run.run_id, now=clock.now())

        found = await stores.runs.get_run(run.run_id)
        assert (first, second) == (True, False)
        assert found is not None
        assert found.timed_out_at == clock.now() - timedelta(seconds=1)
        assert (found.cancel_requested, found.cancel_reason) == (
            True,
            "Run timed out.",
        )
        assert found.stop_status is RunStatus.TIMED_OUT

    async def test_a_timeout_keeps_the_reason_of_an_earlier_cancel(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(a_run())
        await stores.runs.request_cancel(run.run_id, "operator", now=clock.now())

        timed_out = await stores.runs.mark_timed_out(run.run_id, now=clock.now())

        found = await stores.runs.get_run(run.run_id)
        assert timed_out
        assert found is not None
        assert found.cancel_reason == "operator"

    async def test_a_cancel_after_a_timeout_is_not_the_first_request(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(a_run())
        await stores.runs.mark_timed_out(run.run_id, now=clock.now())

        cancelled = await stores.runs.request_cancel(
            run.run_id, "operator", now=clock.now()
        )

        assert not cancelled

    async def test_timing_out_an_unknown_run_returns_false(
        self, stores: Stores, clock: FrozenClock
    ):
        timed_out = await stores.runs.mark_timed_out(a_run_id(), now=clock.now())

        assert not timed_out

    async def test_runs_to_recheck_returns_at_most_limit_runs_oldest_first(
        self, stores: Stores, clock: FrozenClock
    ):
        start = clock.now()
        runs = [
            (
                await stores.runs.create_run(
                    a_run(), recheck_at=start - timedelta(seconds=s)
                )
            )[0]
            for s in (1, 3, 2)
        ]

        found = await stores.runs.runs_to_recheck(before=start, limit=2)

        assert [run.run_id for run in found] == [runs[1].run_id, runs[2].run_id]

    async def test_statuses_answers_for_the_runs_that_exist(
        self, stores: Stores, clock: FrozenClock
    ):
        running, _ = await stores.runs.create_run(a_run())
        done, _ = await stores.runs.create_run(a_run())
        await stores.runs.complete_run(done.run_id, RunStatus.FAILED, now=clock.now())

        found = await stores.runs.statuses([running.run_id, done.run_id, a_run_id()])

        assert found == {
            running.run_id: RunStatus.RUNNING,
            done.run_id: RunStatus.FAILED,
        }

    async def test_stale_queued_lists_queued_rows_dispatched_before_the_cutoff(
        self, stores: Stores, clock: FrozenClock
    ):
        start = clock.now()
        run_id = await a_run_with(stores, clock, a_step("a"), a_step("b"))
        clock.advance(timedelta(seconds=10))
        await stores.steps.add_steps(run_id, [a_step("late")], at=clock.now())
        await stores.steps.add_steps(
            run_id, [a_step("skipped", status=StepStatus.SKIPPED)], at=start
        )
        await stores.steps.claim(
            run_id, a_step("b").key, job_id=JobId("j"), now=clock.now(), lease=LEASE
        )

        found = await stores.steps.stale_queued(before=clock.now(), limit=10)

        assert [(row.run_id, row.key) for row in found] == [(run_id, "a")]

    async def test_stale_queued_returns_at_most_limit_rows_oldest_first(
        self, stores: Stores, clock: FrozenClock
    ):
        start = clock.now()
        run_id = await a_run_with(stores, clock, a_step("x"))
        for seconds, key in ((3, "a"), (1, "b"), (2, "c")):
            at = start - timedelta(seconds=seconds)
            await stores.steps.add_steps(run_id, [a_step(key)], at=at)

        found = await stores.steps.stale_queued(before=start, limit=2)

        assert [row.key for row in found] == ["a", "c"]

    async def test_expired_leases_lists_running_rows_whose_lease_ended(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(stores, clock, a_step("short"), a_step("long"))
        now = clock.now()
        await stores.steps.claim(
            run_id, a_step("short").key, job_id=JobId("j1"), now=now, lease=LEASE
        )
        await stores.steps.claim(
            run_id, a_step("long").key, job_id=JobId("j2"), now=now, lease=LEASE * 3
        )

        at_the_end = await stores.steps.expired_leases(before=now + LEASE, limit=10)
        after_it = await stores.steps.expired_leases(before=now + LEASE * 2, limit=10)

        assert at_the_end == []
        assert [row.key for row in after_it] == ["short"]

    async def test_expired_leases_returns_at_most_limit_rows_oldest_first(
        self, stores: Stores, clock: FrozenClock
    ):
        steps = [a_step(key) for key in ("a", "b", "c")]
        run_id = await a_run_with(stores, clock, *steps)
        for seconds, step in zip((3, 1, 2), steps, strict=True):
            await stores.steps.claim(
                run_id,
                step.key,
                job_id=JobId(f"job-{step.key}"),
                now=clock.now(),
                lease=timedelta(seconds=seconds),
            )

        found = await stores.steps.expired_leases(
            before=clock.now() + timedelta(minutes=1), limit=2
        )

        assert [row.key for row in found] == ["b", "c"]

    async def test_a_queued_run_is_admitted_once_and_records_its_place(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(
            a_run(status=RunStatus.QUEUED, concurrency_key="c-1")
        )
        due = clock.now() + timedelta(seconds=30)

        admitted = await stores.runs.admit_run(
            run.run_id, ticket=3, admitted=2, now=clock.now(), recheck_at=due
        )
        again = await stores.runs.admit_run(
            run.run_id, ticket=3, admitted=2, now=clock.now(), recheck_at=due
        )
        rechecks = await stores.runs.runs_to_recheck(
            before=due + timedelta(seconds=1), limit=10
        )

        assert admitted is not None
        assert (admitted.status, admitted.ticket, admitted.admitted) == (
            RunStatus.RUNNING,
            3,
            2,
        )
        assert admitted.concurrency_key == "c-1"
        assert again is None
        assert [r.run_id for r in rechecks] == [run.run_id]

    async def test_a_cancelled_queued_run_is_never_admitted(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(
            a_run(status=RunStatus.QUEUED, concurrency_key="c-1")
        )
        await stores.runs.request_cancel(run.run_id, "no", now=clock.now())

        admitted = await stores.runs.admit_run(
            run.run_id, ticket=1, admitted=1, now=clock.now(), recheck_at=clock.now()
        )
        completed = await stores.runs.complete_run(
            run.run_id, RunStatus.SKIPPED, now=clock.now()
        )

        assert admitted is None
        assert completed is RunStatus.CANCELLED  # a Queued run completes too

    async def test_a_completion_keeps_outputs_and_asks_for_a_recheck(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(a_run())
        due = clock.now() + timedelta(seconds=30)

        await stores.runs.complete_run(
            run.run_id,
            RunStatus.SUCCEEDED,
            now=clock.now(),
            outputs={"$total": 12, "big": 2**70},
            recheck_at=due,
        )
        found = await stores.runs.get_run(run.run_id)
        rechecks = await stores.runs.runs_to_recheck(
            before=due + timedelta(seconds=1), limit=10
        )

        assert found is not None
        assert found.outputs == {"$total": 12, "big": 2**70}
        assert [r.run_id for r in rechecks] == [run.run_id]

    async def test_a_child_run_keeps_its_lineage(self, stores: Stores):
        parent, _ = await stores.runs.create_run(a_run())
        child = a_run(parent=ParentRef(parent.run_id, StepKey("bill")), depth=1)

        await stores.runs.create_run(child)
        found = await stores.runs.get_run(child.run_id)

        assert found == child
        assert found is not None
        assert found.facts.parent == ParentRef(parent.run_id, StepKey("bill"))

    async def test_a_queued_run_is_not_reopened(
        self, stores: Stores, clock: FrozenClock
    ):
        run, _ = await stores.runs.create_run(
            a_run(status=RunStatus.QUEUED, concurrency_key="c-1")
        )

        reopened = await stores.runs.reopen_run(run.run_id)

        assert not reopened
