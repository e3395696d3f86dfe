"""The stores besides runs, steps and loops, and `Stores`: all of them from one backend.

Each method's docstring is the contract every implementation keeps (the contract
suites in `tests/contract/` check it on the in-memory and the MongoDB stores). Every
store method may raise `UnavailableError` when its server cannot be reached; a lost
race is never an error.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from service.engine.model import FlowId, Json, RunId, StepKey
from service.engine.records import (
    Delivery,
    Event,
    FlowRecord,
    NewEvent,
    Schedule,
    Timer,
    Waiter,
)
from service.ports.loops import LoopStore
from service.ports.runs import RunStore
from service.ports.slots import SlotStore
from service.ports.steps import StepStore


class EventStore(Protocol):
    async def append(self, run_id: RunId, events: Sequence[NewEvent]) -> None:
        """Append events with per-run sequence numbers larger than any before them.

        An event whose `key` the run has stored already is left out (idempotent).
        """
        ...

    async def events(
        self, run_id: RunId, *, skip: int = 0, limit: int = 200
    ) -> list[Event]:
        """The run's events in sequence order."""
        ...


class TimerStore(Protocol):
    async def set(self, timer: Timer) -> None:
        """Create or replace the timer with this id (idempotent)."""
        ...

    async def claim_due(
        self, now: datetime, *, owner: str, lease: timedelta, limit: int
    ) -> list[Timer]:
        """Take up to `limit` timers due at `now` whose lease is free.

        Each is handed to one caller until its lease (now + lease) ends.
        """
        ...

    async def delete(self, timer_id: str) -> None:
        """Remove a fired or obsolete timer (no error when it is gone)."""
        ...


class SignalStore(Protocol):
    async def register(
        self,
        run_id: RunId,
        key: StepKey,
        signal: str,
        *,
        expires_at: datetime | None,
        now: datetime,
    ) -> Waiter:
        """Register (or return, keeping created_at) the waiter of a step."""
        ...

    async def waiter(self, run_id: RunId, key: StepKey) -> Waiter | None: ...

    async def deliver(
        self, run_id: RunId, signal: str, payload: Json, *, now: datetime
    ) -> Delivery:
        """Deliver to the oldest undelivered waiter of the run for `signal`.

        Names match case-insensitively. Delivered once per waiter; AlreadyDelivered
        (with the latest delivered waiter) when every waiter of that name has had its
        signal; NotFound when the run has no waiter of that name.
        """
        ...


class FlowStore(Protocol):
    async def save(self, record: FlowRecord) -> FlowRecord:
        """Upsert name, version and manifest; keep `enabled` of an existing record."""
        ...

    async def get(self, flow_id: FlowId) -> FlowRecord | None: ...

    async def all(self) -> list[FlowRecord]: ...

    async def set_enabled(self, flow_id: FlowId, *, enabled: bool) -> bool:
        """False when there is no such flow."""
        ...


class ScheduleStore(Protocol):
    async def sync(self, schedule: Schedule) -> Schedule:
        """Insert the schedule or update its manifest cron; recomputes nothing else."""
        ...

    async def get(self, job_id: str) -> Schedule | None: ...

    async def all(self) -> list[Schedule]: ...

    async def due(self, now: datetime, *, limit: int) -> list[Schedule]:
        """Unpaused schedules whose next fire is at or before `now`."""
        ...

    async def advance(
        self, job_id: str, *, fired_at: datetime, next_fire_at: datetime
    ) -> bool:
        """Move next_fire_at from `fired_at` to `next_fire_at`.

        Returns True for exactly one caller.
        """
        ...

    async def update(
        self,
        job_id: str,
        *,
        paused: bool,
        cron_override: str | None,
        next_fire_at: datetime | None,
    ) -> Schedule | None:
        """Set pause, override and next fire; None when there is no such schedule."""
        ...


class Stores(Protocol):
    """Everything the orchestrator persists, from one backend."""

    @property
    def runs(self) -> RunStore: ...
    @property
    def steps(self) -> StepStore: ...
    @property
    def loops(self) -> LoopStore: ...
    @property
    def events(self) -> EventStore: ...
    @property
    def timers(self) -> TimerStore: ...
    @property
    def signals(self) -> SignalStore: ...
    @property
    def flows(self) -> FlowStore: ...
    @property
    def schedules(self) -> ScheduleStore: ...
    @property
    def slots(self) -> SlotStore: ...

    async def purge(self, *, before: datetime, limit: int) -> int:
        """Retention: delete up to `limit` runs completed before `before`.

        Each goes with its steps, events, waiters and timers; Running and Queued runs
        are never deleted. The slot records of keys with no holder and no waiting run,
        untouched since `before`, go too. Returns the number of runs deleted.
        """
        ...
