"""`StepCommits`: every step's two writes, its claim and its result, in groups.

The claims (and the results) that concurrent deliveries submit in one turn of the
event loop go out as one unordered bulk write (`Batcher`), and each gets its own
answer from it:

- a claim that created its row (upserted) won, and its row is what it wrote;
- a claim refused as a duplicate `_id` lost (the row exists and is not claimable);
- any other claim is read back with the others in one query: won when the row is
  Running under its job and claim instant.

Claims are written with w:1: their durability rides on the result's own write (majority
by default), which MongoDB commits only with everything the primary wrote before it; a
claim a failover rolled back is found when its result is refused (see `hop.py`). A
result is recorded when the bulk matched every write of the batch; otherwise the
rows are read back, and a write that matched nothing is done again alone, so a row the
run's stop marked gets its outcome without its releases, and a lost claim writes
nothing. A batch of one is sent as the single write it is.
"""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from service.adapters.mongo.batching import Batcher
from service.adapters.mongo.codec import Document, row_id, step_record
from service.adapters.mongo.collection import Collection
from service.adapters.mongo.outage import duplicates_only
from service.adapters.mongo.transitions import (
    claimed_fields,
    outcome_fields,
    stop_of,
)
from service.engine.model import JobId, RunId, StepKey, StepStatus
from service.engine.records import (
    Attempt,
    Claim,
    NewStep,
    Outcome,
    Recorded,
    StepRecord,
)

_RUNNING = str(StepStatus.RUNNING)
W = TypeVar("W", "ClaimWrite", "ResultWrite")
A = TypeVar("A")


@dataclass(frozen=True, slots=True)
class ClaimWrite:
    run_id: RunId
    key: StepKey
    job_id: JobId
    now: datetime
    lease: timedelta
    take_over: bool
    dispatch_id: str
    new: NewStep | None

    @property
    def row_id(self) -> str:
        return row_id(self.run_id, self.key)

    def query(self) -> Document:
        claimable: list[Document] = [
            {"status": str(StepStatus.QUEUED)},
            {"status": _RUNNING, "lease_until": {"$lte": self.now}},
        ]
        if self.take_over:
            # A redelivery of the copy of the message that holds the claim: its lease
            # is ours. (Null matches a row claimed without a dispatch id.)
            claimable.append(
                {
                    "status": _RUNNING,
                    "job_id": self.job_id,
                    "dispatch_id": self.dispatch_id or None,
                }
            )
        return {"_id": self.row_id, "stop": None, "$or": claimable}

    def update(self) -> list[Document]:
        fields = claimed_fields(
            self.run_id, self.job_id, self.dispatch_id, self.now, self.lease, self.new
        )
        return [{"$set": fields}]

    def created(self) -> StepRecord:
        """The row this claim created (an upsert): what it wrote, to the millisecond."""
        assert self.new is not None  # noqa: S101 - only an upsert creates a row
        now = _millis(self.now)
        return StepRecord(
            self.run_id,
            self.key,
            self.new.type,
            StepStatus.RUNNING,
            now,
            inputs=self.new.inputs,
            attempt=1,
            job_id=self.job_id,
            lease_until=_millis(self.now + self.lease),
            started_at=now,
            attempts=(Attempt(1, self.job_id, now),),
        )

    def won(self, doc: Document | None) -> bool:
        return (
            doc is not None
            and doc.get("status") == _RUNNING
            and doc.get("job_id") == self.job_id
            and doc.get("started_at") == _millis(self.now)
        )


@dataclass(frozen=True, slots=True)
class ResultWrite:
    run_id: RunId
    key: StepKey
    outcome: Outcome
    job_id: JobId
    attempt: int
    now: datetime
    released: Sequence[StepKey]
    recheck_at: datetime | None

    @property
    def row_id(self) -> str:
        return row_id(self.run_id, self.key)

    def guard(self) -> Document:
        return {
            "_id": self.row_id,
            "status": _RUNNING,
            "attempt": self.attempt,
            "job_id": self.job_id,
        }

    def fields(self) -> Document:
        fields = outcome_fields(self.outcome, self.now) | {
            "attempts.$[a].status": str(self.outcome.status),
            "attempts.$[a].completed_at": self.now,
            "attempts.$[a].error": self.outcome.error,
        }
        if self.recheck_at is not None:
            fields["recheck_at"] = self.recheck_at
        return fields

    def recorded(self, doc: Document | None) -> bool:
        """Whether `doc` holds this very result (the bulk matched this write)."""
        if doc is None or doc.get("attempt") != self.attempt:
            return False
        entries = [a for a in doc.get("attempts") or () if a["number"] == self.attempt]
        return (
            doc.get("job_id") == self.job_id
            and doc.get("status") == str(self.outcome.status)
            and bool(entries)
            and entries[-1].get("completed_at") == _millis(self.now)
        )


class StepCommits:
    def __init__(self, steps: Collection, *, claims: Collection) -> None:
        """`claims`: the steps collection with the claims' own write concern."""
        self._steps = steps
        self._claiming = claims
        self.claims: Batcher[ClaimWrite, Claim] = Batcher(self._claim)
        self.results: Batcher[ResultWrite, Recorded] = Batcher(self._record)

    async def _claim(self, writes: Sequence[ClaimWrite]) -> list[Claim]:
        return await _by_distinct_rows(writes, self._claim_bulk)

    async def _claim_bulk(self, writes: Sequence[ClaimWrite]) -> list[Claim]:
        if len(writes) == 1:
            return [await self._claim_one(writes[0])]
        requests = [
            UpdateOne(w.query(), w.update(), upsert=w.new is not None) for w in writes
        ]
        try:
            done = await self._claiming.bulk_write(requests, ordered=False)
            upserted, refused = dict(done.upserted_ids or {}), set[int]()
        except BulkWriteError as error:
            refused = duplicates_only(error)  # anything else is raised as it is
            upserted = {u["index"]: u["_id"] for u in error.details.get("upserted", [])}
        claims: dict[int, Claim] = {
            n: Claim(writes[n].created(), won=True) for n in upserted
        }
        unsure = [n for n in range(len(writes)) if n not in claims]
        if unsure:
            ids = [writes[n].row_id for n in unsure]
            docs = {d["_id"]: d for d in await self._steps.find({"_id": {"$in": ids}})}
            for n in unsure:
                doc = docs.get(writes[n].row_id)
                won = n not in refused and writes[n].won(doc)
                claims[n] = Claim(None if doc is None else step_record(doc), won=won)
        return [claims[n] for n in range(len(writes))]

    async def _claim_one(self, write: ClaimWrite) -> Claim:
        if write.new is not None:
            return await self._claim_released(write)
        claimed = await self._claiming.find_one_and_update(
            write.query(), write.update()
        )
        if claimed is not None:
            return Claim(step_record(claimed), won=True)
        return await self._lost(write)

    async def _claim_released(self, write: ClaimWrite) -> Claim:
        """A released step: usually no row yet, so the claim creates it.

        An update (not a find-and-modify): the row it creates is what it wrote, so
        nothing comes back over the wire; a row that was there is read after.
        """
        try:
            done = await self._claiming.update_one(
                write.query(), write.update(), upsert=True
            )
        except DuplicateKeyError:
            return await self._lost(write)  # the row exists and is not claimable
        if done.upserted_id is not None:
            return Claim(write.created(), won=True)
        found = await self._steps.find_one({"_id": write.row_id})
        return Claim(None if found is None else step_record(found), won=True)

    async def _lost(self, write: ClaimWrite) -> Claim:
        found = await self._steps.find_one({"_id": write.row_id})
        return Claim(None if found is None else step_record(found), won=False)

    async def _record(self, writes: Sequence[ResultWrite]) -> list[Recorded]:
        return await _by_distinct_rows(writes, self._record_bulk)

    async def _record_bulk(self, writes: Sequence[ResultWrite]) -> list[Recorded]:
        if len(writes) == 1:
            return [await self._record_one(writes[0])]
        requests = [
            UpdateOne(
                w.guard() | {"stop": None},
                {"$set": w.fields() | {"released": list(w.released)}},
                array_filters=[{"a.number": w.attempt}],
            )
            for w in writes
        ]
        done = await self._steps.bulk_write(requests, ordered=False)
        if done.matched_count == len(writes):
            return [Recorded(won=True)] * len(writes)
        ids = [w.row_id for w in writes]
        docs = {d["_id"]: d for d in await self._steps.find({"_id": {"$in": ids}})}
        answers: list[Recorded] = []
        for write in writes:
            if write.recorded(docs.get(write.row_id)):
                answers.append(Recorded(won=True))
            else:  # a stop marked its row meanwhile, or its claim was lost
                answers.append(await self._record_one(write))
        return answers

    async def _record_one(self, write: ResultWrite) -> Recorded:
        guard, fields = write.guard(), write.fields()
        done = await self._steps.update_one(
            guard | {"stop": None},
            {"$set": fields | {"released": list(write.released)}},
            array_filters=[{"a.number": write.attempt}],
        )
        if done.matched_count == 1:
            return Recorded(won=True)
        stopped = await self._steps.find_one_and_update(
            guard | {"stop": {"$ne": None}},
            {"$set": fields},
            projection={"stop": 1},
            array_filters=[{"a.number": write.attempt}],
        )
        return Recorded(won=stopped is not None, stop=stop_of(stopped))


async def _by_distinct_rows(
    writes: Sequence[W], send: Callable[[Sequence[W]], Awaitable[list[A]]]
) -> list[A]:
    """`send` the writes in rounds where no row appears twice.

    Two writes to one row in one bulk could not be told apart by reading it back;
    in turn, each is exact.
    """
    answers: dict[int, A] = {}
    left = list(range(len(writes)))
    while left:
        first = {writes[n].row_id: n for n in reversed(left)}  # each row's first write
        round_ = sorted(first.values())
        sent = await send([writes[n] for n in round_])
        answers.update(zip(round_, sent, strict=True))
        left = [n for n in left if n not in answers]
    return [answers[n] for n in range(len(writes))]


def _millis(at: datetime) -> datetime:
    """`at` as MongoDB keeps it: to the millisecond."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)
