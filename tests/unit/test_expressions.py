"""Input resolution (SPEC §3.2-3.5, 3.7): the forms, paths, literals and references."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.engine.expressions import (
    Facts,
    StepFacts,
    is_expression,
    resolve,
    step_references,
    when_references,
)
from service.engine.model import Json
from service.errors import ExpressionError

BODY: Json = {
    "order": {
        "id": "o-1",
        "items": [{"sku": "A"}, {"sku": "B"}],
        "total": 12.5,
    },
    "flag": True,
    "note": "@steps('ghost').output",
}
FACTS = Facts(
    body=BODY,
    headers={"x-name": "alpha", "content-type": "application/json"},
    steps={
        "fetch": StepFacts(
            "Succeeded",
            output={"amount": 500, "rows": [{"id": 7}], "echo": "@triggerBody()"},
        ),
        "fail": StepFacts("Failed", error="boom"),
        "pending": StepFacts(None),
    },
    declared=frozenset({"fetch", "fail", "pending", "later"}),
)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("@triggerBody()", BODY),
        ("@triggerBody()?.order.id", "o-1"),
        ("@triggerBody().order.id", "o-1"),
        ("@TRIGGERBODY()?.flag", True),
        ("@triggerBody()?.order.items[1].sku", "B"),
        ("@triggerBody()?.order.items.1.sku", "B"),
        ("@triggerBody()?.order.items[ 0 ].sku", "A"),
        ("@triggerBody()?.order.total", 12.5),
        ("@triggerBody()?.order?.id", "o-1"),
        ("@triggerBody()?.order.items?[0].sku", "A"),
        ("  @triggerBody()?.order.id  ", "o-1"),
        ("@triggerBody()?.order.missing", None),
        ("@triggerBody()?.Order.id", None),
        ("@triggerBody()?.order.items[5]", None),
        ("@triggerBody()?.order.items[-1]", None),
        ("@triggerBody()?.order.items.first", None),
        ("@triggerBody()?.order.id.deeper", None),
        ("@triggerBody()?.", None),
        ("@triggerHeaders()", {"x-name": "alpha", "content-type": "application/json"}),
        ("@triggerHeaders()['X-Name']", "alpha"),
        ('@triggerHeaders()["x-NAME"]', "alpha"),
        ("@triggerheaders()['missing']", None),
        ("@steps('fetch').output", FACTS.steps["fetch"].output),
        ("@steps('fetch').output.amount", 500),
        ("@steps('fetch').output?.amount", 500),
        ("@steps('fetch').output.rows[0].id", 7),
        ("@steps('fetch').output.missing", None),
        ('@steps("fetch").Output.amount', 500),
        ("@STEPS('fetch').status", "Succeeded"),
        ("@steps('fetch').status.ignored.trail", "Succeeded"),
        ("@steps('fail').error", "boom"),
        ("@steps('fetch').error", None),
        ("@steps('pending').status", None),
        ("@steps('later').output", None),
        ("@steps('later').status", None),
    ],
    ids=[
        "whole-body",
        "body-path-null-safe",
        "body-path-dot",
        "prefix-case-insensitive",
        "bracket-index",
        "dotted-index",
        "segments-trimmed",
        "number-stays-typed",
        "null-safe-in-the-middle",
        "null-safe-before-bracket",
        "surrounding-space",
        "missing-property-is-null",
        "property-match-is-case-sensitive",
        "index-out-of-bounds-is-null",
        "negative-index-is-null",
        "non-integer-index-is-null",
        "path-through-a-string-is-null",
        "empty-path-is-null",
        "all-headers",
        "header-case-insensitive",
        "header-double-quotes",
        "missing-header-is-null",
        "whole-output",
        "output-path",
        "output-null-safe-path",
        "output-array-path",
        "output-missing-path-is-null",
        "property-name-case-insensitive",
        "steps-prefix-case-insensitive",
        "status-trail-ignored",
        "status",
        "error-of-a-step-without-error",
        "error",
        "step-without-status",
        "declared-step-without-row-has-no-output",
    ],
)
def test_an_expression_resolves_to_its_value(expression, expected):
    assert resolve(expression, FACTS) == expected


@pytest.mark.parametrize(
    "literal",
    [
        "plain",
        "",
        "Order @triggerBody()?.order.id",
        "@foo",
        "@",
        "@triggerBody()x",
        "@triggerBody()[0]",
        "@triggerHeaders()x",
        "@triggerHeaders()['x-name'] and more",
        "@steps('fetch')",
        "@steps('fetch').outputs",
        "@steps('fetch').statusx",
        "@steps(fetch).output",
        "@steps('').output",
        "@steps('fetch\").output",
        42,
        1.5,
        True,
        None,
    ],
    ids=[
        "plain-string",
        "empty-string",
        "no-interpolation",
        "unknown-form",
        "bare-at",
        "body-then-junk",
        "body-then-bracket",
        "headers-then-junk",
        "header-then-junk",
        "step-without-property",
        "unknown-step-property",
        "property-then-junk",
        "unquoted-key",
        "empty-key",
        "mismatched-quotes",
        "int",
        "float",
        "bool",
        "null",
    ],
)
def test_a_value_of_no_known_form_passes_through(literal):
    assert resolve(literal, FACTS) == literal


def test_inputs_resolve_at_any_depth():
    inputs: Json = {
        "id": "@triggerBody()?.order.id",
        "rows": [
            "@steps('fetch').output.amount",
            3,
            {"to": "@triggerHeaders()['X-Name']"},
        ],
        "literal": "x",
        "nothing": None,
    }

    resolved = resolve(inputs, FACTS)

    assert resolved == {
        "id": "o-1",
        "rows": [500, 3, {"to": "alpha"}],
        "literal": "x",
        "nothing": None,
    }


def test_a_value_from_the_trigger_is_never_rescanned():
    assert resolve("@triggerBody()?.note", FACTS) == "@steps('ghost').output"
    assert resolve(["@triggerBody()"], FACTS) == [BODY]


def test_a_value_from_a_step_output_is_never_rescanned():
    assert resolve("@steps('fetch').output.echo", FACTS) == "@triggerBody()"


@pytest.mark.parametrize(
    "value",
    [
        "@steps('ghost').output",
        "@steps('ghost').status",
        {"deep": ["@steps('ghost').error"]},
    ],
    ids=["output", "status", "nested"],
)
def test_an_undeclared_step_is_an_expression_error(value):
    with pytest.raises(ExpressionError):
        resolve(value, FACTS)


def test_headers_stored_with_their_case_are_still_found():
    facts = Facts(body=None, headers={"X-Name": "beta"}, steps={}, declared=frozenset())

    assert resolve("@triggerHeaders()['x-name']", facts) == "beta"


@pytest.mark.parametrize(
    ("expression", "body"),
    [("@triggerBody()", None), ("@triggerBody()?.a", None), ("@triggerHeaders()", {})],
    ids=["no-body", "path-into-no-body", "no-headers"],
)
def test_an_absent_body_or_headers_resolve_to_null(expression, body):
    facts = Facts(body=body, headers={}, steps={}, declared=frozenset())

    assert resolve(expression, facts) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("@x", True),
        ("  @x", True),
        ("x@", False),
        ("", False),
        (["@x"], False),
        (None, False),
    ],
    ids=["at", "space-then-at", "at-later", "empty", "list", "null"],
)
def test_an_expression_is_a_string_starting_with_at(value, expected):
    assert is_expression(value) is expected


@pytest.mark.parametrize(
    ("value", "keys"),
    [
        ("@steps('a').output.x", {"a"}),
        ('@steps("a").status', {"a"}),
        ({"x": ["@steps('a').output", {"y": "@steps('b').error"}]}, {"a", "b"}),
        ("@triggerBody()?.a", set()),
        ("see @steps('a').output", set()),
        ("@steps('a')", set()),
        (42, set()),
    ],
    ids=["output", "status", "nested", "trigger", "not-leading", "no-form", "number"],
)
def test_step_references_name_every_step_an_input_reads(value, keys):
    assert step_references(value) == keys


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("@steps('a').output.x > 1 || @steps(\"b\").status == null", {"a", "b"}),
        ("(@steps('a').status == 'Failed') && @triggerBody()?.ok", {"a"}),
        ("true", set()),
        ("@steps('a').output ==", set()),
    ],
    ids=["two-steps", "nested-and-trigger", "none", "does-not-parse"],
)
def test_when_references_name_every_step_a_clause_reads(text, keys):
    assert when_references(text) == keys


_TEXT = st.text(st.characters(exclude_characters="@"))
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(_JSON)
def test_a_value_without_expressions_resolves_to_itself(value):
    assert resolve(value, FACTS) == value
