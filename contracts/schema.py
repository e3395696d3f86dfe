"""Generates `schemas/`: a JSON Schema per kind and the AsyncAPI 3.0 document.

`python -m contracts.schema` writes the files; `--check` lists those out of date.
"""

import argparse
import json
import re
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Final

from pydantic import BaseModel

from contracts import CONTROL_KINDS, KINDS
from contracts.examples import BODIES, HEADERS, properties
from contracts.messages import REPLY_KIND, Reply

PACKAGE_DIRECTORY: Final = Path(__file__).parent
SCHEMAS: Final = "schemas"
CONTRACT_VERSION: Final = "1.0.0"

# The topology's default names (prefix "flow"); the service makes them settings.
EXCHANGE: Final = "flow.ingress"
DEAD_LETTER_EXCHANGE: Final = "flow.dlx"
DEAD_LETTER_QUEUE: Final = "flow.dead"
QUEUES: Final = {
    "trigger": "flow.triggers",
    "step": "flow.steps",
    "control": "flow.control",
}
UNROUTABLE: Final = "flow.unroutable"
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

_AMQP: Final = "0.3.0"
_JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_.$-]*")


def generate() -> dict[str, str]:
    """Every generated file, by its name relative to the package directory."""
    models: dict[str, type[BaseModel]] = {**KINDS, REPLY_KIND: Reply}
    files = {
        f"{SCHEMAS}/{kind}.json": _json(
            {"$schema": _JSON_SCHEMA_DIALECT, **model.model_json_schema()}
        )
        for kind, model in models.items()
    }
    files[f"{SCHEMAS}/asyncapi.yaml"] = _yaml(asyncapi())
    return dict(sorted(files.items()))


def write(directory: Path = PACKAGE_DIRECTORY) -> list[Path]:
    """Bring the files under `directory` up to date; the paths written or removed."""
    files = generate()
    changed = []
    for name, text in files.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for name in _stale(directory, files.keys()):
        (directory / name).unlink()
        changed.append(directory / name)
    return changed


def check(directory: Path = PACKAGE_DIRECTORY) -> list[str]:
    """Names of the files that are missing, differ from `generate()` or are stale."""
    files = generate()
    differ = [
        name
        for name, text in files.items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != text
    ]
    return sorted(differ + _stale(directory, files.keys()))


def _stale(directory: Path, expected: Collection[str]) -> list[str]:
    """Generated-looking files that `generate()` no longer produces."""
    found = [
        f"{SCHEMAS}/{path.name}"
        for pattern in ("*.json", "*.yaml")
        for path in (directory / SCHEMAS).glob(pattern)
    ]
    return sorted(name for name in found if name not in expected)


def asyncapi() -> dict[str, object]:
    """The AsyncAPI 3.0 document, as the service sees the broker."""
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "flow-orchestrator",
            "version": CONTRACT_VERSION,
            "description": (
                "Messages of the flow-orchestrator service. Every message is JSON "
                "(content_type application/json, UTF-8) with its kind in the AMQP "
                "`type` property (without one, the routing key names it); its "
                "`message_id` is the JobId. `type`, `message_id`, `reply_to` and "
                "`correlation_id` are AMQP basic properties, not application "
                "headers: each message's `bindings.amqp.x-properties` describes "
                "them as a JSON Schema. A request with `reply_to` is answered "
                "there, through the default exchange, with a `reply` that copies "
                "its `correlation_id`. A message breaking its contract, or one no "
                "queue binds (the ingress exchange's alternate exchange catches "
                "it), is dead-lettered with the reason in `x-dead-letter-reason`."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "A local broker; names below are the defaults.",
            }
        },
        "channels": _channels(),
        "operations": _operations(),
        "components": {
            "messages": _messages(),
            "schemas": _header_schemas(),
            "parameters": _parameters(),
        },
    }


def _channels() -> dict[str, object]:
    def routed(
        address: str | None, exchange: dict[str, object], kinds: Sequence[str]
    ) -> dict[str, object]:
        return {
            "address": address,
            "messages": {kind: _ref("components", "messages", kind) for kind in kinds},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": exchange,
                    "bindingVersion": _AMQP,
                }
            },
        }

    def queued(name: str, kinds: Sequence[str], description: str) -> dict[str, object]:
        queue = {"name": name, "durable": True, "exclusive": False, "autoDelete": False}
        return {
            "address": name,
            "description": description,
            "messages": {kind: _ref("components", "messages", kind) for kind in kinds},
            "bindings": {
                "amqp": {"is": "queue", "queue": queue, "bindingVersion": _AMQP}
            },
        }

    ingress: dict[str, object] = {
        "name": EXCHANGE,
        "type": "topic",
        "durable": True,
        "autoDelete": False,
    }
    dlx: dict[str, object] = {
        "name": DEAD_LETTER_EXCHANGE,
        "durable": True,
        "autoDelete": False,
    }
    default: dict[str, object] = {"name": "", "type": "default"}
    bound = "A quorum queue bound to `" + EXCHANGE + "` with `{}.#`."
    unroutable = (
        "A quorum queue bound to `"
        + UNROUTABLE
        + "`, the alternate exchange of `"
        + EXCHANGE
        + "`: every message no queue binds, kept with its exchange and routing "
        "key. The worker dead-letters it as `unroutable` (or, for a routing key of "
        "the service whose binding is missing, publishes it again later)."
    )
    return {
        "trigger": {
            **routed("trigger.{flow}", ingress, ["trigger"]),
            "parameters": {"flow": _ref("components", "parameters", "flow")},
        },
        "control": {
            **routed("control.{kind}", ingress, CONTROL_KINDS),
            "parameters": {"kind": _ref("components", "parameters", "kind")},
        },
        "run_step": {
            **routed("step.{flow_id}", ingress, ["run_step"]),
            "parameters": {"flow_id": _ref("components", "parameters", "flow_id")},
        },
        "triggers_queue": queued(
            QUEUES["trigger"], ["trigger"], bound.format("trigger")
        ),
        "control_queue": queued(
            QUEUES["control"], CONTROL_KINDS, bound.format("control")
        ),
        "steps_queue": queued(QUEUES["step"], ["run_step"], bound.format("step")),
        "unroutable_queue": queued(UNROUTABLE, ["dead_letter"], unroutable),
        "reply": {
            **routed(None, default, [REPLY_KIND]),
            "description": (
                "The queue the request's AMQP `reply_to` property names (a "
                "property, not a header), reached through the default exchange; "
                "no reply without one."
            ),
        },
        "dead_letter": {
            **routed(None, dlx, ["dead_letter"]),
            "description": "Dead letters keep the routing key they arrived with.",
        },
        "dead_letter_queue": queued(
            DEAD_LETTER_QUEUE, ["dead_letter"], "Dead letters, kept for an operator."
        ),
    }


def _operations() -> dict[str, object]:
    receive = {"amqp": {"ack": True, "bindingVersion": _AMQP}}
    send = {"amqp": {"deliveryMode": 2, "bindingVersion": _AMQP}}
    # No `address`: its runtime expression can only point into the payload or the
    # application headers, and `reply_to` is an AMQP property (see the channel).
    reply = {
        "channel": _ref("channels", "reply"),
        "messages": [_ref("channels", "reply", "messages", REPLY_KIND)],
    }

    def operation(
        action: str, channel: str, kinds: Sequence[str], summary: str
    ) -> dict[str, object]:
        return {
            "action": action,
            "summary": summary,
            "channel": _ref("channels", channel),
            "messages": [_ref("channels", channel, "messages", kind) for kind in kinds],
            "bindings": receive if action == "receive" else send,
        }

    return {
        "consume_triggers": {
            **operation("receive", "triggers_queue", ["trigger"], "Start runs."),
            "reply": reply,
        },
        "consume_control": {
            **operation("receive", "control_queue", CONTROL_KINDS, "Operate runs."),
            "reply": reply,
        },
        "consume_steps": operation(
            "receive", "steps_queue", ["run_step"], "Execute step attempts."
        ),
        "dispatch_steps": operation(
            "send", "run_step", ["run_step"], "Dispatch the steps that became ready."
        ),
        "dead_letter": operation(
            "send",
            "dead_letter",
            ["dead_letter"],
            "Park a message that can't be processed.",
        ),
    }


def _messages() -> dict[str, object]:
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
                    "bindingVersion": _AMQP,
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


def _header_schemas() -> dict[str, object]:
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


def _parameters() -> dict[str, object]:
    return {
        "flow": {"description": "The flow's id or name."},
        "flow_id": {"description": "The flow's id."},
        "kind": {"enum": list(CONTROL_KINDS), "description": "The control kind."},
    }


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}


def _json(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _yaml(value: object) -> str:
    """Block-style YAML, keys sorted; strings are JSON strings, valid YAML scalars."""
    return "\n".join(_yaml_lines(value, 0)) + "\n"


def _yaml_lines(value: object, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict) and value:
        lines = []
        for key in sorted(value):
            name = key if _PLAIN_KEY.fullmatch(key) else json.dumps(key)
            lines.extend(_yaml_entry(f"{pad}{name}:", value[key], indent + 2))
        return lines
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            # "- " then the item as if indented by two: a compact block entry.
            first, *rest = _yaml_lines(item, indent + 2)
            lines.extend([f"{pad}- {first.lstrip()}", *rest])
        return lines
    return [pad + json.dumps(value)]


def _yaml_entry(head: str, value: object, indent: int) -> list[str]:
    if isinstance(value, dict | list) and value:
        return [head, *_yaml_lines(value, indent)]
    return [f"{head} {json.dumps(value)}"]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the schema files, or with --check list those out of date (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m contracts.schema")
    parser.add_argument("--check", action="store_true", help="change nothing")
    parser.add_argument("--directory", type=Path, default=PACKAGE_DIRECTORY)
    args = parser.parse_args(argv)
    if args.check:
        differ = check(args.directory)
        for name in differ:
            sys.stderr.write(f"out of date: {name}\n")
        return 1 if differ else 0
    for path in write(args.directory):
        sys.stderr.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
