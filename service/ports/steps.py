"""`StepStore`: a run's step rows: the ledger of releases, claims, results, sweeps.

A row is `<run>/<key>`; its `_id` is unique, so inserting a row is the dispatch ledger
and a duplicate is refused. A top-level step released by a result gets its row from its
claim; a step in a ForEach iteration has its row (Queued) before it is published. Every
transition is guarded by the state it expects. Every method may raise
`UnavailableError`; a lost race is never an error.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from service.engine.model import JobId, RunId, RunStatus, StepKey, StepStatus
from service.engine.records import (
    Claim,
    NewStep,
    Outcome,
    Recorded,
    Renewal,
    StepRecord,
)


class StepStore(Protocol):
    async def add_steps(
        self, run_id: RunId, steps: Sequence[NewStep], *, at: datetime
    ) -> list[StepKey]:
        """Insert each step row that does not exist yet.

        Rows are Queued (dispatched), Skipped (will never run) or Pending (the
        bookkeeping row of a ForEach iteration). `at` is the dispatch instant (for a
        delayed dispatch, the instant it is due). Returns the keys this call inserted,
        in the order given; a key that exists already, whatever its status, is left
        untouched and not returned.
        """
        ...

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
        """Claim a Queued step, or a Running one whose lease expired, for `job_id`.

        With `new`, a step that has no row yet gets one, from `new`, claimed. With
        `take_over`, a Running step claimed by `job_id` through the same `dispatch_id`
        is claimed too: the broker redelivered the very copy of the message that
        claimed it, so the earlier delivery can no longer be acknowledged. (Another
        copy of the same dispatch, published again by a repair, has the same job id
        but another dispatch id: it waits for the lease, as a stranger does.) A row
        marked stopped is never claimed. On a win the
        step is Running with attempt + 1, a new attempt entry, `job_id` as owner and
        `lease_until = now + lease`: Claim(step after the claim, True). Otherwise
        Claim(the step as it is, False), or Claim(None, False) when there is no row.
        """
        ...

    async def extend_lease(
        self, run_id: RunId, key: StepKey, *, job_id: JobId, until: datetime
    ) -> Renewal:
        """Push the lease of a Running step owned by `job_id`.

        Says whether it is still ours, and the stop the row is marked with, if any.
        """
        ...

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
        """Record the outcome of `attempt` on a Running step owned by `job_id`.

        Sets status, output, error, trace, resolved inputs (and, when given, the inputs
        of the next dispatch), completes the attempt entry, clears the lease, and keeps
        `released` and `recheck_at` (when the reconciler makes sure the continuation
        happened: `due_rechecks`). On a row marked stopped, the outcome is recorded
        without `released`: Recorded(True, stop). Recorded(False), with nothing
        written, when the step is no longer that Running attempt of that job.
        """
        ...

    async def settle(
        self,
        run_id: RunId,
        key: StepKey,
        outcome: Outcome,
        *,
        expected: frozenset[StepStatus],
        now: datetime,
    ) -> bool:
        """Record `outcome` on a step that is not being executed.

        Such a step is a ForEach or iteration row that finished, or a step a stop
        closes. Guarded by the `expected` statuses; completes the latest attempt entry
        if it is open. False when not in that state.
        """
        ...

    async def requeue(
        self,
        run_id: RunId,
        key: StepKey,
        *,
        expected: frozenset[StepStatus],
        now: datetime,
        attempt: int | None = None,
    ) -> StepRecord | None:
        """Move a step back to Queued, dispatched at `now`.

        Only a step whose status is in `expected` (and, if given, whose attempt is
        `attempt`), not marked stopped, moves. Returns the step after the move, or None
        when it was not in that state. Output and error are kept until the next attempt.
        """
        ...

    async def steps(
        self, run_id: RunId, keys: Iterable[StepKey]
    ) -> dict[StepKey, StepRecord]:
        """The rows of `keys` that exist, in the order asked."""
        ...

    async def scope_steps(self, run_id: RunId, scope: str) -> list[StepRecord]:
        """Every row whose key lies directly in `scope` ("" top level, "loop.3" ...)."""
        ...

    async def all_steps(self, run_id: RunId) -> list[StepRecord]:
        """Every row of the run, at any depth."""
        ...

    async def count_final(self, run_id: RunId, scope: str) -> int:
        """How many rows directly in `scope` are Succeeded, Failed or Skipped."""
        ...

    async def count_final_of(self, run_id: RunId, keys: Sequence[StepKey]) -> int:
        """How many of the rows of `keys` are Succeeded, Failed or Skipped."""
        ...

    async def in_flight(self, run_id: RunId) -> list[StepRecord]:
        """Every Queued, Running or Pending row of the run, at any depth."""
        ...

    async def reset_steps(
        self, run_id: RunId, keys: Iterable[StepKey], *, only_error: str | None = None
    ) -> list[StepKey]:
        """Delete the rows of `keys` together with every row below them (`key.*`).

        When `only_error` is given, only Skipped rows with that error are deleted.
        Returns the deleted top keys.
        """
        ...

    async def mark_stopped(
        self, run_id: RunId, status: RunStatus, *, loops_only: bool = False
    ) -> None:
        """Mark every row of the run that is not final with the run's stop.

        With `loops_only`, only ForEach rows (a stop marks them first, so that no
        iteration starts once it has read which ones did). Idempotent.
        """
        ...

    async def stale_queued(self, *, before: datetime, limit: int) -> list[StepRecord]:
        """Queued rows dispatched before `before`: their message may be lost."""
        ...

    async def expired_leases(self, *, before: datetime, limit: int) -> list[StepRecord]:
        """Running rows whose lease ended before `before`: their worker may be gone."""
        ...

    async def due_rechecks(self, *, before: datetime, limit: int) -> list[StepRecord]:
        """Rows whose `recheck_at` is before `before`, oldest first."""
        ...

    async def rechecked(self, rows: Iterable[tuple[RunId, StepKey]]) -> None:
        """The reconciler saw these rows' continuations done: out of `due_rechecks`."""
        ...
