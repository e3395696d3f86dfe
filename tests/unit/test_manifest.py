import contextlib
import copy
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.engine.manifest import from_manifest, to_manifest
from service.engine.model import (
    Flow,
    FlowId,
    Json,
    RetryPolicy,
    RunAfter,
    Step,
    StepStatus,
    Trigger,
    TriggerType,
    after,
    cron,
    for_each,
    manual,
    wait_for_signal,
)
from service.engine.validation import validate
from tests.strategies import HANDLER_TYPES, flows

ID = "1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0001"

ORDERS = Flow(
    FlowId(ID),
    "orders",
    triggers={"nightly": cron("0 2 * * *"), "manual": manual()},
    version="3",
    run_timeout=timedelta(minutes=10),
    steps={
        "pack": Step(
            "Pack",
            inputs={"order": "@triggerBody().id", "tags": ["a", {"b": 1.5}]},
            run_after={"": after(when="@triggerBody().amount > 0")},
            retry=RetryPolicy(
                max_attempts=4,
                backoff=timedelta(seconds=1.5),
                factor=2,
                cap=timedelta(0),
            ),
        ),
        "items": for_each(
            "@triggerBody().items",
            {"ship": Step("Ship")},
            concurrency=3,
            run_after={"pack": ["Skipped", "Succeeded"]},
        ),
        "wait": wait_for_signal("go", run_after={"items": []}),
    },
)

ORDERS_MANIFEST: dict[str, Json] = {
    "id": ID,
    "name": "orders",
    "version": "3",
    "runTimeoutSeconds": 600,
    "triggers": {
        "nightly": {"type": "Cron", "cronExpression": "0 2 * * *"},
        "manual": {"type": "Manual"},
    },
    "steps": {
        "pack": {
            "type": "Pack",
            "inputs": {"order": "@triggerBody().id", "tags": ["a", {"b": 1.5}]},
            "runAfter": {"": {"when": "@triggerBody().amount > 0"}},
            "retry": {
                "maxAttempts": 4,
                "backoffSeconds": 1.5,
                "factor": 2.0,
                "capSeconds": 0,
            },
        },
        "items": {
            "type": "ForEach",
            "inputs": {},
            "runAfter": {"pack": {"statuses": ["Succeeded", "Skipped"]}},
            "forEach": "@triggerBody().items",
            "concurrencyLimit": 3,
            "steps": {"ship": {"type": "Ship", "inputs": {}, "runAfter": {}}},
        },
        "wait": {
            "type": "WaitForSignal",
            "inputs": {"signalName": "go"},
            "runAfter": {"items": {}},
        },
    },
}


def test_to_manifest_writes_the_camel_case_shape():
    manifest = to_manifest(ORDERS)

    assert manifest == ORDERS_MANIFEST
    assert json.dumps(manifest) == json.dumps(ORDERS_MANIFEST)  # the order too


def test_from_manifest_reads_the_shape_back():
    assert from_manifest(ORDERS_MANIFEST) == ORDERS


@given(flows())
def test_any_flow_survives_a_round_trip_through_json(flow):
    manifest = to_manifest(flow)
    text = json.dumps(manifest, allow_nan=False)

    assert from_manifest(manifest) == flow
    assert from_manifest(json.loads(text)) == flow
    assert json.dumps(to_manifest(from_manifest(json.loads(text)))) == text


@given(flows())
def test_drawn_flows_are_valid(flow):
    validate(flow, HANDLER_TYPES)


@given(flows(max_steps=3, max_depth=1, whens=False))
def test_the_same_flow_gives_the_same_manifest(flow):
    twin = copy.deepcopy(flow)

    assert json.dumps(to_manifest(flow)) == json.dumps(to_manifest(twin))


def test_the_manifest_shares_no_mutable_value_with_the_flow():
    manifest: Any = to_manifest(ORDERS)

    manifest["steps"]["pack"]["inputs"]["tags"].append("c")

    assert ORDERS.steps["pack"].inputs["tags"] == ["a", {"b": 1.5}]


def test_unusual_but_legal_values_survive_a_round_trip():
    flow = Flow(
        FlowId(ID),
        "odd",
        triggers={"odd": Trigger(TriggerType.MANUAL, cron="0 * * * *")},
        steps={
            "a": Step(
                "Plain",
                run_after={"b": RunAfter(frozenset(StepStatus))},
                for_each=[1],
                concurrency=0,
                steps={"c": Step("C")},
                retry=RetryPolicy(backoff=timedelta(days=-1, microseconds=7)),
            ),
            "loop": Step("forEACH"),
        },
        run_timeout=timedelta(days=400, microseconds=1),
    )

    assert from_manifest(json.loads(json.dumps(to_manifest(flow)))) == flow


def step_manifest(**fields: Any) -> dict[str, Any]:
    return {"id": ID, "name": "f", "steps": {"s": {"type": "Pack", **fields}}}


def read_step(**fields: Any) -> Step:
    return from_manifest(step_manifest(**fields)).steps["s"]


def test_for_each_is_recognised_whatever_its_case():
    step = read_step(
        type="foreach", forEach=[1, 2], concurrencyLimit=2, steps={"c": {"type": "C"}}
    )

    assert step.is_loop
    assert (step.for_each, step.concurrency, list(step.steps)) == ([1, 2], 2, ["c"])
    assert to_manifest(Flow(FlowId(ID), "f", {"s": step}))["steps"] == {
        "s": {
            "type": "foreach",
            "inputs": {},
            "runAfter": {},
            "forEach": [1, 2],
            "concurrencyLimit": 2,
            "steps": {"c": {"type": "C", "inputs": {}, "runAfter": {}}},
        }
    }


RUN_AFTER = [
    ("legacy-array", ["Succeeded", "Skipped"], after("Succeeded", "Skipped")),
    ("legacy-empty-array", [], RunAfter()),
    ("names-ignore-case", ["succeeded", "FAILED"], after("Succeeded", "Failed")),
    (
        "numbers",
        [0, 1, 2, 3, 4],
        after("Pending", "Running", "Succeeded", "Failed", "Skipped"),
    ),
    (
        "object",
        {"statuses": ["Succeeded"], "when": "true"},
        after("Succeeded", when="true"),
    ),
    (
        "object-keys-ignore-case",
        {"Statuses": [3], "WHEN": "true"},
        after("Failed", when="true"),
    ),
    ("object-empty", {}, RunAfter()),
    ("object-nulls", {"statuses": None, "when": None}, RunAfter()),
    ("object-empty-when", {"when": ""}, RunAfter()),
    ("object-unknown-property", {"statuses": [2], "note": "x"}, after("Succeeded")),
]


@pytest.mark.parametrize(
    ("condition", "expected"), [c[1:] for c in RUN_AFTER], ids=[c[0] for c in RUN_AFTER]
)
def test_run_after_conditions_are_read_leniently(condition, expected):
    step = read_step(runAfter={"dep": condition})

    assert step.conditions == {"dep": expected}


def test_a_null_condition_is_dropped():
    step = read_step(runAfter={"dep": None, "other": []})

    assert list(step.conditions) == ["other"]


def test_a_condition_writes_statuses_and_when_only_when_set():
    step = Step(
        "Pack",
        run_after={
            "a": RunAfter(),
            "b": RunAfter(when=""),
            "c": after("Skipped", "Failed", "Succeeded"),
        },
    )

    manifest: Any = to_manifest(Flow(FlowId(ID), "f", {"s": step}))
    run_after = manifest["steps"]["s"]["runAfter"]

    assert run_after == {
        "a": {},
        "b": {},
        "c": {"statuses": ["Succeeded", "Failed", "Skipped"]},
    }


def test_missing_optional_fields_take_the_model_defaults():
    flow = from_manifest({"id": ID, "name": "f", "steps": {"s": {"type": "Pack"}}})

    assert flow == Flow(FlowId(ID), "f", {"s": Step("Pack")})


def test_a_retry_may_leave_fields_to_their_defaults():
    step = read_step(retry={"maxAttempts": 5})

    assert step.retry == RetryPolicy(max_attempts=5)


def test_fo_trigger_shape_with_the_expression_among_inputs_is_read():
    flow = from_manifest(
        {
            "id": ID,
            "name": "f",
            "steps": {"s": {"type": "Pack"}},
            "triggers": {
                "t": {"type": "cron", "inputs": {"cronExpression": "0 2 * * *"}}
            },
        }
    )

    assert flow.triggers == {"t": cron("0 2 * * *")}


INVALID: list[tuple[str, Any, str]] = [
    ("not-an-object", [], "$: expected an object, got an array"),
    ("id-missing", {"name": "f", "steps": {}}, "$.id: expected a string, got nothing"),
    (
        "name-number",
        {"id": ID, "name": 3, "steps": {}},
        "$.name: expected a string, got a number",
    ),
    (
        "steps-missing",
        {"id": ID, "name": "f"},
        "$.steps: expected an object of steps, got nothing",
    ),
    (
        "steps-array",
        {"id": ID, "name": "f", "steps": []},
        "$.steps: expected an object",
    ),
    (
        "step-not-object",
        {"id": ID, "name": "f", "steps": {"a.b": 1}},
        "$.steps['a.b']: expected an object",
    ),
    (
        "step-type-missing",
        step_manifest(type=None),
        "$.steps['s'].type: expected a string",
    ),
    (
        "inputs-array",
        step_manifest(inputs=[]),
        "$.steps['s'].inputs: expected an object",
    ),
    (
        "run-after-array",
        step_manifest(runAfter=[]),
        "$.steps['s'].runAfter: expected an object",
    ),
    (
        "condition-string",
        step_manifest(runAfter={"a": "Succeeded"}),
        "$.steps['s'].runAfter['a']: expected an array of statuses or an object",
    ),
    (
        "status-unknown",
        step_manifest(runAfter={"a": ["Succeeded", "Done"]}),
        "$.steps['s'].runAfter['a'][1]: "
        "expected a step status name or a number 0-4, got 'Done'",
    ),
    (
        "status-out-of-range",
        step_manifest(runAfter={"a": [5]}),
        "runAfter['a'][0]: expected a step status",
    ),
    ("status-boolean", step_manifest(runAfter={"a": [True]}), "got True"),
    ("status-null", step_manifest(runAfter={"a": [None]}), "got None"),
    (
        "statuses-string",
        step_manifest(runAfter={"a": {"statuses": "Succeeded"}}),
        "$.steps['s'].runAfter['a'].statuses: "
        "expected an array of statuses, got a string",
    ),
    (
        "when-number",
        step_manifest(runAfter={"a": {"when": 1}}),
        "runAfter['a'].when: expected a string",
    ),
    (
        "condition-twice",
        step_manifest(runAfter={"a": {"when": "true", "When": "true"}}),
        "given twice",
    ),
    ("retry-array", step_manifest(retry=[]), "$.steps['s'].retry: expected an object"),
    (
        "retry-attempts-float",
        step_manifest(retry={"maxAttempts": 1.5}),
        "retry.maxAttempts: expected an integer",
    ),
    (
        "retry-backoff-string",
        step_manifest(retry={"backoffSeconds": "5"}),
        "retry.backoffSeconds: expected a number of seconds",
    ),
    (
        "retry-backoff-huge",
        step_manifest(retry={"backoffSeconds": 1e300}),
        "retry.backoffSeconds: 1e+300 seconds is out of range",
    ),
    (
        "retry-factor-boolean",
        step_manifest(retry={"factor": True}),
        "retry.factor: expected a number, got a boolean",
    ),
    (
        "concurrency-boolean",
        step_manifest(concurrencyLimit=True),
        "concurrencyLimit: expected an integer",
    ),
    (
        "body-array",
        step_manifest(type="ForEach", steps=[]),
        "$.steps['s'].steps: expected an object",
    ),
    (
        "nested-step",
        step_manifest(
            type="ForEach", steps={"c": {"type": "C", "runAfter": {"x": [9]}}}
        ),
        "$.steps['s'].steps['c'].runAfter['x'][0]",
    ),
    (
        "timeout-string",
        {"id": ID, "name": "f", "steps": {}, "runTimeoutSeconds": "60"},
        "$.runTimeoutSeconds: expected a number of seconds",
    ),
    (
        "timeout-infinite",
        {"id": ID, "name": "f", "steps": {}, "runTimeoutSeconds": float("inf")},
        "$.runTimeoutSeconds: expected a number of seconds",
    ),
    (
        "triggers-array",
        {"id": ID, "name": "f", "steps": {}, "triggers": []},
        "$.triggers: expected an object",
    ),
    (
        "trigger-webhook",
        {"id": ID, "name": "f", "steps": {}, "triggers": {"t": {"type": "Webhook"}}},
        "$.triggers['t'].type: unknown trigger type 'Webhook'",
    ),
    (
        "trigger-cron-number",
        {
            "id": ID,
            "name": "f",
            "steps": {},
            "triggers": {"t": {"type": "Cron", "cronExpression": 5}},
        },
        "$.triggers['t'].cronExpression: expected a string, got a number",
    ),
]


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_an_invalid_shape_raises_value_error_with_its_path(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        from_manifest(data)


WORDS = (
    "s",
    "type",
    "inputs",
    "runAfter",
    "statuses",
    "when",
    "retry",
    "maxAttempts",
    "backoffSeconds",
    "forEach",
    "concurrencyLimit",
    "steps",
    "ForEach",
)
junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 6)
    | st.floats()
    | st.sampled_from(WORDS),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(WORDS), children, max_size=4)
    ),
    max_leaves=12,
)


@given(junk)
def test_junk_steps_raise_value_error_or_nothing(steps):
    with contextlib.suppress(ValueError):
        from_manifest({"id": ID, "name": "f", "steps": steps})
