"""The contract of `LoopStore` for ForEach loops: items, counters, values kept apart.

Not collected on its own: a `Test...` class per store inherits it.
"""

import asyncio

import pytest

from service.adapters.clock import FrozenClock
from service.engine.model import Json, RunId, StepKey, StepStatus
from service.engine.records import LoopState, Outcome
from service.errors import UnknownReferenceError
from service.ports.stores import Stores
from tests.contract.builders import a_step
from tests.contract.step_contract import (
    CROWD,
    FETCH,
    JOB,
    LEASE,
    LOOP,
    a_loop,
    a_run_with,
    row_of,
)


def counters(state: LoopState | None) -> tuple[int, int, int, int]:
    assert state is not None
    return state.total, state.concurrency, state.finished, state.failed


async def advanced(
    stores: Stores, run_id: RunId, *, index: int, failed: bool
) -> LoopState:
    """Count iteration `index`: the loop's counters after the call."""
    row = await stores.loops.advance_loop(run_id, LOOP, index=index, failed=failed)
    assert row is not None
    assert row.loop is not None
    return row.loop


class LoopContract:
    async def test_a_started_loop_holds_its_items_and_counters(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_run_with(stores, clock, a_step("loop", type="ForEach"))
        items: list[Json] = [{"sku": "A-1"}, "two", 3, None]

        state = await stores.loops.start_loop(run_id, LOOP, items, concurrency=2)

        assert state == LoopState(total=4, concurrency=2, finished=0, failed=0)
        assert (await row_of(stores, run_id, "loop")).loop == state
        assert [
            await stores.loops.loop_item(run_id, LOOP, i) for i in range(4)
        ] == items

    async def test_starting_a_loop_again_keeps_the_first_items(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_loop(stores, clock, ["a", "b"])
        await stores.loops.advance_loop(run_id, LOOP, index=0, failed=False)

        state = await stores.loops.start_loop(
            run_id, LOOP, ["x", "y", "z"], concurrency=5
        )

        assert counters(state) == (2, 2, 1, 0)
        assert state.counted == {0}
        assert await stores.loops.loop_item(run_id, LOOP, 1) == "b"

    @pytest.mark.parametrize("index", [2, -1], ids=["past the end", "negative"])
    async def test_an_item_outside_the_loop_raises_index_error(
        self, stores: Stores, clock: FrozenClock, index: int
    ):
        run_id = await a_loop(stores, clock, ["a", "b"])

        with pytest.raises(IndexError):
            await stores.loops.loop_item(run_id, LOOP, index)

    async def test_a_loop_that_never_started_has_no_items_or_counters(
        self, stores: Stores, clock: FrozenClock
    ):
        # Reading an item of a step that has no loop is an unknown reference, as is
        # starting a loop on a step row that does not exist; counting finds no loop.
        run_id = await a_run_with(stores, clock, a_step("loop", type="ForEach"))

        with pytest.raises(UnknownReferenceError):
            await stores.loops.loop_item(run_id, LOOP, 0)
        assert (
            await stores.loops.advance_loop(run_id, LOOP, index=0, failed=False) is None
        )
        with pytest.raises(UnknownReferenceError):
            await stores.loops.start_loop(run_id, StepKey("nope"), [], concurrency=1)

    async def test_advance_loop_counts_finished_and_failed_iterations(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_loop(stores, clock, ["a", "b", "c"])

        states = [
            await advanced(stores, run_id, index=index, failed=failed)
            for index, failed in enumerate((False, True, False))
        ]

        assert [(s.finished, s.failed, s.is_done) for s in states] == [
            (1, 0, False),
            (2, 1, False),
            (3, 1, True),
        ]
        assert (await row_of(stores, run_id, "loop")).loop == states[-1]

    async def test_64_concurrent_advances_each_see_a_distinct_count(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_loop(stores, clock, [str(n) for n in range(CROWD)])

        states = await asyncio.gather(
            *(
                advanced(stores, run_id, index=n, failed=n % 2 == 0)
                for n in range(CROWD)
            )
        )

        assert sorted(s.finished for s in states) == list(range(1, CROWD + 1))
        final = (await row_of(stores, run_id, "loop")).loop
        assert counters(final) == (CROWD, 2, CROWD, CROWD // 2)
        assert final is not None
        assert final.counted == set(range(CROWD))

    async def test_an_iteration_counted_again_changes_nothing(
        self, stores: Stores, clock: FrozenClock
    ):
        # A continuation cut short by a crash counts its iteration again on redelivery.
        run_id = await a_loop(stores, clock, [str(n) for n in range(200)])
        await advanced(stores, run_id, index=130, failed=True)

        again = await advanced(stores, run_id, index=130, failed=True)
        other = await advanced(stores, run_id, index=7, failed=False)

        assert counters(again) == (200, 2, 1, 1)
        assert counters(other) == (200, 2, 2, 1)
        assert other.counted == {7, 130}

    async def test_64_concurrent_counts_of_one_iteration_count_it_once(
        self, stores: Stores, clock: FrozenClock
    ):
        run_id = await a_loop(stores, clock, [str(n) for n in range(CROWD)])

        states = await asyncio.gather(
            *(advanced(stores, run_id, index=5, failed=True) for _ in range(CROWD))
        )

        assert {(s.finished, s.failed) for s in states} == {(1, 1)}

    async def test_step_values_are_stored_by_value(
        self, stores: Stores, clock: FrozenClock
    ):
        headers: dict[str, Json] = {"accept": "json"}
        lines: list[Json] = [1, 2]
        item: dict[str, Json] = {"sku": "A-1"}
        run_id = await a_run_with(
            stores,
            clock,
            a_step(inputs={"headers": headers}),
            a_step("loop", type="ForEach"),
        )
        await stores.loops.start_loop(run_id, LOOP, [item], concurrency=1)
        await stores.steps.claim(
            run_id, FETCH, job_id=JOB, now=clock.now(), lease=LEASE
        )
        await stores.steps.finish(
            run_id,
            FETCH,
            Outcome(StepStatus.SUCCEEDED, output={"lines": lines}),
            job_id=JOB,
            attempt=1,
            now=clock.now(),
        )

        headers["accept"] = "xml"
        lines.append(3)
        item["sku"] = "B-2"
        handed = await stores.loops.loop_item(run_id, LOOP, 0)
        assert isinstance(handed, dict)
        handed["sku"] = "C-3"

        step = await row_of(stores, run_id, "fetch")
        assert step.inputs == {"headers": {"accept": "json"}}
        assert step.output == {"lines": [1, 2]}
        assert await stores.loops.loop_item(run_id, LOOP, 0) == {"sku": "A-1"}
