"""`MongoTimerStore`: delayed work (requeue, delayed publish, run deadline) by due time.

`timers {_id: timer id, kind, due_at, run_id, step_key, owner, lease_until, token}`,
indexed on due_at (and run_id, for retention). A claim takes a batch in three round
trips however large: read the earliest free due ids, lease them with one guarded
`update_many` stamped with a token unique to this call, read back what carries the
token. Each document's update is atomic and guarded by "lease free", so each timer goes
to one claimer; a claimer that lost some of its batch to another reads again.
"""

from datetime import datetime, timedelta
from uuid import uuid4

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo.codec import (
    TIMERS,
    Document,
    timer_document,
    timer_record,
)
from service.adapters.mongo.collection import Collection
from service.engine.records import Timer

_BY_DUE = [("due_at", ASCENDING), ("_id", ASCENDING)]


class MongoTimerStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._timers = Collection(db[TIMERS])

    async def set(self, timer: Timer) -> None:
        # A replacement has no lease: a timer set again is free to be claimed.
        await self._timers.replace_one(
            {"_id": timer.id}, timer_document(timer), upsert=True
        )

    async def claim_due(
        self, now: datetime, *, owner: str, lease: timedelta, limit: int
    ) -> list[Timer]:
        token = f"{owner}/{uuid4().hex}"
        free = {
            "due_at": {"$lte": now},
            "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}],
            "token": {"$ne": token},
        }
        taken, tried = 0, []
        while taken < limit:
            found = await self._timers.find(
                free, {"_id": 1}, sort=_BY_DUE, limit=limit - taken
            )
            ids = [doc["_id"] for doc in found]
            if not ids:
                break
            tried += ids
            result = await self._timers.update_many(
                {"_id": {"$in": ids}, **free},
                {"$set": {"owner": owner, "lease_until": now + lease, "token": token}},
            )
            taken += result.modified_count
        if taken == 0:
            return []
        docs = await self._timers.find(
            {"_id": {"$in": tried}, "token": token}, sort=_BY_DUE
        )
        return [timer_record(doc) for doc in docs]

    async def delete(self, timer_id: str) -> None:
        await self._timers.delete_one({"_id": timer_id})
