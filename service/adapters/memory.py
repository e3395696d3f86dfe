"""In-process stores and dispatcher: embedded mode, the flow test host, the fakes.

One event loop runs them, and no method awaits between its check and its write, so
each method is atomic. Records are frozen and replaced whole; JSON values are copied on
the way in and containers are built afresh on the way out: no caller shares our state.
"""

import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from service.engine.model import (
    IN_FLIGHT_STATUSES,
    FlowId,
    JobId,
    Json,
    RunId,
    RunStatus,
    StepKey,
    StepStatus,
    TriggerKey,
    scope_of,
)
from service.engine.records import (
    ATTEMPTS_KEPT,
    TIMED_OUT_REASON,
    Attempt,
    Claim,
    Delivery,
    DeliveryStatus,
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
from service.errors import UnknownReferenceError
from service.ports import Dispatch

_Scopes = dict[str, dict[StepKey, StepRecord]]
"""One run's step rows by scope ("", "loop" for iterations, "loop.3" ...) and key."""


class InMemoryRunStore:
    """Runs, their step rows and ForEach items, indexed per run."""

    def __init__(self) -> None:
        self._runs: dict[RunId, RunRecord] = {}
        self._keys: dict[tuple[FlowId, TriggerKey, str], RunId] = {}
        self._rows: dict[RunId, _Scopes] = {}
        self._items: dict[RunId, dict[StepKey, list[Json]]] = {}
        self._counted: dict[RunId, dict[StepKey, set[int]]] = {}
        """Per loop, the iterations `advance_loop` has counted."""
        # Queued and Running rows of every run: what the sweeper asks about, kept apart
        # so its queries never walk finished rows.
        self._live: dict[tuple[RunId, StepKey], StepRecord] = {}

    async def create_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        if (same := self._runs.get(run.run_id)) is not None:
            return same, False
        key = _idempotency(run)
        if key is not None and (first := self._keys.get(key)) is not None:
            return self._runs[first], False
        stored = replace(run, body=_copied(run.body), headers=dict(run.headers))
        self._runs[run.run_id] = stored
        if key is not None:
            self._keys[key] = run.run_id
        return stored, True

    async def get_run(self, run_id: RunId) -> RunRecord | None:
        return self._runs.get(run_id)

    async def mark_started(self, run_id: RunId) -> None:
        if (run := self._runs.get(run_id)) is not None and not run.started:
            self._runs[run_id] = replace(run, started=True)

    async def add_steps(
        self, run_id: RunId, steps: Sequence[NewStep], *, at: datetime
    ) -> list[StepKey]:
        inserted: list[StepKey] = []
        for new in steps:
            if self._row(run_id, new.key) is not None:
                continue
            row = StepRecord(
                run_id=run_id,
                key=new.key,
                type=new.type,
                status=new.status,
                dispatched_at=at,
                inputs=_mapping(new.inputs),
                error=new.error,
                trace=_copied(new.trace),
            )
            self._put(row)
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
    ) -> Claim:
        row = self._row(run_id, key)
        if row is None:
            return Claim(None, won=False)
        own = take_over and row.status is StepStatus.RUNNING and row.job_id == job_id
        if not (own or _claimable(row, now)):
            return Claim(row, won=False)
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
        return Claim(self._put(claimed), won=True)

    async def extend_lease(
        self, run_id: RunId, key: StepKey, *, job_id: JobId, until: datetime
    ) -> bool:
        row = self._row(run_id, key)
        if row is None or row.status is not StepStatus.RUNNING or row.job_id != job_id:
            return False
        self._put(replace(row, lease_until=until))
        return True

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
        row = self._row(run_id, key)
        if (
            row is None
            or row.status is not StepStatus.RUNNING
            or row.attempt != attempt
            or row.job_id != job_id
        ):
            return False
        self._put(_recorded(row, outcome, now))
        return True

    async def settle(
        self,
        run_id: RunId,
        key: StepKey,
        outcome: Outcome,
        *,
        expected: frozenset[StepStatus],
        now: datetime,
    ) -> bool:
        row = self._row(run_id, key)
        if row is None or row.status not in expected:
            return False
        self._put(_recorded(row, outcome, now))
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
        row = self._row(run_id, key)
        if row is None or row.status not in expected:
            return None
        if attempt is not None and row.attempt != attempt:
            return None
        queued = replace(
            row, status=StepStatus.QUEUED, dispatched_at=now, lease_until=None
        )
        return self._put(queued)

    async def steps(
        self, run_id: RunId, keys: Iterable[StepKey]
    ) -> dict[StepKey, StepRecord]:
        rows = ((key, self._row(run_id, key)) for key in keys)
        return {key: row for key, row in rows if row is not None}

    async def scope_steps(self, run_id: RunId, scope: str) -> list[StepRecord]:
        return list(self._rows.get(run_id, {}).get(scope, {}).values())

    async def count_final(self, run_id: RunId, scope: str) -> int:
        rows = self._rows.get(run_id, {}).get(scope, {}).values()
        return sum(1 for row in rows if row.status.is_final)

    async def count_final_of(self, run_id: RunId, keys: Sequence[StepKey]) -> int:
        rows = (self._row(run_id, key) for key in set(keys))
        return sum(1 for row in rows if row is not None and row.status.is_final)

    async def in_flight(self, run_id: RunId) -> list[StepRecord]:
        return [
            row
            for rows in self._rows.get(run_id, {}).values()
            for row in rows.values()
            if row.status in IN_FLIGHT_STATUSES
        ]

    async def reset_steps(
        self, run_id: RunId, keys: Iterable[StepKey], *, only_error: str | None = None
    ) -> list[StepKey]:
        deleted: list[StepKey] = []
        for key in keys:
            row = self._row(run_id, key)
            if row is None:
                continue
            if only_error is not None and (
                row.status is not StepStatus.SKIPPED or row.error != only_error
            ):
                continue
            self._drop_tree(run_id, key)
            deleted.append(key)
        return deleted

    async def complete_run(
        self, run_id: RunId, status: RunStatus, *, now: datetime
    ) -> bool:
        run = self._runs.get(run_id)
        if run is None or run.status is not RunStatus.RUNNING:
            return False
        self._runs[run_id] = replace(run, status=status, completed_at=now)
        return True

    async def reopen_run(self, run_id: RunId) -> bool:
        run = self._runs.get(run_id)
        if run is None or run.status is RunStatus.RUNNING:
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

    async def start_loop(
        self, run_id: RunId, key: StepKey, items: Sequence[Json], *, concurrency: int
    ) -> LoopState:
        row = self._existing(run_id, key)
        if row.loop is not None:
            return row.loop
        state = LoopState(total=len(items), concurrency=concurrency)
        self._items.setdefault(run_id, {})[key] = [_copied(item) for item in items]
        self._counted.setdefault(run_id, {})[key] = set()
        self._put(replace(row, loop=state))
        return state

    async def loop_item(self, run_id: RunId, key: StepKey, index: int) -> Json:
        items = self._items.get(run_id, {}).get(key)
        if items is None:
            raise UnknownReferenceError("loop", f"{run_id}/{key}")
        if not 0 <= index < len(items):
            raise IndexError(f"loop {key} has {len(items)} items, not item {index}")
        return _copied(items[index])

    async def advance_loop(
        self, run_id: RunId, key: StepKey, *, index: int, failed: bool
    ) -> LoopState:
        row = self._existing(run_id, key)
        if row.loop is None:
            raise UnknownReferenceError("loop", f"{run_id}/{key}")
        counted = self._counted.setdefault(run_id, {}).setdefault(key, set())
        if index in counted:
            return row.loop
        counted.add(index)
        state = replace(
            row.loop,
            finished=row.loop.finished + 1,
            failed=row.loop.failed + (1 if failed else 0),
        )
        self._put(replace(row, loop=state))
        return state

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

    async def unstarted_runs(self, *, before: datetime, limit: int) -> list[RunRecord]:
        runs = (
            run
            for run in self._runs.values()
            if run.status is RunStatus.RUNNING
            and not run.started
            and run.started_at < before
        )
        return heapq.nsmallest(limit, runs, key=lambda run: run.started_at)

    def all_runs(self) -> list[RunRecord]:
        """Every run, in creation order (for the flow test host and its users)."""
        return list(self._runs.values())

    def all_steps(self, run_id: RunId) -> list[StepRecord]:
        """Every step row of the run at any depth (for the flow test host)."""
        return [
            row for rows in self._rows.get(run_id, {}).values() for row in rows.values()
        ]

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
        """Retention: drop runs, their idempotency keys, step rows and loop items."""
        for run_id in run_ids:
            run = self._runs.pop(run_id, None)
            key = None if run is None else _idempotency(run)
            if key is not None and self._keys.get(key) == run_id:
                del self._keys[key]
            for rows in self._rows.pop(run_id, {}).values():
                for step in rows:
                    self._live.pop((run_id, step), None)
            self._items.pop(run_id, None)
            self._counted.pop(run_id, None)

    def _row(self, run_id: RunId, key: StepKey) -> StepRecord | None:
        return self._rows.get(run_id, {}).get(scope_of(key), {}).get(key)

    def _existing(self, run_id: RunId, key: StepKey) -> StepRecord:
        row = self._row(run_id, key)
        if row is None:
            raise UnknownReferenceError("step", f"{run_id}/{key}")
        return row

    def _put(self, row: StepRecord) -> StepRecord:
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
        siblings = scopes[scope_of(key)]
        del siblings[key]
        self._live.pop((run_id, key), None)
        if not siblings:
            del scopes[scope_of(key)]
        items = self._items.get(run_id, {})
        for loop in [k for k in items if k == key or k.startswith(below)]:
            del items[loop]


class InMemoryEventStore:
    """Each run's events in one list, in sequence order."""

    def __init__(self) -> None:
        self._events: dict[RunId, list[Event]] = {}
        self._keys: dict[RunId, set[str]] = {}

    async def append(self, run_id: RunId, events: Sequence[NewEvent]) -> None:
        if not events:
            return
        log = self._events.setdefault(run_id, [])
        keys = self._keys.setdefault(run_id, set())
        fresh = [new for new in events if new.key is None or new.key not in keys]
        keys.update(new.key for new in fresh if new.key is not None)
        last = log[-1].seq if log else 0
        log.extend(
            Event(run_id, seq, new.type, new.at, new.step_key, new.message)
            for seq, new in enumerate(fresh, start=last + 1)
        )

    async def events(
        self, run_id: RunId, *, skip: int = 0, limit: int = 200
    ) -> list[Event]:
        return self._events.get(run_id, [])[skip : skip + limit]

    def forget(self, run_ids: Iterable[RunId]) -> None:
        for run_id in run_ids:
            self._events.pop(run_id, None)
            self._keys.pop(run_id, None)


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


class InMemorySignalStore:
    """Waiters by run and step, each with a lower-case copy of its signal name."""

    def __init__(self) -> None:
        self._waiters: dict[RunId, dict[StepKey, tuple[Waiter, str]]] = {}

    async def register(
        self,
        run_id: RunId,
        key: StepKey,
        signal: str,
        *,
        expires_at: datetime | None,
        now: datetime,
    ) -> Waiter:
        waiters = self._waiters.setdefault(run_id, {})
        if key in waiters:
            waiter = replace(waiters[key][0], signal=signal, expires_at=expires_at)
        else:
            waiter = Waiter(run_id, key, signal, created_at=now, expires_at=expires_at)
        waiters[key] = (waiter, signal.lower())
        return waiter

    async def waiter(self, run_id: RunId, key: StepKey) -> Waiter | None:
        found = self._waiters.get(run_id, {}).get(key)
        return None if found is None else found[0]

    async def deliver(
        self, run_id: RunId, signal: str, payload: Json, *, now: datetime
    ) -> Delivery:
        name = signal.lower()
        waiters = self._waiters.get(run_id, {}).values()
        named = [waiter for waiter, lower in waiters if lower == name]
        if not named:
            return Delivery(DeliveryStatus.NOT_FOUND)
        waiting = [w for w in named if w.delivered_at is None]
        if not waiting:
            latest = max(named, key=lambda w: (w.delivered_at or now, w.step_key))
            return Delivery(
                DeliveryStatus.ALREADY_DELIVERED, latest.step_key, latest.delivered_at
            )
        oldest = min(waiting, key=lambda w: (w.created_at, w.step_key))
        delivered = replace(oldest, delivered_at=now, payload=_copied(payload))
        self._waiters[run_id][oldest.step_key] = (delivered, name)
        return Delivery(DeliveryStatus.DELIVERED, oldest.step_key, now)

    def forget(self, run_ids: Iterable[RunId]) -> None:
        for run_id in run_ids:
            self._waiters.pop(run_id, None)


class InMemoryFlowStore:
    def __init__(self) -> None:
        self._flows: dict[FlowId, FlowRecord] = {}

    async def save(self, record: FlowRecord) -> FlowRecord:
        stored = replace(record, manifest=_mapping(record.manifest))
        if (old := self._flows.get(record.flow_id)) is not None:
            stored = replace(stored, enabled=old.enabled)
        self._flows[record.flow_id] = stored
        return stored

    async def get(self, flow_id: FlowId) -> FlowRecord | None:
        return self._flows.get(flow_id)

    async def all(self) -> list[FlowRecord]:
        return sorted(self._flows.values(), key=lambda flow: flow.flow_id)

    async def set_enabled(self, flow_id: FlowId, *, enabled: bool) -> bool:
        if (flow := self._flows.get(flow_id)) is None:
            return False
        self._flows[flow_id] = replace(flow, enabled=enabled)
        return True


class InMemoryScheduleStore:
    def __init__(self) -> None:
        self._schedules: dict[str, Schedule] = {}

    async def sync(self, schedule: Schedule) -> Schedule:
        old = self._schedules.get(schedule.job_id)
        if old is None:
            stored = schedule
        else:
            # A new manifest cron moves the next fire, unless an operator paused the
            # schedule or overrode its cron: their choice outlives a deploy.
            moved = old.cron != schedule.cron and not old.paused
            stored = replace(
                old,
                flow_id=schedule.flow_id,
                trigger_key=schedule.trigger_key,
                cron=schedule.cron,
                next_fire_at=(
                    schedule.next_fire_at
                    if moved and old.cron_override is None
                    else old.next_fire_at
                ),
            )
        self._schedules[schedule.job_id] = stored
        return stored

    async def get(self, job_id: str) -> Schedule | None:
        return self._schedules.get(job_id)

    async def all(self) -> list[Schedule]:
        return sorted(self._schedules.values(), key=lambda schedule: schedule.job_id)

    async def due(self, now: datetime, *, limit: int) -> list[Schedule]:
        due = [
            (schedule.next_fire_at, schedule.job_id, schedule)
            for schedule in self._schedules.values()
            if not schedule.paused
            and schedule.next_fire_at is not None
            and schedule.next_fire_at <= now
        ]
        return [schedule for _, _, schedule in heapq.nsmallest(limit, due)]

    async def advance(
        self, job_id: str, *, fired_at: datetime, next_fire_at: datetime
    ) -> bool:
        schedule = self._schedules.get(job_id)
        if schedule is None or schedule.next_fire_at != fired_at:
            return False
        self._schedules[job_id] = replace(schedule, next_fire_at=next_fire_at)
        return True

    async def update(
        self,
        job_id: str,
        *,
        paused: bool,
        cron_override: str | None,
        next_fire_at: datetime | None,
    ) -> Schedule | None:
        if (schedule := self._schedules.get(job_id)) is None:
            return None
        updated = replace(
            schedule,
            paused=paused,
            cron_override=cron_override,
            next_fire_at=next_fire_at,
        )
        self._schedules[job_id] = updated
        return updated


class InMemoryStores:
    """Every in-process store, from one backend (the `Stores` port)."""

    def __init__(self) -> None:
        self._runs = InMemoryRunStore()
        self._events = InMemoryEventStore()
        self._timers = InMemoryTimerStore()
        self._signals = InMemorySignalStore()
        self._flows = InMemoryFlowStore()
        self._schedules = InMemoryScheduleStore()

    @property
    def runs(self) -> InMemoryRunStore:
        return self._runs

    @property
    def events(self) -> InMemoryEventStore:
        return self._events

    @property
    def timers(self) -> InMemoryTimerStore:
        return self._timers

    @property
    def signals(self) -> InMemorySignalStore:
        return self._signals

    @property
    def flows(self) -> InMemoryFlowStore:
        return self._flows

    @property
    def schedules(self) -> InMemoryScheduleStore:
        return self._schedules

    async def purge(self, *, before: datetime, limit: int) -> int:
        doomed = self._runs.completed_before(before, limit=limit)
        self._runs.forget(doomed)
        self._events.forget(doomed)
        self._timers.forget(doomed)
        self._signals.forget(doomed)
        return len(doomed)


class InMemoryDispatcher:
    """A FIFO of `run_step` dispatches, delivered by whoever drives it (`take`)."""

    def __init__(self) -> None:
        self._queue: deque[Dispatch] = deque()

    async def publish(self, dispatches: Sequence[Dispatch]) -> None:
        self._queue.extend(dispatches)

    @property
    def pending(self) -> int:
        """How many dispatches wait to be taken."""
        return len(self._queue)

    def take(self) -> Dispatch:
        """The oldest waiting dispatch; IndexError when none waits."""
        return self._queue.popleft()

    def clear(self) -> None:
        """Lose every waiting dispatch (a broker that dropped its messages)."""
        self._queue.clear()


def _idempotency(run: RunRecord) -> tuple[FlowId, TriggerKey, str] | None:
    if run.idempotency_key is None:
        return None
    return run.flow_id, run.trigger_key, run.idempotency_key


def _claimable(row: StepRecord, now: datetime) -> bool:
    """Queued, or Running with a lease that has ended (its worker may be gone)."""
    if row.status is StepStatus.QUEUED:
        return True
    return (
        row.status is StepStatus.RUNNING
        and row.lease_until is not None
        and row.lease_until <= now
    )


def _recorded(row: StepRecord, outcome: Outcome, now: datetime) -> StepRecord:
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
        output=_copied(outcome.output),
        error=outcome.error,
        trace=_copied(outcome.trace),
        resolved_inputs=None if resolved is None else _mapping(resolved),
        inputs=row.inputs if outcome.inputs is None else _mapping(outcome.inputs),
        attempts=attempts,
        lease_until=None,
        completed_at=now if outcome.status.is_final else None,
        # obs: the attempt's trace context (issue 13)
        trace_context=outcome.trace_context or row.trace_context,
    )


def _copied(value: Json) -> Json:
    """A deep copy of a JSON value: the caller's later edits never reach the store."""
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    return value


def _mapping(values: Mapping[str, Json]) -> dict[str, Json]:
    return {key: _copied(item) for key, item in values.items()}
