"""When branches with a join: score an application, approve or reject, then record."""

from service.authoring import Flow, FlowId, Handlers, Step, StepContext, after

handlers = Handlers()


@handlers.handler("Score")
async def score(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"score": inputs.get("score", 0)}


@handlers.handler("Decide")
async def decide(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"decision": inputs["decision"]}


@handlers.handler("Record")
async def record(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"recorded": inputs.get("approved") or inputs.get("rejected")}


flow = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0003"),
    name="branches",
    steps={
        "score": Step("Score", inputs={"score": "@triggerBody().score"}),
        "approve": Step(
            "Decide",
            inputs={"decision": "approved"},
            run_after={
                "score": after("Succeeded", when="@steps('score').output.score >= 50")
            },
        ),
        "reject": Step(
            "Decide",
            inputs={"decision": "rejected"},
            run_after={
                "score": after("Succeeded", when="@steps('score').output.score < 50")
            },
        ),
        "record": Step(
            "Record",
            inputs={
                "approved": "@steps('approve').output.decision",
                "rejected": "@steps('reject').output.decision",
            },
            run_after={
                "approve": ["Succeeded", "Skipped"],
                "reject": ["Succeeded", "Skipped"],
            },
        ),
    },
)
flows = [flow]
