"""`InMemoryTimerStore`: timers by id, each with the lease of its current claimer."""

import heapq
from collections.abc import Iterable
from datetime import datetime, timedelta

from service.engine.model import RunId
from service.engine.records import Timer


class InMemoryTimerStore:
    """Timers by id, each with the lease (owner, end) of its current claimer if any."""

    def __init__(self) -> None:
        self._timers: dict[str, Timer] = {}
        self._leases: dict[str, tuple[str, datetime]] = {}

    async def set(self, timer: Timer) -> None:
        self._timers[timer.id] = timer
        self._leases.pop(timer.id, None)

    async def claim_due(
        self, now: datetime, *, owner: str, lease: timedelta, limit: int
    ) -> list[Timer]:
        due = [
            (timer.due_at, timer.id, timer)
            for timer in self._timers.values()
            if timer.due_at <= now and self._lease_free(timer.id, now)
        ]
        taken = [timer for _, _, timer in heapq.nsmallest(limit, due)]
        for timer in taken:
            self._leases[timer.id] = (owner, now + lease)
        return taken

    async def delete(self, timer_id: str) -> None:
        self._timers.pop(timer_id, None)
        self._leases.pop(timer_id, None)

    def forget(self, run_ids: Iterable[RunId]) -> None:
        gone = set(run_ids)
        for timer in [t for t in self._timers.values() if t.run_id in gone]:
            del self._timers[timer.id]
            self._leases.pop(timer.id, None)

    def next_due(self) -> datetime | None:
        """The first instant a timer can be claimed; None when there are no timers.

        The flow test host moves its clock there when nothing else is left to do.
        """
        return min(
            (self._claimable_at(timer) for timer in self._timers.values()), default=None
        )

    def _claimable_at(self, timer: Timer) -> datetime:
        lease = self._leases.get(timer.id)
        return timer.due_at if lease is None else max(timer.due_at, lease[1])

    def _lease_free(self, timer_id: str, now: datetime) -> bool:
        lease = self._leases.get(timer_id)
        return lease is None or lease[1] <= now
