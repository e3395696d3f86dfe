"""OpenTelemetry tracing: the `Tracer` port, the AMQP message spans, the log fields.

The one importer of opentelemetry, imported by the app only when tracing is on (the
`otel` extra installed and `OTEL_*` asking for it), so a worker without it loads none
of it. A run is one trace: the trigger's delivery span is its root (or a child of the
trigger's own `traceparent`); every `run_step` publish is a PRODUCER span whose
context travels in the message's W3C headers to the CONSUMER span of its delivery;
each claimed attempt is a `step <key>` span inside it. Messaging attributes follow the
OpenTelemetry semantic conventions for RabbitMQ; ours are named once, below.
"""

import contextlib
import re
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from typing import Any, Final

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from structlog.typing import EventDict, WrappedLogger

from service.engine.model import template_parts
from service.engine.records import NO_CONTEXT, RunFacts, StepRecord
from service.tracing import Carrier

# Our attributes, named once (the README's trace table lists them).
RUN_ID: Final = "flow.run.id"
FLOW_ID: Final = "flow.id"
FLOW_NAME: Final = "flow.name"
TRIGGER_KEY: Final = "flow.trigger.key"
STEP_KEY: Final = "flow.step.key"
ATTEMPT: Final = "flow.step.attempt"
JOB_ID: Final = "flow.job.id"
STEP_STATUS: Final = "flow.step.status"
SKIP_REASON: Final = "flow.step.skip_reason"
RUN_STATUS: Final = "flow.run.status"

_SCOPE: Final = "flow-orchestrator"
_FAILED: Final = frozenset({"Failed", "Pending"})
_RUN_FAILED: Final = frozenset({"Failed", "TimedOut"})
_EXCEPTION_LINE: Final = re.compile(r"^([A-Za-z_][\w.]*): (.*)$")
_MAX_DESCRIPTION: Final = 200

_open: ContextVar[list[tuple[Span, object]] | None] = ContextVar(
    "flow_open_spans", default=None
)
"""Spans the orchestrator opened in this delivery (attempts), closed at its end."""


def exporter_for(name: str) -> SpanExporter:
    """The span exporter that OTEL_TRACES_EXPORTER names (`otlp` or `console`)."""
    if name == "console":
        return ConsoleSpanExporter()
    return OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*


class OtelTracer:
    """The `Tracer` port and the AMQP adapter's message spans, on one TracerProvider."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer(_SCOPE)

    @classmethod
    def from_environment(cls, exporter: str) -> "OtelTracer":
        """Resource, sampler and exporter from the standard OTEL_* variables.

        Spans leave through a batch processor: never on the handling path.
        """
        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: _SCOPE}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(exporter_for(exporter)))
        return cls(provider)

    def shutdown(self) -> None:
        """Export what is buffered, then stop (at worker exit)."""
        self.provider.shutdown()

    @staticmethod
    def log_context(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        """A structlog processor: `trace_id` and `span_id` of the current span."""
        return log_context(logger, method, event)

    # The Tracer port (service.tracing) --------------------------------------------

    def current(self) -> Carrier:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier or NO_CONTEXT

    @contextlib.contextmanager
    def resumed(self, name: str, parent: Carrier) -> Iterator[None]:
        here = trace.get_current_span().get_span_context()
        ctx = propagate.extract(parent) if parent else None
        links: list[Link] = []
        if ctx is not None and here.is_valid:
            there = trace.get_current_span(ctx).get_span_context()
            if there.trace_id != here.trace_id:
                links.append(Link(here))
        with self._tracer.start_as_current_span(
            name, context=ctx, kind=SpanKind.INTERNAL, links=links
        ):
            yield

    def run_started(self, run: RunFacts) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.update_name(f"run {run.flow_name}")
            span.set_attributes(_run_attributes(run))
            span.set_attribute(TRIGGER_KEY, run.trigger_key)

    def attempt_started(self, run: RunFacts, step: StepRecord) -> None:
        attributes = {
            **_run_attributes(run),
            STEP_KEY: step.key,
            ATTEMPT: step.attempt,
            JOB_ID: step.job_id or "",
        }
        span = self._tracer.start_span(
            _step_name(step.key), kind=SpanKind.INTERNAL, attributes=attributes
        )
        token = context.attach(trace.set_span_in_context(span))
        opened = _open.get()
        if opened is None:
            opened = []
            _open.set(opened)
        opened.append((span, token))

    def attempt_finished(self, status: str, error: str | None) -> None:
        opened = _open.get()
        if not opened:
            return
        span, token = opened.pop()
        span.set_attribute(STEP_STATUS, status)
        if error is not None and status in _FAILED:
            _record_failure(span, error)
        span.end()
        _detach(token)

    def step_skipped(self, run: RunFacts, key: str, reason: str | None) -> None:
        attributes = {**_run_attributes(run), STEP_KEY: key, STEP_STATUS: "Skipped"}
        if reason:
            attributes[SKIP_REASON] = reason
        self._tracer.start_span(
            _step_name(key), kind=SpanKind.INTERNAL, attributes=attributes
        ).end()

    def run_completed(self, run: RunFacts, status: str) -> None:
        span = self._tracer.start_span(
            "run completed",
            kind=SpanKind.INTERNAL,
            attributes={**_run_attributes(run), RUN_STATUS: status},
        )
        if status in _RUN_FAILED:
            span.set_status(Status(StatusCode.ERROR, f"Run {status}."))
        span.end()

    # The AMQP adapter's spans (service.adapters.amqp.spans) ------------------------

    @contextlib.contextmanager
    def delivery(self, message: AbstractIncomingMessage) -> Iterator[None]:
        """A CONSUMER span around one delivery, child of its `traceparent`."""
        parent = propagate.extract(_text(message.headers))
        kind = message.type or "unknown"
        attributes: dict[str, Any] = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": message.exchange or "",
            "messaging.rabbitmq.destination.routing_key": message.routing_key or "",
            "messaging.message.id": message.message_id or "",
            "messaging.message.body.size": len(message.body),
        }
        if message.correlation_id:
            attributes["messaging.message.conversation_id"] = message.correlation_id
        if message.delivery_tag is not None:
            attributes["messaging.rabbitmq.message.delivery_tag"] = message.delivery_tag
        token = _open.set([])
        try:
            with self._tracer.start_as_current_span(
                f"process {kind}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
            ):
                try:
                    yield
                finally:
                    _close_open()
        finally:
            _open.reset(token)

    @contextlib.contextmanager
    def publish(
        self,
        headers: MutableMapping[str, Any],
        *,
        kind: str,
        exchange: str,
        routing_key: str,
        message_id: str,
        links: Sequence[Mapping[str, str]] = (),
    ) -> Iterator[None]:
        """A PRODUCER span around one publish; its context goes into `headers`."""
        attributes: dict[str, Any] = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": exchange,
            "messaging.rabbitmq.destination.routing_key": routing_key,
            "messaging.message.id": message_id,
        }
        with self._tracer.start_as_current_span(
            f"publish {kind}",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            links=[_link(carrier) for carrier in links],
        ):
            propagate.inject(headers)
            yield


def log_context(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """A structlog processor: `trace_id` and `span_id` of the current span, if any."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event["trace_id"] = format(span.trace_id, "032x")
        event["span_id"] = format(span.span_id, "016x")
    return event


def _run_attributes(run: RunFacts) -> dict[str, str]:
    return {RUN_ID: run.run_id, FLOW_ID: run.flow_id, FLOW_NAME: run.flow_name}


def _step_name(key: str) -> str:
    """`step <template key>`: bounded, the iteration index lives in the attributes."""
    return f"step {'.'.join(template_parts(key))}"


def _record_failure(span: Span, error: str) -> None:
    """Error status and an `exception` event from a step's stored error text.

    The text starts with `Type: message` for a handler's exception, followed by its
    traceback after a blank line; a failure the handler returned is a message alone.
    """
    first, _, rest = error.partition("\n")
    span.set_status(Status(StatusCode.ERROR, first[:_MAX_DESCRIPTION]))
    found = _EXCEPTION_LINE.match(first)
    event = {
        "exception.type": found.group(1) if found else "StepFailed",
        "exception.message": found.group(2) if found else first,
    }
    if rest.strip():
        event["exception.stacktrace"] = rest.strip()
    span.add_event("exception", event)


def _close_open() -> None:
    """End what the orchestrator left open (an attempt cut short by an error)."""
    opened = _open.get() or []
    while opened:
        span, token = opened.pop()
        span.set_status(Status(StatusCode.ERROR, "attempt not recorded"))
        span.end()
        _detach(token)


def _detach(token: object) -> None:
    with contextlib.suppress(ValueError, RuntimeError):
        context.detach(token)  # type: ignore[arg-type]


def _link(carrier: Mapping[str, str]) -> Link:
    ctx: Context = propagate.extract(carrier)
    return Link(trace.get_current_span(ctx).get_span_context())


def _text(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The headers a propagator reads: text values, names in lower case."""
    found: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if isinstance(value, bytes):
            found[name.lower()] = value.decode("utf-8", errors="replace")
        elif isinstance(value, str):
            found[name.lower()] = value
    return found
