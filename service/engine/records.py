"""What the engine persists: runs, steps and their attempts, timers, waiters, schedules.

Plain frozen dataclasses shared by the orchestrator and every store; no I/O here.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final

from service.engine.model import (
    FlowId,
    JobId,
    Json,
    RunId,
    RunStatus,
    StepKey,
    StepStatus,
    TriggerKey,
)

PREREQUISITES_UNMET = "Prerequisite status did not satisfy runAfter conditions."
TIMED_OUT_REASON = "Run timed out."
"""The cancel reason a timeout records when the run had none."""
ATTEMPTS_KEPT = 50
"""Attempt entries a step row keeps (the newest); `attempt` still counts them all."""
NO_CONTEXT: Final[Mapping[str, str]] = {}
"""No trace context (tracing off, or a record written before it was on); shared, so
read-only by its type."""


@dataclass(frozen=True, slots=True)
class ParentRef:
    """The step of another run that started this one (a ChildFlow) and waits for it."""

    run_id: RunId
    step_key: StepKey


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: RunId
    flow_id: FlowId
    flow_name: str
    trigger_key: TriggerKey
    job_id: JobId
    started_at: datetime
    body: Json = None
    headers: Mapping[str, str] = field(default_factory=dict)
    status: RunStatus = RunStatus.RUNNING
    completed_at: datetime | None = None
    source_run_id: RunId | None = None
    idempotency_key: str | None = None
    """Trimmed and lower-cased; unique per (flow, trigger key) while the run lives."""
    deadline_at: datetime | None = None
    cancel_requested: bool = False
    cancel_reason: str | None = None
    timed_out_at: datetime | None = None
    released: tuple[StepKey, ...] = ()
    """The entry steps its creation released; their rows come with their claims."""
    trace_context: Mapping[str, str] = field(default_factory=dict)
    """The trace context of the trigger that started the run (service.tracing)."""
    concurrency_key: str | None = None
    """The value of its flow's concurrency key: it holds a slot of it while it runs."""
    ticket: int | None = None
    """Its place in its key's queue, and among the key's admissions, once admitted."""
    admitted: int | None = None
    parent: ParentRef | None = None
    depth: int = 0
    """How many parents it has (a run triggered from outside: 0)."""
    outputs: Json = None
    """What it gives back once finished (its flow's `outputs`), for its parent."""

    @property
    def facts(self) -> "RunFacts":
        """What never changes about the run (what a worker may cache)."""
        return RunFacts(
            run_id=self.run_id,
            flow_id=self.flow_id,
            flow_name=self.flow_name,
            trigger_key=self.trigger_key,
            job_id=self.job_id,
            started_at=self.started_at,
            body=self.body,
            headers=self.headers,
            deadline_at=self.deadline_at,
            trace_context=self.trace_context,
            concurrency_key=self.concurrency_key,
            parent=self.parent,
            depth=self.depth,
        )

    @property
    def stop_status(self) -> RunStatus | None:
        """TimedOut or Cancelled when the run must not dispatch anything more."""
        if self.timed_out_at is not None:
            return RunStatus.TIMED_OUT
        if self.cancel_requested:
            return RunStatus.CANCELLED
        return None


@dataclass(frozen=True, slots=True)
class RunFacts:
    """The immutable part of a run: all a step's execution needs to know of it."""

    run_id: RunId
    flow_id: FlowId
    flow_name: str
    trigger_key: TriggerKey
    job_id: JobId
    started_at: datetime
    body: Json = None
    headers: Mapping[str, str] = field(default_factory=dict)
    deadline_at: datetime | None = None
    trace_context: Mapping[str, str] = field(default_factory=dict)
    """The trace context of the trigger that started the run (service.tracing)."""
    concurrency_key: str | None = None
    parent: ParentRef | None = None
    depth: int = 0


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    job_id: JobId
    started_at: datetime
    status: StepStatus = StepStatus.RUNNING
    completed_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LoopState:
    """Counters of a ForEach step; `finished` only grows, by one atomic increment."""

    total: int
    concurrency: int
    finished: int = 0
    failed: int = 0
    done: Mapping[int, int] = field(default_factory=dict)
    """The iterations counted so far, as a bitmap: word -> bits, `WORD_BITS` a word."""
    stop: RunStatus | None = None
    """Set when the run was stopped: no iteration starts any more."""

    WORD_BITS = 63
    """Iterations per word (a signed 64-bit integer in MongoDB)."""

    @property
    def counted(self) -> set[int]:
        """The iterations counted so far (walks the bitmap: for a stop, not a hop)."""
        found: set[int] = set()
        for word, bits in self.done.items():
            while bits:
                low = bits & -bits
                found.add(word * self.WORD_BITS + low.bit_length() - 1)
                bits ^= low
        return found

    def is_counted(self, index: int) -> bool:
        word, bit = divmod(index, self.WORD_BITS)
        return bool(self.done.get(word, 0) >> bit & 1)

    def with_counted(self, index: int) -> dict[int, int]:
        """The bitmap once `index` is counted too."""
        word, bit = divmod(index, self.WORD_BITS)
        return {**self.done, word: self.done.get(word, 0) | 1 << bit}

    @property
    def is_done(self) -> bool:
        return self.finished >= self.total


@dataclass(frozen=True, slots=True)
class StepRecord:
    run_id: RunId
    key: StepKey
    type: str
    status: StepStatus
    dispatched_at: datetime
    inputs: Mapping[str, Json] = field(default_factory=dict)
    """As dispatched (manifest inputs, loop item, poll state); resolved each attempt."""
    attempt: int = 0
    """Attempts claimed so far; the next dispatch is attempt + 1."""
    job_id: JobId | None = None
    lease_until: datetime | None = None
    resolved_inputs: Mapping[str, Json] | None = None
    output: Json = None
    error: str | None = None
    trace: Json = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    attempts: tuple[Attempt, ...] = ()
    """The latest attempts (the store may keep only the most recent ones)."""
    loop: LoopState | None = None
    released: tuple[StepKey, ...] = ()
    """Top-level steps this step's result released; their rows come with their claim."""
    stop: RunStatus | None = None
    """Cancelled or TimedOut: the run was stopped while this row was not final."""
    trace_context: Mapping[str, str] = field(default_factory=dict)
    """The trace context of the latest recorded attempt (a join links it)."""

    @property
    def lost_attempts(self) -> int:
        """Attempts whose worker died: superseded while still Running."""
        return sum(1 for a in self.attempts[:-1] if a.status is StepStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class NewStep:
    """A step row to insert if absent: Queued (dispatched) or Skipped (never runs)."""

    key: StepKey
    type: str
    status: StepStatus
    inputs: Mapping[str, Json] = field(default_factory=dict)
    error: str | None = None
    trace: Json = None


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a claim: the step as it is now, and whether this job won it."""

    step: StepRecord | None
    won: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    """The answer to a step's result: recorded or not, and the run's stop if any."""

    won: bool
    """False: the claim was lost (another attempt owns the step); nothing written."""
    stop: RunStatus | None = None
    """The row was marked stopped: the outcome is recorded, its releases are not."""


@dataclass(frozen=True, slots=True)
class Renewal:
    """The answer to a heartbeat: is the lease still ours, and was the run stopped?"""

    held: bool
    stop: RunStatus | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt, as recorded."""

    status: StepStatus
    output: Json = None
    error: str | None = None
    trace: Json = None
    resolved_inputs: Mapping[str, Json] | None = None
    inputs: Mapping[str, Json] | None = None
    """New dispatch inputs (poll state) for the next attempt of a Pending step."""
    trace_context: Mapping[str, str] = field(default_factory=dict)
    """The attempt's trace context, stored on the row when not empty."""


class TimerKind(StrEnum):
    REQUEUE = "requeue"
    """Move a parked (Pending) step back to Queued and publish it."""
    PUBLISH = "publish"
    """Publish a released step whose dispatch was delayed (DelayNextStep)."""
    DEADLINE = "deadline"
    """Time the run out if it is still Running."""


@dataclass(frozen=True, slots=True)
class Timer:
    id: str
    kind: TimerKind
    due_at: datetime
    run_id: RunId
    step_key: StepKey | None = None
    attempt: int | None = None
    """For a requeue: the attempt that parked the step; a later one is not woken."""
    flow_id: FlowId | None = None
    """The run's flow, so that firing it needs no read of the run."""
    trace_context: Mapping[str, str] = field(default_factory=dict)
    """The context of what set the timer: its wake continues that trace."""


@dataclass(frozen=True, slots=True)
class Waiter:
    run_id: RunId
    step_key: StepKey
    signal: str
    created_at: datetime
    expires_at: datetime | None = None
    delivered_at: datetime | None = None
    payload: Json = None


class DeliveryStatus(StrEnum):
    DELIVERED = "Delivered"
    ALREADY_DELIVERED = "AlreadyDelivered"
    NOT_FOUND = "NotFound"


@dataclass(frozen=True, slots=True)
class Delivery:
    status: DeliveryStatus
    step_key: StepKey | None = None
    delivered_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    """SPEC §6.1 event types: run.started, step.completed, ..."""
    at: datetime
    step_key: str = "__run"
    message: str = ""
    key: str | None = None
    """Events of one run with the same key are stored once (a repeated completion)."""


@dataclass(frozen=True, slots=True)
class Event:
    run_id: RunId
    seq: int
    type: str
    at: datetime
    step_key: str
    message: str


@dataclass(frozen=True, slots=True)
class FlowRecord:
    flow_id: FlowId
    name: str
    version: str
    manifest: Mapping[str, Json]
    enabled: bool = True
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """The authoritative state of one cron trigger, shared by every replica."""

    job_id: str
    flow_id: FlowId
    trigger_key: TriggerKey
    cron: str
    next_fire_at: datetime | None
    """None while paused."""
    paused: bool = False
    cron_override: str | None = None

    @property
    def effective_cron(self) -> str:
        return self.cron_override or self.cron


def schedule_job_id(flow_id: str, trigger_key: str) -> str:
    return f"flow-{flow_id}-{trigger_key}"
