from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from service.engine.model import (
    Flow,
    FlowId,
    RetryPolicy,
    RunAfter,
    Step,
    Trigger,
    TriggerType,
    after,
    cron,
    for_each,
    manual,
    wait_for_signal,
)
from service.engine.validation import problems, validate, validate_all
from service.errors import FlowDefinitionError

HANDLERS = frozenset({"Pack", "Ship", "Notify"})
ID = FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0001")


def a_flow(steps: dict[str, Step] | None = None, **fields: Any) -> Flow:
    flow = Flow(ID, "orders", steps if steps is not None else {"pack": Step("Pack")})
    return replace(flow, **fields)


def test_a_valid_flow_with_every_feature_passes():
    flow = Flow(
        ID,
        "orders",
        triggers={
            "manual": manual(),
            "nightly": cron("0 2 * * *"),
            "fast": cron("*/5 * * * * *"),
        },
        run_timeout=timedelta(hours=1),
        steps={
            "pack": Step(
                "pack",  # handler types match case-insensitively
                inputs={"order": "@triggerBody().id"},
                run_after={"": after(when="@triggerBody().amount > 0")},
                retry=RetryPolicy(max_attempts=3, backoff=timedelta(seconds=1)),
            ),
            "items": for_each(
                "@triggerBody().items",
                {
                    "check": Step("Pack"),
                    "ship": Step("Ship", run_after={"check": ["Succeeded"]}),
                },
                concurrency=4,
                run_after={"pack": ["Succeeded"]},
            ),
            "approval": wait_for_signal(
                "approve", timeout=timedelta(hours=1), run_after={"items": []}
            ),
            "notify": Step(
                "Notify",
                run_after={
                    "approval": after(
                        "Succeeded", when="@steps('approval').output.ok == true"
                    ),
                    "pack": after("Succeeded", "Skipped"),
                },
            ),
            "cleanup": Step("foreach_less", run_after={"notify": []}),
        },
    )
    handlers = HANDLERS | {"Foreach_Less"}

    validate(flow, handlers)
    validate_all([flow], handlers)

    assert problems(flow, handlers) == []


CASES: list[tuple[str, Flow, str | None, str]] = [
    # id, flow, step named, problem contains
    ("id-not-uuid", a_flow(id=FlowId("orders")), None, "id 'orders' is not a UUID"),
    ("id-not-canonical", a_flow(id=FlowId(ID.replace("-", ""))), None, "not a UUID"),
    ("name-blank", a_flow(name=" "), None, "name is blank"),
    ("run-timeout-zero", a_flow(run_timeout=timedelta(0)), None, "run timeout"),
    ("no-steps", a_flow({}), None, "has no steps"),
    (
        "no-entry-step",
        a_flow(
            {
                "a": Step("Pack", run_after={"b": []}),
                "b": Step("Ship", run_after={"a": []}),
            }
        ),
        None,
        "has no entry step",
    ),
    (
        "no-entry-step-in-loop-body",
        a_flow({"loop": for_each([1], {"a": Step("Pack", run_after={"a": []})})}),
        "loop",
        "ForEach body has no entry step",
    ),
    ("blank-type", a_flow({"pack": Step("  ")}), "pack", "type is blank"),
    ("unknown-type", a_flow({"pack": Step("Packer")}), "pack", "type 'Packer'"),
    (
        "unknown-type-in-loop-body",
        a_flow({"loop": for_each([1], {"go": Step("Go")})}),
        "loop.go",
        "no handler is registered for type 'Go'",
    ),
    (
        "unknown-run-after",
        a_flow({"pack": Step("Pack"), "ship": Step("Ship", run_after={"pak": []})}),
        "ship",
        "runAfter names unknown step 'pak'",
    ),
    (
        "run-after-outside-scope",
        a_flow(
            {
                "pack": Step("Pack"),
                "loop": for_each(
                    [1],
                    {"first": Step("Pack"), "go": Step("Ship", run_after={"pack": []})},
                ),
            }
        ),
        "loop.go",
        "unknown step 'pack'",
    ),
    (
        "run-after-dotted",
        a_flow(
            {
                "loop": for_each([1], {"go": Step("Ship")}),
                "ship": Step("Ship", run_after={"loop.go": []}),
            }
        ),
        "ship",
        "runAfter key 'loop.go' contains '.'",
    ),
    (
        "self-loop",
        a_flow({"pack": Step("Pack"), "ship": Step("Ship", run_after={"ship": []})}),
        "ship",
        "dependency cycle: ship -> ship",
    ),
    (
        "cycle",
        a_flow(
            {
                "pack": Step("Pack"),
                "a": Step("Ship", run_after={"pack": [], "c": []}),
                "b": Step("Ship", run_after={"a": []}),
                "c": Step("Ship", run_after={"b": []}),
            }
        ),
        "a",
        "dependency cycle: a -> c -> b -> a",
    ),
    (
        "cycle-in-loop-body",
        a_flow(
            {
                "loop": for_each(
                    [1],
                    {
                        "x": Step("Pack"),
                        "y": Step("Pack", run_after={"z": []}),
                        "z": Step("Pack", run_after={"y": []}),
                    },
                )
            }
        ),
        "loop.y",
        "dependency cycle: y -> z -> y",
    ),
    ("key-empty", a_flow({"": Step("Pack")}), "", "step key is empty"),
    ("key-dotted", a_flow({"a.b": Step("Pack")}), "a.b", "contains '.'"),
    ("key-numeric", a_flow({"42": Step("Pack")}), "42", "purely numeric"),
    ("key-reserved", a_flow({"__x": Step("Pack")}), "__x", "starts with '__'"),
    (
        "key-dotted-in-loop-body",
        a_flow({"loop": for_each([1], {"a.b": Step("Pack")})}),
        "loop.a.b",
        "contains '.'",
    ),
    (
        "input-reserved",
        a_flow({"pack": Step("Pack", inputs={"__loopItem": 1})}),
        "pack",
        "input '__loopItem' starts with '__'",
    ),
    (
        "input-not-json",
        a_flow({"pack": Step("Pack", inputs={"at": {1, 2}})}),  # type: ignore[dict-item]
        "pack",
        "input 'at' is not a JSON value",
    ),
    ("loop-without-body", a_flow({"loop": for_each([1], {})}), "loop", "no body steps"),
    (
        "loop-concurrency-zero",
        a_flow({"loop": for_each([1], {"a": Step("Pack")}, concurrency=0)}),
        "loop",
        "concurrency must be at least 1, got 0",
    ),
    (
        "body-on-a-plain-step",
        a_flow({"pack": Step("Pack", steps={"a": Step("Pack")})}),
        "pack",
        "has body steps but its type is 'Pack'",
    ),
    (
        "retry-zero-attempts",
        a_flow({"pack": Step("Pack", retry=RetryPolicy(max_attempts=0))}),
        "pack",
        "max attempts must be at least 1",
    ),
    (
        "retry-negative-backoff",
        a_flow(
            {"pack": Step("Pack", retry=RetryPolicy(backoff=timedelta(seconds=-1)))}
        ),
        "pack",
        "backoff must not be negative",
    ),
    (
        "retry-negative-cap",
        a_flow({"pack": Step("Pack", retry=RetryPolicy(cap=timedelta(seconds=-1)))}),
        "pack",
        "cap must not be negative",
    ),
    (
        "retry-negative-factor",
        a_flow({"pack": Step("Pack", retry=RetryPolicy(factor=-2))}),
        "pack",
        "factor must not be negative",
    ),
    (
        "cron-invalid",
        a_flow(triggers={"nightly": cron("0 25 * * *")}),
        None,
        "trigger 'nightly': invalid cron expression '0 25 * * *'",
    ),
    (
        "cron-seven-fields",
        a_flow(triggers={"nightly": cron("0 0 2 * * * 2030")}),
        None,
        "expected 5 fields, or 6 with seconds first, got 7",
    ),
    (
        "cron-without-expression",
        a_flow(triggers={"nightly": Trigger(TriggerType.CRON)}),
        None,
        "trigger 'nightly': a Cron trigger needs a cron expression",
    ),
    (
        "manual-with-cron-expression",
        a_flow(triggers={"nightly": Trigger(cron="0 2 * * *")}),
        None,
        "a Manual trigger has a cron expression",
    ),
    (
        "when-does-not-parse",
        a_flow(
            {
                "pack": Step("Pack"),
                "ship": Step(
                    "Ship", run_after={"pack": after(when="@steps('pack' ==")}
                ),
            }
        ),
        "ship",
        "When on runAfter 'pack' does not parse",
    ),
    (
        "when-on-entry-marker-does-not-parse",
        a_flow({"pack": Step("Pack", run_after={"": RunAfter(when="amount > 3")})}),
        "pack",
        "When on runAfter the entry marker '' does not parse",
    ),
    (
        "signal-name-blank",
        a_flow({"wait": wait_for_signal("  ")}),
        "wait",
        "non-blank 'signalName'",
    ),
    (
        "signal-name-null-any-case",
        a_flow({"wait": Step("waitforsignal", inputs={"SignalName": None})}),
        "wait",
        "non-blank 'signalName'",
    ),
]


@pytest.mark.parametrize(
    ("flow", "step", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_validate_refuses_an_invalid_flow_naming_flow_step_and_problem(
    flow, step, problem
):
    with pytest.raises(FlowDefinitionError) as info:
        validate(flow, HANDLERS)

    error = info.value
    assert (error.flow, error.step) == (flow.name.strip() or flow.id, step)
    assert problem in error.problem
    assert str(error).startswith(f"flow '{error.flow}'")


@pytest.mark.parametrize(
    ("flow", "step", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_problems_lists_the_problem_validate_raises(flow, step, problem):
    with pytest.raises(FlowDefinitionError) as info:
        validate(flow, HANDLERS)

    found = problems(flow, HANDLERS)

    assert found
    assert str(found[0]) == str(info.value)


def test_the_message_names_flow_step_and_problem():
    flow = a_flow({"ship": Step("Ship", run_after={"pack": []})})

    found = [str(p) for p in problems(flow, HANDLERS)]

    assert "flow 'orders', step 'ship': runAfter names unknown step 'pack'" in found


def test_problems_lists_every_problem_in_order():
    flow = a_flow(
        {
            "pack": Step("Packer", inputs={"__x": 1}),
            "ship": Step("", run_after={"gone": []}),
        },
        id=FlowId("nope"),
    )

    found = [(p.step, p.problem.split(" ")[0]) for p in problems(flow, HANDLERS)]

    assert found == [
        (None, "id"),
        ("pack", "no"),
        ("pack", "input"),
        ("ship", "type"),
        ("ship", "runAfter"),
    ]


def test_an_expression_as_signal_name_is_left_for_run_time():
    flow = a_flow(
        {"wait": Step("WaitForSignal", inputs={"signalName": "@triggerBody().s"})}
    )

    validate(flow, HANDLERS)


def test_a_step_may_list_the_entry_marker_beside_real_dependencies():
    flow = a_flow(
        {"pack": Step("Pack"), "ship": Step("Ship", run_after={"": [], "pack": []})}
    )

    validate(flow, HANDLERS)


def test_validate_all_refuses_a_duplicate_id():
    first = a_flow()
    second = a_flow(id=FlowId(ID.upper()), name="refunds")

    with pytest.raises(
        FlowDefinitionError, match="is already the id of 'orders'"
    ) as info:
        validate_all([first, second], HANDLERS)

    assert info.value.flow == "refunds"


def test_validate_all_refuses_a_duplicate_name_case_insensitively():
    first = a_flow()
    second = a_flow(id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0002"), name="Orders")

    with pytest.raises(
        FlowDefinitionError, match=f"already used by the flow with id '{ID}'"
    ):
        validate_all([first, second], HANDLERS)


def test_validate_all_validates_each_flow():
    good = a_flow()
    bad = a_flow({}, id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0002"), name="refunds")

    with pytest.raises(FlowDefinitionError, match="flow 'refunds': has no steps"):
        validate_all([good, bad], HANDLERS)


def test_validate_all_accepts_distinct_flows():
    second = a_flow(id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0002"), name="refunds")

    validate_all([a_flow(), second], HANDLERS)


def test_validate_all_refuses_the_same_flow_listed_twice():
    flow = a_flow()

    with pytest.raises(FlowDefinitionError, match="is already the id of 'orders'"):
        validate_all([flow, flow], HANDLERS)
