"""`MongoSignalStore`: the waiters of WaitForSignal steps and their one delivery.

`waiters {_id: "<run>/<key>", run_id, step_key, signal, signal_lc, created_at,
expires_at, delivered_at, payload}`, indexed on (run_id, signal_lc, created_at).
Registering is one upsert that keeps created_at and any delivery. Delivering is one
`find_one_and_update` of the run's oldest waiter of that name (case-insensitive) whose
`delivered_at` is null: each waiter takes one signal, and once all have theirs a
signal is AlreadyDelivered (one more read says to whom).
"""

from datetime import datetime

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from service.adapters.mongo.codec import WAITERS, Document, dumps, row_id, waiter_record
from service.adapters.mongo.collection import Collection
from service.engine.model import Json, RunId, StepKey
from service.engine.records import Delivery, DeliveryStatus, Waiter


class MongoSignalStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._waiters = Collection(db[WAITERS])

    async def register(
        self,
        run_id: RunId,
        key: StepKey,
        signal: str,
        *,
        expires_at: datetime | None,
        now: datetime,
    ) -> Waiter:
        update = {
            "$set": {
                "signal": signal,
                "signal_lc": signal.lower(),
                "expires_at": expires_at,
            },
            "$setOnInsert": {
                "run_id": run_id,
                "step_key": key,
                "created_at": now,
                "delivered_at": None,
                "payload": None,
            },
        }
        for _ in range(2):
            try:
                waiter = await self._waiters.find_one_and_update(
                    {"_id": row_id(run_id, key)},
                    update,
                    upsert=True,
                )
            except DuplicateKeyError:
                continue  # a concurrent first registration won the insert
            if waiter is not None:  # always, with upsert and AFTER
                return waiter_record(waiter)
        raise RuntimeError(f"no waiter for {run_id}/{key}")

    async def waiter(self, run_id: RunId, key: StepKey) -> Waiter | None:
        found = await self._waiters.find_one({"_id": row_id(run_id, key)})
        return None if found is None else waiter_record(found)

    async def deliver(
        self, run_id: RunId, signal: str, payload: Json, *, now: datetime
    ) -> Delivery:
        named = {"run_id": run_id, "signal_lc": signal.lower()}
        delivered = await self._waiters.find_one_and_update(
            {**named, "delivered_at": None},
            {"$set": {"delivered_at": now, "payload": dumps(payload)}},
            projection={"step_key": 1, "delivered_at": 1},
            sort=[("created_at", ASCENDING), ("step_key", ASCENDING)],
        )
        if delivered is not None:
            return _delivery(DeliveryStatus.DELIVERED, delivered)
        latest = await self._waiters.find_one(
            named,
            projection={"step_key": 1, "delivered_at": 1},
            sort=[("delivered_at", DESCENDING), ("step_key", DESCENDING)],
        )
        if latest is None:
            return Delivery(DeliveryStatus.NOT_FOUND)
        return _delivery(DeliveryStatus.ALREADY_DELIVERED, latest)


def _delivery(status: DeliveryStatus, waiter: Document) -> Delivery:
    return Delivery(status, StepKey(waiter["step_key"]), waiter["delivered_at"])
