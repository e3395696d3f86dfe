"""`Telemetry`: what the orchestrator and the scheduler report for metrics."""

from typing import Protocol


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
