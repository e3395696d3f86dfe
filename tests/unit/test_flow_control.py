"""Step timeouts and non-retryable failures through the orchestrator, in process."""

import asyncio
import threading
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from service.engine.model import (
    Flow,
    FlowId,
    RetryPolicy,
    RunStatus,
    Step,
    StepStatus,
)
from service.orchestrator.runtime import Options
from service.steps.handlers import Handlers, NonRetryable, StepContext
from service.testing import FlowTestHost

FLOW_ID = FlowId("9d2f8e1a-0000-4000-8000-0000000071e0")
QUICK = timedelta(milliseconds=50)
RETRIED = RetryPolicy(max_attempts=3, backoff=timedelta(seconds=1))


class Seen:
    def __init__(self) -> None:
        self.attempts: list[int] = []
        self.cancelled: list[bool] = []
        self.thread_done = threading.Event()
        self.release_thread = threading.Event()


class Amount(BaseModel):
    amount: float


def make(steps: dict[str, Step], **flow: Any) -> tuple[FlowTestHost, Seen]:
    seen = Seen()
    handlers = Handlers()

    @handlers.handler("Stuck")
    async def stuck(ctx: StepContext, inputs: dict[str, Any]) -> object:
        seen.attempts.append(ctx.attempt)
        if ctx.attempt >= inputs.get("recover_on", 99):
            return {"attempt": ctx.attempt}
        await asyncio.Event().wait()  # never set: only a cancel ends it
        return None

    @handlers.handler("Polite")
    async def polite(ctx: StepContext, inputs: dict[str, Any]) -> object:
        await ctx.cancelled.wait()
        seen.cancelled.append(ctx.is_cancelled)
        return {"stopped": True}

    @handlers.handler("Blocking")
    def blocking(ctx: StepContext, inputs: dict[str, Any]) -> object:
        seen.release_thread.wait(timeout=30)
        seen.thread_done.set()
        return {"late": True}

    @handlers.handler("Declines")
    async def declines(ctx: StepContext, inputs: dict[str, Any]) -> object:
        seen.attempts.append(ctx.attempt)
        raise NonRetryable("card declined")

    @handlers.handler("Typed")
    async def typed(ctx: StepContext, inputs: Amount) -> object:
        seen.attempts.append(ctx.attempt)
        return {"amount": inputs.amount}

    host = FlowTestHost(
        [Flow(FLOW_ID, "t", steps=steps, **flow)],
        handlers,
        options=Options(timeout_grace=QUICK),
    )
    return host, seen


async def test_a_step_past_its_timeout_fails_and_its_retry_policy_runs_it_again():
    host, seen = make(
        {"a": Step("Stuck", inputs={"recover_on": 2}, timeout=QUICK, retry=RETRIED)}
    )

    result = await host.trigger("t")

    assert result.status is RunStatus.SUCCEEDED
    assert seen.attempts == [1, 2]
    [row] = host.stores.steps.rows_of(result.run_id)
    assert [a.error for a in row.attempts] == ["Step timed out after 0.05 s.", None]


async def test_the_flow_wide_step_timeout_applies_to_steps_that_set_none():
    host, _ = make({"a": Step("Stuck")}, step_timeout=QUICK)

    result = await host.trigger("t")

    assert result.status is RunStatus.FAILED
    assert result.steps["a"].error == "Step timed out after 0.05 s."


async def test_a_timed_out_handler_is_told_before_it_is_cancelled():
    host, seen = make({"a": Step("Polite", timeout=QUICK)})

    result = await host.trigger("t")

    assert seen.cancelled == [True]  # it saw `cancelled` and returned in its grace
    assert result.steps["a"].status is StepStatus.FAILED  # still a timeout


async def test_a_plain_def_past_its_timeout_fails_while_its_thread_runs_on():
    host, seen = make({"a": Step("Blocking", timeout=QUICK)})

    result = await host.trigger("t")
    thread_was_running = not seen.thread_done.is_set()
    seen.release_thread.set()
    await asyncio.to_thread(seen.thread_done.wait, 10)

    assert result.steps["a"].error == "Step timed out after 0.05 s."
    assert thread_was_running
    assert (await host.result(result.run_id)).steps["a"].output is None


async def test_non_retryable_raised_by_a_handler_fails_the_step_at_once():
    host, seen = make({"a": Step("Declines", retry=RETRIED)})

    result = await host.trigger("t")

    assert result.status is RunStatus.FAILED
    assert seen.attempts == [1]
    assert (result.steps["a"].error or "").startswith("NonRetryable: card declined")


async def test_inputs_that_fail_validation_are_not_retried():
    host, seen = make({"a": Step("Typed", inputs={"amount": "lots"}, retry=RETRIED)})

    result = await host.trigger("t")

    assert result.status is RunStatus.FAILED
    assert result.steps["a"].attempts == 1
    assert seen.attempts == []
    assert "as Amount" in (result.steps["a"].error or "")
