"""`contracts.parse` keeps integers of any size exactly, and still refuses what orjson
refuses: orjson reads integers past 64 bits as floats, so such bodies are read again
by the standard library."""

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import ContractError, parse
from contracts.messages import TriggerMessage

BIG = 123456789012345678901234567890


def trigger_body(text: bytes) -> object:
    message = parse("trigger", b'{"flow": "hello", "body": ' + text + b"}")
    assert isinstance(message, TriggerMessage)
    return message.body


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"123456789012345678901234567890", BIG),
        (b"-123456789012345678901234567890", -BIG),
        (b"18446744073709551616", 2**64),
        (b"-9223372036854775809", -(2**63) - 1),
        (b'{"a": [1, {"b": 99999999999999999999999}]}', {"a": [1, {"b": 10**23 - 1}]}),
        (b'[123456789012345678901234567890, 0.1, "x"]', [BIG, 0.1, "x"]),
    ],
    ids=["big", "negative", "past-uint64", "past-int64", "nested", "beside-a-float"],
)
def test_big_integers_are_kept_exactly(text: bytes, expected: object):
    body = trigger_body(text)

    assert body == expected
    assert json.dumps(body) == json.dumps(expected)  # ints stay ints


@pytest.mark.parametrize(
    "text",
    [
        b'"12345678901234567890123"',
        b"1.2345678901234567890123",
        b"18446744073709551615",
        b"-9223372036854775808",
        b'{"12345678901234567890123": 1e300}',
    ],
    ids=["in-a-string", "long-float", "max-uint64", "min-int64", "in-a-key"],
)
def test_what_orjson_reads_exactly_reads_the_same(text: bytes):
    assert trigger_body(text) == orjson.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        b"[12345678901234567890123, NaN]",
        b"[12345678901234567890123, Infinity]",
        b"[12345678901234567890123, 1e400]",
        b'[12345678901234567890123, "\\ud800"]',
        b"[12345678901234567890123,]",
        b'[12345678901234567890123, "\xff"]',
    ],
    ids=["nan", "infinity", "overflowing-float", "lone-surrogate", "comma", "latin1"],
)
def test_a_body_orjson_refuses_is_not_json_with_big_integers_too(text: bytes):
    with pytest.raises(ContractError) as caught:
        trigger_body(text)

    assert caught.value.reason == "not_json"


def test_a_deep_body_with_a_big_integer_is_schema_invalid():
    text = b"[" * 1000 + b"12345678901234567890123" + b"]" * 1000

    with pytest.raises(ContractError) as caught:
        trigger_body(text)

    assert caught.value.reason == "schema_invalid"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63).map(lambda n: n * 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=10,
)


@given(json_values)
def test_any_json_body_reads_back_as_written(value: object):
    text = json.dumps(value).encode()

    assert json.dumps(trigger_body(text)) == json.dumps(value)
