"""What operators ask of the MongoDB store through `flowctl`; reads only.

Find runs, read one in full (with its flow's manifest, its signal waiters, the runs
derived from it by `rerun`, its child runs and, if it waits, its place in its key's
queue), count runs by status. Nothing here is part of a port.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo.codec import (
    EVENTS,
    FLOWS,
    RUNS,
    STEPS,
    WAITERS,
    Document,
    event_record,
    flow_record,
    run_record,
    step_record,
    waiter_record,
)
from service.adapters.mongo.indexes import BY_SOURCE
from service.adapters.mongo.lineage import children, from_source, queue_place
from service.adapters.mongo.outage import translates_outages
from service.engine.manifest import from_manifest
from service.engine.model import Flow, RunId, RunStatus
from service.engine.records import Event, RunRecord, StepRecord, Waiter
from service.engine.timeline import timeline

DERIVED_SHOWN: Final = 20
"""Runs derived from one run that `run_detail` reads (`derived_total` counts all)."""


@dataclass(frozen=True, slots=True)
class RunDetail:
    """One run in full: its steps (with their latest attempts) and its events.

    `events` are the stored ones merged with those of the attempts (`timeline`).
    """

    run: RunRecord
    steps: list[StepRecord]
    events: list[Event]
    flow: Flow | None = None
    """The run's flow, from its stored manifest (None if missing or unreadable)."""
    waiters: list[Waiter] = field(default_factory=list)
    derived: list[RunRecord] = field(default_factory=list)
    """The newest runs started by `rerun` of this one."""
    derived_total: int = 0
    children: list[RunRecord] = field(default_factory=list)
    """The runs its ChildFlow steps started (the first 20)."""
    place: int | None = None
    """A Queued run's place in its key's queue (1: next to start)."""


@translates_outages
class RunQueries:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._runs = db[RUNS]
        self._steps = db[STEPS]
        self._events = db[EVENTS]
        self._flows = db[FLOWS]
        self._waiters = db[WAITERS]
        self._db = db

    async def find_runs(
        self,
        *,
        flow: str | None = None,
        status: RunStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        text: str | None = None,
        source: RunId | None = None,
        skip: int = 0,
        limit: int = 50,
    ) -> tuple[list[RunRecord], int]:
        """A page of runs, newest first, and how many match in all.

        `flow` is a flow id; `since` <= started_at < `until`; `text` is the start of a
        run id, a job id or an idempotency key (a whole one matches too); `source` is
        the run they were re-run from.
        """
        query = _run_query(
            flow=flow, status=status, since=since, until=until, text=text
        )
        if source is not None:
            query["source_run_id"] = from_source(source)
        total = await self._runs.count_documents(query)
        if limit <= 0:  # pymongo reads limit 0 as "no limit"
            return [], total
        cursor = (
            self._runs.find(query)
            .sort([("started_at", DESCENDING), ("_id", DESCENDING)])
            .skip(skip)
            .limit(limit)
        )
        return [run_record(doc) async for doc in cursor], total

    async def run(self, run_id: RunId) -> RunRecord | None:
        """The run record alone; None if absent."""
        found = await self._runs.find_one({"_id": run_id})
        return None if found is None else run_record(found)

    async def run_detail(self, run_id: RunId) -> RunDetail | None:
        """The run, its step rows in dispatch order and its events; None if absent."""
        found = await self._runs.find_one({"_id": run_id})
        if found is None:
            return None
        steps = self._steps.find({"run_id": run_id}).sort(
            [("dispatched_at", ASCENDING), ("_id", ASCENDING)]
        )
        events = self._events.find({"run_id": run_id}).sort("seq", ASCENDING)
        run = run_record(found)
        rows = [step_record(doc) async for doc in steps]
        stored = [event_record(doc) async for doc in events]
        derived = from_source(run_id)
        return RunDetail(
            run=run,
            steps=rows,
            events=timeline(run, stored, rows),
            flow=await self._flow(run.flow_id),
            waiters=[
                waiter_record(doc)
                async for doc in self._waiters.find({"run_id": run_id}).sort(
                    "created_at", ASCENDING
                )
            ],
            derived=[
                run_record(doc)
                async for doc in self._runs.find({"source_run_id": derived})
                .sort("started_at", DESCENDING)
                .hint(BY_SOURCE)
                .limit(DERIVED_SHOWN)
            ],
            derived_total=await self._runs.count_documents(
                {"source_run_id": derived}, hint=BY_SOURCE
            ),
            children=await children(self._db, run_id),
            place=await queue_place(self._db, run),
        )

    async def _flow(self, flow_id: str) -> Flow | None:
        found = await self._flows.find_one({"_id": flow_id})
        if found is None:
            return None
        try:
            return from_manifest(flow_record(found).manifest)
        except ValueError:
            return None

    async def count_by_status(self, *, flow: str | None = None) -> dict[str, int]:
        """Runs per status (every status, zero included), of one flow id or of all."""
        match: Document = {} if flow is None else {"flow_id": flow}
        cursor = await self._runs.aggregate(
            [{"$match": match}, {"$group": {"_id": "$status", "runs": {"$sum": 1}}}]
        )
        counts = dict.fromkeys((str(status) for status in RunStatus), 0)
        counts |= {doc["_id"]: doc["runs"] async for doc in cursor}
        return counts


def _run_query(
    *,
    flow: str | None,
    status: RunStatus | None,
    since: datetime | None,
    until: datetime | None,
    text: str | None,
) -> Document:
    query: Document = {}
    if flow is not None:
        query["flow_id"] = flow
    if status is not None:
        query["status"] = str(status)
    started: Document = {}
    if since is not None:
        started["$gte"] = since
    if until is not None:
        started["$lt"] = until
    if started:
        query["started_at"] = started
    if text := (text or "").strip():
        # Anchored, so each branch is a range scan of its index. Run ids are UUIDs,
        # stored in lower case: `A1B2` finds run a1b2... (UUIDs are case-insensitive).
        query["$or"] = [
            {"_id": {"$regex": f"^{re.escape(text.lower())}"}},
            {"job_id": {"$regex": f"^{re.escape(text)}"}},
            {"idem": {"$regex": f"^{re.escape(text.lower())}"}},
        ]
    return query
