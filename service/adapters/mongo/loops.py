"""`MongoLoopStore`: ForEach items and counters on MongoDB.

The counters live on the loop's step document
(`loop: {total, concurrency, finished, failed, done}`: one guarded `$inc` per
finished iteration, `done` a bitmap of the iterations counted, 63 per word, so a count
repeated after a crash changes nothing);
the items live apart in `loop_items`, in chunks of at most 256 items and about 256 KB
of JSON, so a loop of any length keeps every document small and reading one item costs
the same whatever the loop's length: one aggregate that returns that item alone.
"""

from collections.abc import Iterator, Sequence
from typing import Final

from bson import Int64
from pymongo import ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from service.adapters.mongo.codec import (
    LOOP_ITEMS,
    STEPS,
    Document,
    dumps,
    loads,
    loop_document,
    loop_state,
    row_id,
    step_record,
)
from service.adapters.mongo.collection import Collection
from service.adapters.mongo.outage import duplicates_only
from service.engine.model import Json, RunId, StepKey
from service.engine.records import LoopState, StepRecord
from service.errors import UnknownReferenceError

CHUNK_ITEMS: Final = 256
CHUNK_BYTES: Final = 256 * 1024
"""Soft limit: an item bigger than this gets a chunk of its own."""


class MongoLoopStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._steps = Collection(db[STEPS])
        self._items = Collection(db[LOOP_ITEMS])

    async def start_loop(
        self, run_id: RunId, key: StepKey, items: Sequence[Json], *, concurrency: int
    ) -> LoopState:
        _id = row_id(run_id, key)
        row = await self._steps.find_one({"_id": _id}, {"loop": 1})
        if row is None:
            raise UnknownReferenceError("step", _id)
        if row.get("loop") is not None:
            return loop_state(row["loop"])
        # Items first, counters last: the counters say the loop started, so a crash in
        # between is redone by the next call. Chunk ids are positions, so a repeated or
        # concurrent start with the same items writes the same chunks.
        await self._write_chunks(run_id, key, items)
        state = LoopState(total=len(items), concurrency=concurrency)
        started = await self._steps.find_one_and_update(
            {"_id": _id, "loop": None},
            {"$set": {"loop": loop_document(state)}},
            projection={"loop": 1},
        )
        if started is not None:
            return state
        again = await self._steps.find_one({"_id": _id}, {"loop": 1})
        if again is None or again.get("loop") is None:
            raise UnknownReferenceError("step", _id)  # reset while we were starting it
        return loop_state(again["loop"])

    async def loop_item(self, run_id: RunId, key: StepKey, index: int) -> Json:
        loop = row_id(run_id, key)
        chunks = await self._items.aggregate(
            [
                {"$match": {"loop": loop, "start": {"$lte": max(index, 0)}}},
                {"$sort": {"start": -1}},
                {"$limit": 1},
                {
                    "$project": {
                        "_id": 0,
                        "start": 1,
                        "count": 1,
                        "item": {
                            "$arrayElemAt": [
                                "$items",
                                {"$max": [0, {"$subtract": [index, "$start"]}]},
                            ]
                        },
                    }
                },
            ]
        )
        if not chunks:
            raise UnknownReferenceError("loop", loop)
        chunk = chunks[0]
        if index < 0 or index - chunk["start"] >= chunk["count"]:
            raise IndexError(f"loop {key} has no item {index}")
        return loads(chunk["item"])

    async def advance_loop(
        self, run_id: RunId, key: StepKey, *, index: int, failed: bool
    ) -> StepRecord | None:
        _id = row_id(run_id, key)
        word, bit = divmod(index, LoopState.WORD_BITS)
        done = f"loop.done.{word}"
        advanced = await self._steps.find_one_and_update(
            {
                "_id": _id,
                "loop": {"$ne": None},
                "stop": None,
                "$or": [{done: {"$exists": False}}, {done: {"$bitsAllClear": [bit]}}],
            },
            {
                "$inc": {"loop.finished": 1, "loop.failed": 1 if failed else 0},
                "$bit": {done: {"or": Int64(1 << bit)}},
            },
        )
        if advanced is None:  # counted before, stopped, or no loop at all
            advanced = await self._steps.find_one({"_id": _id})
            if advanced is None or advanced.get("loop") is None:
                return None
        return step_record(advanced)

    async def _write_chunks(
        self, run_id: RunId, key: StepKey, items: Sequence[Json]
    ) -> None:
        loop = row_id(run_id, key)
        writes = [
            ReplaceOne(
                {"_id": f"{loop}/{start}"},
                {
                    "run_id": run_id,
                    "loop": loop,
                    "start": start,
                    "count": len(texts),
                    "items": texts,
                },
                upsert=True,
            )
            for start, texts in _chunks(items)
        ]
        try:
            await self._items.bulk_write(writes, ordered=False)
        except BulkWriteError as error:
            # Two starts upserting one chunk at once: the other wrote the same items.
            duplicates_only(error)


def _chunks(items: Sequence[Json]) -> Iterator[tuple[int, list[str]]]:
    """(start index, items as JSON text); always one chunk, so an empty loop has one."""
    start, size = 0, 0
    texts: list[str] = []
    for index, item in enumerate(items):
        text = dumps(item)
        if texts and (len(texts) >= CHUNK_ITEMS or size + len(text) > CHUNK_BYTES):
            yield start, texts
            start, texts, size = index, [], 0
        texts.append(text)
        size += len(text)
    yield start, texts
