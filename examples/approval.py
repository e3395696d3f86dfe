"""Approval: request it, await an `approval` signal (one hour at most), then fulfil."""

from datetime import timedelta

from service.authoring import Flow, FlowId, Handlers, Step, StepContext, wait_for_signal

handlers = Handlers()


@handlers.handler("RequestApproval")
async def request(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"requested_from": inputs.get("approver")}


@handlers.handler("Fulfil")
async def fulfil(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"fulfilled": True, "approved_by": inputs.get("approved_by")}


flow = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0007"),
    name="approval",
    steps={
        "request": Step(
            "RequestApproval", inputs={"approver": "@triggerBody()?.approver"}
        ),
        "approval": wait_for_signal(
            "approval",
            timeout=timedelta(hours=1),
            run_after={"request": ["Succeeded"]},
        ),
        "fulfil": Step(
            "Fulfil",
            inputs={"approved_by": "@steps('approval').output.by"},
            run_after={"approval": ["Succeeded"]},
        ),
    },
)
flows = [flow]
