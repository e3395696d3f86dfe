"""Inbound messages to orchestrator calls, and each call's answer as a `Reply`.

Wire models come in, engine types go out. Knows nothing of deliveries, acks or
channels: the consumer owns those.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import assert_never

from aio_pika.abc import HeadersType

from contracts import Inbound, Reply
from contracts.messages import (
    CancelRunMessage,
    DisableFlowMessage,
    EnableFlowMessage,
    PauseScheduleMessage,
    RerunMessage,
    ResumeScheduleMessage,
    RetryStepMessage,
    RunStepMessage,
    SetCronMessage,
    SignalMessage,
    TriggerMessage,
    TriggerScheduleNowMessage,
)
from service.engine.model import JobId, RunId, StepKey
from service.orchestrator.api import Orchestrator
from service.orchestrator.runtime import (
    ControlResult,
    StepRequest,
    TriggerRequest,
    TriggerResult,
)

IDEMPOTENCY_HEADERS = ("x-idempotency-key", "idempotency-key")
"""AMQP headers read as the idempotency key of a trigger whose body has none."""

RunControl = RetryStepMessage | CancelRunMessage | SignalMessage
FlowControl = (
    EnableFlowMessage
    | DisableFlowMessage
    | PauseScheduleMessage
    | ResumeScheduleMessage
    | TriggerScheduleNowMessage
    | SetCronMessage
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the call needs to know about the delivery that carried the message."""

    kind: str
    job_id: JobId
    """The AMQP message_id."""
    headers: Mapping[str, str]
    """The AMQP headers whose values are text, names in lower case."""
    redelivered: bool
    """Delivered before (the redelivered flag, or a quorum queue's x-delivery-count)."""

    def again(self) -> "Delivery":
        """This delivery handled once more (a retry after a transient failure)."""
        return replace(self, redelivered=True)


def delivery_of(
    kind: str,
    message_id: str,
    headers: HeadersType | None,
    *,
    redelivered: bool | None,
) -> Delivery:
    text = text_headers(headers)
    count = (headers or {}).get("x-delivery-count")
    again = bool(redelivered) or (isinstance(count, int) and count > 0)
    return Delivery(kind, JobId(message_id), text, again)


def text_headers(headers: HeadersType | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if isinstance(value, bytes):
            found[name.lower()] = value.decode("utf-8", errors="replace")
        elif isinstance(value, str):
            found[name.lower()] = value
    return found


def context_of(body: Inbound) -> dict[str, str]:
    """The facts worth binding to every log line about this message."""
    facts = {name: getattr(body, name, None) for name in ("run_id", "step_key")}
    facts["flow"] = getattr(body, "flow", None) or getattr(body, "flow_id", None)
    return {name: value for name, value in facts.items() if isinstance(value, str)}


async def call(orchestrator: Orchestrator, body: Inbound, at: Delivery) -> Reply | None:
    """Make the call `body` asks for; the answer for its `reply_to` (None: no answer).

    Raises what the orchestrator raises (UnknownReferenceError, UnavailableError, ...).
    """
    match body:
        case TriggerMessage():
            result = await orchestrator.trigger(
                trigger_request(body, at), job_id=at.job_id
            )
            return trigger_reply(at.kind, result)
        case RunStepMessage():
            request = StepRequest(
                RunId(body.run_id),
                StepKey(body.step_key),
                job_id=at.job_id,
                redelivered=at.redelivered,
            )
            await orchestrator.run_step(request)
            return None
        case RerunMessage():
            result = await orchestrator.rerun(RunId(body.run_id), job_id=at.job_id)
            return trigger_reply(at.kind, result)
        case RetryStepMessage() | CancelRunMessage() | SignalMessage():
            return control_reply(at.kind, await _run_control(orchestrator, body))
        case (
            EnableFlowMessage()
            | DisableFlowMessage()
            | PauseScheduleMessage()
            | ResumeScheduleMessage()
            | TriggerScheduleNowMessage()
            | SetCronMessage()
        ):
            return control_reply(at.kind, await _flow_control(orchestrator, body, at))
        case _:
            assert_never(body)


def trigger_request(body: TriggerMessage, at: Delivery) -> TriggerRequest:
    """The engine's request for a trigger message.

    Body headers are the trigger headers; an AMQP idempotency header is the key when
    the body has none (with neither, the orchestrator uses the message id).
    """
    key = body.idempotency_key or next(
        (at.headers[name] for name in IDEMPOTENCY_HEADERS if at.headers.get(name)),
        None,
    )
    return TriggerRequest(
        flow=body.flow,
        trigger_key=body.trigger_key,
        body=body.body,
        headers=dict(body.headers),
        idempotency_key=key,
        run_id=RunId(body.run_id) if body.run_id else None,
    )


async def _run_control(orchestrator: Orchestrator, body: RunControl) -> ControlResult:
    run_id = RunId(body.run_id)
    match body:
        case RetryStepMessage():
            return await orchestrator.retry_step(run_id, StepKey(body.step_key))
        case CancelRunMessage():
            return await orchestrator.cancel_run(run_id, body.reason)
        case SignalMessage():
            return await orchestrator.signal(run_id, body.signal, body.payload)
        case _:
            assert_never(body)


async def _flow_control(
    orchestrator: Orchestrator, body: FlowControl, at: Delivery
) -> ControlResult:
    match body:
        case EnableFlowMessage():
            return await orchestrator.set_enabled(body.flow, enabled=True)
        case DisableFlowMessage():
            return await orchestrator.set_enabled(body.flow, enabled=False)
        case PauseScheduleMessage():
            return await orchestrator.update_schedule(
                body.flow, body.trigger_key, paused=True
            )
        case ResumeScheduleMessage():
            return await orchestrator.update_schedule(
                body.flow, body.trigger_key, paused=False
            )
        case TriggerScheduleNowMessage():
            return await orchestrator.trigger_schedule_now(
                body.flow, body.trigger_key, job_id=at.job_id
            )
        case SetCronMessage():
            return await orchestrator.update_schedule(
                body.flow,
                body.trigger_key,
                cron=body.cron,
                clear_cron=body.cron is None,
            )
        case _:
            assert_never(body)


def trigger_reply(kind: str, result: TriggerResult) -> Reply:
    if result.disabled:
        return Reply(
            ok=False,
            kind=kind,
            status="disabled",
            message="The flow is disabled: no run started.",
        )
    if result.duplicate:
        return Reply(
            ok=True,
            kind=kind,
            status="duplicate",
            message="A run with this idempotency key exists: its id is returned.",
            run_id=result.run_id,
        )
    return Reply(
        ok=True,
        kind=kind,
        status="accepted",
        message="Run started.",
        run_id=result.run_id,
    )


def control_reply(kind: str, result: ControlResult) -> Reply:
    return Reply(
        ok=result.ok,
        kind=kind,
        status=result.status,
        message=result.message,
        run_id=result.run_id,
        step_key=result.step_key,
        data=dict(result.data),
    )
