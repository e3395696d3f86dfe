"""Every index the MongoDB stores rely on, created idempotently at start.

`ensure_indexes` may run in every worker at every start, concurrently: creating an index
that exists with the same name and keys is a no-op. Changing an index means a new name,
never new options under an old name; the old name goes into `OBSOLETE`, dropped at
start.
"""

import contextlib
from typing import Final

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from service.adapters.mongo.codec import (
    EVENTS,
    LOOP_ITEMS,
    RUNS,
    SCHEDULES,
    SLOTS,
    STEPS,
    TIMERS,
    WAITERS,
    Document,
)
from service.engine.model import StepStatus

BY_SOURCE: Final = "by_source"
BY_PARENT: Final = "by_parent"
"""The partial indexes of lineage, which its reads name (`lineage.py`): with a
handful of matches, the planner may as well pick `runs_newest` and scan it."""

INDEXES: Final[dict[str, list[IndexModel]]] = {
    RUNS: [
        # One run per idempotency key: the key is registered by the run's own insert.
        IndexModel(
            [("flow_id", ASCENDING), ("trigger_key", ASCENDING), ("idem", ASCENDING)],
            name="idempotency",
            unique=True,
            partialFilterExpression={"idem": {"$exists": True}},
        ),
        # The reconciler: runs whose start is due a check (see runs_to_recheck).
        IndexModel(
            [("recheck_at", ASCENDING), ("_id", ASCENDING)],
            name="recheck",
            partialFilterExpression={"recheck_at": {"$exists": True}},
        ),
        IndexModel([("completed_at", ASCENDING)], name="retention"),
        # Operators' queries (queries.py, browse.py): newest first by (started_at,
        # _id), so a page is an index walk and a keyset cursor a range, never a sort;
        # by flow and status, which also make counts by status index count scans.
        # (They replace `newest`, `by_flow` and `by_status`, which an existing
        # database keeps until they are dropped by hand.)
        IndexModel(
            [("started_at", DESCENDING), ("_id", DESCENDING)], name="runs_newest"
        ),
        IndexModel(
            [("flow_id", ASCENDING), ("started_at", DESCENDING), ("_id", DESCENDING)],
            name="runs_by_flow",
        ),
        IndexModel(
            [("status", ASCENDING), ("started_at", DESCENDING), ("_id", DESCENDING)],
            name="runs_by_status",
        ),
        IndexModel(
            [
                ("flow_id", ASCENDING),
                ("status", ASCENDING),
                ("started_at", DESCENDING),
                ("_id", DESCENDING),
            ],
            name="runs_by_flow_status",
        ),
        IndexModel([("job_id", ASCENDING)], name="by_job"),
        IndexModel(
            [("idem", ASCENDING)],
            name="by_idempotency_key",
            partialFilterExpression={"idem": {"$exists": True}},
        ),
        # Lineage: the runs re-run from one run, newest first (few runs have one).
        IndexModel(
            [("source_run_id", ASCENDING), ("started_at", DESCENDING)],
            name=BY_SOURCE,
            partialFilterExpression={"source_run_id": {"$type": "string"}},
        ),
        # Lineage: the children of a run (only child runs have a parent).
        IndexModel(
            [("parent.run_id", ASCENDING), ("started_at", ASCENDING)],
            name=BY_PARENT,
            partialFilterExpression={"parent": {"$exists": True}},
        ),
    ],
    STEPS: [
        # scope_steps, count_final, in_flight, retention (its run_id prefix). Not on
        # status: a step changes status three times, and every change would move its
        # entry; the few reads by status (a scope's end, a stop) filter what it finds.
        IndexModel([("run_id", ASCENDING), ("scope", ASCENDING)], name="by_run_scope"),
        # The reconciler: dispatched but never claimed; claimed but the lease ended.
        IndexModel(
            [("dispatched_at", ASCENDING), ("_id", ASCENDING)],
            name="stale_queued",
            partialFilterExpression={"status": str(StepStatus.QUEUED)},
        ),
        IndexModel(
            [("lease_until", ASCENDING), ("_id", ASCENDING)],
            name="expired_leases",
            partialFilterExpression={"status": str(StepStatus.RUNNING)},
        ),
        # The reconciler: results whose continuation is due a check (due_rechecks).
        IndexModel(
            [("recheck_at", ASCENDING), ("_id", ASCENDING)],
            name="recheck",
            partialFilterExpression={"recheck_at": {"$exists": True}},
        ),
    ],
    LOOP_ITEMS: [
        IndexModel([("loop", ASCENDING), ("start", DESCENDING)], name="by_loop"),
        IndexModel([("run_id", ASCENDING)], name="by_run"),
    ],
    EVENTS: [
        IndexModel(
            [("run_id", ASCENDING), ("seq", ASCENDING)], name="by_run", unique=True
        ),
        IndexModel(
            [("run_id", ASCENDING), ("key", ASCENDING)],
            name="once",
            unique=True,
            partialFilterExpression={"key": {"$type": "string"}},
        ),
    ],
    TIMERS: [
        IndexModel([("due_at", ASCENDING), ("_id", ASCENDING)], name="due"),
        IndexModel([("run_id", ASCENDING)], name="by_run"),
    ],
    WAITERS: [
        IndexModel(
            [
                ("run_id", ASCENDING),
                ("signal_lc", ASCENDING),
                ("created_at", ASCENDING),
            ],
            name="by_signal",
        ),
    ],
    SCHEDULES: [
        IndexModel([("next_fire_at", ASCENDING), ("_id", ASCENDING)], name="due"),
    ],
    # Retention: the records of keys nobody held or waited for since a while.
    SLOTS: [IndexModel([("touched_at", ASCENDING)], name="idle")],
}


OBSOLETE: Final[dict[str, tuple[str, ...]]] = {
    RUNS: ("unstarted", "newest", "by_flow", "by_status", "running_by_flow"),
    STEPS: ("by_scope",),
}
"""Indexes of earlier versions that nothing reads any more (each write still paid
for them): dropped at start, if there."""


async def ensure_indexes(db: AsyncDatabase[Document]) -> None:
    """Create every index that does not exist yet (idempotent); drop obsolete ones.

    The sweeps sort on (instant, _id), so their indexes carry `_id` as a second key:
    the index gives the order and a sweep reads `limit` keys, however many match.
    """
    for collection, indexes in INDEXES.items():
        await db[collection].create_indexes(indexes)
    for collection, names in OBSOLETE.items():
        existing = {
            index["name"] async for index in await db[collection].list_indexes()
        }
        for name in names:
            if name in existing:
                with contextlib.suppress(OperationFailure):  # another worker was first
                    await db[collection].drop_index(name)
