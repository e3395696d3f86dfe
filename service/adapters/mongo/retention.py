"""Retention on MongoDB: a sweep deleting old finished runs with everything they own.

`purge` takes up to `limit` runs whose status is final and `completed_at < before`
(Running and Queued runs never), flags them `purging` (which `reopen_run` refuses, so a
manual retry can't revive a run half deleted), deletes their steps, loop items, events,
event counter, waiters and timers, and deletes the run documents last. No transaction: a
sweep cut short leaves flagged runs that still match, and the next sweep finishes them;
the idempotency key goes with the run document, so it is free again only at the very
end.

TTL alternative, not used: a TTL index deletes documents of ONE collection by a date of
their own. `expireAfterSeconds` on `runs.completed_at` alone would orphan the run's
steps, events and items; giving every per-run document an `expire_at` would mean writing
all of a run's documents when it completes (thousands for a big ForEach) and clearing
them again on reopen, and TTL on each collection's own timestamps would delete rows of
runs still Running after the retention period. A sweep has none of those problems.
"""

from datetime import datetime

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo.codec import (
    EVENT_COUNTERS,
    EVENTS,
    LOOP_ITEMS,
    RUNS,
    SLOTS,
    STEPS,
    TIMERS,
    WAITERS,
    Document,
)
from service.engine.model import ACTIVE_RUN_STATUSES

_OWNED_BY_RUN_ID = (STEPS, LOOP_ITEMS, EVENTS, WAITERS, TIMERS)


async def purge(db: AsyncDatabase[Document], *, before: datetime, limit: int) -> int:
    """Delete up to `limit` runs completed before `before`; the number deleted."""
    if limit <= 0:  # pymongo reads limit 0 as "no limit"
        return 0
    runs = db[RUNS]
    active = [str(status) for status in ACTIVE_RUN_STATUSES]
    done = {"status": {"$nin": active}, "completed_at": {"$lt": before}}
    # Keys nobody holds or waits for: their next run starts a fresh record.
    idle = {"holders": {"$size": 0}, "waiting": {"$size": 0}}
    await db[SLOTS].delete_many({"touched_at": {"$lt": before}, **idle})
    cursor = runs.find(done, {"_id": 1}).sort("completed_at", ASCENDING).limit(limit)
    candidates = [doc["_id"] async for doc in cursor]
    if not candidates:
        return 0
    await runs.update_many(
        {"_id": {"$in": candidates}, **done}, {"$set": {"purging": True}}
    )
    flagged = {"_id": {"$in": candidates}, "purging": True, **done}
    doomed = [doc["_id"] async for doc in runs.find(flagged, {"_id": 1})]
    if not doomed:
        return 0
    for name in _OWNED_BY_RUN_ID:
        await db[name].delete_many({"run_id": {"$in": doomed}})
    await db[EVENT_COUNTERS].delete_many({"_id": {"$in": doomed}})
    deleted = await runs.delete_many({"_id": {"$in": doomed}, "purging": True})
    return deleted.deleted_count
