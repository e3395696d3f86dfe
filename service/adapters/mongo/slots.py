"""`MongoSlotStore`: the slots of concurrency keys on MongoDB.

Documents: `slots {_id: "<flow id>/<key>", flow_id, key, holders: [{run, n, m}],
waiting: [{run, n}], tickets, admitted, touched_at}`: `n` is a run's ticket (its place
in the queue), `m` its admission number. Each call is one guarded single-document write:

- join: an update pipeline that appends the run with ticket `tickets + 1`, where
  neither list has it and the queue has room (an upsert for a key's first run; a
  concurrent first upsert that loses on `_id` is tried again);
- take: `$pop` the head into the holders, where the head is that run, `admitted` is
  what the caller saw, and the holder at index `limit - 1` does not exist;
- free: `$pull` the runs from both lists.
"""

from collections.abc import Collection
from datetime import datetime
from typing import Final

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from service.adapters.mongo.codec import SLOTS, Document, row_id
from service.adapters.mongo.collection import Collection as MongoCollection
from service.engine.concurrency import QUEUE_ROOM, Slots, Ticket
from service.engine.model import FlowId, RunId
from service.errors import QueueFullError

_JOIN_TRIES: Final = 3
"""A key's first runs race to create its record: one wins, the others join it."""


class MongoSlotStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._slots = MongoCollection(db[SLOTS])

    async def join(
        self,
        flow_id: FlowId,
        key: str,
        run_id: RunId,
        *,
        now: datetime,
        room: int = QUEUE_ROOM,
    ) -> Slots:
        _id = row_id(flow_id, key)
        absent = {
            "_id": _id,
            "waiting.run": {"$ne": run_id},
            "holders.run": {"$ne": run_id},
            f"waiting.{room - 1}": {"$exists": False},
        }
        for _ in range(_JOIN_TRIES):
            try:
                joined = await self._slots.find_one_and_update(
                    absent, _joining(flow_id, key, run_id, now), upsert=True
                )
            except DuplicateKeyError:
                joined = None  # it exists: it has the run already, or was just made
            if joined is not None:
                return _slots(joined)
            found = await self._slots.find_one({"_id": _id})
            if found is not None and _has(found, run_id):
                return _slots(found)
            if found is not None and len(found.get("waiting", [])) >= room:
                raise QueueFullError(key, len(found["waiting"]))
        raise RuntimeError(f"run {run_id} could not join the queue of key {key!r}")

    async def slots(self, flow_id: FlowId, key: str) -> Slots | None:
        found = await self._slots.find_one({"_id": row_id(flow_id, key)})
        return None if found is None else _slots(found)

    async def take(
        self, seen: Slots, run_id: RunId, *, limit: int, now: datetime
    ) -> Slots | None:
        if not seen.waiting or seen.waiting[0].run_id != run_id:
            return None
        head = seen.waiting[0]
        taken = await self._slots.find_one_and_update(
            {
                "_id": row_id(seen.flow_id, seen.key),
                "waiting.0.run": run_id,
                "admitted": seen.admitted,
                f"holders.{limit - 1}": {"$exists": False},
            },
            {
                "$pop": {"waiting": -1},
                "$push": {
                    "holders": {"run": run_id, "n": head.number, "m": seen.admitted + 1}
                },
                "$inc": {"admitted": 1},
                "$set": {"touched_at": now},
            },
        )
        return None if taken is None else _slots(taken)

    async def free(
        self, flow_id: FlowId, key: str, run_ids: Collection[RunId], *, now: datetime
    ) -> Slots | None:
        gone = {"run": {"$in": list(run_ids)}}
        freed = await self._slots.find_one_and_update(
            {"_id": row_id(flow_id, key)},
            {"$pull": {"holders": gone, "waiting": gone}, "$set": {"touched_at": now}},
        )
        return None if freed is None else _slots(freed)


def _joining(flow_id: FlowId, key: str, run_id: RunId, now: datetime) -> list[Document]:
    """The pipeline that appends `run_id` with the next ticket.

    Both are made from the record as it was, so the count and the ticket agree.
    """
    issued = {"$ifNull": ["$tickets", 0]}
    number = {"$add": [issued, 1]}
    entry = {"run": {"$literal": run_id}, "n": number}
    return [
        {
            "$set": {
                "flow_id": {"$literal": flow_id},
                "key": {"$literal": key},
                "holders": {"$ifNull": ["$holders", []]},
                "waiting": {"$concatArrays": [{"$ifNull": ["$waiting", []]}, [entry]]},
                "tickets": number,
                "admitted": {"$ifNull": ["$admitted", 0]},
                "touched_at": now,
            }
        }
    ]


def _has(doc: Document, run_id: RunId) -> bool:
    entries = [*doc.get("holders", []), *doc.get("waiting", [])]
    return any(entry["run"] == run_id for entry in entries)


def _slots(doc: Document) -> Slots:
    return Slots(
        flow_id=FlowId(doc["flow_id"]),
        key=doc["key"],
        holders=tuple(
            Ticket(RunId(t["run"]), t["n"], t.get("m")) for t in doc.get("holders", [])
        ),
        waiting=tuple(Ticket(RunId(t["run"]), t["n"]) for t in doc.get("waiting", [])),
        tickets=doc.get("tickets", 0),
        admitted=doc.get("admitted", 0),
    )
