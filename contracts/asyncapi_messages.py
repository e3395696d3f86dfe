"""The messages of the AsyncAPI document: payloads, examples, AMQP properties, headers.

AMQP properties (`type`, `message_id`, `reply_to`, `correlation_id`) are a JSON Schema
in each message's `bindings.amqp.x-properties`, never application headers: an AsyncAPI
runtime expression (`correlationId`, a reply `address`) can only point into the payload
or the headers.
"""

from typing import Final

from contracts import KINDS
from contracts.examples import BODIES, HEADERS, properties
from contracts.messages import REPLY_KIND, Reply

AMQP_BINDINGS: Final = "0.3.0"
EXCHANGE: Final = "flow.ingress"
DEAD_LETTER_REASONS: Final = (
    "not_json",
    "schema_invalid",
    "unknown_kind",
    "oversize",
    "no_message_id",
    "bad_properties",
    "bad_header",
    "unroutable",
    "unknown_reference",
    "bad_message",
    "crashed",
)
_MESSAGE_IDS: Final = {
    "run_step": "The attempt's job id, `<run id>:<step key>:<attempt>`: a duplicate "
    "is recognised by it.",
    "rerun": "The JobId, and the new run's idempotency key: required.",
    "trigger_schedule_now": "The JobId, and the run's idempotency key: required.",
    "trigger": "The JobId, and the idempotency key when the trigger carries none "
    "(`idempotency_key`, an `x-idempotency-key` header): required without one.",
}
"""What `message_id` is to the kinds that rely on it."""
_OPTIONAL_MESSAGE_ID: Final = (
    "The JobId. Optional: a message without one is given the job id `body:` and 16 "
    "hex digits of the SHA-256 of its body."
)


def messages() -> dict[str, object]:
    # No `correlationId`: its location can only point into the payload or the
    # application headers, and `correlation_id` is an AMQP property (x-properties).
    messages: dict[str, object] = {}
    for kind, model in {**KINDS, REPLY_KIND: Reply}.items():
        example: dict[str, object] = {
            "name": f"a_{kind}",
            "summary": f"A {kind} message; its AMQP properties are the example "
            "of `bindings.amqp.x-properties`.",
            "payload": BODIES[kind],
        }
        if kind in HEADERS:
            example["headers"] = HEADERS[kind]
        messages[kind] = {
            "name": kind,
            "title": model.__name__,
            "summary": (model.__doc__ or kind).strip().splitlines()[0],
            "payload": {"$ref": f"{kind}.json"},
            "headers": _ref("components", "schemas", _headers(kind)),
            "bindings": {
                "amqp": {
                    "messageType": kind,
                    "bindingVersion": AMQP_BINDINGS,
                    "x-properties": _properties(kind),
                }
            },
            "examples": [example],
        }
    messages["dead_letter"] = {
        "name": "dead_letter",
        "title": "Dead letter",
        "summary": "A message the service could not process, body and properties kept.",
        "contentType": "application/octet-stream",
        "payload": {"description": "The original body, unchanged."},
        "headers": _ref("components", "schemas", "dead_letter_headers"),
        "examples": [
            {
                "name": "an_unroutable_trigger",
                "summary": "A trigger published with a routing key no queue binds.",
                "payload": {"flow": "orders"},
                "headers": {
                    "x-dead-letter-reason": "unroutable",
                    "x-dead-letter-detail": (
                        "no queue is bound to routing key 'orders' on 'flow.ingress'"
                    ),
                    "x-original-routing-key": "orders",
                    "x-original-exchange": EXCHANGE,
                    "x-original-type": "trigger",
                    "x-original-message-id": "trigger-42",
                },
            }
        ],
    }
    return messages


def _properties(kind: str) -> dict[str, object]:
    """The AMQP basic properties of a message of `kind`, as a JSON Schema."""
    if kind == REPLY_KIND:
        reply: dict[str, object] = {
            "type": {"const": kind},
            "message_id": {
                "type": "string",
                "description": "The reply's own id: two replies to one request "
                "have two.",
            },
            "correlation_id": {
                "type": "string",
                "description": "The request's `correlation_id`, copied.",
            },
            "content_type": {"const": "application/json"},
        }
        return _object(kind, reply, required=["type", "message_id"])
    found: dict[str, object] = {
        "type": {
            "const": kind,
            "description": "The message kind; without it, the routing key names it.",
        },
        "message_id": {
            "type": "string",
            "minLength": 1,
            "description": _MESSAGE_IDS.get(kind, _OPTIONAL_MESSAGE_ID),
        },
        "content_type": {"const": "application/json"},
    }
    if kind != "run_step":
        found["reply_to"] = {
            "type": "string",
            "description": "Where to answer (through the default exchange).",
        }
        found["correlation_id"] = {
            "type": "string",
            "description": "Copied into the reply.",
        }
    # A trigger needs one only without an idempotency key: said, not required.
    required = ["message_id"] if kind in _MESSAGE_IDS and kind != "trigger" else []
    return _object(kind, found, required=required)


def _object(
    kind: str, fields: dict[str, object], *, required: list[str]
) -> dict[str, object]:
    schema: dict[str, object] = {
        "type": "object",
        "description": "AMQP basic properties (not application headers).",
        "properties": fields,
        "examples": [properties(kind)],
    }
    if required:
        schema["required"] = required
    return schema


def _headers(kind: str) -> str:
    return "trigger_headers" if kind == "trigger" else "headers"


def header_schemas() -> dict[str, object]:
    traceparent = {"type": "string", "description": "W3C trace context of the sender."}
    idempotency_key = {
        "type": ["string", "number"],
        "minLength": 1,
        "description": (
            "Dedupe key when the body has no `idempotency_key` (also read as "
            "`Idempotency-Key`, in any case). A number counts as its text; any "
            "other type, or a blank string, is dead-lettered as `bad_header`."
        ),
    }
    return {
        "headers": {"type": "object", "properties": {"traceparent": traceparent}},
        "trigger_headers": {
            "type": "object",
            "description": (
                "Every application header is a trigger header (`@triggerHeaders()`), "
                "merged with the body's `headers` (which win a clash), except those "
                "that look like credentials, hop-by-hop ones and the transport's."
            ),
            "properties": {
                "traceparent": traceparent,
                "x-idempotency-key": idempotency_key,
            },
        },
        "dead_letter_headers": {
            "type": "object",
            "required": ["x-dead-letter-reason"],
            "properties": {
                "x-dead-letter-reason": {
                    "enum": list(DEAD_LETTER_REASONS),
                    "description": "Why the message was dead-lettered.",
                },
                "x-dead-letter-detail": {
                    "type": "string",
                    "maxLength": 300,
                    "description": "A short explanation; never the payload.",
                },
            },
        },
    }


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}
