"""`RunStore`: the runs themselves: creation with the idempotency key, stop, completion.

The contract every implementation keeps (checked on each by `tests/contract/`). Every
method may raise `UnavailableError` when its server cannot be reached; a lost race is
never an error.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from service.engine.model import Json, RunId, RunStatus
from service.engine.records import RunRecord


class RunStore(Protocol):
    async def create_run(
        self, run: RunRecord, *, recheck_at: datetime | None = None
    ) -> tuple[RunRecord, bool]:
        """Create `run`, registering its idempotency key in the same atomic write.

        `run.released` names the entry steps its start released; at `recheck_at` (if
        given) the reconciler makes sure they were dispatched (`runs_to_recheck`).
        Returns (run, True) when created, or (the existing run, False) when a run with
        the same (flow, trigger key, idempotency key) or the same run id exists already.
        """
        ...

    async def get_run(self, run_id: RunId) -> RunRecord | None:
        """The run, or None (never created, or removed by retention)."""
        ...

    async def complete_run(
        self,
        run_id: RunId,
        status: RunStatus,
        *,
        now: datetime,
        outputs: Json = None,
        recheck_at: datetime | None = None,
    ) -> RunStatus | None:
        """Move a Running (or Queued) run to `status`; a stopped run gets its stop.

        Cancelled or TimedOut, whatever `status` says. Keeps `outputs` and, when given,
        `recheck_at` (`runs_to_recheck`: what its end sets off is checked then).
        Returns the status it got, or None when it was neither Running nor Queued (a
        run completes once).
        """
        ...

    async def admit_run(
        self,
        run_id: RunId,
        *,
        ticket: int,
        admitted: int,
        now: datetime,
        recheck_at: datetime,
    ) -> RunRecord | None:
        """Move a Queued run that holds a slot of its key to Running.

        Not if a cancel or a timeout was requested. Records its ticket and admission
        numbers and `recheck_at` (its start is checked then). Returns the run after the
        move, or None when it was not Queued or was stopped.
        """
        ...

    async def reopen_run(self, run_id: RunId) -> bool:
        """Move a finished run back to Running (a manual retry); False if not final."""
        ...

    async def request_cancel(
        self, run_id: RunId, reason: str, *, now: datetime
    ) -> bool:
        """Flag the run cancelled; True only for the first request (its reason wins)."""
        ...

    async def mark_timed_out(self, run_id: RunId, *, now: datetime) -> bool:
        """Flag the run timed out (and cancelled); True only the first time."""
        ...

    async def runs_to_recheck(self, *, before: datetime, limit: int) -> list[RunRecord]:
        """Runs whose start is due a check: `recheck_at` before `before`."""
        ...

    async def rechecked(self, run_ids: Iterable[RunId]) -> None:
        """The reconciler checked these runs' start: they leave `runs_to_recheck`."""
        ...

    async def statuses(self, run_ids: Iterable[RunId]) -> dict[RunId, RunStatus]:
        """The status of each of these runs that exists."""
        ...
