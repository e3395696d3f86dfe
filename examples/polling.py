"""Polling until ready: submit a job, poll its status every second until it is done."""

from collections.abc import Mapping

from service.authoring import Flow, FlowId, Handlers, Json, Step, StepContext, polling

handlers = Handlers()


@handlers.handler("SubmitJob")
async def submit(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"job": f"job-{ctx.run_id[:8]}", "ready_after": inputs.get("polls", 3)}


async def fetch_status(ctx: StepContext, inputs: Mapping[str, Json]) -> Json:
    """A stand-in for an HTTP call: the job is ready on the N-th poll."""
    attempt = inputs.get("pollAttempt")
    polls = (attempt if isinstance(attempt, int) else 0) + 1
    ready_after = inputs.get("readyAfter")
    done = isinstance(ready_after, int) and polls >= ready_after
    return {"status": "done" if done else "running", "polls": polls}


handlers.register("CheckJob", polling(fetch_status))


@handlers.handler("Publish")
async def publish(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"published": inputs.get("result")}


flow = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0006"),
    name="polling",
    steps={
        "submit": Step("SubmitJob", inputs={"polls": "@triggerBody()?.polls"}),
        "check": Step(
            "CheckJob",
            inputs={
                "readyAfter": "@steps('submit').output.ready_after",
                "pollIntervalSeconds": 1,
                "pollTimeoutSeconds": 60,
                "pollConditionPath": "status",
                "pollConditionEquals": "done",
            },
            run_after={"submit": ["Succeeded"]},
        ),
        "publish": Step(
            "Publish",
            inputs={"result": "@steps('check').output"},
            run_after={"check": ["Succeeded"]},
        ),
    },
)
flows = [flow]
