"""What the dashboard reads from MongoDB; reads only, each one index-backed.

Pages of runs by keyset (newest first, fast on any page at 100,000+ runs), counts by
status as index count scans, a run's rows by scope, per-template status counts of its
ForEach bodies, its timers, waiters and derived runs. Nothing here is part of a port.
"""

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo.codec import (
    EVENTS,
    FLOWS,
    RUNS,
    STEPS,
    TIMERS,
    WAITERS,
    Document,
    event_record,
    row_id,
    run_record,
    step_record,
    timer_record,
    waiter_record,
)
from service.adapters.mongo.indexes import BY_SOURCE
from service.adapters.mongo.lineage import children, from_source, queue_place
from service.adapters.mongo.outage import translates_outages
from service.engine.model import RunId, RunStatus
from service.engine.records import Event, RunRecord, StepRecord, Timer, Waiter

NEWEST: Final = [("started_at", DESCENDING), ("_id", DESCENDING)]
OLDEST: Final = [("started_at", ASCENDING), ("_id", ASCENDING)]
DERIVED_SHOWN: Final = 20
_VALUES: Final = ("inputs", "resolved_inputs", "output", "trace")


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs: flow id, status, start in [since, until), trigger key, text.

    `text` is the start of a run id, a job id or an idempotency key.
    """

    flow: str | None = None
    status: RunStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    trigger: str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """A place in the newest-first order: the (started_at, run id) of a run."""

    started_at: datetime
    run_id: str


@dataclass(frozen=True, slots=True)
class RunPage:
    """Runs newest first; `older` and `newer` continue the list (None at its ends)."""

    runs: list[RunRecord]
    older: Cursor | None
    newer: Cursor | None


def cursor_of(run: RunRecord) -> Cursor:
    return Cursor(run.started_at, run.run_id)


@translates_outages
class RunBrowser:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._runs = db[RUNS]
        self._steps = db[STEPS]
        self._events = db[EVENTS]
        self._timers = db[TIMERS]
        self._waiters = db[WAITERS]
        self._flows = db[FLOWS]
        self._db = db

    async def page(
        self,
        where: RunFilter,
        *,
        limit: int,
        before: Cursor | None = None,
        after: Cursor | None = None,
    ) -> RunPage:
        """`limit` runs older than `before`, or newer than `after`, or the newest."""
        query = run_query(where)
        if after is not None:
            query = {"$and": [query, _beyond(after, "$gt")]}
            cursor = self._runs.find(query).sort(OLDEST).limit(limit + 1)
            found = [run_record(doc) async for doc in cursor]
            runs = list(reversed(found[:limit]))
            more_newer, more_older = len(found) > limit, True
        else:
            if before is not None:
                query = {"$and": [query, _beyond(before, "$lt")]}
            cursor = self._runs.find(query).sort(NEWEST).limit(limit + 1)
            found = [run_record(doc) async for doc in cursor]
            runs = found[:limit]
            more_newer, more_older = before is not None, len(found) > limit
        return RunPage(
            runs=runs,
            older=cursor_of(runs[-1]) if runs and more_older else None,
            newer=cursor_of(runs[0]) if runs and more_newer else None,
        )

    async def count_by_status(self, where: RunFilter) -> dict[str, int]:
        """Runs of the filter (its status aside) per status, every status listed.

        One count per status, run at once: with the status leading an index, each is
        a count scan of index keys, never a read of the runs.
        """
        statuses = list(RunStatus)
        counts = await asyncio.gather(
            *(
                self._runs.count_documents(run_query(replace(where, status=status)))
                for status in statuses
            )
        )
        return {str(status): n for status, n in zip(statuses, counts, strict=True)}

    async def count(self, where: RunFilter) -> int:
        return await self._runs.count_documents(run_query(where))

    async def run_ids(self, where: RunFilter, *, limit: int) -> list[RunId]:
        """The ids of the newest `limit` runs of the filter (for bulk actions)."""
        cursor = self._runs.find(run_query(where), {"_id": 1}).sort(NEWEST)
        return [RunId(doc["_id"]) async for doc in cursor.limit(limit)]

    async def run(self, run_id: str) -> RunRecord | None:
        found = await self._runs.find_one({"_id": run_id})
        return None if found is None else run_record(found)

    async def manifest_text(self, flow_id: str) -> str | None:
        """The stored manifest of a flow as JSON text (None if there is no flow)."""
        found = await self._flows.find_one({"_id": flow_id}, {"manifest": 1})
        text = None if found is None else found.get("manifest")
        return text if isinstance(text, str) else None

    async def derived(self, run_id: str) -> list[RunRecord]:
        """Runs started as reruns of `run_id`, newest first (the first 20)."""
        query = {"source_run_id": from_source(run_id)}
        cursor = self._runs.find(query).sort(NEWEST).hint(BY_SOURCE)
        return [run_record(doc) async for doc in cursor.limit(DERIVED_SHOWN)]

    async def children(self, run_id: str) -> list[RunRecord]:
        """The runs its ChildFlow steps started, oldest first (the first 20)."""
        return await children(self._db, run_id)

    async def queue_place(self, run: RunRecord) -> int | None:
        """A Queued run's place in its key's queue (1: next to start)."""
        return await queue_place(self._db, run)

    async def rows(
        self, run_id: str, *, scope: str = "", values: bool = True
    ) -> list[StepRecord]:
        """The step rows of one scope ("" top level, "loop" iterations, "loop.3").

        Without `values`, a row's inputs, output and trace are left out (a list
        shows none of them, and decoding them is most of the cost of a long run).
        """
        shape = None if values else dict.fromkeys(_VALUES, 0)
        cursor = self._steps.find({"run_id": run_id, "scope": scope}, shape)
        return [step_record(doc) async for doc in cursor]

    async def rows_in(
        self, run_id: str, scopes: Sequence[str], *, limit: int
    ) -> list[StepRecord]:
        """The rows of several scopes (iterations of a loop), at most `limit`."""
        cursor = self._steps.find({"run_id": run_id, "scope": {"$in": list(scopes)}})
        return [step_record(doc) async for doc in cursor.limit(limit)]

    async def failed_steps(self, run_ids: Sequence[str]) -> list[StepRecord]:
        """The Failed top-level step rows of these runs (what a bulk retry retries)."""
        cursor = self._steps.find(
            {"run_id": {"$in": list(run_ids)}, "scope": "", "status": "Failed"}
        )
        return [step_record(doc) async for doc in cursor]

    async def rows_by_key(self, run_id: str, keys: Sequence[str]) -> list[StepRecord]:
        """The rows of these keys that exist (iterations of a loop, by index)."""
        ids = [row_id(run_id, key) for key in keys]
        cursor = self._steps.find({"_id": {"$in": ids}})
        return [step_record(doc) async for doc in cursor]

    async def row(self, run_id: str, key: str) -> StepRecord | None:
        found = await self._steps.find_one({"_id": row_id(run_id, key)})
        return None if found is None else step_record(found)

    async def template_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Rows below the top level per template key (`loop.child`) and status.

        An iteration row `loop.3` counts under `loop`; `loop.3.child` under
        `loop.child`. Worked out by the server: no row leaves MongoDB.
        """
        parts = {
            "$filter": {
                "input": {"$split": ["$key", "."]},
                "cond": {
                    "$not": [{"$regexMatch": {"input": "$$this", "regex": "^[0-9]+$"}}]
                },
            }
        }
        joined = {
            "$reduce": {
                "input": parts,
                "initialValue": "",
                "in": {
                    "$cond": [
                        {"$eq": ["$$value", ""]},
                        "$$this",
                        {"$concat": ["$$value", ".", "$$this"]},
                    ]
                },
            }
        }
        cursor = await self._steps.aggregate(
            [
                {"$match": {"run_id": run_id, "scope": {"$gt": ""}}},
                {"$group": {"_id": {"t": joined, "s": "$status"}, "n": {"$sum": 1}}},
            ]
        )
        counts: dict[str, dict[str, int]] = {}
        async for doc in cursor:
            counts.setdefault(doc["_id"]["t"], {})[doc["_id"]["s"]] = doc["n"]
        return counts

    async def events(self, run_id: str, *, limit: int) -> list[Event]:
        """The latest `limit` stored events of the run, oldest first."""
        cursor = self._events.find({"run_id": run_id}).sort("seq", DESCENDING)
        found = [event_record(doc) async for doc in cursor.limit(limit)]
        return found[::-1]

    async def timers(self, run_id: str) -> list[Timer]:
        cursor = self._timers.find({"run_id": run_id}).sort("due_at", ASCENDING)
        return [timer_record(doc) async for doc in cursor]

    async def waiters(self, run_id: str) -> list[Waiter]:
        cursor = self._waiters.find({"run_id": run_id}).sort("created_at", ASCENDING)
        return [waiter_record(doc) async for doc in cursor]


def run_query(where: RunFilter) -> Document:
    query: Document = {}
    if where.flow is not None:
        query["flow_id"] = where.flow
    if where.status is not None:
        query["status"] = str(where.status)
    if where.trigger is not None:
        query["trigger_key"] = where.trigger
    started: Document = {}
    if where.since is not None:
        started["$gte"] = where.since
    if where.until is not None:
        started["$lt"] = where.until
    if started:
        query["started_at"] = started
    if text := (where.text or "").strip():
        # Anchored, so each branch is a range scan of its index.
        query["$or"] = [
            {"_id": {"$regex": f"^{re.escape(text)}"}},
            {"job_id": {"$regex": f"^{re.escape(text)}"}},
            {"idem": {"$regex": f"^{re.escape(text.lower())}"}},
        ]
    return query


def _beyond(cursor: Cursor, op: str) -> Document:
    """Runs after `cursor` in the (started_at, _id) order, `$lt` older, `$gt` newer."""
    return {
        "$or": [
            {"started_at": {op: cursor.started_at}},
            {"started_at": cursor.started_at, "_id": {op: cursor.run_id}},
        ]
    }
