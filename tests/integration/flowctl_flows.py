"""Test-only flows for the flowctl tests (FLOW_MODULES=...flowctl_flows).

`flaky`: `charge` fails its first attempt and succeeds on a retry, then `ship` runs.
"""

from service.authoring import (
    Failed,
    Flow,
    FlowId,
    Handlers,
    Step,
    StepContext,
    StepResult,
    Succeeded,
)

handlers = Handlers()


@handlers.handler("FlakyCharge")
async def charge(ctx: StepContext, inputs: dict[str, object]) -> StepResult:
    if ctx.attempt == 1:
        return Failed("card declined (first attempt)")
    return Succeeded({"charged": True, "attempt": ctx.attempt})


@handlers.handler("FlakyShip")
async def ship(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"shipped": True}


flaky = Flow(
    id=FlowId("7f0c7c1e-4d1a-4f51-9a53-3c6f0d9a0f01"),
    name="flaky",
    steps={
        "charge": Step("FlakyCharge", inputs={"amount": "@triggerBody()?.amount"}),
        "ship": Step("FlakyShip", run_after={"charge": ["Succeeded"]}),
    },
)
flows = [flaky]
