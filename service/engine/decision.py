"""A decision: the writes one round of the engine asks for, in order; what to publish.

The engine only describes. The orchestrator saves the waves in order, each once the one
before it is durable (the writes of one wave go together), and publishes the releases
after the last. Every write is insert-if-absent or guarded by the state it expects, so
saving a decision again (the redelivery of a message whose worker died) changes nothing
that was saved already.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from service.engine.model import JobId, Json, RunStatus, StepKey, StepStatus
from service.engine.records import NewEvent, NewStep, Outcome, Timer


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
    """Move the Running run to `status`; a stop recorded on the run wins over it."""

    status: RunStatus


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
)
Wave: TypeAlias = tuple[Write, ...]


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

    def then(self, *others: "Decision") -> "Decision":
        """This decision's waves, then each of `others`' waves, after it."""
        waves = list(self.waves)
        releases = list(self.releases)
        for other in others:
            waves.extend(other.waves)
            releases.extend(other.releases)
        return Decision(tuple(w for w in waves if w), tuple(releases))

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
        return Decision(tuple(w for w in waves if w), releases)

    @property
    def is_empty(self) -> bool:
        return not self.waves and not self.releases

    def writes(self) -> Iterable[Write]:
        for wave in self.waves:
            yield from wave


NOTHING = Decision()


def decided(*waves: Sequence[Write], releases: Iterable[Release] = ()) -> Decision:
    """A decision of `waves` (empty ones dropped), in order, and `releases`."""
    return Decision(tuple(tuple(w) for w in waves if w), tuple(releases))
