"""The ports the application needs: stores, the dispatcher and the clock.

Each method's docstring is the contract every implementation keeps (the contract
suites in `tests/contract/` check it on the in-memory and the MongoDB stores). Every
store method may raise `UnavailableError` when its server cannot be reached; a lost
race is never an error.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from service.engine.model import (
    FlowId,
    JobId,
    Json,
    RunId,
    RunStatus,
    StepKey,
    StepStatus,
)
from service.engine.records import (
    Claim,
    Delivery,
    Event,
    FlowRecord,
    LoopState,
    NewEvent,
    NewStep,
    Outcome,
    RunRecord,
    Schedule,
    StepRecord,
    Timer,
    Waiter,
)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...


class RunStore(Protocol):
    """Runs and their steps. Every write is guarded by the state it expects."""

    async def create_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        """Create `run`, registering its idempotency key in the same atomic write.

        Returns (run, True) when created, or (the existing run, False) when a run
        with the same (flow, trigger key, idempotency key) or the same run id exists
        already.
        """
        ...

    async def get_run(self, run_id: RunId) -> RunRecord | None:
        """The run, or None (never created, or removed by retention)."""
        ...

    async def mark_started(self, run_id: RunId) -> None:
        """Note that the run's entry steps are dispatched (idempotent)."""
        ...

    async def add_steps(
        self, run_id: RunId, steps: Sequence[NewStep], *, at: datetime
    ) -> list[StepKey]:
        """Insert each step row that does not exist yet (the dispatch ledger).

        Rows are Queued (dispatched), Skipped (will never run) or Pending (the
        bookkeeping row of a ForEach iteration).
        `at` is the dispatch instant (for a delayed dispatch, the instant it is due).
        Returns the keys this call inserted, in the order given; a key that exists
        already, whatever its status, is left untouched and not returned.
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
    ) -> Claim:
        """Claim a Queued step, or a Running one whose lease expired, for `job_id`.

        With `take_over`, a Running step whose owner is `job_id` itself is claimed too:
        the broker redelivered the message that claimed it, so the earlier delivery
        can no longer be acknowledged. On a win the step is Running with attempt + 1,
        a new attempt entry, `job_id` as owner and `lease_until = now + lease`:
        Claim(step after the claim, True). Otherwise Claim(the step as it is, False),
        or Claim(None, False) when there is no such step.
        """
        ...

    async def extend_lease(
        self, run_id: RunId, key: StepKey, *, job_id: JobId, until: datetime
    ) -> bool:
        """Push the lease of a Running step owned by `job_id`; False if not ours."""
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
    ) -> bool:
        """Record the outcome of `attempt` on a Running step owned by `job_id`.

        Sets status, output, error, trace, resolved inputs (and, when given, the inputs
        of the next dispatch), completes the attempt entry and clears the lease. False,
        with nothing written, when the step is no longer that Running attempt of that
        job.
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

        Such a step is a ForEach or iteration row that finished, or a parked step
        closed by a cancel. Guarded by the `expected` statuses; completes the latest
        attempt entry if it is open. False when not in that state.
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
        `attempt`) moves. Returns the step after the move, or None when it was not in
        that state. Output and error are kept until the next attempt.
        """
        ...

    async def steps(
        self, run_id: RunId, keys: Iterable[StepKey]
    ) -> dict[StepKey, StepRecord]:
        """The rows of `keys` that exist."""
        ...

    async def scope_steps(self, run_id: RunId, scope: str) -> list[StepRecord]:
        """Every row whose key lies directly in `scope` ("" top level, "loop.3" ...)."""
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

    async def complete_run(
        self, run_id: RunId, status: RunStatus, *, now: datetime
    ) -> bool:
        """Move a Running run to `status`; False if not Running (completes once)."""
        ...

    async def reopen_run(self, run_id: RunId) -> bool:
        """Move a finished run back to Running (a manual retry).

        Returns False if it was Running.
        """
        ...

    async def request_cancel(
        self, run_id: RunId, reason: str, *, now: datetime
    ) -> bool:
        """Flag the run cancelled; True only for the first request (its reason wins)."""
        ...

    async def mark_timed_out(self, run_id: RunId, *, now: datetime) -> bool:
        """Flag the run timed out (and cancelled); True only the first time."""
        ...

    async def start_loop(
        self, run_id: RunId, key: StepKey, items: Sequence[Json], *, concurrency: int
    ) -> LoopState:
        """Store the items of a ForEach step and its counters.

        Idempotent: a second call keeps the first items and returns the state as it is.
        """
        ...

    async def loop_item(self, run_id: RunId, key: StepKey, index: int) -> Json:
        """Item `index` of a started loop."""
        ...

    async def advance_loop(
        self, run_id: RunId, key: StepKey, *, index: int, failed: bool
    ) -> LoopState:
        """Count iteration `index` finished (and failed if `failed`), once, atomically.

        Returns the counters after this call. Counting an iteration again changes
        nothing, so a continuation cut short may repeat it; each first count sees a
        distinct `finished`.
        """
        ...

    async def stale_queued(self, *, before: datetime, limit: int) -> list[StepRecord]:
        """Queued rows dispatched before `before`: their message may be lost."""
        ...

    async def expired_leases(self, *, before: datetime, limit: int) -> list[StepRecord]:
        """Running rows whose lease ended before `before`: their worker may be gone."""
        ...

    async def unstarted_runs(self, *, before: datetime, limit: int) -> list[RunRecord]:
        """Running runs created before `before` with entry steps never dispatched."""
        ...


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


class Telemetry(Protocol):
    """What the orchestrator and the scheduler report for metrics.

    Labels stay low-cardinality: flow ids, template step keys (`loop.child`, never
    `loop.7.child`), statuses and kinds; never a run id. Implementations never raise.
    """

    def run_started(self, flow_id: str, trigger_key: str) -> None: ...

    def run_completed(self, flow_id: str, status: str) -> None: ...

    def step_finished(
        self, flow_id: str, step_key: str, status: str, *, seconds: float
    ) -> None: ...

    def timer_fired(self, kind: str, *, lag_seconds: float) -> None: ...

    def repaired(self, action: str, count: int) -> None: ...

    def attempt_started(self, flow_id: str, step_key: str, attempt: int) -> None:
        """A claim was won: attempt `attempt` (from 1) of the step begins."""
        ...

    def run_reopened(self, flow_id: str) -> None:
        """A manual retry moved a finished run back to Running."""
        ...


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One `run_step` message to publish."""

    flow_id: FlowId
    run_id: RunId
    step_key: StepKey
    attempt: int
    links: tuple[Mapping[str, str], ...] = ()
    """Trace contexts the publish links (a join's predecessors); the parent is the
    current context (`service.tracing`)."""

    @property
    def message_id(self) -> str:
        """Deterministic, so a duplicate publish is recognisable."""
        return f"{self.run_id}:{self.step_key}:{self.attempt}"


class Dispatcher(Protocol):
    async def publish(self, dispatches: Sequence[Dispatch]) -> None:
        """Publish every dispatch and return once the broker confirmed them all."""
        ...


class Stores(Protocol):
    """Everything the orchestrator persists, from one backend."""

    @property
    def runs(self) -> RunStore: ...
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

    async def purge(self, *, before: datetime, limit: int) -> int:
        """Retention: delete up to `limit` runs completed before `before`.

        Each goes with its steps, events, waiters and timers; Running runs are never
        deleted. Returns the number of runs deleted.
        """
        ...
