"""Flows of the flow-control e2e suite (`FLOW_MODULES=tests.e2e.control_flows`).

Each handler logs what it was asked to do, so a test can count the calls from the
worker's JSON log.
"""

import asyncio
import time
from datetime import timedelta

import structlog

from service.authoring import (
    Concurrency,
    Failed,
    Flow,
    FlowId,
    Handlers,
    NonRetryable,
    RetryPolicy,
    Step,
    StepContext,
    StepResult,
    child_flow,
    wait_for_signal,
)

log = structlog.get_logger()
handlers = Handlers()
HANG = 600.0
"""Seconds a hanging handler waits: only a timeout (or a kill) ends it."""


@handlers.handler("Hang")
async def hang(ctx: StepContext, inputs: dict[str, object]) -> object:
    log.info("hang_called", step_attempt=ctx.attempt)
    recover_on = inputs.get("recover_on")
    if isinstance(recover_on, int) and ctx.attempt >= recover_on:
        return {"recovered_on": ctx.attempt}
    await asyncio.sleep(HANG)  # deaf to `cancelled`: cancelled after the grace
    return None


@handlers.handler("Block")
def block(ctx: StepContext, inputs: dict[str, object]) -> object:
    log.info("block_called", step_attempt=ctx.attempt)
    time.sleep(float(str(inputs.get("seconds", 3))))  # a thread nobody can stop
    log.info("block_returned", step_attempt=ctx.attempt)
    return {"late": True}


@handlers.handler("Decline")
async def decline(ctx: StepContext, inputs: dict[str, object]) -> object:
    log.info("decline_called", step_attempt=ctx.attempt)
    raise NonRetryable("card declined")


@handlers.handler("Brief")
async def brief(ctx: StepContext, inputs: dict[str, object]) -> object:
    await asyncio.sleep(0.1)
    return {"key": inputs.get("key"), "n": inputs.get("n")}


@handlers.handler("Child")
async def child_work(
    ctx: StepContext, inputs: dict[str, object]
) -> StepResult | object:
    log.info("child_called", run=ctx.run_id, step_attempt=ctx.attempt)
    await asyncio.sleep(0.05)
    if inputs.get("fail"):
        return Failed("the child failed")
    return {"doubled": 2 * int(str(inputs.get("n", 0)))}


slow = Flow(
    FlowId("5e0c7c1e-4d1a-4f51-9a53-3c6f0d9a0c01"),
    "slow",
    steps={
        "hang": Step(
            "Hang",
            inputs={"recover_on": "@triggerBody()?.recover_on"},
            timeout=timedelta(seconds=2),
            retry=RetryPolicy(max_attempts=2, backoff=timedelta(seconds=1)),
        )
    },
)
blocking = Flow(
    FlowId("5e0c7c1e-4d1a-4f51-9a53-3c6f0d9a0c02"),
    "blocking",
    steps={"block": Step("Block", inputs={"seconds": 3})},
    step_timeout=timedelta(seconds=1),
)
declining = Flow(
    FlowId("5e0c7c1e-4d1a-4f51-9a53-3c6f0d9a0c03"),
    "declining",
    steps={"charge": Step("Decline", retry=RetryPolicy(max_attempts=5))},
)
keyed = Flow(
    FlowId("5e0c7c1e-4d1a-4f51-9a53-3c6f0d9a0c04"),
    "keyed",
    concurrency=Concurrency("@triggerBody().key", limit=2),
    steps={
        "one": Step("Brief", inputs={"key": "@triggerBody().key"}),
        "two": Step(
            "Brief",
            inputs={"key": "@triggerBody().key", "n": "@triggerBody().n"},
            run_after={"one": ["Succeeded"]},
        ),
    },
)
kid = Flow(
    FlowId("5e0c7c1e-4d1a-4f51-9a53-3c6f0d9a0c05"),
    "kid",
    steps={
        "work": Step(
            "Child", inputs={"n": "@triggerBody().n", "fail": "@triggerBody()?.fail"}
        )
    },
    outputs={"doubled": "@steps('work').output.doubled"},
)
waiting_kid = Flow(
    FlowId("5e0c7c1e-4d1a-4f51-9a53-3c6f0d9a0c06"),
    "waiting-kid",
    steps={"wait": wait_for_signal("go")},
)
parent = Flow(
    FlowId("5e0c7c1e-4d1a-4f51-9a53-3c6f0d9a0c07"),
    "parent",
    steps={
        "kid": child_flow(
            "kid", {"n": "@triggerBody().n", "fail": "@triggerBody()?.fail"}
        ),
        "after": Step(
            "Brief",
            inputs={"n": "@steps('kid').output.doubled"},
            run_after={"kid": ["Succeeded"]},
        ),
    },
)
waiting_parent = Flow(
    FlowId("5e0c7c1e-4d1a-4f51-9a53-3c6f0d9a0c08"),
    "waiting-parent",
    steps={"kid": child_flow("waiting-kid")},
)
flows = [slow, blocking, declining, keyed, kid, waiting_kid, parent, waiting_parent]
