"""Nightly cron: at 02:00 UTC every day, clean up; also triggerable by hand."""

from service.authoring import Flow, FlowId, Handlers, Step, StepContext, cron, manual

handlers = Handlers()


@handlers.handler("Cleanup")
async def cleanup(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"cleaned_at": ctx.now.isoformat()}


flow = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0008"),
    name="nightly",
    triggers={"nightly": cron("0 2 * * *"), "manual": manual()},
    steps={"cleanup": Step("Cleanup")},
)
flows = [flow]
