"""Where the adapters' observations go: Prometheus for the consumer, OpenTelemetry.

`ConsumerMetrics` records the consumer's observations as Prometheus metrics;
`open_tracer` starts OpenTelemetry tracing when the settings ask for it, importing
opentelemetry then and only then.
"""

from typing import TYPE_CHECKING

from service import metrics
from service.adapters.amqp.consumer import Settled

if TYPE_CHECKING:
    from service.adapters.otel import OtelTracer


def open_tracer(exporter: str | None) -> "OtelTracer | None":
    """The OpenTelemetry tracer when `exporter` is set (`Settings.tracing`), else None.

    opentelemetry is imported here only, and only then: without tracing, a worker
    loads none of it. Refuses to start when tracing is asked for without the extra.
    """
    if exporter is None:
        return None
    try:
        from service.adapters.otel import OtelTracer
    except ImportError as exc:
        raise SystemExit(
            "flow-orchestrator refuses to start: OTEL_* variables turn tracing on, "
            "but the `otel` extra is not installed (pip install "
            f"'flow-orchestrator[otel]'): {exc}"
        ) from None
    return OtelTracer.from_environment(exporter)


class ConsumerMetrics:
    """The consumer's `Observer`, recording into the Prometheus metrics."""

    def __init__(self, names: metrics.FlowNames) -> None:
        self._names = names

    def queue_wait(self, flow_id: str, seconds: float) -> None:
        metrics.observe_queue_wait(flow_id, self._names(flow_id), seconds=seconds)

    def settled(self, event: Settled) -> None:
        metrics.observe_settled(event.kind, event.outcome.value)
        if event.reason is not None:
            metrics.observe_dead_letter(event.reason)

    def deferred(self, kind: str) -> None:
        metrics.observe_settled(kind, "deferred")
