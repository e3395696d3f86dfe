"""The dashboard's actions on the wire: the control messages `flowctl` publishes.

`Controls.ask` publishes one request through the same client as `flowctl`
(`operations.request`: publisher confirms, the reply on direct reply-to) and logs who
asked for what and what the worker answered; `ask_many` does it for a bulk action
over one connection. The reply (or why there is none) becomes the flash message the
next page shows.
"""

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, TypeVar

import structlog
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from structlog.typing import FilteringBoundLogger

from contracts import Reply
from service import operations
from service.adapters.amqp.control import control_client
from service.adapters.amqp.topology import control_routing_key
from service.dashboard.auth import User
from service.errors import FlowError

log: FilteringBoundLogger = structlog.get_logger()

M = TypeVar("M", bound=BaseModel)

REPLY_WITHIN: Final = timedelta(seconds=10)
IN_FLIGHT: Final = 16
"""Requests of a bulk action awaiting their replies at once."""
_LOGGED: Final = ("run_id", "step_key", "flow", "trigger_key", "signal")
"""Fields of a request that go into the log line (never payloads or reasons)."""
_LONGEST_MESSAGE: Final = 300


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an action came to: the reply, or why there was none."""

    ok: bool
    kind: str
    status: str
    message: str
    run_id: str | None = None

    @classmethod
    def of(cls, reply: Reply) -> "Outcome":
        return cls(
            ok=reply.ok,
            kind=reply.kind,
            status=reply.status,
            message=reply.message,
            run_id=reply.run_id,
        )

    @classmethod
    def failed(cls, kind: str, error: Exception) -> "Outcome":
        return cls(ok=False, kind=kind, status="error", message=str(error))


class Controls:
    def __init__(
        self, target: operations.Target, within: timedelta = REPLY_WITHIN
    ) -> None:
        self._target = target
        self._within = within

    async def ask(
        self,
        user: User,
        kind: str,
        body: BaseModel,
        *,
        routing_key: str | None = None,
    ) -> Outcome:
        """Publish one `kind` request for `user`; its reply as an Outcome."""
        facts = _facts(body)
        log.info("dashboard_action", user=user.name, kind=kind, **facts)
        try:
            reply = await operations.request(
                self._target,
                routing_key or control_routing_key(kind),
                body,
                kind=kind,
                within=self._within,
            )
        except FlowError as exc:  # unreachable, no reply, no topology
            log.warning(
                "dashboard_action_failed", user=user.name, kind=kind, error=str(exc)
            )
            return Outcome.failed(kind, exc)
        log.info(
            "dashboard_action_answered",
            user=user.name,
            kind=kind,
            status=reply.status,
            **facts,
        )
        return Outcome.of(reply)

    async def ask_many(
        self, user: User, kind: str, bodies: Sequence[BaseModel]
    ) -> list[Outcome]:
        """One `kind` request per body over one connection, IN_FLIGHT at a time."""
        log.info("dashboard_bulk_action", user=user.name, kind=kind, count=len(bodies))
        routing_key = control_routing_key(kind)
        try:
            async with control_client(
                self._target.amqp_url,
                self._target.names,
                connect_timeout=self._target.connect_timeout,
            ) as client:
                gate = asyncio.Semaphore(IN_FLIGHT)

                async def one(body: BaseModel) -> Outcome:
                    async with gate:
                        try:
                            reply = await client.request(
                                routing_key,
                                body,
                                kind=kind,
                                within=self._within,
                                message_id=str(uuid.uuid4()),
                            )
                        except FlowError as exc:
                            return Outcome.failed(kind, exc)
                        return Outcome.of(reply)

                outcomes = list(await asyncio.gather(*(one(b) for b in bodies)))
        except FlowError as exc:
            log.warning("dashboard_bulk_action_failed", user=user.name, error=str(exc))
            return [Outcome.failed(kind, exc)]
        accepted = sum(1 for outcome in outcomes if outcome.ok)
        log.info(
            "dashboard_bulk_action_answered",
            user=user.name,
            kind=kind,
            count=len(bodies),
            accepted=accepted,
        )
        return outcomes


def _facts(body: BaseModel) -> dict[str, Any]:
    values = body.model_dump()
    return {name: values[name] for name in _LOGGED if values.get(name) is not None}


def flash(request: Request, outcome: Outcome, *, note: str | None = None) -> None:
    """Keep `outcome` for the next page the user sees."""
    message = note or outcome.message
    request.session["flash"] = {
        "ok": outcome.ok,
        "kind": outcome.kind,
        "status": outcome.status,
        "message": message[:_LONGEST_MESSAGE],
        "run_id": outcome.run_id,
    }


def take_flash(request: Request) -> dict[str, Any] | None:
    found = request.session.pop("flash", None)
    return found if isinstance(found, dict) else None


def request_body(model: type[M], **fields: object) -> M:
    """The wire message, or 400 naming the fields that are wrong (not their values)."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        problem = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)[:3]
        )
        raise HTTPException(400, f"Invalid request: {problem}") from None
