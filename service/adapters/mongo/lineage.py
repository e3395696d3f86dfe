"""What operators read of a run's relations: its children, its place in its key's queue.

Reads only, for `flowctl run` (`queries.py`) and the dashboard (`browse.py`); the
callers translate outages.
"""

from typing import Final

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo.codec import RUNS, SLOTS, Document, row_id, run_record
from service.adapters.mongo.indexes import BY_PARENT
from service.engine.model import RunStatus
from service.engine.records import RunRecord

CHILDREN_SHOWN: Final = 20
"""Child runs read for one run (oldest first): a loop of child steps may start more."""


def from_source(run_id: str) -> Document:
    """The filter on `source_run_id` for the runs re-run from `run_id`.

    Spelt with $type, so that the partial index `by_source` (string sources only)
    answers it: MongoDB uses a partial index only for a query that implies its filter.
    """
    return {"$type": "string", "$eq": run_id}


async def children(db: AsyncDatabase[Document], run_id: str) -> list[RunRecord]:
    """The runs `run_id`'s ChildFlow steps started, oldest first (the first 20)."""
    # `parent` named, so that the partial index `by_parent` (child runs only) answers
    # it: MongoDB uses a partial index only for a query that implies its filter.
    query = {"parent": {"$exists": True}, "parent.run_id": run_id}
    cursor = db[RUNS].find(query).sort("started_at", ASCENDING).hint(BY_PARENT)
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
