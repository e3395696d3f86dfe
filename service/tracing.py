"""The `Tracer` port: what the orchestrator tells a trace backend; its no-op default.

A run is one trace. Its context travels as a `Carrier`, an opaque text mapping (W3C
`traceparent`/`tracestate` in practice) stored on the run, on timers and on step rows,
so that whatever continues a run later (a timer, the reconciler, a control message)
continues its trace. The OpenTelemetry side lives in `service.adapters.otel` and is
imported only when tracing is on; with `NoTracer` nothing of opentelemetry is loaded
and each call is a method call that returns at once.
"""

import contextlib
from collections.abc import Mapping
from typing import Final, Protocol

from service.engine.records import NO_CONTEXT, RunFacts, StepRecord

Carrier = Mapping[str, str]
"""A trace context as text (`traceparent`, `tracestate`); empty when there is none."""

__all__ = ["NO_CONTEXT", "Carrier", "NoTracer", "Tracer"]


class Tracer(Protocol):
    """What the orchestrator reports to tracing; implementations never raise.

    Spans per delivery and per publish belong to the AMQP adapter; the orchestrator
    adds the run's own facts at the points that matter.
    """

    def current(self) -> Carrier:
        """The active context as a carrier to store (NO_CONTEXT when tracing is off)."""
        ...

    def resumed(
        self, name: str, parent: Carrier
    ) -> contextlib.AbstractContextManager[None]:
        """Run the block in a span `name`, child of `parent` (a stored carrier).

        For work that continues a run outside its messages: a timer, a repair, a
        control message from outside. The span links the context it was entered in,
        when that is another trace (the operator's). An empty `parent` keeps the
        current context as the parent.
        """
        ...

    def run_started(self, run: RunFacts) -> None:
        """A trigger created `run`: name the current span for it."""
        ...

    def attempt_started(self, run: RunFacts, step: StepRecord) -> None:
        """The claim of `step` (attempt `step.attempt`) was won: open its span."""
        ...

    def attempt_finished(self, status: str, error: str | None) -> None:
        """The open attempt's outcome was recorded: close its span (error if failed)."""
        ...

    def step_skipped(self, run: RunFacts, key: str, reason: str | None) -> None:
        """Step `key` will never run, because of `reason`: a span that says why."""
        ...

    def run_completed(self, run: RunFacts, status: str) -> None:
        """The run reached `status` (once): a span that closes the run's trace."""
        ...


class NoTracer:
    """Tracing off: every call returns at once and nothing is stored."""

    def current(self) -> Carrier:
        return NO_CONTEXT

    def resumed(
        self, name: str, parent: Carrier
    ) -> contextlib.AbstractContextManager[None]:
        return _NOTHING

    def run_started(self, run: RunFacts) -> None:
        return

    def attempt_started(self, run: RunFacts, step: StepRecord) -> None:
        return

    def attempt_finished(self, status: str, error: str | None) -> None:
        return

    def step_skipped(self, run: RunFacts, key: str, reason: str | None) -> None:
        return

    def run_completed(self, run: RunFacts, status: str) -> None:
        return


class _Nothing(contextlib.AbstractContextManager[None]):
    """A reusable context manager that does nothing (cheaper than `nullcontext()`)."""

    def __exit__(self, *_: object) -> None:
        return None


_NOTHING: Final = _Nothing()
