"""What operators read of a run's relations: its children, its place in its key's queue.

Reads only, for `flowctl run` (`queries.py`) and the dashboard (`browse.py`); the
callers translate outages.
"""

from typing import Final

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo.codec import RUNS, SLOTS, Document, row_id, run_record
from service.engine.model import RunStatus
from service.engine.records import RunRecord

CHILDREN_SHOWN: Final = 20
"""Child runs read for one run (oldest first): a loop of child steps may start more."""


async def children(db: AsyncDatabase[Document], run_id: str) -> list[RunRecord]:
    """The runs `run_id`'s ChildFlow steps started, oldest first (the first 20)."""
    cursor = db[RUNS].find({"parent.run_id": run_id}).sort("started_at", ASCENDING)
    return [run_record(doc) async for doc in cursor.limit(CHILDREN_SHOWN)]


async def queue_place(db: AsyncDatabase[Document], run: RunRecord) -> int | None:
    """1 for the next run of its key to start; None unless `run` waits for a slot."""
    if run.status is not RunStatus.QUEUED or run.concurrency_key is None:
        return None
    slots = await db[SLOTS].find_one(
        {"_id": row_id(run.flow_id, run.concurrency_key)}, {"waiting": 1}
    )
    waiting = [] if slots is None else [entry["run"] for entry in slots["waiting"]]
    return waiting.index(run.run_id) + 1 if run.run_id in waiting else None
