"""Start-time checks of timeouts, concurrency keys, outputs and child flows."""

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from service.engine.model import (
    Concurrency,
    Flow,
    FlowId,
    Step,
    child_flow,
    for_each,
    wait_for_signal,
)
from service.engine.validation import problems, validate_all
from service.errors import FlowDefinitionError

HANDLERS = frozenset({"Pack"})
ID = FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0001")
OTHER = FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0002")


def a_flow(steps: dict[str, Step] | None = None, **fields: Any) -> Flow:
    flow = Flow(ID, "orders", steps if steps is not None else {"pack": Step("Pack")})
    return replace(flow, **fields)


def said(flow: Flow) -> list[str]:
    return [str(p) for p in problems(flow, HANDLERS)]


def test_every_control_in_good_order_passes():
    billing = Flow(OTHER, "billing", {"pack": Step("Pack")})
    flow = a_flow(
        {
            "pack": Step("Pack", timeout=timedelta(seconds=5)),
            "bill": child_flow("Billing", {"n": "@steps('pack').output.n"}),
            "again": child_flow(str(OTHER).upper()),  # ids match in any case
        },
        step_timeout=timedelta(minutes=1),
        concurrency=Concurrency("@triggerHeaders()['x-tenant']", 3),
        outputs={"n": "@steps('pack').output.n", "fixed": 1},
    )

    validate_all([flow, billing], HANDLERS)


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        (Step("Pack", timeout=timedelta(0)), "timeout must be positive"),
        (
            replace(wait_for_signal("go"), timeout=timedelta(seconds=1)),
            "a WaitForSignal step runs no handler: a timeout has nothing to stop",
        ),
        (
            replace(
                for_each("@triggerBody()", {"x": Step("Pack")}),
                timeout=timedelta(seconds=1),
            ),
            "runs no handler",
        ),
        (Step("ChildFlow", inputs={"flow": " "}), "a non-blank 'flow' input"),
        (
            Step("ChildFlow", inputs={"flow": "@triggerBody().flow"}),
            "must name the flow, not be an expression",
        ),
        (
            Step("ChildFlow", inputs={"flow": "x", "inputs": [1]}),
            "'inputs' must be an object",
        ),
    ],
    ids=["zero", "signal", "loop", "blank-flow", "expression", "not-an-object"],
)
def test_a_step_control_that_cannot_work_is_refused(step: Step, problem: str):
    found = said(a_flow({"s": step}))

    assert any(problem in p for p in found), found


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"step_timeout": timedelta(seconds=-1)}, "step timeout must be positive"),
        (
            {"concurrency": Concurrency("customer")},
            "is not an expression over the trigger",
        ),
        (
            {"concurrency": Concurrency("@steps('pack').output.c")},
            "is not an expression over the trigger",
        ),
        ({"concurrency": Concurrency("@triggerBody().c", 0)}, "must be 1 to 1000"),
        ({"concurrency": Concurrency("@triggerBody().c", 1001)}, "must be 1 to 1000"),
        ({"outputs": {"n": "@steps('nope').output"}}, "reads unknown step 'nope'"),
        ({"outputs": {"n": float("nan")}}, "is not a JSON value"),
    ],
    ids=[
        "negative-step-timeout",
        "literal-key",
        "step-key",
        "limit-0",
        "limit-1001",
        "unknown-step",
        "nan",
    ],
)
def test_a_flow_control_that_cannot_work_is_refused(
    fields: dict[str, Any], problem: str
):
    found = said(a_flow(**fields))

    assert any(problem in p for p in found), found


def test_a_child_flow_must_name_a_flow_the_worker_has():
    flow = a_flow({"bill": child_flow("billing")})

    with pytest.raises(FlowDefinitionError, match="ChildFlow names unknown flow"):
        validate_all([flow], HANDLERS)
