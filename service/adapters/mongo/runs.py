"""`MongoRunStore`: runs, their step rows and ForEach items on MongoDB.

Documents (JSON values are JSON text, instants BSON dates; see `codec.py`):

- `runs {_id: run id, flow_id, flow_name, trigger_key, job_id, status, body, headers,
  started_at, completed_at, source_run_id, idem?, deadline_at, cancel: {requested,
  reason, at}, timed_out_at, started, purging?}`. `idem` (the normalised idempotency
  key) is absent when there is none, and a UNIQUE PARTIAL index on (flow_id,
  trigger_key, idem) covers the documents that have it: registering the key and
  creating the run are one insert, so no key ever points at no run. The control flags
  live on the run, so cancel, timeout, complete and reopen are each one guarded update.
- `steps {_id: "<run>/<key>", run_id, key, scope, type, status, dispatched_at, inputs,
  attempt, job_id, lease_until, resolved_inputs, output, error, trace, started_at,
  completed_at, attempts: [latest 50 {number, job_id, started_at, status, completed_at,
  error}], loop?: {total, concurrency, finished, failed}}`. The unique `_id` is the
  dispatch ledger; the claim (owner `job_id`, `lease_until`) is on the row itself.
- `loop_items {_id: "<run>/<key>/<start>", run_id, loop, start, count, items}`: see
  `loops.py`.

Every guarded transition is ONE single-document atomic operation, with the state it
expects in its filter, so a lost race matches nothing and returns False/None:

- create: `insert_one`; a DuplicateKeyError (same `_id`, or same idempotency key) means
  "exists already" and the first run is returned.
- add_steps: `insert_many(ordered=False)`; duplicate `_id`s are the rows that exist.
- claim: `find_one_and_update` where status is Queued, or Running with `lease_until <=
  now` (or, on a redelivery taking over, Running and owned by the same job); an update
  pipeline increments `attempt` and appends the attempt entry numbered from it,
  keeping the latest 50 (`$slice`).
- finish: `update_one` where status is Running, `attempt` and `job_id` match; the
  attempt entry is closed through an arrayFilter on its number.
- settle, requeue, extend_lease, complete_run, reopen_run, request_cancel,
  mark_timed_out, mark_started, advance_loop: one guarded `update_one` /
  `find_one_and_update` each.

No transaction is used anywhere. The only multi-document writes are idempotent and
ordered so that a crash half-way is finished by the next call: start_loop (items, then
the counters that say the loop started), reset_steps (rows below, then the top rows) and
retention (see `retention.py`).
"""

from datetime import datetime

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from service.adapters.mongo.codec import (
    LOOP_ITEMS,
    RUNS,
    STEPS,
    Document,
    run_document,
    run_record,
)
from service.adapters.mongo.loops import LoopItems
from service.adapters.mongo.outage import translates_outages
from service.adapters.mongo.steps import StepRows
from service.engine.model import RunId, RunStatus
from service.engine.records import TIMED_OUT_REASON, RunRecord

_RUNNING = str(RunStatus.RUNNING)


@translates_outages
class MongoRunStore(StepRows, LoopItems):
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._runs = db[RUNS]
        self._steps = db[STEPS]
        self._items = db[LOOP_ITEMS]

    async def create_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        doc = run_document(run)
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

    async def mark_started(self, run_id: RunId) -> None:
        await self._runs.update_one(
            {"_id": run_id, "started": False}, {"$set": {"started": True}}
        )

    async def complete_run(
        self, run_id: RunId, status: RunStatus, *, now: datetime
    ) -> bool:
        result = await self._runs.update_one(
            {"_id": run_id, "status": _RUNNING},
            {"$set": {"status": str(status), "completed_at": now}},
        )
        return result.matched_count == 1

    async def reopen_run(self, run_id: RunId) -> bool:
        # Not while retention is deleting the run's rows (see retention.py).
        result = await self._runs.update_one(
            {"_id": run_id, "status": {"$ne": _RUNNING}, "purging": {"$ne": True}},
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

    async def unstarted_runs(self, *, before: datetime, limit: int) -> list[RunRecord]:
        if limit <= 0:  # pymongo reads limit 0 as "no limit"
            return []
        cursor = (
            self._runs.find(
                {"started": False, "status": _RUNNING, "started_at": {"$lt": before}}
            )
            .sort([("started_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [run_record(doc) async for doc in cursor]
