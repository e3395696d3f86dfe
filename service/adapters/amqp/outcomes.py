"""How a delivery ended (`Outcome`, `Settled`), and who hears of it (`Observer`).

The app maps what an `Observer` hears to Prometheus; `Tally` counts it (the default,
and what tests read).
"""

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from contracts import KINDS


class Outcome(StrEnum):
    ACKED = "acked"
    """Handled (a duplicate included) and acked."""
    REFUSED = "refused"
    """Answered without effect (a refused control operation, a disabled flow); acked."""
    DEAD_LETTERED = "dead_lettered"
    REQUEUED = "requeued"
    """Given back at shutdown, unfinished."""
    LOST = "lost"
    """Its channel closed before it was settled: the broker delivers it again."""
    RELEASED = "released"
    """A long step's, acknowledged while its handler ran: its row and lease carry it."""
    REJECTED = "rejected"
    """Not dead-lettered by us (the letter could not be built or published): rejected,
    so the broker dead-letters it, with `x-first-death-reason: rejected`."""


@dataclass(frozen=True, slots=True)
class Settled:
    kind: str
    """A known message kind, or "unknown" (a low-cardinality label)."""
    outcome: Outcome
    reason: str | None
    """The dead-letter reason, when dead-lettered."""
    seconds: float


class Observer(Protocol):
    def settled(self, event: Settled) -> None:
        """A delivery was settled (or lost)."""
        ...

    def deferred(self, kind: str) -> None:
        """A transient failure: the delivery is retried in place after a backoff."""
        ...

    def queue_wait(self, flow_id: str, seconds: float) -> None:
        """A `run_step` of `flow_id` waited `seconds` from its publish to delivery."""
        ...


class Tally:
    """An `Observer` that counts: the default, and what tests read."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, Outcome]] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.deferrals: Counter[str] = Counter()
        self.waits: list[tuple[str, float]] = []

    def settled(self, event: Settled) -> None:
        self.outcomes[event.kind, event.outcome] += 1
        if event.reason is not None:
            self.dead_letters[event.reason] += 1

    def deferred(self, kind: str) -> None:
        self.deferrals[kind] += 1

    def queue_wait(self, flow_id: str, seconds: float) -> None:
        self.waits.append((flow_id, seconds))


def kind_label(kind: str | None) -> str:
    """`kind` as a metric label: a known kind, or "unknown"."""
    return kind if kind is not None and kind in KINDS else "unknown"
