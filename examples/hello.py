"""Linear hello: greet -> shout -> sign. The smallest flow, and the demo's first run."""

from service.authoring import Flow, FlowId, Handlers, Step, StepContext

handlers = Handlers()


@handlers.handler("Greet")
async def greet(ctx: StepContext, inputs: dict[str, object]) -> dict[str, str]:
    return {"text": f"Hello, {inputs.get('name') or 'world'}"}


@handlers.handler("Shout")
async def shout(ctx: StepContext, inputs: dict[str, object]) -> dict[str, str]:
    return {"text": f"{inputs['text']}!".upper()}


@handlers.handler("Sign")
async def sign(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"text": f"{inputs['text']} -- {ctx.run_id}", "attempt": ctx.attempt}


flow = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0001"),
    name="hello",
    steps={
        "greet": Step("Greet", inputs={"name": "@triggerBody()?.name"}),
        "shout": Step(
            "Shout",
            inputs={"text": "@steps('greet').output.text"},
            run_after={"greet": ["Succeeded"]},
        ),
        "sign": Step(
            "Sign",
            inputs={"text": "@steps('shout').output.text"},
            run_after={"shout": ["Succeeded"]},
        ),
    },
)
flows = [flow]
