"""Test-only flows for the e2e suite (`FLOW_MODULES=tests.e2e.flows`).

`steady`: three steps in a line, each about 50 ms of (asynchronous) work, so a load of
a few hundred runs keeps a worker busy for seconds: long enough to kill it mid-way.
`slow`: one step that sleeps the trigger body's `seconds`, deaf to `ctx.cancelled`.
"""

import asyncio

from service.authoring import (
    Flow,
    FlowId,
    Handlers,
    Step,
    StepContext,
)

STEP_SECONDS = 0.05

handlers = Handlers()


@handlers.handler("Work")
async def work(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    await asyncio.sleep(STEP_SECONDS)
    return {"step": ctx.step_key, "n": inputs.get("n"), "attempt": ctx.attempt}


steady = Flow(
    id=FlowId("5e0c7c1e-4d1a-4f51-9a53-3c6f0d9a0e01"),
    name="steady",
    steps={
        "one": Step("Work", inputs={"n": "@triggerBody()?.n"}),
        "two": Step(
            "Work",
            inputs={"n": "@steps('one').output.n"},
            run_after={"one": ["Succeeded"]},
        ),
        "three": Step(
            "Work",
            inputs={"n": "@steps('two').output.n"},
            run_after={"two": ["Succeeded"]},
        ),
    },
)


@handlers.handler("Nap")
async def nap(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    await asyncio.sleep(float(str(inputs.get("seconds") or 0)))
    return {"slept": inputs.get("seconds"), "attempt": ctx.attempt}


slow = Flow(
    id=FlowId("5e0c7c1e-4d1a-4f51-9a53-3c6f0d9a0e02"),
    name="slow",
    steps={"nap": Step("Nap", inputs={"seconds": "@triggerBody()?.seconds"})},
)
flows = [steady, slow]
