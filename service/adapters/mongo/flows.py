"""`MongoFlowStore` and `MongoScheduleStore`: flow records and the cron schedule state.

`flows {_id: flow id, name, version, manifest, enabled, updated_at}`: saving is one
upsert that sets the definition and writes `enabled` only on insert (it is the
operator's). `schedules {_id: job id, flow_id, trigger_key, cron, next_fire_at, paused,
cron_override}`: a fire moves `next_fire_at` with a write guarded by the instant it
fired at, so one replica takes each fire.
"""

from datetime import datetime

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from service.adapters.mongo.codec import (
    FLOWS,
    SCHEDULES,
    Document,
    dumps_mapping,
    flow_record,
    schedule_document,
    schedule_record,
)
from service.adapters.mongo.collection import Collection
from service.engine.model import FlowId
from service.engine.records import FlowRecord, Schedule


class MongoFlowStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._flows = Collection(db[FLOWS])

    async def save(self, record: FlowRecord) -> FlowRecord:
        update = {
            "$set": {
                "name": record.name,
                "version": record.version,
                "manifest": dumps_mapping(record.manifest),
                "updated_at": record.updated_at,
            },
            "$setOnInsert": {"enabled": record.enabled},
        }
        for _ in range(2):
            try:
                saved = await self._flows.find_one_and_update(
                    {"_id": record.flow_id},
                    update,
                    upsert=True,
                )
            except DuplicateKeyError:
                continue  # another replica inserted it first; update it now
            if saved is not None:  # always, with upsert and AFTER
                return flow_record(saved)
        raise RuntimeError(f"flow {record.flow_id} could not be saved")

    async def get(self, flow_id: FlowId) -> FlowRecord | None:
        found = await self._flows.find_one({"_id": flow_id})
        return None if found is None else flow_record(found)

    async def all(self) -> list[FlowRecord]:
        docs = await self._flows.find({}, sort=[("_id", ASCENDING)])
        return [flow_record(doc) for doc in docs]

    async def set_enabled(self, flow_id: FlowId, *, enabled: bool) -> bool:
        result = await self._flows.update_one(
            {"_id": flow_id}, {"$set": {"enabled": enabled}}
        )
        return result.matched_count == 1


class MongoScheduleStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._schedules = Collection(db[SCHEDULES])

    async def sync(self, schedule: Schedule) -> Schedule:
        # Read, decide, then write guarded by what the decision read; every replica
        # syncs at start, so a lost race is simply decided again.
        while True:
            old = await self._schedules.find_one({"_id": schedule.job_id})
            if old is None:
                try:
                    await self._schedules.insert_one(schedule_document(schedule))
                except DuplicateKeyError:
                    continue
                return schedule
            synced = await self._synced(old, schedule)
            if synced is not None:
                return synced

    async def _synced(self, old: Document, new: Schedule) -> Schedule | None:
        fields: Document = {
            "flow_id": new.flow_id,
            "trigger_key": new.trigger_key,
            "cron": new.cron,
        }
        # A new manifest cron moves the next fire, unless an operator paused the
        # schedule or overrode its cron: their choice outlives a deploy.
        if (
            old["cron"] != new.cron
            and not old["paused"]
            and old["cron_override"] is None
        ):
            fields["next_fire_at"] = new.next_fire_at
        updated = await self._schedules.find_one_and_update(
            {
                "_id": new.job_id,
                "cron": old["cron"],
                "paused": old["paused"],
                "cron_override": old["cron_override"],
            },
            {"$set": fields},
        )
        return None if updated is None else schedule_record(updated)

    async def get(self, job_id: str) -> Schedule | None:
        found = await self._schedules.find_one({"_id": job_id})
        return None if found is None else schedule_record(found)

    async def all(self) -> list[Schedule]:
        return [
            schedule_record(doc)
            for doc in await self._schedules.find({}, sort=[("_id", ASCENDING)])
        ]

    async def due(self, now: datetime, *, limit: int) -> list[Schedule]:
        if limit <= 0:  # pymongo reads limit 0 as "no limit"
            return []
        docs = await self._schedules.find(
            {"paused": False, "next_fire_at": {"$lte": now}},
            sort=[("next_fire_at", ASCENDING), ("_id", ASCENDING)],
            limit=limit,
        )
        return [schedule_record(doc) for doc in docs]

    async def advance(
        self, job_id: str, *, fired_at: datetime, next_fire_at: datetime
    ) -> bool:
        result = await self._schedules.update_one(
            {"_id": job_id, "next_fire_at": fired_at},
            {"$set": {"next_fire_at": next_fire_at}},
        )
        return result.matched_count == 1

    async def update(
        self,
        job_id: str,
        *,
        paused: bool,
        cron_override: str | None,
        next_fire_at: datetime | None,
    ) -> Schedule | None:
        updated = await self._schedules.find_one_and_update(
            {"_id": job_id},
            {
                "$set": {
                    "paused": paused,
                    "cron_override": cron_override,
                    "next_fire_at": next_fire_at,
                }
            },
        )
        return None if updated is None else schedule_record(updated)
