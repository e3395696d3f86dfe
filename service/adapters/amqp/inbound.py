"""Inbound messages to orchestrator calls, and each call's answer as a `Reply`.

Wire models come in, engine types go out. Knows nothing of acks or channels: the
consumer owns those (a long step's early ack passes through as an opaque `let_go`).
"""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final, assert_never

from aio_pika.abc import HeadersType

from contracts import ContractError, Inbound, Reply
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
from service.adapters.amqp.dispatcher import DISPATCH_ID
from service.adapters.amqp.headers import IDEMPOTENCY_HEADERS, idempotency_key, texts
from service.adapters.amqp.letters import body_id
from service.engine import headers as trigger_headers
from service.engine.model import JobId, RunId, StepKey
from service.orchestrator.api import Orchestrator
from service.orchestrator.runtime import (
    ControlResult,
    StepRequest,
    TriggerRequest,
    TriggerResult,
)

LetGo = Callable[[], Awaitable[None]]
"""Acknowledges a delivery before its handling ends."""
RunControl = RetryStepMessage | CancelRunMessage | SignalMessage
FlowControl = (
    EnableFlowMessage
    | DisableFlowMessage
    | PauseScheduleMessage
    | ResumeScheduleMessage
    | TriggerScheduleNowMessage
    | SetCronMessage
)


ANONYMOUS_REFUSED: Final[Mapping[str, str]] = {
    "run_step": "it is the attempt's job id, which makes a duplicate recognisable",
    "rerun": "it is the new run's idempotency key, which tells a redelivery from a "
    "request for a second run",
    "trigger_schedule_now": "it is the run's idempotency key, which tells a "
    "redelivery from a request for a second run",
    "trigger": "a trigger without one needs an idempotency key (the idempotency_key "
    "field or an x-idempotency-key header): one of them tells a redelivery from a "
    "second run with the same body",
}
"""Kinds refused without a message_id, and why (a trigger only without a key)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the call needs to know about the delivery that carried the message."""

    kind: str
    job_id: JobId
    """The AMQP message_id; for a message without one, `body:<hash of the body>`."""
    headers: Mapping[str, str]
    """The AMQP application headers that have text, names as written."""
    idempotency_key: str | None
    """A trigger's AMQP idempotency header, as text."""
    redelivered: bool
    """Delivered before (the redelivered flag, or a quorum queue's x-delivery-count)."""
    let_go: LetGo | None = None
    """Acknowledges the delivery before its handling ends (a long step's)."""

    def again(self) -> "Delivery":
        """This delivery handled once more (a retry after a transient failure)."""
        return replace(self, redelivered=True)


def delivery_of(
    body: Inbound,
    *,
    kind: str,
    message_id: str | None,
    headers: HeadersType | None,
    raw: bytes,
    redelivered: bool | None,
    let_go: LetGo | None = None,
) -> Delivery:
    """The facts of the delivery that carried `body`, a message of `kind`.

    Raises:
        ContractError: `bad_header` (a trigger's idempotency header of a type that is
            not text or a number), or `no_message_id` (a kind whose message id is its
            dedupe key, see ANONYMOUS_REFUSED).
    """
    key = idempotency_key(headers) if isinstance(body, TriggerMessage) else None
    if not message_id:
        _check_anonymous(body, kind, key)
    count = (headers or {}).get("x-delivery-count")
    again = bool(redelivered) or (isinstance(count, int) and count > 0)
    job_id = JobId(message_id or body_id(raw))
    return Delivery(kind, job_id, texts(headers), key, again, let_go)


def _check_anonymous(body: Inbound, kind: str, key: str | None) -> None:
    """Accept a message without a message_id only where nothing relies on it."""
    if isinstance(body, TriggerMessage) and (
        body.idempotency_key
        or key
        or any(trigger_headers.find(body.headers, h) for h in IDEMPOTENCY_HEADERS)
    ):
        return
    if why := ANONYMOUS_REFUSED.get(kind):
        missing = "the message_id property is missing"
        raise ContractError("no_message_id", f"{missing}: {why}")


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
                dispatch_id=at.headers.get(DISPATCH_ID, ""),
                let_go=at.let_go,
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

    The trigger headers are the AMQP application headers and the body's `headers`,
    the body's winning a name both have; the idempotency key is the body's, else the
    AMQP idempotency header (else the orchestrator looks in the headers, then uses
    the message id).
    """
    return TriggerRequest(
        flow=body.flow,
        trigger_key=body.trigger_key,
        body=body.body,
        headers=trigger_headers.merge(body.headers, at.headers),
        idempotency_key=body.idempotency_key or at.idempotency_key,
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
