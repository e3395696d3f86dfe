"""A cron flow for the e2e suite: one quick step every two seconds (seconds first)."""

from service.authoring import (
    Flow,
    FlowId,
    Handlers,
    Step,
    StepContext,
    cron,
)

EVERY_SECONDS = 2

handlers = Handlers()


@handlers.handler("Tick")
async def tick(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"at": ctx.now.isoformat()}


ticker = Flow(
    id=FlowId("5e0c7c1e-4d1a-4f51-9a53-3c6f0d9a0e02"),
    name="ticker",
    triggers={"every2s": cron(f"*/{EVERY_SECONDS} * * * * *")},
    steps={"tick": Step("Tick")},
)
flows = [ticker]
