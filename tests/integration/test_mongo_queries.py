"""Operators' queries and retention on a real mongod: find, detail, counts, purge."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo.browse import RunBrowser
from service.adapters.mongo.client import MongoStores
from service.adapters.mongo.indexes import ensure_indexes
from service.engine.model import (
    FlowId,
    JobId,
    RunId,
    RunStatus,
    StepKey,
    StepStatus,
    TriggerKey,
)
from service.engine.records import (
    NewEvent,
    NewStep,
    Outcome,
    ParentRef,
    RunRecord,
    Timer,
    TimerKind,
)

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
MINUTE, DAY = timedelta(minutes=1), timedelta(days=1)
LEASE = timedelta(seconds=30)
Db = AsyncDatabase[dict[str, Any]]


@pytest.fixture
async def stores(mongo_db: Db) -> MongoStores:
    await ensure_indexes(mongo_db)
    return MongoStores(mongo_db)


async def a_run(
    stores: MongoStores,
    name: str,
    *,
    flow: str = "orders",
    minutes: int = 0,
    status: RunStatus | None = None,
    key: str | None = None,
) -> RunRecord:
    """Run `run-<name>` (job `msg-<name>`) started `minutes` after T0, completed with
    `status` a minute later unless `status` is None.
    """
    run = RunRecord(
        run_id=RunId(f"run-{name}"),
        flow_id=FlowId(flow),
        flow_name=flow.title(),
        trigger_key=TriggerKey("manual"),
        job_id=JobId(f"msg-{name}"),
        started_at=T0 + minutes * MINUTE,
        idempotency_key=key,
    )
    await stores.runs.create_run(run)
    if status is not None:
        at = run.started_at + MINUTE
        await stores.runs.complete_run(run.run_id, status, now=at)
    found = await stores.runs.get_run(run.run_id)
    assert found is not None
    return found


async def test_find_runs_pages_newest_first_with_the_total(stores: MongoStores):
    runs = [await a_run(stores, str(n), minutes=n) for n in range(5)]

    page, total = await stores.queries.find_runs(skip=1, limit=2)

    assert total == 5
    assert page == [runs[3], runs[2]]


async def test_find_runs_filters_by_flow_status_and_time(stores: MongoStores):
    await a_run(stores, "a", minutes=0, status=RunStatus.SUCCEEDED)
    failed = await a_run(stores, "b", minutes=10, status=RunStatus.FAILED)
    await a_run(stores, "c", minutes=20, status=RunStatus.FAILED)
    await a_run(stores, "d", minutes=10, flow="refunds", status=RunStatus.FAILED)

    found = await stores.queries.find_runs(
        flow="orders",
        status=RunStatus.FAILED,
        since=T0 + 5 * MINUTE,
        until=T0 + 20 * MINUTE,
    )

    assert found == ([failed], 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run-abc", ["run-abc"]),
        ("msg-abc", ["run-abc"]),
        ("  ORDER-42 ", ["run-abc"]),
        ("order-4", ["run-abc"]),
        ("run-", ["run-xyz", "run-abc"]),
        ("abc", []),
        ("run-a.c", []),
    ],
    ids=[
        "run id",
        "job id",
        "key any case",
        "key prefix",
        "prefix",
        "inner",
        "no regex",
    ],
)
async def test_find_runs_matches_text_at_the_start_of_ids_and_keys(
    stores: MongoStores, text: str, expected: list[str]
):
    await a_run(stores, "abc", key="order-42")
    await a_run(stores, "xyz", minutes=1)

    page, total = await stores.queries.find_runs(text=text)

    assert [run.run_id for run in page] == expected
    assert total == len(expected)


async def test_run_detail_has_the_steps_attempts_and_events(stores: MongoStores):
    run = await a_run(stores, "abc")
    steps = [NewStep(StepKey(k), "Http", StepStatus.QUEUED) for k in ("fetch", "ship")]
    await stores.steps.add_steps(run.run_id, steps[:1], at=T0)
    await stores.steps.add_steps(run.run_id, steps[1:], at=T0 + MINUTE)
    for attempt in (1, 2):
        job = JobId(f"job-{attempt}")
        now = T0 + attempt * LEASE
        await stores.steps.claim(
            run.run_id, StepKey("fetch"), job_id=job, now=now, lease=LEASE
        )
    await stores.steps.finish(
        run.run_id,
        StepKey("fetch"),
        Outcome(StepStatus.SUCCEEDED, output={"ok": True}),
        job_id=JobId("job-2"),
        attempt=2,
        now=T0 + 3 * LEASE,
    )
    await stores.events.append(
        run.run_id, [NewEvent("step.skipped", T0 + 4 * LEASE, "ship", "skipped")]
    )

    detail = await stores.queries.run_detail(run.run_id)

    assert detail is not None
    assert detail.run == run
    assert [(s.key, s.status) for s in detail.steps] == [
        ("fetch", StepStatus.SUCCEEDED),
        ("ship", StepStatus.QUEUED),
    ]
    fetch = detail.steps[0]
    assert [(a.number, a.job_id, a.status) for a in fetch.attempts] == [
        (1, "job-1", StepStatus.RUNNING),
        (2, "job-2", StepStatus.SUCCEEDED),
    ]
    assert fetch.output == {"ok": True}
    # Stored events merged with those of the attempts (service/engine/timeline.py).
    assert [(e.seq, e.type, e.step_key) for e in detail.events] == [
        (1, "run.started", "__run"),
        (2, "step.started", "fetch"),
        (3, "step.started", "fetch"),
        (4, "step.completed", "fetch"),
        (5, "step.skipped", "ship"),
    ]


async def test_run_detail_of_an_unknown_run_is_none(stores: MongoStores):
    assert await stores.queries.run_detail(RunId("run-nope")) is None


async def test_count_by_status_counts_every_status(stores: MongoStores):
    await a_run(stores, "a")
    await a_run(stores, "b", status=RunStatus.FAILED)
    await a_run(stores, "c", status=RunStatus.FAILED)
    await a_run(stores, "d", flow="refunds", status=RunStatus.SUCCEEDED)

    every = await stores.queries.count_by_status()
    orders = await stores.queries.count_by_status(flow="orders")

    assert every == {
        "Queued": 0,
        "Running": 1,
        "Succeeded": 1,
        "Failed": 2,
        "Skipped": 0,
        "Cancelled": 0,
        "TimedOut": 0,
    }
    assert (orders["Failed"], orders["Succeeded"]) == (2, 0)


async def a_full_run(stores: MongoStores, name: str, **run: Any) -> RunId:
    """A run with rows in every collection: steps, loop items, events, a waiter, a
    timer; completed as `run` says.
    """
    run_id = (await a_run(stores, name, key=f"key-{name}", **run)).run_id
    loop = StepKey("loop")
    rows = [NewStep(StepKey(k), "Http", StepStatus.QUEUED) for k in ("loop", "loop.0")]
    await stores.steps.add_steps(run_id, rows, at=T0)
    await stores.loops.start_loop(run_id, loop, list(range(600)), concurrency=1)
    await stores.events.append(run_id, [NewEvent("run.started", T0)])
    await stores.signals.register(
        run_id, StepKey("approve"), "Ok", expires_at=None, now=T0
    )
    await stores.timers.set(Timer(f"timer-{name}", TimerKind.DEADLINE, T0, run_id))
    return run_id


COLLECTIONS = (
    "runs",
    "steps",
    "loop_items",
    "events",
    "event_counters",
    "waiters",
    "timers",
)


async def documents_of(db: Db, run_id: RunId) -> dict[str, int]:
    """How many documents of each collection belong to the run."""
    counts = {}
    for name in COLLECTIONS:
        field = "_id" if name in ("runs", "event_counters") else "run_id"
        counts[name] = await db[name].count_documents({field: run_id})
    return counts


async def test_retention_removes_only_completed_runs_past_the_cutoff_with_all_they_own(
    stores: MongoStores, mongo_db: Db
):
    old = await a_full_run(stores, "old", status=RunStatus.SUCCEEDED)
    old_failed = await a_full_run(stores, "old-failed", status=RunStatus.FAILED)
    old_running = await a_full_run(stores, "old-running")
    recent = await a_full_run(
        stores, "recent", minutes=2 * 24 * 60, status=RunStatus.FAILED
    )
    kept = {run: await documents_of(mongo_db, run) for run in (old_running, recent)}

    purged = await stores.purge(before=T0 + DAY, limit=100)

    assert purged == 2
    for gone in (old, old_failed):
        assert set((await documents_of(mongo_db, gone)).values()) == {0}
    for run, counts in kept.items():
        assert await documents_of(mongo_db, run) == counts
    assert min(kept[recent].values()) >= 1
    assert kept[recent]["loop_items"] == 3  # 600 items: chunks of 256


async def test_a_run_being_purged_is_not_reopened(stores: MongoStores, mongo_db: Db):
    run_id = await a_full_run(stores, "old", status=RunStatus.FAILED)
    # As if a sweep flagged the run and then stopped (a crash) before deleting it.
    await mongo_db["runs"].update_one({"_id": run_id}, {"$set": {"purging": True}})

    reopened = await stores.runs.reopen_run(run_id)
    purged = await stores.purge(before=T0 + DAY, limit=10)

    assert not reopened
    assert purged == 1
    assert set((await documents_of(mongo_db, run_id)).values()) == {0}


async def test_lineage_both_ways_through_the_by_source_index(
    stores: MongoStores, mongo_db: Db
):
    source = await a_run(stores, "source", status=RunStatus.FAILED)
    for n in range(3):
        await stores.runs.create_run(
            RunRecord(
                run_id=RunId(f"run-copy-{n}"),
                flow_id=FlowId("orders"),
                flow_name="Orders",
                trigger_key=TriggerKey("manual"),
                job_id=JobId(f"msg-copy-{n}"),
                started_at=T0 + (10 + n) * MINUTE,
                source_run_id=source.run_id,
            )
        )
    await a_run(stores, "other", minutes=30)

    await stores.runs.create_run(
        RunRecord(
            run_id=RunId("run-child"),
            flow_id=FlowId("orders"),
            flow_name="Orders",
            trigger_key=TriggerKey("parent"),
            job_id=JobId("msg-child"),
            started_at=T0 + 20 * MINUTE,
            parent=ParentRef(source.run_id, StepKey("child")),
        )
    )
    browse = RunBrowser(mongo_db)

    copies, total = await stores.queries.find_runs(source=source.run_id)
    await mongo_db.command("profile", 2)  # every operation, with its plan
    try:
        detail = await stores.queries.run_detail(source.run_id)
        shown = await browse.derived(source.run_id)
        children = await browse.children(source.run_id)
    finally:
        await mongo_db.command("profile", 0)
    plans = {
        str(entry.get("planSummary"))
        async for entry in mongo_db["system.profile"].find(
            {"ns": f"{mongo_db.name}.runs", "op": {"$in": ["query", "command"]}}
        )
        if "source_run_id" in str(entry) or "parent.run_id" in str(entry)
    }

    assert detail is not None
    assert [run.run_id for run in detail.derived] == [
        "run-copy-2",
        "run-copy-1",
        "run-copy-0",
    ]
    assert detail.derived_total == 3
    assert total == 3
    assert [run.run_id for run in copies] == [run.run_id for run in detail.derived]
    assert [run.run_id for run in shown] == [run.run_id for run in detail.derived]
    assert [run.run_id for run in children] == [RunId("run-child")]
    assert [run.run_id for run in detail.children] == [RunId("run-child")]
    # Every lineage read (flowctl's and the dashboard's) is answered by its partial
    # index, which MongoDB uses only for a query that implies its filter.
    assert plans == {
        "IXSCAN { source_run_id: 1, started_at: -1 }",
        "IXSCAN { parent.run_id: 1, started_at: 1 }",
    }
    copy = await stores.queries.run_detail(RunId("run-copy-0"))
    assert copy is not None
    assert copy.run.source_run_id == source.run_id
    assert copy.derived == []
