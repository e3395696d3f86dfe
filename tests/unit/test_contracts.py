import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, JsonValue, ValidationError

from contracts import KINDS, MAX_BODY_BYTES, ContractError, Inbound, parse
from contracts.messages import (
    REPLY_KIND,
    CancelRunMessage,
    DisableFlowMessage,
    EnableFlowMessage,
    PauseScheduleMessage,
    Reply,
    RerunMessage,
    ResumeScheduleMessage,
    RetryStepMessage,
    RunStepMessage,
    SetCronMessage,
    SignalMessage,
    TriggerMessage,
    TriggerScheduleNowMessage,
)
from contracts.schema import asyncapi, check, generate, main, write

RUN = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"

GOOD: dict[str, tuple[dict[str, Any], BaseModel]] = {
    "trigger": (
        {
            "flow": "orders",
            "trigger_key": "webhook",
            "body": {"order": {"id": 7, "lines": [1.5, None, True, "x"]}},
            "headers": {"X-Source": "shop"},
            "idempotency_key": "order-7",
            "run_id": RUN,
        },
        TriggerMessage(
            flow="orders",
            trigger_key="webhook",
            body={"order": {"id": 7, "lines": [1.5, None, True, "x"]}},
            headers={"X-Source": "shop"},
            idempotency_key="order-7",
            run_id=RUN,
        ),
    ),
    "run_step": (
        {"flow_id": "orders", "run_id": RUN, "step_key": "charge", "attempt": 2},
        RunStepMessage(flow_id="orders", run_id=RUN, step_key="charge", attempt=2),
    ),
    "retry_step": (
        {"run_id": RUN, "step_key": "charge"},
        RetryStepMessage(run_id=RUN, step_key="charge"),
    ),
    "cancel_run": (
        {"run_id": RUN, "reason": "customer left"},
        CancelRunMessage(run_id=RUN, reason="customer left"),
    ),
    "signal": (
        {"run_id": RUN, "signal": "approved", "payload": {"by": "ann"}},
        SignalMessage(run_id=RUN, signal="approved", payload={"by": "ann"}),
    ),
    "rerun": ({"run_id": RUN}, RerunMessage(run_id=RUN)),
    "enable_flow": ({"flow": "orders"}, EnableFlowMessage(flow="orders")),
    "disable_flow": ({"flow": "orders"}, DisableFlowMessage(flow="orders")),
    "pause_schedule": (
        {"flow": "orders", "trigger_key": "nightly"},
        PauseScheduleMessage(flow="orders", trigger_key="nightly"),
    ),
    "resume_schedule": (
        {"flow": "orders", "trigger_key": "nightly"},
        ResumeScheduleMessage(flow="orders", trigger_key="nightly"),
    ),
    "trigger_schedule_now": (
        {"flow": "orders", "trigger_key": "nightly"},
        TriggerScheduleNowMessage(flow="orders", trigger_key="nightly"),
    ),
    "set_cron": (
        {"flow": "orders", "trigger_key": "nightly", "cron": "0 3 * * *"},
        SetCronMessage(flow="orders", trigger_key="nightly", cron="0 3 * * *"),
    ),
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=30,
)
kinds = st.sampled_from(sorted(KINDS)) | st.none() | st.text(max_size=30)


def encode(value: object) -> bytes:
    return json.dumps(value).encode()


def outcome(kind: str | None, body: bytes) -> Inbound | ContractError:
    """What parse returns or raises: anything else propagates and fails the test."""
    try:
        return parse(kind, body)
    except ContractError as error:
        return error


def raises_contract_error(kind: str | None, body: bytes) -> ContractError:
    with pytest.raises(ContractError) as caught:
        parse(kind, body)
    return caught.value


def test_every_kind_has_a_good_example():
    assert set(GOOD) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(GOOD), ids=sorted(GOOD))
def test_a_good_message_parses_into_its_kinds_model(kind: str):
    data, expected = GOOD[kind]

    message = parse(kind, encode(data))

    assert type(message) is KINDS[kind]
    assert message == expected


@pytest.mark.parametrize("kind", sorted(GOOD), ids=sorted(GOOD))
def test_unknown_fields_are_ignored(kind: str):
    data, expected = GOOD[kind]

    message = parse(kind, encode({**data, "kind": kind, "added_in_v2": [1, 2]}))

    assert message == expected


def test_a_trigger_takes_its_defaults():
    message = parse("trigger", b'{"flow": "orders"}')

    assert message == TriggerMessage(flow="orders")
    assert isinstance(message, TriggerMessage)
    assert (message.trigger_key, message.body, message.headers) == ("manual", None, {})
    assert (message.idempotency_key, message.run_id) == (None, None)


def test_a_pre_assigned_run_id_is_stored_in_lower_case():
    message = parse("trigger", encode({"flow": "f", "run_id": RUN.upper()}))

    assert isinstance(message, TriggerMessage)
    assert message.run_id == RUN


def test_set_cron_with_null_clears_the_override():
    message = parse("set_cron", b'{"flow": "f", "trigger_key": "t", "cron": null}')

    assert message == SetCronMessage(flow="f", trigger_key="t", cron=None)


def test_a_message_is_frozen():
    message = RerunMessage(run_id=RUN)

    with pytest.raises(ValidationError):
        message.run_id = "other"  # type: ignore[misc] # assigning is the point


@pytest.mark.parametrize(
    ("kind", "body", "reason"),
    [
        ("trigger", b"{not json", "not_json"),
        ("trigger", b"", "not_json"),
        ("trigger", b'{"flow": "f"', "not_json"),
        ("trigger", b'{"flow": "\xff\xfe"}', "not_json"),
        ("trigger", b'{"flow": "f", "body": NaN}', "not_json"),
        ("signal", b"[" * 100_000, "not_json"),
        ("trigger", b"{}", "schema_invalid"),
        ("trigger", b"[]", "schema_invalid"),
        ("trigger", b'"orders"', "schema_invalid"),
        ("trigger", b'{"flow": 7}', "schema_invalid"),
        ("trigger", b'{"flow": ""}', "schema_invalid"),
        ("trigger", b'{"flow": "f", "headers": {"a": 1}}', "schema_invalid"),
        ("trigger", b'{"flow": "f", "run_id": "not-a-uuid"}', "schema_invalid"),
        ("run_step", encode({**GOOD["run_step"][0], "attempt": "2"}), "schema_invalid"),
        # 2.0 is the integer 2, for the JSON Schema and the service alike.
        ("run_step", encode({**GOOD["run_step"][0], "attempt": 2.5}), "schema_invalid"),
        (
            "run_step",
            encode({**GOOD["run_step"][0], "attempt": True}),
            "schema_invalid",
        ),
        ("run_step", encode({**GOOD["run_step"][0], "attempt": 0}), "schema_invalid"),
        ("retry_step", encode({"run_id": RUN}), "schema_invalid"),
        ("cancel_run", encode({"run_id": RUN, "reason": "x" * 1001}), "schema_invalid"),
        ("set_cron", b'{"flow": "f", "trigger_key": "t"}', "schema_invalid"),
        (
            "set_cron",
            b'{"flow": "f", "trigger_key": "t", "cron": " "}',
            "schema_invalid",
        ),
        ("enable_flow", encode({"flow": "f" * 201}), "schema_invalid"),
        ("launch_rockets", b'{"flow": "f"}', "unknown_kind"),
        (None, b'{"flow": "f"}', "unknown_kind"),
        ("", b'{"flow": "f"}', "unknown_kind"),
        ("reply", b'{"ok": true}', "unknown_kind"),
        ("launch_rockets", b"{not json", "unknown_kind"),
        ("trigger", b" " * (MAX_BODY_BYTES + 1), "oversize"),
        (None, b"x" * (MAX_BODY_BYTES + 1), "oversize"),
    ],
    ids=[
        "not-json-garbage",
        "not-json-empty",
        "not-json-truncated",
        "not-json-invalid-utf8",
        "not-json-nan",
        "not-json-100k-brackets",
        "missing-field",
        "array-not-object",
        "string-not-object",
        "number-for-string",
        "empty-string",
        "header-value-not-string",
        "run-id-not-uuid",
        "string-for-int",
        "fraction-for-int",
        "bool-for-int",
        "attempt-zero",
        "missing-step-key",
        "reason-too-long",
        "set-cron-without-cron",
        "blank-cron",
        "id-too-long",
        "unknown-kind",
        "no-kind",
        "empty-kind",
        "reply-is-not-inbound",
        "unknown-kind-checked-before-json",
        "oversize",
        "oversize-checked-first",
    ],
)
def test_a_bad_message_raises_a_contract_error_with_its_reason(
    kind: str | None, body: bytes, reason: str
):
    error = raises_contract_error(kind, body)

    assert error.reason == reason
    assert 0 < len(error.detail) <= 300


def test_nesting_deeper_than_validation_allows_is_schema_invalid():
    body = b'{"run_id": "r", "signal": "s", "payload": ' + b"[" * 1000 + b"]" * 1000
    body += b"}"

    error = raises_contract_error("signal", body)

    assert error.reason == "schema_invalid"
    assert len(error.detail) <= 300


def test_parse_honours_a_smaller_size_limit():
    error = raises_contract_error_with_limit(b'{"flow": "orders"}', max_bytes=10)

    assert error.reason == "oversize"


def raises_contract_error_with_limit(body: bytes, *, max_bytes: int) -> ContractError:
    with pytest.raises(ContractError) as caught:
        parse("trigger", body, max_bytes=max_bytes)
    return caught.value


def test_a_schema_error_names_the_fields_but_never_the_values():
    secret = "hunter2-" * 20
    body = encode(
        {"flow": 7, "trigger_key": ["x"], "headers": {"token": 1}, "x": secret}
    )

    error = raises_contract_error("trigger", body)

    assert "flow" in error.detail
    assert "trigger_key" in error.detail
    assert "hunter2" not in error.detail
    assert "hunter2" not in str(error)


def test_a_not_json_error_never_holds_the_payload():
    error = raises_contract_error("trigger", b"password=" + b"hunter2" * 500)

    assert "hunter2" not in error.detail


def test_a_long_unknown_kind_is_truncated_in_the_detail():
    error = raises_contract_error("k" * 10_000, b"{}")

    assert len(error.detail) <= 300


def test_a_contract_error_carries_the_no_message_id_reason_for_the_consumer():
    error = ContractError("no_message_id", "the message has no message_id")

    assert (error.reason, str(error)) == (
        "no_message_id",
        "no_message_id: the message has no message_id",
    )


def test_a_contract_error_truncates_a_long_detail():
    error = ContractError("schema_invalid", "x" * 5000)

    assert len(error.detail) == 300


@given(kind=kinds, body=st.binary(max_size=2000))
def test_parse_raises_only_contract_errors_for_random_bytes(
    kind: str | None, body: bytes
):
    result = outcome(kind, body)

    if isinstance(result, ContractError):
        assert len(result.detail) <= 300
    else:
        assert isinstance(result, KINDS[str(kind)])


@given(kind=kinds, value=json_values)
def test_parse_raises_only_contract_errors_for_random_json(
    kind: str | None, value: JsonValue
):
    result = outcome(kind, encode(value))

    if isinstance(result, ContractError):
        assert result.reason in {"schema_invalid", "unknown_kind"}
    else:
        assert isinstance(result, KINDS[str(kind)])


@given(value=json_values, extra=st.dictionaries(st.text(), json_values, max_size=5))
def test_any_json_body_and_extra_fields_are_accepted_on_a_trigger(
    value: JsonValue, extra: dict[str, JsonValue]
):
    known = {"flow", "trigger_key", "body", "headers", "idempotency_key", "run_id"}
    data = {k: v for k, v in extra.items() if k not in known}

    message = parse("trigger", encode({**data, "flow": "f", "body": value}))

    assert isinstance(message, TriggerMessage)
    assert message.body == value


def test_kinds_map_each_kind_to_the_model_named_after_it():
    for kind, model in KINDS.items():
        camel = "".join(part.capitalize() for part in kind.split("_"))

        assert model.__name__ == f"{camel}Message"


def test_inbound_is_the_union_of_every_kind():
    assert set(Inbound.__args__) == set(KINDS.values())


def test_a_reply_round_trips_through_json():
    reply = Reply(
        ok=True,
        kind="cancel_run",
        status="accepted",
        message="Cancel requested.",
        run_id=RUN,
        data={"closed_immediately": False},
    )

    assert Reply.model_validate_json(reply.model_dump_json()) == reply
    assert REPLY_KIND == "reply"


def test_a_reply_refuses_an_unknown_status():
    with pytest.raises(ValidationError):
        Reply.model_validate(
            {"ok": False, "kind": "x", "status": "nope", "message": ""}
        )


def test_the_schemas_in_the_repository_are_up_to_date():
    assert check() == []


def test_generation_is_deterministic_and_ends_each_file_with_a_newline():
    first, second = generate(), generate()

    assert first == second
    assert all(text.endswith("\n") for text in first.values())


def test_there_is_a_json_schema_per_kind_and_for_the_reply():
    names = set(generate())

    expected = {f"schemas/{kind}.json" for kind in [*KINDS, REPLY_KIND]}
    assert names == expected | {"schemas/asyncapi.yaml"}


@pytest.mark.parametrize("kind", sorted(KINDS), ids=sorted(KINDS))
def test_each_json_schema_describes_its_model(kind: str):
    schema = json.loads(generate()[f"schemas/{kind}.json"])

    assert schema["title"] == KINDS[kind].__name__
    assert set(schema["properties"]) == set(KINDS[kind].model_fields)


def test_every_reference_in_the_asyncapi_document_resolves():
    document = asyncapi()
    files = generate()

    for ref in references(document):
        if ref.startswith("#/"):
            node: Any = document
            for part in ref[2:].split("/"):
                node = node[part]
        else:
            assert f"schemas/{ref}" in files


def references(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in references(value)]
    return []


def test_the_asyncapi_document_names_the_default_topology():
    text = generate()["schemas/asyncapi.yaml"]

    for name in [
        "flow.ingress",
        "flow.triggers",
        "flow.steps",
        "flow.control",
        "flow.dlx",
        "flow.dead",
        "trigger.{flow}",
        "control.{kind}",
        "step.{flow_id}",
        "x-dead-letter-reason",
        "x-dead-letter-detail",
        "x-idempotency-key",
        "traceparent",
    ]:
        assert name in text
    assert text.startswith('asyncapi: "3.0.0"\n')


def test_write_then_check_finds_nothing_to_do(tmp_path: Path):
    written = write(tmp_path)

    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(
        generate()
    )
    assert check(tmp_path) == []
    assert write(tmp_path) == []


def test_check_lists_changed_missing_and_stale_files(tmp_path: Path):
    write(tmp_path)
    (tmp_path / "schemas/trigger.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "schemas/rerun.json").unlink()
    (tmp_path / "schemas/retired_kind.json").write_text("{}\n", encoding="utf-8")

    assert check(tmp_path) == [
        "schemas/rerun.json",
        "schemas/retired_kind.json",
        "schemas/trigger.json",
    ]
    write(tmp_path)
    assert check(tmp_path) == []
    assert not (tmp_path / "schemas/retired_kind.json").exists()


def test_main_check_exits_one_when_out_of_date_and_zero_after_writing(tmp_path: Path):
    assert main(["--check", "--directory", str(tmp_path)]) == 1

    assert main(["--directory", str(tmp_path)]) == 0
    assert main(["--check", "--directory", str(tmp_path)]) == 0
