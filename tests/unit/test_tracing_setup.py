"""Tracing is on only when OTEL_* asks, and off it costs no import of opentelemetry."""

import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider

from service.adapters import observers
from service.adapters.otel import OtelTracer
from service.engine.records import NO_CONTEXT
from service.settings import Settings
from service.tracing import NoTracer


@pytest.mark.parametrize(
    ("env", "exporter"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "OTLP"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
        ({"OTEL_SERVICE_NAME": "orders-worker"}, None),
    ],
)
def test_the_otel_variables_decide_whether_tracing_is_on(monkeypatch, env, exporter):
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert Settings().tracing == exporter


@pytest.mark.parametrize(
    ("name", "value"),
    [("OTEL_TRACES_EXPORTER", "zipkin"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
)
def test_an_exporter_or_protocol_not_shipped_is_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)

    with pytest.raises(ValueError, match=name.lower()):
        Settings()


def test_tracing_asked_for_without_the_extra_refuses_to_start(monkeypatch):
    monkeypatch.setitem(sys.modules, "service.adapters.otel", None)  # not installed

    with pytest.raises(SystemExit, match=r"the `otel` extra is not installed"):
        observers.open_tracer("otlp")


def test_no_tracer_is_opened_when_tracing_is_off():
    assert observers.open_tracer(None) is None


def test_without_tracing_a_worker_imports_nothing_of_opentelemetry():
    probe = (
        "import sys, service.app, service.cli, service.adapters.amqp.consumer;"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'));"
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stdout + done.stderr


def test_the_no_op_tracer_stores_no_context():
    tracer = NoTracer()

    assert tracer.current() is NO_CONTEXT
    with tracer.resumed("timer requeue", {"traceparent": "x"}):
        pass


def test_log_lines_carry_the_trace_and_span_ids_inside_a_span():
    tracer = OtelTracer(TracerProvider())
    with tracer.resumed("timer requeue", NO_CONTEXT):
        carrier = tracer.current()
        event = OtelTracer.log_context(None, "info", {"event": "step_finished"})
    outside = OtelTracer.log_context(None, "info", {"event": "idle"})

    _, trace_id, span_id, _ = carrier["traceparent"].split("-")
    assert (event["trace_id"], event["span_id"]) == (trace_id, span_id)
    assert outside == {"event": "idle"}


def test_the_service_is_named_by_otel_service_name_else_flow_orchestrator(monkeypatch):
    named = OtelTracer.from_environment("console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders-worker")
    renamed = OtelTracer.from_environment("console")
    try:
        assert named.provider.resource.attributes["service.name"] == "flow-orchestrator"
        assert renamed.provider.resource.attributes["service.name"] == "orders-worker"
    finally:
        named.shutdown()
        renamed.shutdown()
