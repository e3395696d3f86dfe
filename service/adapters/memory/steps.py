"""`InMemoryStepStore`: step rows by run and scope, and the items of their loops.

The claim, the result and every other transition check and write without awaiting in
between, so each is atomic on the one event loop. Queued and Running rows are kept
apart as well, so the reconciler's sweeps never walk finished rows.
"""

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from service.adapters.memory.copies import copied, copied_mapping
from service.engine.model import (
    FOR_EACH,
    IN_FLIGHT_STATUSES,
    JobId,
    Json,
    RunId,
    RunStatus,
    StepKey,
    StepStatus,
    scope_of,
)
from service.engine.records import (
    ATTEMPTS_KEPT,
    Attempt,
    Claim,
    NewStep,
    Outcome,
    Recorded,
    Renewal,
    StepRecord,
)

_Scopes = dict[str, dict[StepKey, StepRecord]]
"""One run's step rows by scope ("", "loop" for iterations, "loop.3" ...) and key."""


class InMemoryStepStore:
    def __init__(self) -> None:
        self._rows: dict[RunId, _Scopes] = {}
        self._live: dict[tuple[RunId, StepKey], StepRecord] = {}
        self._rechecks: dict[tuple[RunId, StepKey], datetime] = {}
        self._dispatches: dict[tuple[RunId, StepKey], str] = {}
        """The dispatch id of each claim (the copy of the message that made it)."""
        self.items: dict[RunId, dict[StepKey, list[Json]]] = {}
        """ForEach items by run and loop (`InMemoryLoopStore` keeps them here)."""

    async def add_steps(
        self, run_id: RunId, steps: Sequence[NewStep], *, at: datetime
    ) -> list[StepKey]:
        inserted: list[StepKey] = []
        for new in steps:
            if self.row(run_id, new.key) is None:
                self.put(_fresh(run_id, new, at))
                inserted.append(new.key)
        return inserted

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
        row = self.row(run_id, key)
        if row is None:
            if new is None:
                return Claim(None, won=False)
            row = _fresh(run_id, new, now)
        own = (
            take_over
            and row.status is StepStatus.RUNNING
            and row.job_id == job_id
            and self._dispatches.get((run_id, key), "") == dispatch_id
        )
        if row.stop is not None or not (own or _claimable(row, now)):
            return Claim(row, won=False)
        self._dispatches[run_id, key] = dispatch_id
        number = row.attempt + 1
        attempts = (*row.attempts, Attempt(number, job_id, started_at=now))
        claimed = replace(
            row,
            status=StepStatus.RUNNING,
            attempt=number,
            attempts=attempts[-ATTEMPTS_KEPT:],
            job_id=job_id,
            lease_until=now + lease,
            started_at=now,
        )
        return Claim(self.put(claimed), won=True)

    def dispatch_id(self, run_id: RunId, key: StepKey) -> str:
        """The dispatch id of the step's latest claim ("" without one)."""
        return self._dispatches.get((run_id, key), "")

    async def extend_lease(
        self, run_id: RunId, key: StepKey, *, job_id: JobId, until: datetime
    ) -> Renewal:
        row = self.row(run_id, key)
        if row is None or row.status is not StepStatus.RUNNING or row.job_id != job_id:
            return Renewal(held=False, stop=None if row is None else row.stop)
        self.put(replace(row, lease_until=until))
        return Renewal(held=True, stop=row.stop)

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
        row = self.row(run_id, key)
        if (
            row is None
            or row.status is not StepStatus.RUNNING
            or row.attempt != attempt
            or row.job_id != job_id
        ):
            return Recorded(won=False)
        done = recorded(row, outcome, now)
        if row.stop is None:
            done = replace(done, released=tuple(released))
        self.put(done)
        if recheck_at is not None:
            self._rechecks[run_id, key] = recheck_at
        return Recorded(won=True, stop=row.stop)

    async def settle(
        self,
        run_id: RunId,
        key: StepKey,
        outcome: Outcome,
        *,
        expected: frozenset[StepStatus],
        now: datetime,
    ) -> bool:
        row = self.row(run_id, key)
        if row is None or row.status not in expected:
            return False
        self.put(recorded(row, outcome, now))
        return True

    async def requeue(
        self,
        run_id: RunId,
        key: StepKey,
        *,
        expected: frozenset[StepStatus],
        now: datetime,
        attempt: int | None = None,
    ) -> StepRecord | None:
        row = self.row(run_id, key)
        if row is None or row.status not in expected or row.stop is not None:
            return None
        if attempt is not None and row.attempt != attempt:
            return None
        queued = replace(
            row, status=StepStatus.QUEUED, dispatched_at=now, lease_until=None
        )
        return self.put(queued)

    async def steps(
        self, run_id: RunId, keys: Iterable[StepKey]
    ) -> dict[StepKey, StepRecord]:
        rows = ((key, self.row(run_id, key)) for key in keys)
        return {key: row for key, row in rows if row is not None}

    async def scope_steps(self, run_id: RunId, scope: str) -> list[StepRecord]:
        return list(self._rows.get(run_id, {}).get(scope, {}).values())

    async def all_steps(self, run_id: RunId) -> list[StepRecord]:
        return self.rows_of(run_id)

    async def count_final(self, run_id: RunId, scope: str) -> int:
        rows = self._rows.get(run_id, {}).get(scope, {}).values()
        return sum(1 for row in rows if row.status.is_final)

    async def count_final_of(self, run_id: RunId, keys: Sequence[StepKey]) -> int:
        rows = (self.row(run_id, key) for key in set(keys))
        return sum(1 for row in rows if row is not None and row.status.is_final)

    async def in_flight(self, run_id: RunId) -> list[StepRecord]:
        return [r for r in self.rows_of(run_id) if r.status in IN_FLIGHT_STATUSES]

    async def reset_steps(
        self, run_id: RunId, keys: Iterable[StepKey], *, only_error: str | None = None
    ) -> list[StepKey]:
        deleted: list[StepKey] = []
        for key in keys:
            row = self.row(run_id, key)
            if row is None:
                continue
            if only_error is not None and (
                row.status is not StepStatus.SKIPPED or row.error != only_error
            ):
                continue
            self._drop_tree(run_id, key)
            deleted.append(key)
        return deleted

    async def mark_stopped(
        self, run_id: RunId, status: RunStatus, *, loops_only: bool = False
    ) -> None:
        for row in self.rows_of(run_id):
            if row.status.is_final or row.stop is not None:
                continue
            if loops_only and row.type.lower() != FOR_EACH.lower():
                continue
            self.put(replace(row, stop=status))

    async def stale_queued(self, *, before: datetime, limit: int) -> list[StepRecord]:
        rows = (
            row
            for row in self._live.values()
            if row.status is StepStatus.QUEUED and row.dispatched_at < before
        )
        return heapq.nsmallest(limit, rows, key=lambda row: row.dispatched_at)

    async def expired_leases(self, *, before: datetime, limit: int) -> list[StepRecord]:
        rows = [
            (row.lease_until, row)
            for row in self._live.values()
            if row.status is StepStatus.RUNNING
            and row.lease_until is not None
            and row.lease_until < before
        ]
        return [row for _, row in heapq.nsmallest(limit, rows, key=lambda x: x[0])]

    async def due_rechecks(self, *, before: datetime, limit: int) -> list[StepRecord]:
        due = [(at, ids) for ids, at in self._rechecks.items() if at < before]
        rows = (self.row(*ids) for _, ids in heapq.nsmallest(limit, due))
        return [row for row in rows if row is not None]

    async def rechecked(self, rows: Iterable[tuple[RunId, StepKey]]) -> None:
        for ids in rows:
            self._rechecks.pop(ids, None)

    def rows_of(self, run_id: RunId) -> list[StepRecord]:
        """Every step row of the run at any depth (for the flow test host too)."""
        return [
            row for rows in self._rows.get(run_id, {}).values() for row in rows.values()
        ]

    def forget(self, run_ids: Iterable[RunId]) -> None:
        """Retention: drop the runs' step rows and loop items."""
        for run_id in run_ids:
            for rows in self._rows.pop(run_id, {}).values():
                for step in rows:
                    self._live.pop((run_id, step), None)
                    self._rechecks.pop((run_id, step), None)
            self.items.pop(run_id, None)

    def row(self, run_id: RunId, key: StepKey) -> StepRecord | None:
        return self._rows.get(run_id, {}).get(scope_of(key), {}).get(key)

    def put(self, row: StepRecord) -> StepRecord:
        scopes = self._rows.setdefault(row.run_id, {})
        scopes.setdefault(scope_of(row.key), {})[row.key] = row
        if row.status in (StepStatus.QUEUED, StepStatus.RUNNING):
            self._live[row.run_id, row.key] = row
        else:
            self._live.pop((row.run_id, row.key), None)
        return row

    def _drop_tree(self, run_id: RunId, key: StepKey) -> None:
        """Delete the row of `key`, every row below it (`key.*`) and its loop items."""
        scopes = self._rows[run_id]
        below = key + "."
        for scope in [s for s in scopes if s == key or s.startswith(below)]:
            for step in scopes.pop(scope):
                self._live.pop((run_id, step), None)
                self._rechecks.pop((run_id, step), None)
        siblings = scopes[scope_of(key)]
        del siblings[key]
        self._live.pop((run_id, key), None)
        self._rechecks.pop((run_id, key), None)
        if not siblings:
            del scopes[scope_of(key)]
        items = self.items.get(run_id, {})
        for loop in [k for k in items if k == key or k.startswith(below)]:
            del items[loop]


def _fresh(run_id: RunId, new: NewStep, at: datetime) -> StepRecord:
    return StepRecord(
        run_id=run_id,
        key=new.key,
        type=new.type,
        status=new.status,
        dispatched_at=at,
        inputs=copied_mapping(new.inputs),
        error=new.error,
        trace=copied(new.trace),
    )


def _claimable(row: StepRecord, now: datetime) -> bool:
    """Queued, or Running with a lease that has ended (its worker may be gone)."""
    if row.status is StepStatus.QUEUED:
        return True
    return (
        row.status is StepStatus.RUNNING
        and row.lease_until is not None
        and row.lease_until <= now
    )


def recorded(row: StepRecord, outcome: Outcome, now: datetime) -> StepRecord:
    """`row` once `outcome` is written on it (by `finish` or `settle`)."""
    attempts = row.attempts
    if attempts and attempts[-1].completed_at is None:
        closed = replace(
            attempts[-1],
            status=outcome.status,
            completed_at=now,
            error=outcome.error,
        )
        attempts = (*attempts[:-1], closed)
    resolved = outcome.resolved_inputs
    return replace(
        row,
        status=outcome.status,
        output=copied(outcome.output),
        error=outcome.error,
        trace=copied(outcome.trace),
        resolved_inputs=None if resolved is None else copied_mapping(resolved),
        inputs=row.inputs if outcome.inputs is None else copied_mapping(outcome.inputs),
        attempts=attempts,
        lease_until=None,
        completed_at=now if outcome.status.is_final else None,
        trace_context=outcome.trace_context or row.trace_context,
    )
