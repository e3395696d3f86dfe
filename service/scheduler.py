"""The loop in every worker: due timers, cron ticks, the reconciler and retention.

One pass is `tick()`; `run_until(stop)` repeats it, waiting on the stop event between
passes. Replicas need no leader: every action is claimed or guarded in the store.
Retention deletes one batch of expired runs at the first pass and then every
`retention_every`; a full batch means more are waiting, so the next pass takes the next
batch at once, until a batch comes back short.
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
    """Pause between two retention sweeps that found fewer runs than a batch."""
    retention_batch: int = 1000
    """Runs deleted by one sweep (with everything they own)."""


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
        self._purge_behind = False

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
        if self._options.retention is not None and (
            self._purge_behind
            or self._due(self._last_purge, self._options.retention_every)
        ):
            purged = await self._purge(now - self._options.retention)
            self._last_purge = now
        return TickReport(len(timers), fires, repairs, purged)

    async def _purge(self, before: datetime) -> int:
        batch = self._options.retention_batch
        purged = await self._runtime.stores.purge(before=before, limit=batch)
        self._purge_behind = purged >= batch
        if purged:
            log.info("runs_purged", count=purged, more=self._purge_behind)
        return purged

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
