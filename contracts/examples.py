"""One example of every message: shown in the AsyncAPI document, checked by tests.

Each body is valid for its kind's model and JSON Schema; the properties are the AMQP
basic properties it is published with.
"""

from collections.abc import Mapping
from typing import Final

from contracts.messages import REPLY_KIND

RUN: Final = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
FLOW: Final = "orders"

BODIES: Final[Mapping[str, Mapping[str, object]]] = {
    "trigger": {
        "flow": FLOW,
        "body": {"order_id": 42, "total": 99.5},
        "headers": {"X-Tenant": "acme"},
        "idempotency_key": "order-42",
    },
    "run_step": {
        "flow_id": "5d0c2f9e-0000-4000-8000-000000000001",
        "run_id": RUN,
        "step_key": "charge",
        "attempt": 1,
    },
    "retry_step": {"run_id": RUN, "step_key": "charge"},
    "cancel_run": {"run_id": RUN, "reason": "customer withdrew"},
    "signal": {"run_id": RUN, "signal": "approval", "payload": {"by": "ops"}},
    "rerun": {"run_id": RUN},
    "enable_flow": {"flow": FLOW},
    "disable_flow": {"flow": FLOW},
    "pause_schedule": {"flow": "nightly", "trigger_key": "nightly"},
    "resume_schedule": {"flow": "nightly", "trigger_key": "nightly"},
    "trigger_schedule_now": {"flow": "nightly", "trigger_key": "nightly"},
    "set_cron": {"flow": "nightly", "trigger_key": "nightly", "cron": "0 3 * * *"},
    REPLY_KIND: {
        "ok": True,
        "kind": "trigger",
        "status": "accepted",
        "message": "Run started.",
        "run_id": RUN,
        "step_key": None,
        "data": {},
    },
}
"""A valid body of each kind, and of the reply."""

TRACEPARENT: Final = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEADERS: Final[Mapping[str, Mapping[str, str]]] = {
    "trigger": {"traceparent": TRACEPARENT},
}
"""Application headers of the examples that have any."""


def properties(kind: str) -> dict[str, object]:
    """The AMQP properties the example of `kind` is published with."""
    if kind == REPLY_KIND:
        return {
            "type": kind,
            "message_id": "0b6f9c8e-7d1a-4c3b-9e2f-5a4d3c2b1a09",
            "correlation_id": "c0ffee00-0000-4000-8000-000000000042",
            "content_type": "application/json",
        }
    found: dict[str, object] = {
        "type": kind,
        "message_id": f"{RUN}:charge:1" if kind == "run_step" else f"{kind}-42",
        "content_type": "application/json",
        "delivery_mode": 2,
    }
    if kind != "run_step":
        found["reply_to"] = "amq.rabbitmq.reply-to"
        found["correlation_id"] = "c0ffee00-0000-4000-8000-000000000042"
    return found
