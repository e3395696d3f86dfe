"""A decision: the writes one round of the engine asks for, in order; what to publish.

The engine only describes. The orchestrator saves the waves in order, each once the one
before it is durable (the writes of one wave go together), publishes the releases after
the last, then sees to the effects: what the decision sets off in other runs (a child
to start or stop, a parent to wake, a key's slot to free). Every write is
insert-if-absent or guarded by the state it expects, and every effect is safe to
repeat, so saving a decision again (the redelivery of a message whose worker died)
changes nothing that was saved already.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from service.engine.model import (
    FlowId,
    JobId,
    Json,
    RunId,
    RunStatus,
    StepKey,
    StepStatus,
)
from service.engine.records import NewEvent, NewStep, Outcome, RunRecord, Timer


@dataclass(frozen=True, slots=True)
class InsertSteps:
    """Insert each row that does not exist yet (Queued, Skipped or an iteration row)."""

    rows: tuple[NewStep, ...]
    at: datetime | None = None
    """When the Queued ones are dispatched (later than now for a delayed release)."""


@dataclass(frozen=True, slots=True)
class FinishStep:
    """Record an attempt's outcome on the Running row that attempt owns.

    `released` names the top-level steps it makes ready, whose rows their claims
    create; `recheck_at` is when the reconciler makes sure its continuation happened.
    """

    key: StepKey
    outcome: Outcome
    attempt: int
    job_id: JobId
    released: tuple[StepKey, ...] = ()
    recheck_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SettleStep:
    """Record `outcome` on a row no handler runs: a loop, iteration or parked step."""

    key: StepKey
    outcome: Outcome
    expected: frozenset[StepStatus]


@dataclass(frozen=True, slots=True)
class RequeueStep:
    """Move a parked step (parked by `attempt`, if given) back to Queued."""

    key: StepKey
    expected: frozenset[StepStatus]
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class SetTimer:
    timer: Timer


@dataclass(frozen=True, slots=True)
class DeleteTimer:
    timer_id: str


@dataclass(frozen=True, slots=True)
class AppendEvents:
    events: tuple[NewEvent, ...]


@dataclass(frozen=True, slots=True)
class StartLoop:
    """Store a ForEach's items and counters (the first call's items win)."""

    key: StepKey
    items: tuple[Json, ...]
    concurrency: int


@dataclass(frozen=True, slots=True)
class RegisterWaiter:
    key: StepKey
    signal: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class MarkStopped:
    """Mark the run's rows that are not final with its stop (only loops, if asked)."""

    status: RunStatus
    loops_only: bool = False


@dataclass(frozen=True, slots=True)
class CompleteRun:
    """Move the Running run to `status`; a stop recorded on the run wins over it.

    `outputs`: what the run gives back; `recheck_at`: when the reconciler makes sure
    what its end sets off (the effects beside it) happened.
    """

    status: RunStatus
    outputs: Json = None
    recheck_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AdmitRun:
    """Mark the Queued run Running: it holds a slot of its key, and its start is out.

    Not if it was stopped. `ticket` and `admitted` are its places in its key's queue
    and admissions; its start is rechecked at `recheck_at`.
    """

    ticket: int
    admitted: int
    recheck_at: datetime


@dataclass(frozen=True, slots=True)
class CreateRun:
    """Create another run (a child), unless it exists; rechecked at `recheck_at`."""

    run: RunRecord
    recheck_at: datetime


Write: TypeAlias = (
    InsertSteps
    | FinishStep
    | SettleStep
    | RequeueStep
    | SetTimer
    | DeleteTimer
    | AppendEvents
    | StartLoop
    | RegisterWaiter
    | MarkStopped
    | CompleteRun
    | CreateRun
    | AdmitRun
)
Wave: TypeAlias = tuple[Write, ...]


@dataclass(frozen=True, slots=True)
class Launch:
    """Start a run that was created (a child, a run of a keyed flow).

    Running: its entry steps. Queued: its place in its key's queue, then whatever
    may take a free slot of the key.
    """

    run_id: RunId


@dataclass(frozen=True, slots=True)
class StopRun:
    """Cancel another run (the child of a stopped parent), if it is not over."""

    run_id: RunId
    reason: str


@dataclass(frozen=True, slots=True)
class WakeParent:
    """This run (`child`) ended: wake its parent's step if it waits for it."""

    run_id: RunId
    step_key: StepKey
    child: RunId


@dataclass(frozen=True, slots=True)
class FreeSlot:
    """This run ended: free its slot of its key, and let the next waiting runs start."""

    flow_id: FlowId
    key: str
    run_id: RunId


Effect: TypeAlias = Launch | StopRun | WakeParent | FreeSlot


@dataclass(frozen=True, slots=True)
class Release:
    """A `run_step` message to publish once the decision is saved."""

    key: StepKey
    attempt: int = 1
    links: tuple[Mapping[str, str], ...] = ()
    """The trace contexts of the steps a join waited for (its span links them)."""


@dataclass(frozen=True, slots=True)
class Decision:
    waves: tuple[Wave, ...] = ()
    releases: tuple[Release, ...] = ()
    effects: tuple[Effect, ...] = ()

    def then(self, *others: "Decision") -> "Decision":
        """This decision's waves, then each of `others`' waves, after it."""
        waves = list(self.waves)
        releases = list(self.releases)
        effects = list(self.effects)
        for other in others:
            waves.extend(other.waves)
            releases.extend(other.releases)
            effects.extend(other.effects)
        return Decision(tuple(w for w in waves if w), tuple(releases), tuple(effects))

    def alongside(self, *others: "Decision") -> "Decision":
        """Independent decisions side by side: their first waves together, and so on.

        Each keeps its own order; none waits for another's later waves.
        """
        decisions = (self, *others)
        depth = max(len(d.waves) for d in decisions)
        waves = [
            tuple(w for d in decisions if n < len(d.waves) for w in d.waves[n])
            for n in range(depth)
        ]
        releases = tuple(r for d in decisions for r in d.releases)
        effects = tuple(e for d in decisions for e in d.effects)
        return Decision(tuple(w for w in waves if w), releases, effects)

    @property
    def is_empty(self) -> bool:
        return not self.waves and not self.releases and not self.effects

    def writes(self) -> Iterable[Write]:
        for wave in self.waves:
            yield from wave


NOTHING = Decision()


def decided(
    *waves: Sequence[Write],
    releases: Iterable[Release] = (),
    effects: Iterable[Effect] = (),
) -> Decision:
    """A decision of `waves` (empty ones dropped), in order; releases and effects."""
    return Decision(
        tuple(tuple(w) for w in waves if w), tuple(releases), tuple(effects)
    )
