"""`MongoRunStore`: the runs on MongoDB.

Documents (JSON values are JSON text, instants BSON dates; see `codec.py`): `runs {_id:
run id, flow_id, flow_name, trigger_key, job_id, status, body, headers, started_at,
completed_at, source_run_id, idem?, deadline_at, cancel: {requested, reason, at},
timed_out_at, released, recheck_at?, purging?, ckey?, ticket?, admitted?, parent?:
{run_id, step_key}, depth?, outputs?}` (a keyed run has `ckey`, a child `parent`).
`idem` (the normalised idempotency key) is absent when there is none, and a UNIQUE
PARTIAL index on (flow_id, trigger_key, idem) covers the documents that have it:
registering the key and creating the run are one insert, so no key ever points at no
run. The insert also records the entry steps the start released, so starting a run is
that one write; the reconciler checks them at `recheck_at`. The control flags live on
the run, so cancel, timeout, complete and reopen are each one guarded update; a
completion reads the flags in the same write, so a stop recorded before it always wins.

No transaction is used anywhere. The only multi-document writes are idempotent and
ordered so that a crash half-way is finished by the next call: start_loop (items, then
the counters that say the loop started), reset_steps (rows below, then the top rows) and
retention (see `retention.py`).
"""

from collections.abc import Iterable
from datetime import datetime

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from service.adapters.mongo.codec import (
    RUNS,
    Document,
    dumps,
    run_document,
    run_record,
)
from service.adapters.mongo.collection import Collection
from service.engine.model import ACTIVE_RUN_STATUSES, Json, RunId, RunStatus
from service.engine.records import TIMED_OUT_REASON, RunRecord

_RUNNING = str(RunStatus.RUNNING)
_QUEUED = str(RunStatus.QUEUED)
_ACTIVE = [str(status) for status in ACTIVE_RUN_STATUSES]


class MongoRunStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._runs = Collection(db[RUNS])

    async def create_run(
        self, run: RunRecord, *, recheck_at: datetime | None = None
    ) -> tuple[RunRecord, bool]:
        doc = run_document(run)
        if recheck_at is not None:
            doc["recheck_at"] = recheck_at
        # A duplicate whose holder is gone by the time we read it (retention, a reset)
        # is retried; two rounds cover every interleaving but a pathological one.
        for _ in range(3):
            try:
                await self._runs.insert_one(doc)
            except DuplicateKeyError:
                existing = await self._existing(run)
                if existing is not None:
                    return existing, False
            else:
                return run, True
        raise RuntimeError(f"run {run.run_id} collides with a run that keeps vanishing")

    async def _existing(self, run: RunRecord) -> RunRecord | None:
        same = await self._runs.find_one({"_id": run.run_id})
        if same is None and run.idempotency_key is not None:
            same = await self._runs.find_one(
                {
                    "flow_id": run.flow_id,
                    "trigger_key": run.trigger_key,
                    "idem": run.idempotency_key,
                }
            )
        return None if same is None else run_record(same)

    async def get_run(self, run_id: RunId) -> RunRecord | None:
        found = await self._runs.find_one({"_id": run_id})
        return None if found is None else run_record(found)

    async def complete_run(
        self,
        run_id: RunId,
        status: RunStatus,
        *,
        now: datetime,
        outputs: Json = None,
        recheck_at: datetime | None = None,
    ) -> RunStatus | None:
        # One pipeline: the stop on the run, read in the same write, wins.
        final = {
            "$cond": [
                {"$ne": [{"$ifNull": ["$timed_out_at", None]}, None]},
                str(RunStatus.TIMED_OUT),
                {
                    "$cond": [
                        {"$eq": ["$cancel.requested", True]},
                        str(RunStatus.CANCELLED),
                        {"$literal": str(status)},
                    ]
                },
            ]
        }
        fields: Document = {"status": final, "completed_at": now}
        if outputs is not None:
            fields["outputs"] = {"$literal": dumps(outputs)}
        if recheck_at is not None:
            fields["recheck_at"] = recheck_at
        done = await self._runs.find_one_and_update(
            {"_id": run_id, "status": {"$in": _ACTIVE}},
            [{"$set": fields}],
            projection={"status": 1},
        )
        return None if done is None else RunStatus(done["status"])

    async def admit_run(
        self,
        run_id: RunId,
        *,
        ticket: int,
        admitted: int,
        now: datetime,
        recheck_at: datetime,
    ) -> RunRecord | None:
        started = await self._runs.find_one_and_update(
            {"_id": run_id, "status": _QUEUED, "cancel.requested": {"$ne": True}},
            {
                "$set": {
                    "status": _RUNNING,
                    "ticket": ticket,
                    "admitted": admitted,
                    "recheck_at": recheck_at,
                }
            },
        )
        return None if started is None else run_record(started)

    async def reopen_run(self, run_id: RunId) -> bool:
        # Not while retention is deleting the run's rows (see retention.py).
        result = await self._runs.update_one(
            {"_id": run_id, "status": {"$nin": _ACTIVE}, "purging": {"$ne": True}},
            {"$set": {"status": _RUNNING, "completed_at": None}},
        )
        return result.matched_count == 1

    async def request_cancel(
        self, run_id: RunId, reason: str, *, now: datetime
    ) -> bool:
        result = await self._runs.update_one(
            {"_id": run_id, "cancel.requested": {"$ne": True}},
            {"$set": {"cancel": {"requested": True, "reason": reason, "at": now}}},
        )
        return result.matched_count == 1

    async def mark_timed_out(self, run_id: RunId, *, now: datetime) -> bool:
        # A pipeline, so the reason of an earlier cancel is kept in the same write.
        reason = {"$ifNull": ["$cancel.reason", ""]}
        result = await self._runs.update_one(
            {"_id": run_id, "timed_out_at": None},
            [
                {
                    "$set": {
                        "timed_out_at": now,
                        "cancel": {
                            "requested": True,
                            "reason": {
                                "$cond": [
                                    {"$eq": [reason, ""]},
                                    {"$literal": TIMED_OUT_REASON},
                                    reason,
                                ]
                            },
                            "at": {"$ifNull": ["$cancel.at", now]},
                        },
                    }
                }
            ],
        )
        return result.matched_count == 1

    async def runs_to_recheck(self, *, before: datetime, limit: int) -> list[RunRecord]:
        if limit <= 0:  # pymongo reads limit 0 as "no limit"
            return []
        docs = await self._runs.find(
            {"recheck_at": {"$lt": before}},
            sort=[("recheck_at", ASCENDING), ("_id", ASCENDING)],
            limit=limit,
        )
        return [run_record(doc) for doc in docs]

    async def rechecked(self, run_ids: Iterable[RunId]) -> None:
        ids = list(run_ids)
        if ids:
            await self._runs.update_many(
                {"_id": {"$in": ids}}, {"$unset": {"recheck_at": ""}}
            )

    async def statuses(self, run_ids: Iterable[RunId]) -> dict[RunId, RunStatus]:
        ids = list(run_ids)
        if not ids:
            return {}
        docs = await self._runs.find({"_id": {"$in": ids}}, {"status": 1})
        return {RunId(doc["_id"]): RunStatus(doc["status"]) for doc in docs}
