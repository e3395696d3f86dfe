"""The loop in every worker: due timers, cron ticks, the reconciler and retention.

One pass is `tick()`; `run_until(stop)` repeats it, waiting on the stop event between
passes. Replicas need no leader: every action is claimed or guarded in the store.
"""

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from service.errors import UnavailableError
from service.orchestrator.api import Orchestrator

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class SchedulerOptions:
    owner: str
    """Who holds timer leases (the worker's id)."""
    timer_lease: timedelta = timedelta(seconds=60)
    batch: int = 100
    reconcile_every: timedelta = timedelta(seconds=10)
    retention: timedelta | None = None
    """Delete runs completed longer ago than this; None keeps them forever."""
    retention_every: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class TickReport:
    timers: int = 0
    cron_fires: int = 0
    repairs: int = 0
    purged: int = 0


class Scheduler:
    def __init__(self, orchestrator: Orchestrator, options: SchedulerOptions) -> None:
        self._orchestrator = orchestrator
        self._runtime = orchestrator.runtime
        self._options = options
        self._last_reconcile: datetime | None = None
        self._last_purge: datetime | None = None

    async def tick(self) -> TickReport:
        """One pass: fire due timers and cron ticks and, when due, repair and purge."""
        rt = self._runtime
        now = rt.clock.now()
        timers = await rt.stores.timers.claim_due(
            now,
            owner=self._options.owner,
            lease=self._options.timer_lease,
            limit=self._options.batch,
        )
        for timer in timers:
            lag = (now - timer.due_at).total_seconds()
            rt.telemetry.timer_fired(timer.kind.value, lag_seconds=lag)
            await self._orchestrator.fire_timer(timer)
        fires = await self._orchestrator.fire_schedules(limit=self._options.batch)
        repairs = purged = 0
        if self._due(self._last_reconcile, self._options.reconcile_every):
            self._last_reconcile = now
            repairs = await self._orchestrator.reconcile(limit=self._options.batch)
        retention = self._options.retention
        if retention is not None and self._due(
            self._last_purge, self._options.retention_every
        ):
            self._last_purge = now
            purged = await rt.stores.purge(before=now - retention, limit=1000)
            if purged:
                log.info("runs_purged", count=purged)
        return TickReport(len(timers), fires, repairs, purged)

    def _due(self, last: datetime | None, every: timedelta) -> bool:
        return last is None or self._runtime.clock.now() - last >= every

    async def run_until(self, stop: asyncio.Event, *, every: timedelta) -> None:
        """Tick until `stop` is set; an unreachable store is logged and retried."""
        while not stop.is_set():
            try:
                await self.tick()
            except UnavailableError as exc:
                log.warning("scheduler_deferred", error=str(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=every.total_seconds())
            except TimeoutError:
                continue
