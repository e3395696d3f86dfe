"""How the engine and the orchestrator take turns: rounds of decide, save, load.

The engine answers each event with a `Round`: a decision to save and, when it needs
facts that only exist once those writes are durable (a join's other branches, the rows
of a scope that may have ended, a loop's counters), a `Next`: what to load, and the
state to resume from with what was loaded. The orchestrator loops over rounds without
ever deciding anything itself; the engine never waits for anything.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeAlias

from service.engine.decision import NOTHING, Decision
from service.engine.model import Flow, Json, RunId, RunStatus, StepKey
from service.engine.records import RunFacts, RunRecord, StepRecord, Waiter

FlowLookup: TypeAlias = Callable[[str], Flow | None]
"""A flow of this worker by id or name (the flows a ChildFlow step may start)."""


def no_flows(_: str) -> Flow | None:
    return None


@dataclass(frozen=True, slots=True)
class Limits:
    max_output_bytes: int = 1_000_000
    reconcile_after: timedelta = timedelta(seconds=30)
    """How long after a result the reconciler checks that its continuation happened."""
    lost_attempts: int = 5
    """A step whose worker died during this many attempts fails instead of running."""
    step_timeout: timedelta | None = None
    """The timeout of handler steps whose step and flow set none (`STEP_TIMEOUT`)."""
    default_run_timeout: timedelta | None = None
    """The deadline of runs whose flow sets none (a child's, here)."""


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every decision about one run starts from."""

    flow: Flow
    run: RunFacts
    now: datetime
    stop: RunStatus | None = None
    """Cancelled or TimedOut, when the caller knows the run was stopped."""
    limits: Limits = Limits()
    trace: Mapping[str, str] = field(default_factory=dict)
    """The trace context of what decides (kept on what it sets: a timer, a result)."""
    flows: FlowLookup = no_flows
    """The flows a ChildFlow step may start (the hop knows them)."""

    def stopped(self, status: RunStatus | None) -> "RunContext":
        """This context, knowing the run was stopped (a stop never goes away)."""
        if status is None or self.stop is not None:
            return self
        return replace(self, stop=status)


@dataclass(frozen=True, slots=True)
class CountIteration:
    """Count iteration `index` of `loop` finished, once; returns the loop's counters."""

    loop: StepKey
    index: int
    failed: bool


@dataclass(frozen=True, slots=True)
class Load:
    """What to read once the round's writes are durable; all of it may go at once."""

    rows: frozenset[StepKey] = frozenset()
    scope: str | None = None
    """Every row directly in this scope ("" top level, "loop.3" an iteration)."""
    counts: tuple[frozenset[StepKey], ...] = ()
    """How many rows of each set are final (wide joins are counted, not read)."""
    count_scope: str | None = None
    """How many rows directly in this scope are final."""
    items: frozenset[tuple[StepKey, int]] = frozenset()
    """Loop items by (loop key, index); an index past the end loads as absent."""
    count_iteration: CountIteration | None = None
    waiter: StepKey | None = None
    in_flight: bool = False
    """The rows of the run that are not final."""
    all_rows: bool = False
    """Every row of the run."""
    child: RunId | None = None
    """A run started by a ChildFlow step."""


@dataclass(frozen=True, slots=True)
class Loaded:
    rows: Mapping[StepKey, StepRecord] = field(default_factory=dict)
    scope_rows: tuple[StepRecord, ...] = ()
    counts: tuple[int, ...] = ()
    scope_final: int = 0
    items: Mapping[tuple[StepKey, int], Json] = field(default_factory=dict)
    loop: StepRecord | None = None
    """The loop row after `count_iteration` (its `loop` holds the counters)."""
    waiter: Waiter | None = None
    in_flight: tuple[StepRecord, ...] = ()
    all_rows: tuple[StepRecord, ...] = ()
    child: RunRecord | None = None


@dataclass(frozen=True, slots=True)
class ContinueScope:
    """Go on with a scope's cascade once `settled` (local keys) are final."""

    prefix: str
    settled: frozenset[str]
    known: Mapping[str, StepRecord]
    """Rows known so far, by local key."""
    seen: frozenset[str] = frozenset()
    """Local keys whose state is known: a row in `known`, or none at all."""
    released: bool = False
    """Whether this continuation released a step (then the scope cannot have ended)."""
    waiting: bool = False
    """Whether a step was found waiting for another (then neither can it)."""
    loop_inputs: Mapping[str, Json] = field(default_factory=dict)
    """`__loopItem` and `__loopIndex` of the iteration, for the rows it inserts."""
    delay: timedelta | None = None
    """DelayNextStep: what this continuation releases is published this much later."""
    counting: tuple[str, ...] = ()
    """The wide joins whose counts `Loaded.counts` holds, in order."""
    asked: frozenset[str] = frozenset()
    """The local keys whose rows were asked for: any not loaded has no row."""


@dataclass(frozen=True, slots=True)
class EndScope:
    """Complete the scope (the run, or an iteration) once every step of it is final."""

    prefix: str
    counted: bool = False
    """Its final rows were counted (a wide scope), not read."""


@dataclass(frozen=True, slots=True)
class IterationCounted:
    loop: StepKey
    index: int


@dataclass(frozen=True, slots=True)
class RestartLanes:
    """A parked ForEach again (a redelivery): start what its lanes have not started."""

    loop: StepKey


@dataclass(frozen=True, slots=True)
class AwaitSignal:
    """A WaitForSignal attempt, once its waiter is loaded."""

    row: StepRecord


@dataclass(frozen=True, slots=True)
class SignalParked:
    """A WaitForSignal parked: a signal may have come while it held its claim."""

    row: StepRecord


@dataclass(frozen=True, slots=True)
class AwaitChild:
    """A ChildFlow attempt woken (or met again), once its child run is loaded."""

    row: StepRecord


@dataclass(frozen=True, slots=True)
class ChildParked:
    """A ChildFlow parked: its child may have ended while it held its claim."""

    row: StepRecord


@dataclass(frozen=True, slots=True)
class BuryStopped:
    """A stop: loops marked, every row loaded; bury what could still start."""

    status: RunStatus


@dataclass(frozen=True, slots=True)
class CloseParked:
    """A stop: every row marked; close what nobody runs (Queued, parked)."""

    status: RunStatus


@dataclass(frozen=True, slots=True)
class CloseStopped:
    """A stopped run completes once nothing of it is in flight."""

    status: RunStatus


Resume: TypeAlias = (
    ContinueScope
    | EndScope
    | IterationCounted
    | RestartLanes
    | AwaitSignal
    | SignalParked
    | AwaitChild
    | ChildParked
    | BuryStopped
    | CloseParked
    | CloseStopped
)


@dataclass(frozen=True, slots=True)
class Next:
    load: Load
    resume: Resume


@dataclass(frozen=True, slots=True)
class Round:
    decision: Decision = NOTHING
    follow: tuple[Next, ...] = ()
    """Continuations to go on with once the decision is saved, one after the other."""

    def then(self, other: "Round") -> "Round":
        """Both rounds' writes (this one's first) and continuations."""
        return Round(self.decision.then(other.decision), self.follow + other.follow)


def following(load: Load, resume: Resume) -> Round:
    """A round that decides nothing yet: it only asks for `load`."""
    return Round(follow=(Next(load, resume),))
