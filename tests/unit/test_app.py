"""The composition root's pure parts: loading flow modules, and the health answers."""

import pytest

from service import health
from service.app import FlowModuleError, load_flows
from service.errors import FlowDefinitionError


def test_flow_modules_are_loaded_with_their_handlers():
    flows, handlers = load_flows(["examples.hello", "examples.orders"])

    assert [flow.name for flow in flows] == ["hello", "orders"]
    assert {"Greet", "Ship"} <= handlers.names()


@pytest.mark.parametrize(
    ("modules", "problem"),
    [
        (["examples.nowhere"], "cannot be imported"),
        (["service.errors"], "has no `flows`"),
        (["examples.hello", "examples.hello"], "registered already"),
    ],
    ids=["missing", "no-flows", "same-handler-twice"],
)
def test_a_bad_flow_module_is_a_definition_error_naming_it(modules, problem):
    with pytest.raises(FlowModuleError) as caught:
        load_flows(modules)

    assert isinstance(caught.value, FlowDefinitionError)
    assert problem in str(caught.value)
    assert str(caught.value).startswith(f"flow module '{modules[-1]}'")


async def _ready() -> None:
    return None


async def _not_ready() -> str:
    return "MongoDB does not answer"


@pytest.mark.parametrize(
    ("method", "path", "probe", "status"),
    [
        ("GET", "/healthz", _not_ready, 200),
        ("GET", "/readyz", _ready, 200),
        ("GET", "/readyz?verbose", _not_ready, 503),
        ("GET", "/metrics", _ready, 200),
        ("GET", "/other", _ready, 404),
        ("POST", "/healthz", _ready, 405),
    ],
    ids=["alive", "ready", "not-ready", "metrics", "unknown", "post"],
)
async def test_the_health_port_answers(method, path, probe, status):
    answer = await health.answer(method, path, probe)

    assert answer.status == status


async def test_metrics_are_in_the_prometheus_text_format():
    answer = await health.answer("GET", "/metrics", _ready)

    assert answer.content_type.startswith("text/plain; version=")
    assert b"# TYPE flow_messages_consumed_total counter" in answer.body
