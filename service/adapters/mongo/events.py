"""`MongoEventStore`: each run's stored events (SPEC §6.1), numbered per run.

Only what no record holds is stored (skips, parks, signals, cancels, a completion a
retry reopened); step and run starts and ends are read off the records by
`service/engine/timeline.py`, which merges both for readers.

Written with w:1 (telemetry; every other collection uses the configured write concern).
`events {run_id, seq, type, at, step_key, message}`, unique on (run_id, seq): one small
document per event, so a run with 10,000 events has 10,000 small documents. Sequence
numbers come from `event_counters {_id: run id, seq}`: one `$inc` reserves a block for a
whole batch, so an append is two round trips however many events it carries. A crash
between the two leaves a gap in the numbers, never a duplicate or a step backwards.
"""

from collections.abc import Sequence

from pymongo import ASCENDING, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from service.adapters.mongo.codec import EVENT_COUNTERS, EVENTS, Document, event_record
from service.adapters.mongo.collection import Collection
from service.adapters.mongo.outage import duplicates_only
from service.engine.model import RunId
from service.engine.records import Event, NewEvent


class MongoEventStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        # Events are telemetry (SPEC 6.1: best effort, never fail a run), so they skip
        # the majority and journal wait every state transition pays.
        telemetry = WriteConcern(w=1)
        self._events = Collection(db.get_collection(EVENTS, write_concern=telemetry))
        self._counters = Collection(
            db.get_collection(EVENT_COUNTERS, write_concern=telemetry)
        )

    async def append(self, run_id: RunId, events: Sequence[NewEvent]) -> None:
        if not events:
            return
        last = await self._reserve(run_id, len(events))
        first = last - len(events) + 1
        documents = [
            {
                "run_id": run_id,
                "seq": seq,
                "type": event.type,
                "at": event.at,
                "step_key": event.step_key,
                "message": event.message,
            }
            | ({"key": event.key} if event.key is not None else {})
            for seq, event in enumerate(events, start=first)
        ]
        try:
            await self._events.insert_many(documents, ordered=False)
        except BulkWriteError as error:
            duplicates_only(error)  # a keyed event stored already: the key's purpose

    async def _reserve(self, run_id: RunId, count: int) -> int:
        """The last of `count` new sequence numbers of the run."""
        for _ in range(2):
            try:
                counter = await self._counters.find_one_and_update(
                    {"_id": run_id},
                    {"$inc": {"seq": count}},
                    upsert=True,
                )
            except DuplicateKeyError:
                # Two first appends upserted the counter at once; try again finds it.
                continue
            if counter is not None:  # always, with upsert and AFTER
                seq: int = counter["seq"]
                return seq
        raise RuntimeError(f"no event counter for run {run_id}")

    async def events(
        self, run_id: RunId, *, skip: int = 0, limit: int = 200
    ) -> list[Event]:
        if limit <= 0:  # pymongo reads limit 0 as "no limit"
            return []
        docs = await self._events.find(
            {"run_id": run_id}, sort=[("seq", ASCENDING)], skip=skip, limit=limit
        )
        return [event_record(doc) for doc in docs]
