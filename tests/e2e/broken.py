"""An invalid flow: the worker refuses to start, naming the flow, step and problem."""

from service.authoring import (
    Flow,
    FlowId,
    Handlers,
    Step,
    StepContext,
)

handlers = Handlers()


@handlers.handler("Noop")
async def noop(ctx: StepContext, inputs: dict[str, object]) -> None:
    return None


broken = Flow(
    id=FlowId("5e0c7c1e-4d1a-4f51-9a53-3c6f0d9a0e03"),
    name="broken",
    steps={
        "first": Step("Noop"),
        "second": Step("Noop", run_after={"nowhere": ["Succeeded"]}),
    },
)
flows = [broken]
