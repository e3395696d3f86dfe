"""`MongoStepStore`: step rows on MongoDB: the ledger, claims, results, sweeps.

Documents: `steps {_id: "<run>/<key>", run_id, key, scope, type, status, dispatched_at,
inputs, attempt, job_id, dispatch_id, lease_until, resolved_inputs, output, error,
trace, started_at, completed_at, attempts: [latest 50 {number, job_id, started_at,
status, completed_at, error}], released?, recheck_at?, stop, loop?}` (JSON values are
JSON text; see `codec.py`). The unique `_id` is the ledger: an insert is refused for a
row that exists. Every transition is one guarded single-document write:

- claim: `find_one_and_update` where status is Queued, or Running with `lease_until <=
  now` (or, on a redelivery taking over, Running and claimed by the same job through the
  same copy of its message, `dispatch_id`), and `stop`
  is null; an update pipeline increments `attempt` and appends the attempt entry
  numbered from it, keeping the latest 50. A top-level step released by a result has no
  row yet: its claim upserts it (a row that exists and is not claimable makes the upsert
  fail on `_id`, which is the answer "lost").
- finish: `update_one` where status is Running, `attempt` and `job_id` match and `stop`
  is null; the attempt entry is closed through an arrayFilter on its number. A row
  marked stopped meanwhile takes the outcome without its releases (a second write).
- Claims and results of concurrent deliveries go out together, one bulk write per
  turn of the event loop (group commit: `commits.py`), each with its own answer.
- settle, requeue, extend_lease: one guarded `update_one` / `find_one_and_update`.
"""

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from pymongo import ASCENDING, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from service.adapters.mongo.codec import (
    LOOP_ITEMS,
    STEPS,
    Document,
    row_id,
    step_document,
    step_record,
)
from service.adapters.mongo.collection import Collection
from service.adapters.mongo.commits import ClaimWrite, ResultWrite, StepCommits
from service.adapters.mongo.outage import duplicates_only
from service.adapters.mongo.transitions import (
    closed_latest_attempt,
    outcome_fields,
    stop_of,
)
from service.engine.model import (
    FINAL_STATUSES,
    FOR_EACH,
    IN_FLIGHT_STATUSES,
    JobId,
    RunId,
    RunStatus,
    StepKey,
    StepStatus,
)
from service.engine.records import (
    Claim,
    NewStep,
    Outcome,
    Recorded,
    Renewal,
    StepRecord,
)

_FINAL = [str(status) for status in FINAL_STATUSES]
_IN_FLIGHT = [str(status) for status in IN_FLIGHT_STATUSES]
_RUNNING = str(StepStatus.RUNNING)
_LOOP_TYPE = {"$regex": f"^{FOR_EACH}$", "$options": "i"}


class MongoStepStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._steps = Collection(db[STEPS])
        self._items = Collection(db[LOOP_ITEMS])
        # Claims are acknowledged by the primary alone (see `commits.py`).
        fast = db[STEPS].with_options(write_concern=WriteConcern(w=1))
        self._commits = StepCommits(self._steps, claims=Collection(fast))

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
        dispatch_id: str = "",
        new: NewStep | None = None,
    ) -> Claim:
        write = ClaimWrite(run_id, key, job_id, now, lease, take_over, dispatch_id, new)
        return await self._commits.claims.submit(write)

    async def extend_lease(
        self, run_id: RunId, key: StepKey, *, job_id: JobId, until: datetime
    ) -> Renewal:
        held = await self._steps.find_one_and_update(
            {"_id": row_id(run_id, key), "status": _RUNNING, "job_id": job_id},
            {"$set": {"lease_until": until}},
            projection={"stop": 1},
        )
        if held is None:
            return Renewal(held=False)
        return Renewal(held=True, stop=stop_of(held))

    async def finish(
        self,
        run_id: RunId,
        key: StepKey,
        outcome: Outcome,
        *,
        job_id: JobId,
        attempt: int,
        now: datetime,
        released: Sequence[StepKey] = (),
        recheck_at: datetime | None = None,
    ) -> Recorded:
        write = ResultWrite(
            run_id, key, outcome, job_id, attempt, now, released, recheck_at
        )
        return await self._commits.results.submit(write)

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
            for name, value in outcome_fields(outcome, now).items()
        }
        fields["attempts"] = closed_latest_attempt(outcome, now)
        result = await self._steps.update_one(
            {"_id": row_id(run_id, key), "status": {"$in": [str(s) for s in expected]}},
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
            "stop": None,
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
        )
        return None if moved is None else step_record(moved)

    async def steps(
        self, run_id: RunId, keys: Iterable[StepKey]
    ) -> dict[StepKey, StepRecord]:
        asked = list(keys)
        if not asked:
            return {}
        ids = [row_id(run_id, key) for key in asked]
        found = {
            doc["key"]: step_record(doc)
            for doc in await self._steps.find({"_id": {"$in": ids}})
        }
        # In the order asked, as the memory store answers.
        return {key: found[key] for key in asked if key in found}

    async def scope_steps(self, run_id: RunId, scope: str) -> list[StepRecord]:
        docs = await self._steps.find({"run_id": run_id, "scope": scope})
        return [step_record(doc) for doc in docs]

    async def all_steps(self, run_id: RunId) -> list[StepRecord]:
        return [step_record(doc) for doc in await self._steps.find({"run_id": run_id})]

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
        docs = await self._steps.find({"run_id": run_id, "status": {"$in": _IN_FLIGHT}})
        return [step_record(doc) for doc in docs]

    async def reset_steps(
        self, run_id: RunId, keys: Iterable[StepKey], *, only_error: str | None = None
    ) -> list[StepKey]:
        asked = list(dict.fromkeys(keys))
        guard: Document = {"_id": {"$in": [row_id(run_id, key) for key in asked]}}
        if only_error is not None:
            guard |= {"status": str(StepStatus.SKIPPED), "error": only_error}
        present = {doc["key"] for doc in await self._steps.find(guard, {"key": 1})}
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

    async def mark_stopped(
        self, run_id: RunId, status: RunStatus, *, loops_only: bool = False
    ) -> None:
        query: Document = {"run_id": run_id, "status": {"$nin": _FINAL}, "stop": None}
        if loops_only:
            query["type"] = _LOOP_TYPE
        await self._steps.update_many(query, {"$set": {"stop": str(status)}})

    async def stale_queued(self, *, before: datetime, limit: int) -> list[StepRecord]:
        return await self._oldest(
            {"status": str(StepStatus.QUEUED), "dispatched_at": {"$lt": before}},
            "dispatched_at",
            limit,
        )

    async def expired_leases(self, *, before: datetime, limit: int) -> list[StepRecord]:
        return await self._oldest(
            {"status": _RUNNING, "lease_until": {"$lt": before}}, "lease_until", limit
        )

    async def due_rechecks(self, *, before: datetime, limit: int) -> list[StepRecord]:
        return await self._oldest({"recheck_at": {"$lt": before}}, "recheck_at", limit)

    async def rechecked(self, rows: Iterable[tuple[RunId, StepKey]]) -> None:
        ids = [row_id(run_id, key) for run_id, key in rows]
        if ids:
            await self._steps.update_many(
                {"_id": {"$in": ids}}, {"$unset": {"recheck_at": ""}}
            )

    async def _oldest(
        self, query: Document, field: str, limit: int
    ) -> list[StepRecord]:
        if limit <= 0:  # pymongo reads limit 0 as "no limit"
            return []
        docs = await self._steps.find(
            query, sort=[(field, ASCENDING), ("_id", ASCENDING)], limit=limit
        )
        return [step_record(doc) for doc in docs]
