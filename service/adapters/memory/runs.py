"""`InMemoryRunStore`: runs and their idempotency keys, in process.

One event loop runs the in-process stores and no method awaits between its check and
its write, so each method is atomic. Records are frozen and replaced whole.
"""

import heapq
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from service.adapters.memory.copies import copied
from service.engine.model import FlowId, Json, RunId, RunStatus, TriggerKey
from service.engine.records import TIMED_OUT_REASON, RunRecord


class InMemoryRunStore:
    def __init__(self) -> None:
        self._runs: dict[RunId, RunRecord] = {}
        self._keys: dict[tuple[FlowId, TriggerKey, str], RunId] = {}
        self._rechecks: dict[RunId, datetime] = {}

    async def create_run(
        self, run: RunRecord, *, recheck_at: datetime | None = None
    ) -> tuple[RunRecord, bool]:
        if (same := self._runs.get(run.run_id)) is not None:
            return same, False
        key = _idempotency(run)
        if key is not None and (first := self._keys.get(key)) is not None:
            return self._runs[first], False
        stored = replace(run, body=copied(run.body), headers=dict(run.headers))
        self._runs[run.run_id] = stored
        if recheck_at is not None:
            self._rechecks[run.run_id] = recheck_at
        if key is not None:
            self._keys[key] = run.run_id
        return stored, True

    async def get_run(self, run_id: RunId) -> RunRecord | None:
        return self._runs.get(run_id)

    async def complete_run(
        self,
        run_id: RunId,
        status: RunStatus,
        *,
        now: datetime,
        outputs: Json = None,
        recheck_at: datetime | None = None,
    ) -> RunStatus | None:
        run = self._runs.get(run_id)
        if run is None or run.status.is_final:
            return None
        final = run.stop_status or status
        self._runs[run_id] = replace(
            run, status=final, completed_at=now, outputs=copied(outputs)
        )
        if recheck_at is not None:
            self._rechecks[run_id] = recheck_at
        return final

    async def admit_run(
        self,
        run_id: RunId,
        *,
        ticket: int,
        admitted: int,
        now: datetime,
        recheck_at: datetime,
    ) -> RunRecord | None:
        run = self._runs.get(run_id)
        if run is None or run.status is not RunStatus.QUEUED or run.cancel_requested:
            return None
        started = replace(
            run, status=RunStatus.RUNNING, ticket=ticket, admitted=admitted
        )
        self._runs[run_id] = started
        self._rechecks[run_id] = recheck_at
        return started

    async def reopen_run(self, run_id: RunId) -> bool:
        run = self._runs.get(run_id)
        if run is None or not run.status.is_final:
            return False
        self._runs[run_id] = replace(run, status=RunStatus.RUNNING, completed_at=None)
        return True

    async def request_cancel(
        self, run_id: RunId, reason: str, *, now: datetime
    ) -> bool:
        run = self._runs.get(run_id)
        if run is None or run.cancel_requested:
            return False
        self._runs[run_id] = replace(run, cancel_requested=True, cancel_reason=reason)
        return True

    async def mark_timed_out(self, run_id: RunId, *, now: datetime) -> bool:
        run = self._runs.get(run_id)
        if run is None or run.timed_out_at is not None:
            return False
        self._runs[run_id] = replace(
            run,
            timed_out_at=now,
            cancel_requested=True,
            cancel_reason=run.cancel_reason or TIMED_OUT_REASON,
        )
        return True

    async def runs_to_recheck(self, *, before: datetime, limit: int) -> list[RunRecord]:
        due = [(at, run_id) for run_id, at in self._rechecks.items() if at < before]
        return [self._runs[run_id] for _, run_id in heapq.nsmallest(limit, due)]

    async def rechecked(self, run_ids: Iterable[RunId]) -> None:
        for run_id in run_ids:
            self._rechecks.pop(run_id, None)

    async def statuses(self, run_ids: Iterable[RunId]) -> dict[RunId, RunStatus]:
        found = ((run_id, self._runs.get(run_id)) for run_id in run_ids)
        return {run_id: run.status for run_id, run in found if run is not None}

    def all_runs(self) -> list[RunRecord]:
        """Every run, in creation order (for the flow test host and its users)."""
        return list(self._runs.values())

    def completed_before(self, before: datetime, *, limit: int) -> list[RunId]:
        """Retention: the oldest `limit` finished runs completed before `before`."""
        done = [
            (run.completed_at, run.run_id)
            for run in self._runs.values()
            if run.status.is_final
            and run.completed_at is not None
            and run.completed_at < before
        ]
        return [run_id for _, run_id in heapq.nsmallest(limit, done)]

    def forget(self, run_ids: Iterable[RunId]) -> None:
        """Retention: drop runs and their idempotency keys."""
        for run_id in run_ids:
            run = self._runs.pop(run_id, None)
            self._rechecks.pop(run_id, None)
            key = None if run is None else _idempotency(run)
            if key is not None and self._keys.get(key) == run_id:
                del self._keys[key]


def _idempotency(run: RunRecord) -> tuple[FlowId, TriggerKey, str] | None:
    if run.idempotency_key is None:
        return None
    return run.flow_id, run.trigger_key, run.idempotency_key
