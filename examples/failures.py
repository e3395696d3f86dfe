"""Failure handled by an on-failure branch: `compensate` runs only if `charge` fails."""

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


@handlers.handler("RiskyCharge")
async def risky(ctx: StepContext, inputs: dict[str, object]) -> StepResult:
    if inputs.get("fail"):
        return Failed("card declined")
    return Succeeded({"charged": True})


@handlers.handler("Compensate")
async def compensate(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"compensated": True, "because": inputs.get("error")}


@handlers.handler("Confirm")
async def confirm(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"confirmed": True}


flow = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0004"),
    name="failures",
    steps={
        "charge": Step("RiskyCharge", inputs={"fail": "@triggerBody()?.fail"}),
        "compensate": Step(
            "Compensate",
            inputs={"error": "@steps('charge').error"},
            run_after={"charge": ["Failed"]},
        ),
        "confirm": Step("Confirm", run_after={"charge": ["Succeeded"]}),
    },
)
flows = [flow]
