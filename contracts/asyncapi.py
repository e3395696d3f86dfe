"""The AsyncAPI 3.0 document: the service's channels, operations and messages.

Names are the topology's defaults (prefix `flow`); the service makes them settings.
AMQP properties (`type`, `message_id`, `reply_to`, `correlation_id`) are described in
each message's `bindings.amqp.x-properties`, never as application headers.
"""

from collections.abc import Sequence
from typing import Final

from contracts import CONTROL_KINDS
from contracts.asyncapi_messages import (
    AMQP_BINDINGS,
    EXCHANGE,
    header_schemas,
    messages,
)
from contracts.messages import REPLY_KIND

CONTRACT_VERSION: Final = "1.0.0"

DEAD_LETTER_EXCHANGE: Final = "flow.dlx"
DEAD_LETTER_QUEUE: Final = "flow.dead"
QUEUES: Final = {
    "trigger": "flow.triggers",
    "step": "flow.steps",
    "control": "flow.control",
}
UNROUTABLE: Final = "flow.unroutable"
_AMQP: Final = AMQP_BINDINGS


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
            "messages": messages(),
            "schemas": header_schemas(),
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


def _parameters() -> dict[str, object]:
    return {
        "flow": {"description": "The flow's id or name."},
        "flow_id": {"description": "The flow's id."},
        "kind": {"enum": list(CONTROL_KINDS), "description": "The control kind."},
    }


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}
