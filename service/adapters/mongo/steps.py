"""Step rows of the MongoDB run store: the dispatch ledger, claims, results, sweeps.

Part of `MongoRunStore` (see `runs.py` for the document design). Every transition is one
guarded single-document write on `steps`; only reads and sweeps touch several documents.
"""

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from service.adapters.mongo.codec import (
    Document,
    attempt_document,
    context_document,
    dumps,
    dumps_mapping,
    row_id,
    step_document,
    step_record,
)
from service.adapters.mongo.outage import duplicates_only
from service.engine.model import (
    FINAL_STATUSES,
    IN_FLIGHT_STATUSES,
    JobId,
    RunId,
    StepKey,
    StepStatus,
)
from service.engine.records import (
    ATTEMPTS_KEPT,
    Claim,
    NewStep,
    Outcome,
    StepRecord,
)

_FINAL = [str(status) for status in FINAL_STATUSES]
_IN_FLIGHT = [str(status) for status in IN_FLIGHT_STATUSES]


class StepRows:
    _steps: AsyncCollection[Document]
    _items: AsyncCollection[Document]

    async def add_steps(
        self, run_id: RunId, steps: Sequence[NewStep], *, at: datetime
    ) -> list[StepKey]:
        if not steps:
            return []
        docs = [step_document(run_id, new, at=at) for new in steps]
        try:
            await self._steps.insert_many(docs, ordered=False)
        except BulkWriteError as error:
            # The unique _id is the ledger: a duplicate is a row that exists already.
            refused = duplicates_only(error)
            return [new.key for n, new in enumerate(steps) if n not in refused]
        return [new.key for new in steps]

    async def claim(
        self,
        run_id: RunId,
        key: StepKey,
        *,
        job_id: JobId,
        now: datetime,
        lease: timedelta,
        take_over: bool = False,
    ) -> Claim:
        _id = row_id(run_id, key)
        claimable: list[Document] = [
            {"status": str(StepStatus.QUEUED)},
            {"status": str(StepStatus.RUNNING), "lease_until": {"$lte": now}},
        ]
        if take_over:
            # A redelivery of the message that holds the claim: its lease is ours.
            claimable.append({"status": str(StepStatus.RUNNING), "job_id": job_id})
        number = {"$add": ["$attempt", 1]}
        entry = attempt_document(number, {"$literal": job_id}, at=now)
        claimed = await self._steps.find_one_and_update(
            {"_id": _id, "$or": claimable},
            [
                {
                    "$set": {
                        "status": str(StepStatus.RUNNING),
                        "attempt": number,
                        "job_id": {"$literal": job_id},
                        "lease_until": now + lease,
                        "started_at": now,
                        "attempts": {
                            "$slice": [
                                {"$concatArrays": ["$attempts", [entry]]},
                                -ATTEMPTS_KEPT,
                            ]
                        },
                    }
                }
            ],
            return_document=ReturnDocument.AFTER,
        )
        if claimed is not None:
            return Claim(step_record(claimed), won=True)
        found = await self._steps.find_one({"_id": _id})
        return Claim(None if found is None else step_record(found), won=False)

    async def extend_lease(
        self, run_id: RunId, key: StepKey, *, job_id: JobId, until: datetime
    ) -> bool:
        result = await self._steps.update_one(
            {
                "_id": row_id(run_id, key),
                "status": str(StepStatus.RUNNING),
                "job_id": job_id,
            },
            {"$set": {"lease_until": until}},
        )
        return result.matched_count == 1

    async def finish(
        self,
        run_id: RunId,
        key: StepKey,
        outcome: Outcome,
        *,
        job_id: JobId,
        attempt: int,
        now: datetime,
    ) -> bool:
        fields = _outcome_fields(outcome, now)
        fields |= {
            "attempts.$[a].status": str(outcome.status),
            "attempts.$[a].completed_at": now,
            "attempts.$[a].error": outcome.error,
        }
        result = await self._steps.update_one(
            {
                "_id": row_id(run_id, key),
                "status": str(StepStatus.RUNNING),
                "attempt": attempt,
                "job_id": job_id,
            },
            {"$set": fields},
            array_filters=[{"a.number": attempt}],
        )
        return result.matched_count == 1

    async def settle(
        self,
        run_id: RunId,
        key: StepKey,
        outcome: Outcome,
        *,
        expected: frozenset[StepStatus],
        now: datetime,
    ) -> bool:
        fields = {
            name: {"$literal": value}
            for name, value in _outcome_fields(outcome, now).items()
        }
        fields["attempts"] = _closed_latest_attempt(outcome, now)
        result = await self._steps.update_one(
            {
                "_id": row_id(run_id, key),
                "status": {"$in": [str(status) for status in expected]},
            },
            [{"$set": fields}],
        )
        return result.matched_count == 1

    async def requeue(
        self,
        run_id: RunId,
        key: StepKey,
        *,
        expected: frozenset[StepStatus],
        now: datetime,
        attempt: int | None = None,
    ) -> StepRecord | None:
        guard: Document = {
            "_id": row_id(run_id, key),
            "status": {"$in": [str(status) for status in expected]},
        }
        if attempt is not None:
            guard["attempt"] = attempt
        moved = await self._steps.find_one_and_update(
            guard,
            {
                "$set": {
                    "status": str(StepStatus.QUEUED),
                    "dispatched_at": now,
                    "lease_until": None,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return None if moved is None else step_record(moved)

    async def steps(
        self, run_id: RunId, keys: Iterable[StepKey]
    ) -> dict[StepKey, StepRecord]:
        asked = list(keys)
        ids = [row_id(run_id, key) for key in asked]
        if not ids:
            return {}
        cursor = self._steps.find({"_id": {"$in": ids}})
        found = {doc["key"]: step_record(doc) async for doc in cursor}
        # In the order asked, as the memory store answers.
        return {key: found[key] for key in asked if key in found}

    async def scope_steps(self, run_id: RunId, scope: str) -> list[StepRecord]:
        cursor = self._steps.find({"run_id": run_id, "scope": scope})
        return [step_record(doc) async for doc in cursor]

    async def count_final(self, run_id: RunId, scope: str) -> int:
        return await self._steps.count_documents(
            {"run_id": run_id, "scope": scope, "status": {"$in": _FINAL}}
        )

    async def count_final_of(self, run_id: RunId, keys: Sequence[StepKey]) -> int:
        return await self._steps.count_documents(
            {
                "_id": {"$in": [row_id(run_id, k) for k in keys]},
                "status": {"$in": _FINAL},
            }
        )

    async def in_flight(self, run_id: RunId) -> list[StepRecord]:
        cursor = self._steps.find({"run_id": run_id, "status": {"$in": _IN_FLIGHT}})
        return [step_record(doc) async for doc in cursor]

    async def reset_steps(
        self, run_id: RunId, keys: Iterable[StepKey], *, only_error: str | None = None
    ) -> list[StepKey]:
        asked = list(dict.fromkeys(keys))
        guard: Document = {"_id": {"$in": [row_id(run_id, key) for key in asked]}}
        if only_error is not None:
            guard |= {"status": str(StepStatus.SKIPPED), "error": only_error}
        present = {doc["key"] async for doc in self._steps.find(guard, {"key": 1})}
        doomed = [key for key in asked if key in present]
        if not doomed:
            return []
        # Rows and items below first, the top rows last: a crash in between leaves
        # the top rows, so the reset can be repeated; never orphans that would block
        # a re-dispatch.
        below = [
            {"_id": {"$regex": f"^{re.escape(row_id(run_id, k))}\\."}} for k in doomed
        ]
        await self._steps.delete_many({"$or": below})
        items = [
            {"_id": {"$regex": f"^{re.escape(row_id(run_id, k))}[./]"}} for k in doomed
        ]
        await self._items.delete_many({"$or": items})
        guard["_id"] = {"$in": [row_id(run_id, key) for key in doomed]}
        await self._steps.delete_many(guard)
        return doomed

    async def stale_queued(self, *, before: datetime, limit: int) -> list[StepRecord]:
        return await self._oldest(
            {"status": str(StepStatus.QUEUED), "dispatched_at": {"$lt": before}},
            "dispatched_at",
            limit,
        )

    async def expired_leases(self, *, before: datetime, limit: int) -> list[StepRecord]:
        return await self._oldest(
            {"status": str(StepStatus.RUNNING), "lease_until": {"$lt": before}},
            "lease_until",
            limit,
        )

    async def _oldest(
        self, query: Document, field: str, limit: int
    ) -> list[StepRecord]:
        if limit <= 0:  # pymongo reads limit 0 as "no limit"
            return []
        cursor = self._steps.find(query).sort([(field, ASCENDING), ("_id", ASCENDING)])
        return [step_record(doc) async for doc in cursor.limit(limit)]


def _outcome_fields(outcome: Outcome, now: datetime) -> dict[str, Any]:
    """What `finish` and `settle` write on the step itself."""
    fields: dict[str, Any] = {
        "status": str(outcome.status),
        "output": None if outcome.output is None else dumps(outcome.output),
        "error": outcome.error,
        "trace": None if outcome.trace is None else dumps(outcome.trace),
        "resolved_inputs": dumps_mapping(outcome.resolved_inputs),
        "lease_until": None,
        "completed_at": now if outcome.status.is_final else None,
    }
    if outcome.inputs is not None:
        fields["inputs"] = dumps_mapping(outcome.inputs)
    if outcome.trace_context:  # obs: the attempt's trace context (issue 13)
        fields["tc"] = context_document(outcome.trace_context)
    return fields


def _closed_latest_attempt(outcome: Outcome, now: datetime) -> Document:
    """A pipeline expression: `attempts` with its latest entry closed, if it is open."""
    latest = {"$arrayElemAt": ["$attempts", -1]}
    latest_end = {"$getField": {"field": "completed_at", "input": latest}}
    is_open = {
        "$and": [
            {"$gt": [{"$size": "$attempts"}, 0]},
            {"$eq": [{"$ifNull": [latest_end, None]}, None]},
        ]
    }
    closed = {
        "$mergeObjects": [
            latest,
            {
                "status": str(outcome.status),
                "completed_at": now,
                "error": {"$literal": outcome.error},
            },
        ]
    }
    earlier = {"$slice": ["$attempts", {"$subtract": [{"$size": "$attempts"}, 1]}]}
    return {"$cond": [is_open, {"$concatArrays": [earlier, [closed]]}, "$attempts"]}
