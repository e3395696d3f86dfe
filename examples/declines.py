"""A non-retryable failure: a declined card fails `charge` at once, whatever its policy.

The retry policy is not used and the `apologise` branch runs; any other card is
charged.
"""

from service.authoring import (
    Flow,
    FlowId,
    Handlers,
    NonRetryable,
    RetryPolicy,
    Step,
    StepContext,
)

handlers = Handlers()


@handlers.handler("ChargeCard")
async def charge(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    if inputs.get("card") == "declined":
        raise NonRetryable("card declined")  # retrying would decline it again
    return {"charged": inputs.get("amount"), "attempt": ctx.attempt}


@handlers.handler("Apologise")
async def apologise(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"told": "sorry", "because": str(inputs.get("error", "")).split("\n")[0]}


flow = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a000a"),
    name="declines",
    steps={
        "charge": Step(
            "ChargeCard",
            inputs={"card": "@triggerBody()?.card", "amount": "@triggerBody()?.amount"},
            retry=RetryPolicy(max_attempts=5),
        ),
        "apologise": Step(
            "Apologise",
            inputs={"error": "@steps('charge').error"},
            run_after={"charge": ["Failed"]},
        ),
    },
)
flows = [flow]
