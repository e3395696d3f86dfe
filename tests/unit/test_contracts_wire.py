"""The contracts say what the service does: the AsyncAPI document is valid AsyncAPI 3
that puts AMQP properties where they are, every message has an example, the shipped
JSON Schemas and the service agree on what they accept, and run ids match in any case.
"""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator

from contracts import KINDS, ContractError, parse
from contracts.examples import BODIES, properties
from contracts.messages import REPLY_KIND, Reply, RunStepMessage
from contracts.schema import asyncapi

SCHEMAS = Path(__file__).parents[2] / "contracts" / "schemas"
ASYNCAPI_SCHEMA = Path(__file__).parent / "schemas" / "asyncapi-3.0.0.schema.json"
UPPER = "3F2B8C1E-9A4D-4E6F-8B7A-1C2D3E4F5A6B"


def component(section: str) -> dict[str, Any]:
    """A section of the AsyncAPI document's components."""
    components: Any = asyncapi()["components"]
    found: dict[str, Any] = components[section]
    return found


def shipped(kind: str) -> Draft202012Validator:
    """The validator of the JSON Schema shipped for `kind`."""
    schema = json.loads((SCHEMAS / f"{kind}.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def accepted_by_schema(kind: str, body: dict[str, Any]) -> bool:
    return bool(shipped(kind).is_valid(body))


def accepted_by_service(kind: str, body: dict[str, Any]) -> bool:
    try:
        parse(kind, json.dumps(body).encode())
    except ContractError:
        return False
    return True


def test_the_asyncapi_document_is_valid_asyncapi_3_with_amqp_bindings():
    document = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text(encoding="utf-8"))
    validator = Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8")))

    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)
    ]

    assert errors == []
    assert document == json.loads(json.dumps(asyncapi()))


def test_amqp_properties_are_never_described_as_application_headers():
    document = asyncapi()
    text = json.dumps(document)

    assert "$message.header#/correlation_id" not in text
    assert "$message.header#/reply_to" not in text
    for name, message in component("messages").items():
        assert "correlationId" not in message
        if name == "dead_letter":
            continue
        amqp = message["bindings"]["amqp"]
        assert amqp["messageType"] == name
        fields = amqp["x-properties"]["properties"]
        assert {"type", "message_id"} <= set(fields)
        assert fields["type"]["const"] == name
        for header in ("type", "message_id", "correlation_id", "reply_to"):
            assert header not in json.dumps(message["headers"])


@pytest.mark.parametrize("kind", ["run_step", "rerun", "trigger_schedule_now"])
def test_the_kinds_that_need_a_message_id_say_so(kind: str):
    message = component("messages")[kind]

    assert message["bindings"]["amqp"]["x-properties"]["required"] == ["message_id"]


@pytest.mark.parametrize("kind", sorted([*KINDS, REPLY_KIND]))
def test_every_message_has_an_example_its_schema_and_its_model_accept(kind: str):
    message = component("messages")[kind]
    [example] = message["examples"]
    amqp = message["bindings"]["amqp"]["x-properties"]

    assert example["payload"] == BODIES[kind]
    assert list(shipped(kind).iter_errors(example["payload"])) == []
    assert Draft202012Validator(amqp).is_valid(properties(kind))
    assert amqp["examples"] == [properties(kind)]
    if kind == REPLY_KIND:
        Reply.model_validate(example["payload"])
    else:
        parse(kind, json.dumps(example["payload"]).encode())


def test_the_dead_letter_message_has_an_example_with_its_reason():
    message = component("messages")["dead_letter"]
    [example] = message["examples"]
    headers = component("schemas")["dead_letter_headers"]

    assert Draft202012Validator(headers).is_valid(example["headers"])
    assert "unroutable" in headers["properties"]["x-dead-letter-reason"]["enum"]
    assert "bad_header" in headers["properties"]["x-dead-letter-reason"]["enum"]


@pytest.mark.parametrize(
    ("attempt", "accepted"),
    [
        (1, True),
        (1.0, True),
        (3.0, True),
        (1.5, False),
        (0, False),
        (0.0, False),
        ("1", False),
        (True, False),
        (None, False),
    ],
    ids=["1", "1.0", "3.0", "1.5", "0", "0.0", "text", "bool", "null"],
)
def test_the_schema_and_the_service_agree_on_an_attempt(
    attempt: object, accepted: bool
):
    body = {**BODIES["run_step"], "attempt": attempt}

    assert accepted_by_schema("run_step", body) is accepted
    assert accepted_by_service("run_step", body) is accepted


def test_an_attempt_written_as_a_float_is_the_integer():
    body = json.dumps({**BODIES["run_step"], "attempt": 2.0}).encode()

    parsed = parse("run_step", body)

    assert isinstance(parsed, RunStepMessage)
    assert parsed.attempt == 2
    assert type(parsed.attempt) is int


@pytest.mark.parametrize(
    "kind", ["run_step", "retry_step", "cancel_run", "signal", "rerun"]
)
def test_a_run_id_in_upper_case_is_the_run_id_in_lower_case(kind: str):
    body = {**BODIES[kind], "run_id": UPPER}

    parsed = parse(kind, json.dumps(body).encode())

    assert getattr(parsed, "run_id", None) == UPPER.lower()


def test_a_run_reference_that_is_not_a_uuid_is_kept_as_written():
    parsed = parse("cancel_run", b'{"run_id": "Not-A-Uuid"}')

    assert getattr(parsed, "run_id", None) == "Not-A-Uuid"


def test_a_trigger_run_id_in_upper_case_is_stored_in_lower_case():
    body = {"flow": "orders", "run_id": UPPER}

    parsed = parse("trigger", json.dumps(body).encode())

    assert getattr(parsed, "run_id", None) == UPPER.lower()


def test_no_reply_data_is_promised_that_the_service_does_not_send():
    reply = json.loads((SCHEMAS / "reply.json").read_text(encoding="utf-8"))
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")

    assert "closed_immediately" not in json.dumps(reply)
    assert "closed_immediately" not in readme


def test_the_dispatchers_run_step_body_is_what_the_contract_writes():
    from service.adapters.amqp.dispatcher import run_step_body
    from service.engine.model import FlowId, RunId, StepKey
    from service.ports.dispatch import Dispatch

    dispatch = Dispatch(FlowId("f-1"), RunId("r-1"), StepKey("loop.3.x"), 2)
    contract = RunStepMessage(
        flow_id="f-1", run_id="r-1", step_key="loop.3.x", attempt=2
    ).model_dump(mode="json")

    assert run_step_body(dispatch) == contract
