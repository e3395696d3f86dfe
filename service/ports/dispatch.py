"""`Dispatcher`: publishing `run_step` messages, and `Dispatch`, one such message."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from service.engine.model import FlowId, RunId, StepKey


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
