"""When clauses (SPEC §3.6): grammar, semantics, errors, the trace and the limits."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.engine.expressions import Facts, StepFacts, evaluate_when, parse_when
from service.engine.model import Json
from service.engine.when import And, Comparison, Constant, Not, Or
from service.errors import ExpressionError


def _deep(levels: int) -> Json:
    value: Json = []
    for _ in range(levels):
        value = [value]
    return value


FACTS = Facts(
    body={"flag": True, "tags": ["x"], "order": {"id": "o-1", "total": 12.5}},
    headers={"x-name": "alpha", "x name": "spaced", "a)b": "odd"},
    steps={
        "fetch": StepFacts("Succeeded", output={"amount": 500, "nested": {"k": "v"}}),
        "fail": StepFacts("Failed", error="boom"),
        "deep": StepFacts("Succeeded", output=_deep(100_000)),
    },
    declared=frozenset({"fetch", "fail", "later", "deep"}),
)


def _when(text: str) -> bool:
    outcome = evaluate_when(text, FACTS)
    assert outcome.trace["result"] is outcome.result
    assert outcome.trace["expression"] == text
    return outcome.result


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true || false && false", True),
        ("(true || false) && false", False),
        ("!false && false", False),
        ("!1 == 2", True),
        ("!!true", True),
        ("false || !false", True),
        ("1 == 1.0", True),
        ("0.1 == 0.10", True),
        ("2 > 10", False),
        ("-1 < 0", True),
        ("10 >= 10", True),
        ("3 <= 2", False),
        ("1 != 2", True),
        ("'a' == 'a'", True),
        ("'a' == 'A'", False),
        ("'b' > 'a'", True),
        ("'B' < 'a'", True),
        ("\"dq\" == 'dq'", True),
        ("'it\\'s' == \"it's\"", True),
        ("true == true", True),
        ("true != false", True),
        ("TRUE == True", True),
        ("null == null", True),
        ("null != null", False),
        ("null == 1", False),
        ("1 != null", True),
        ("NULL != 'x'", True),
        ("@steps('fetch').output.amount > 100", True),
        ("@steps('fetch').output.amount == 500.00", True),
        ("@triggerBody()?.order.total == 12.50", True),
        ("@triggerBody()?.flag", True),
        ("!@triggerBody()?.flag", False),
        ("@triggerBody()?.missing == null", True),
        ("@steps('fetch').output.nested == '{\"k\":\"v\"}'", True),
        ("@triggerBody()?.tags == '[\"x\"]'", True),
        ("@triggerHeaders()['X-NAME'] == 'alpha'", True),
        ("@steps('fail').status == 'Failed' && @steps('fail').error == 'boom'", True),
        ("@steps('later').status == null", True),
        ("(@steps('fetch').output.amount>5)", True),
        ("@triggerHeaders()['x name']=='spaced'", True),
        ("@triggerHeaders()['a)b'] == 'odd'", True),
    ],
    ids=[
        "and-binds-tighter-than-or",
        "parentheses-group",
        "not-binds-tighter-than-and",
        "comparison-binds-tighter-than-not",
        "double-not",
        "or-of-not",
        "decimal-equality",
        "decimal-trailing-zero",
        "numbers-order-numerically",
        "negative-number",
        "greater-or-equal",
        "less-or-equal",
        "not-equal",
        "string-equality",
        "strings-are-case-sensitive",
        "string-ordering",
        "ordinal-ordering",
        "double-quotes",
        "backslash-escapes",
        "bool-equality",
        "bool-inequality",
        "keywords-case-insensitive",
        "null-equals-null",
        "null-not-unequal-to-null",
        "null-never-equals-a-value",
        "value-unequal-to-null",
        "null-keyword-case-insensitive",
        "step-output",
        "int-output-equals-decimal-literal",
        "float-output-as-decimal",
        "bare-bool-lhs",
        "not-of-lhs",
        "missing-path-is-null",
        "object-as-compact-json",
        "array-as-compact-json",
        "headers-case-insensitive",
        "status-and-error",
        "declared-step-without-row",
        "lhs-inside-parentheses",
        "space-inside-brackets-belongs-to-lhs",
        "quoted-closer-inside-brackets",
    ],
)
def test_a_when_clause_evaluates_to_its_result(text, expected):
    assert _when(text) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("@steps('fetch').output.missing > 1", "null operand"),
        ("'5' == 5", "Cannot compare"),
        ("true == 'true'", "Cannot compare"),
        ("true > false", "not defined for booleans"),
        ("1 && true", "requires boolean operands"),
        ("false || 'x'", "requires boolean operands"),
        ("!'x'", "requires boolean operands"),
        ("@triggerBody()?.order.id", "must evaluate to a boolean"),
        ("1", "must evaluate to a boolean"),
        ("@steps('ghost').output == 1", "not defined in the flow manifest"),
        ("true && @steps('ghost').status == null", "not defined in the flow manifest"),
        ("@steps('deep').output == null", "cannot be compared"),
        ("1 == 1 == 1", "Unexpected token"),
    ],
    ids=[
        "ordering-with-null",
        "string-and-number",
        "bool-and-string",
        "ordering-booleans",
        "and-of-a-number",
        "or-of-a-string",
        "not-of-a-string",
        "result-is-a-string",
        "result-is-a-number",
        "undeclared-step",
        "undeclared-step-on-an-evaluated-right-side",
        "value-too-deep-to-normalise",
        "parse-error",
    ],
)
def test_an_error_makes_the_clause_false_with_the_error_in_the_trace(text, message):
    outcome = evaluate_when(text, FACTS)

    assert outcome.result is False
    assert outcome.trace["result"] is False
    assert message in str(outcome.trace["resolved"])


@pytest.mark.parametrize(
    ("text", "expected", "resolved"),
    [
        (
            "false && @steps('ghost').output == 1",
            False,
            "false && @steps('ghost').output == 1",
        ),
        (
            "true || @steps('ghost').output == 1",
            True,
            "true || @steps('ghost').output == 1",
        ),
        (
            "@steps('fetch').status == 'Failed' && @steps('ghost').output == 1",
            False,
            "'Succeeded' == 'Failed' && @steps('ghost').output == 1",
        ),
    ],
    ids=["and-stops-at-false", "or-stops-at-true", "right-side-left-unresolved"],
)
def test_the_right_side_of_a_decided_operator_is_never_resolved(
    text, expected, resolved
):
    outcome = evaluate_when(text, FACTS)

    assert outcome.result is expected
    assert outcome.trace["resolved"] == resolved


@pytest.mark.parametrize(
    ("text", "resolved"),
    [
        ("@steps('fetch').output.amount > 1000", "500 > 1000"),
        ("@steps('fetch').status == 'Succeeded'", "'Succeeded' == 'Succeeded'"),
        ("@triggerBody()?.flag == true", "true == true"),
        ("@steps('later').output == null", "null == null"),
        ("@triggerBody()?.order.total > 12", "12.5 > 12"),
        ("@steps('fetch').output.nested != null", '\'{"k":"v"}\' != null'),
        ("@triggerBody()?.tags != null", "'[\"x\"]' != null"),
        (
            "@steps('fetch').output.amount > 1 && @steps('fetch').output.amount < 999",
            "500 > 1 && @steps('fetch').output.amount < 999",
        ),
        (
            "(@triggerHeaders()['x-name'] == 'alpha')  ||  false",
            "('alpha' == 'alpha')  ||  false",
        ),
    ],
    ids=[
        "number",
        "string-in-single-quotes",
        "bool",
        "null",
        "decimal",
        "object-as-quoted-json",
        "array-as-quoted-json",
        "repeated-lhs-replaced-at-first-occurrence",
        "layout-kept",
    ],
)
def test_the_trace_shows_each_lhs_replaced_by_its_value(text, resolved):
    assert evaluate_when(text, FACTS).trace["resolved"] == resolved


def test_the_trace_holds_the_expression_the_rewrite_and_the_result():
    text = "@steps('fetch').output.amount > 1000"

    outcome = evaluate_when(text, FACTS)

    assert outcome.result is False
    assert outcome.trace == {
        "expression": text,
        "resolved": "500 > 1000",
        "result": False,
    }


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "1 == 1 == 1",
        "1.2.3 == 1",
        "1..2 == 1",
        "amount == 1",
        "1 = 1",
        "true & false",
        "true | false",
        "'open",
        "'escaped end\\'",
        "(true",
        "true)",
        "1 ==",
        "== 1",
        "-x == 1",
        "true # comment",
        "@foo == 1",
        "@triggerBody()x == 1",
        "@steps(fetch).output == 1",
        "@steps('fetch').outputs == 1",
        "() == 1",
    ],
    ids=[
        "empty",
        "blank",
        "comparison-is-non-associative",
        "malformed-number",
        "double-dot-number",
        "bare-identifier",
        "single-equals",
        "single-ampersand",
        "single-pipe",
        "unterminated-string",
        "escaped-closing-quote",
        "unclosed-parenthesis",
        "unopened-parenthesis",
        "missing-right-operand",
        "missing-left-operand",
        "minus-without-digit",
        "unknown-character",
        "unknown-lhs-form",
        "trigger-body-then-junk",
        "invalid-step-form",
        "unknown-step-property",
        "empty-parentheses",
    ],
)
def test_a_clause_that_does_not_parse_is_an_expression_error(text):
    with pytest.raises(ExpressionError):
        parse_when(text)

    assert evaluate_when(text, FACTS).result is False


def test_precedence_builds_the_tree_of_the_grammar():
    node = parse_when("true || false && !null == null")

    assert node == Or(
        (
            Constant(True),
            And(
                (Constant(False), Not(Comparison("==", Constant(None), Constant(None))))
            ),
        )
    )


def test_parses_are_cached():
    assert parse_when("1 < 2 && true") is parse_when("1 < 2 && true")


@pytest.mark.parametrize(
    ("text", "parses"),
    [
        ("true" + " " * 4092, True),
        ("true" + " " * 4093, False),
        ("(" * 64 + "true" + ")" * 64, True),
        ("(" * 65 + "true" + ")" * 65, False),
        ("!" * 64 + "true", True),
        ("!" * 65 + "true", False),
        ("!(" * 32 + "true" + ")" * 32, True),
        ("!(" * 33 + "true" + ")" * 33, False),
        ("(" * 4000, False),
    ],
    ids=[
        "4096-characters",
        "4097-characters",
        "64-parentheses",
        "65-parentheses",
        "64-nots",
        "65-nots",
        "64-mixed-levels",
        "66-mixed-levels",
        "hostile-parentheses",
    ],
)
def test_length_and_nesting_are_bounded(text, parses):
    if parses:
        parse_when(text)
    else:
        with pytest.raises(ExpressionError):
            parse_when(text)


def test_a_long_chain_evaluates_without_deep_recursion():
    text = "true" + " && true" * 500

    assert _when(text) is True


@given(st.text(alphabet="()![]&|=<> @'\"\\truefalsn0.-steps", max_size=300))
def test_evaluating_any_text_never_raises(text):
    outcome = evaluate_when(text, FACTS)

    assert outcome.trace["result"] is outcome.result
