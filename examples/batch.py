"""ForEach batch: process each item of the trigger body three at a time, then sum up."""

from service.authoring import Flow, FlowId, Handlers, Step, StepContext, for_each

handlers = Handlers()


@handlers.handler("ProcessItem")
async def process(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"index": inputs["__loopIndex"], "item": inputs["__loopItem"]}


@handlers.handler("Summarize")
async def summarize(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"loop": inputs.get("loop")}


flow = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0005"),
    name="batch",
    steps={
        "items": for_each(
            "@triggerBody().items",
            {"process": Step("ProcessItem")},
            concurrency=3,
        ),
        "summarize": Step(
            "Summarize",
            inputs={"loop": "@steps('items').output"},
            run_after={"items": ["Succeeded"]},
        ),
    },
)
flows = [flow]
