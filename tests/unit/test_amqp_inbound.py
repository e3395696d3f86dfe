"""What a delivery carries, read without a broker: header values as text, the
idempotency key of any type, the kind from the routing key, and which kinds are
accepted without a message id.
"""

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from contracts import ContractError, Inbound, parse
from contracts.examples import BODIES
from contracts.messages import TriggerMessage
from service.adapters.amqp.headers import idempotency_key, text_of, texts
from service.adapters.amqp.inbound import delivery_of, trigger_request
from service.adapters.amqp.topology import Names, kind_of, migration, ours


def body_of(kind: str, **fields: object) -> Inbound:
    return parse(kind, json.dumps({**BODIES[kind], **fields}).encode())


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("acme", "acme"),
        (7, "7"),
        (-3, "-3"),
        (2.5, "2.5"),
        (3.0, "3"),
        (True, "true"),
        (Decimal("12.50"), "12.50"),
        (bytearray(b"caf\xc3\xa9"), "café"),
        (bytearray(b"\xff"), "\\xff"),
        (datetime(2026, 1, 2, tzinfo=UTC), "2026-01-02T00:00:00+00:00"),
        (None, None),
        ([1, 2], None),
        ({"a": 1}, None),
    ],
    ids=[
        "text",
        "int",
        "negative",
        "float",
        "whole-float",
        "bool",
        "decimal",
        "utf8-bytes",
        "bytes",
        "instant",
        "void",
        "array",
        "table",
    ],
)
def test_a_header_value_as_text(value: object, text: str | None):
    assert text_of(value) == text


def test_texts_keeps_names_as_written_and_leaves_out_what_has_no_text():
    assert texts({"X-Tenant": "acme", "x-count": 7, "x-death": [{"count": 1}]}) == {
        "X-Tenant": "acme",
        "x-count": "7",
    }


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({}, None),
        ({"x-other": 1}, None),
        ({"X-Idempotency-Key": "order-9"}, "order-9"),
        ({"Idempotency-Key": 42}, "42"),
        ({"x-idempotency-key": Decimal("1.50")}, "1.50"),
        ({"x-idempotency-key": 1e21}, "1e+21"),
        ({"idempotency-key": "b", "x-idempotency-key": "a"}, "a"),
    ],
    ids=["none", "other", "text", "int", "decimal", "big-float", "x-first"],
)
def test_the_idempotency_header_is_text_or_a_number(headers, key):
    assert idempotency_key(headers) == key


@pytest.mark.parametrize(
    "value",
    [True, None, bytearray(b"k"), [1], {"a": 1}, "", " ", float("nan")],
    ids=["bool", "void", "bytes", "array", "table", "empty", "blank", "nan"],
)
def test_an_idempotency_header_of_another_type_is_refused_never_ignored(value):
    with pytest.raises(ContractError) as refused:
        idempotency_key({"x-idempotency-key": value})

    assert refused.value.reason == "bad_header"
    assert "x-idempotency-key" in refused.value.detail


@pytest.mark.parametrize(
    ("message_type", "routing_key", "kind"),
    [
        ("trigger", "control.signal", "trigger"),
        ("", "trigger.hello", "trigger"),
        (None, "trigger.hello", "trigger"),
        (None, "trigger", "trigger"),
        (None, "step.f", "run_step"),
        (None, "control.cancel_run", "cancel_run"),
        (None, "control.trigger", None),
        (None, "control.nope", None),
        (None, "orders", None),
        (None, None, None),
    ],
)
def test_the_routing_key_names_the_kind_of_a_message_without_type(
    message_type, routing_key, kind
):
    assert kind_of(message_type, routing_key) == kind


def test_our_routing_keys_are_those_our_bindings_match():
    assert [ours(k) for k in ["trigger.a", "step", "control.x", "orders", ""]] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_the_migration_is_a_policy_on_the_ingress_exchange_only():
    assert migration(Names("flow")) == (
        "rabbitmqctl set_policy --apply-to exchanges flow-unroutable "
        "'^flow\\.ingress$' '{\"alternate-exchange\":\"flow.unroutable\"}'"
    )


def _delivery(kind: str, body: Inbound, message_id: str | None, headers=None):
    return delivery_of(
        body,
        kind=kind,
        message_id=message_id,
        headers=headers,
        raw=b"{}",
        redelivered=False,
    )


@pytest.mark.parametrize(
    ("kind", "fields", "headers"),
    [
        ("trigger", {}, None),
        ("trigger", {"idempotency_key": None}, {"x-idempotency-key": "k"}),
        ("trigger", {"idempotency_key": None, "headers": {"Idempotency-Key": "k"}}, {}),
        ("retry_step", {}, None),
        ("cancel_run", {}, None),
        ("signal", {}, None),
        ("enable_flow", {}, None),
        ("disable_flow", {}, None),
        ("pause_schedule", {}, None),
        ("resume_schedule", {}, None),
        ("set_cron", {}, None),
    ],
    ids=[
        "trigger-key-field",
        "trigger-key-header",
        "trigger-key-body-header",
        "retry_step",
        "cancel_run",
        "signal",
        "enable_flow",
        "disable_flow",
        "pause_schedule",
        "resume_schedule",
        "set_cron",
    ],
)
def test_what_does_not_rely_on_a_message_id_is_accepted_without_one(
    kind, fields, headers
):
    at = _delivery(kind, body_of(kind, **fields), None, headers)

    assert at.job_id == "body:" + hashlib.sha256(b"{}").hexdigest()[:16]


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("trigger", {"idempotency_key": None}),
        ("rerun", {}),
        ("trigger_schedule_now", {}),
        ("run_step", {}),
    ],
    ids=["trigger-without-key", "rerun", "trigger_schedule_now", "run_step"],
)
def test_what_relies_on_a_message_id_is_refused_without_one(kind, fields):
    with pytest.raises(ContractError) as refused:
        _delivery(kind, body_of(kind, **fields), "")

    assert refused.value.reason == "no_message_id"
    assert "message_id" in refused.value.detail


def test_a_trigger_request_merges_amqp_and_body_headers_the_body_winning():
    body = body_of(
        "trigger", idempotency_key=None, headers={"x-clash": "body", "A": "1"}
    )
    at = _delivery(
        "trigger",
        body,
        "m-1",
        {"X-Clash": "amqp", "X-Tenant": "acme", "x-idempotency-key": 42},
    )

    assert isinstance(body, TriggerMessage)
    request = trigger_request(body, at)

    assert dict(request.headers) == {
        "X-Tenant": "acme",
        "x-idempotency-key": "42",
        "x-clash": "body",
        "A": "1",
    }
    assert request.idempotency_key == "42"
