"""The MongoDB stores under contention and at size, on a real mongod.

Each race is 64 coroutines on one event loop sharing one client (so up to 64 requests
in flight on the server at once) against one guarded write; the size checks run a
10,000-item ForEach and ask the server for the biggest document it holds.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo.client import MongoStores
from service.adapters.mongo.codec import LOOP_ITEMS, row_id
from service.adapters.mongo.indexes import INDEXES, ensure_indexes
from service.engine.model import (
    FlowId,
    JobId,
    Json,
    RunId,
    RunStatus,
    StepKey,
    StepStatus,
    TriggerKey,
)
from service.engine.records import (
    DeliveryStatus,
    NewEvent,
    NewStep,
    Outcome,
    RunRecord,
    Timer,
    TimerKind,
)

CROWD = 64
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
LEASE = timedelta(seconds=30)
ITEMS = 10_000
Db = AsyncDatabase[dict[str, Any]]


@pytest.fixture
async def stores(mongo_db: Db) -> MongoStores:
    await ensure_indexes(mongo_db)
    return MongoStores(mongo_db)


def a_run(n: int = 0, **fields: Any) -> RunRecord:
    return RunRecord(
        run_id=RunId(f"run-{n}"),
        flow_id=FlowId("orders"),
        flow_name="Orders",
        trigger_key=TriggerKey("manual"),
        job_id=JobId(f"msg-{n}"),
        started_at=NOW,
        body={"n": n},
        **fields,
    )


async def a_run_with(stores: MongoStores, *keys: str) -> RunId:
    run, _ = await stores.runs.create_run(a_run())
    steps = [NewStep(StepKey(k), "Http", StepStatus.QUEUED) for k in keys]
    await stores.steps.add_steps(run.run_id, steps, at=NOW)
    return run.run_id


async def test_one_of_64_claims_wins(stores: MongoStores):
    run_id = await a_run_with(stores, "fetch")

    claims = await asyncio.gather(
        *(
            stores.steps.claim(
                run_id, StepKey("fetch"), job_id=JobId(f"j{n}"), now=NOW, lease=LEASE
            )
            for n in range(CROWD)
        )
    )

    winners = [claim for claim in claims if claim.won]
    assert len(winners) == 1
    assert winners[0].step is not None
    assert winners[0].step.attempt == 1
    assert all(claim.step is not None for claim in claims)


async def test_64_triggers_with_one_idempotency_key_make_one_run(stores: MongoStores):
    runs = [a_run(n, idempotency_key="order-42") for n in range(CROWD)]

    results = await asyncio.gather(*(stores.runs.create_run(run) for run in runs))

    assert sum(created for _, created in results) == 1
    assert len({run.run_id for run, _ in results}) == 1
    assert await stores.queries.find_runs(text="order-42") == (
        [results[0][0]],
        1,
    )


async def test_a_fan_in_step_is_dispatched_once_when_its_predecessors_finish_together(
    stores: MongoStores,
):
    run_id = await a_run_with(stores)
    join = [NewStep(StepKey("join"), "Http", StepStatus.QUEUED)]

    inserted = await asyncio.gather(
        *(stores.steps.add_steps(run_id, join, at=NOW) for _ in range(CROWD))
    )

    assert sorted(inserted) == [[]] * (CROWD - 1) + [["join"]]


async def test_a_run_completes_once_with_one_completed_event(stores: MongoStores):
    run_id = await a_run_with(stores)

    async def complete(n: int) -> bool:
        status = RunStatus.SUCCEEDED if n % 2 else RunStatus.FAILED
        if not await stores.runs.complete_run(run_id, status, now=NOW):
            return False
        await stores.events.append(run_id, [NewEvent("run.completed", NOW)])
        return True

    results = await asyncio.gather(*(complete(n) for n in range(CROWD)))

    events = await stores.events.events(run_id)
    assert results.count(True) == 1
    assert [event.type for event in events] == ["run.completed"]


async def test_one_of_64_signals_is_delivered(stores: MongoStores):
    run_id = await a_run_with(stores)
    await stores.signals.register(
        run_id, StepKey("approve"), "Approved", expires_at=None, now=NOW
    )

    deliveries = await asyncio.gather(
        *(stores.signals.deliver(run_id, "approved", n, now=NOW) for n in range(CROWD))
    )

    statuses = [delivery.status for delivery in deliveries]
    assert statuses.count(DeliveryStatus.DELIVERED) == 1
    assert statuses.count(DeliveryStatus.ALREADY_DELIVERED) == CROWD - 1


async def test_a_timer_fires_for_one_of_64_claimers(stores: MongoStores):
    await stores.timers.set(Timer("t1", TimerKind.DEADLINE, NOW, RunId("run-0")))

    batches = await asyncio.gather(
        *(
            stores.timers.claim_due(NOW, owner=f"w{n}", lease=LEASE, limit=10)
            for n in range(CROWD)
        )
    )

    assert sorted(len(batch) for batch in batches) == [0] * (CROWD - 1) + [1]


async def test_64_finished_iterations_each_see_a_distinct_count(stores: MongoStores):
    run_id = await a_run_with(stores, "loop")
    loop = StepKey("loop")
    await stores.loops.start_loop(run_id, loop, list(range(CROWD)), concurrency=8)

    rows = await asyncio.gather(
        *(
            stores.loops.advance_loop(run_id, loop, index=n, failed=n < 5)
            for n in range(CROWD)
        )
    )
    states = [row.loop for row in rows if row is not None and row.loop is not None]

    assert len(states) == CROWD
    assert sorted(state.finished for state in states) == list(range(1, CROWD + 1))
    assert sum(state.is_done for state in states) == 1
    assert states[-1].total == CROWD


async def test_one_of_64_finishes_records_the_result(stores: MongoStores):
    run_id = await a_run_with(stores, "fetch")
    fetch, job = StepKey("fetch"), JobId("j")
    await stores.steps.claim(run_id, fetch, job_id=job, now=NOW, lease=LEASE)

    results = await asyncio.gather(
        *(
            stores.steps.finish(
                run_id,
                fetch,
                Outcome(StepStatus.SUCCEEDED, output=n),
                job_id=job,
                attempt=1,
                now=NOW,
            )
            for n in range(CROWD)
        )
    )

    step = (await stores.steps.steps(run_id, [fetch]))[fetch]
    won = [result.won for result in results]
    assert won.count(True) == 1
    assert step.output == won.index(True)
    assert step.attempts[-1].status is StepStatus.SUCCEEDED


async def biggest_document(db: Db) -> int:
    """The size in bytes of the biggest document in any collection of `db`."""
    biggest = 0
    for name in await db.list_collection_names():
        cursor = await db[name].aggregate(
            [{"$group": {"_id": None, "size": {"$max": {"$bsonSize": "$$ROOT"}}}}]
        )
        biggest = max([biggest, *[doc["size"] async for doc in cursor]])
    return biggest


async def a_big_loop(stores: MongoStores) -> tuple[RunId, StepKey, list[Json]]:
    """A run whose ForEach went over 10,000 items, each row and event recorded."""
    run_id = await a_run_with(stores, "loop")
    loop = StepKey("loop")
    items: list[Json] = [
        {"sku": f"SKU-{n:05}", "note": "x" * 200} for n in range(ITEMS)
    ]
    await stores.loops.start_loop(run_id, loop, items, concurrency=50)
    rows = [
        NewStep(StepKey(f"loop.{n}"), "__iteration", StepStatus.PENDING)
        for n in range(ITEMS)
    ]
    await stores.steps.add_steps(run_id, rows, at=NOW)
    events = [NewEvent("step.completed", NOW, f"loop.{n}") for n in range(ITEMS)]
    await stores.events.append(run_id, events)
    for start in range(0, ITEMS, 500):
        await asyncio.gather(
            *(
                stores.loops.advance_loop(run_id, loop, index=n, failed=False)
                for n in range(start, start + 500)
            )
        )
    return run_id, loop, items


async def test_a_10000_item_loop_keeps_every_document_small(
    stores: MongoStores, mongo_db: Db
):
    run_id, loop, items = await a_big_loop(stores)

    state = (await stores.steps.steps(run_id, [loop]))[loop].loop
    biggest = await biggest_document(mongo_db)

    assert state is not None
    assert (state.total, state.finished, state.is_done) == (ITEMS, ITEMS, True)
    assert biggest < 1024 * 1024
    assert [
        await stores.loops.loop_item(run_id, loop, n) for n in (0, 4321, ITEMS - 1)
    ] == [
        items[0],
        items[4321],
        items[-1],
    ]
    assert len(await stores.events.events(run_id, skip=ITEMS - 3)) == 3


@pytest.mark.parametrize(
    "index", [0, ITEMS // 2, ITEMS - 1], ids=["first", "middle", "last"]
)
async def test_reading_a_loop_item_costs_the_same_anywhere_in_a_10000_item_loop(
    stores: MongoStores, mongo_db: Db, index: int
):
    run_id = await a_run_with(stores, "loop")
    loop = StepKey("loop")
    await stores.loops.start_loop(run_id, loop, list(range(ITEMS)), concurrency=1)

    plan = await mongo_db.command(
        "explain",
        {
            "find": LOOP_ITEMS,
            "filter": {"loop": row_id(run_id, loop), "start": {"$lte": index}},
            "sort": {"start": -1},
            "limit": 1,
        },
        verbosity="executionStats",
    )

    stats = plan["executionStats"]
    assert (stats["totalKeysExamined"], stats["totalDocsExamined"]) == (1, 1)
    assert await stores.loops.loop_item(run_id, loop, index) == index


async def test_ensure_indexes_twice_changes_nothing(mongo_db: Db):
    await ensure_indexes(mongo_db)
    before = {name: await mongo_db[name].index_information() for name in INDEXES}

    await ensure_indexes(mongo_db)

    after = {name: await mongo_db[name].index_information() for name in INDEXES}
    assert after == before
    assert all(
        model.document["name"] in after[name]
        for name, models in INDEXES.items()
        for model in models
    )
