"""Child flows: `invoicing` starts an `invoice` run for the order and waits for it.

It waits parked, holding no worker; the step's output is the child's declared
outputs.
"""

from service.authoring import (
    Flow,
    FlowId,
    Handlers,
    Step,
    StepContext,
    child_flow,
)

handlers = Handlers()


@handlers.handler("NumberInvoice")
async def number(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"number": f"INV-{inputs.get('order')}"}


@handlers.handler("TotalInvoice")
async def total(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    amount = inputs.get("amount")
    return {
        "total": round(float(amount) * 1.2, 2) if isinstance(amount, int | float) else 0
    }


@handlers.handler("SendInvoice")
async def send(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"sent": inputs.get("number"), "total": inputs.get("total")}


invoice = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a000c"),
    name="invoice",
    steps={
        "number": Step("NumberInvoice", inputs={"order": "@triggerBody().order"}),
        "total": Step("TotalInvoice", inputs={"amount": "@triggerBody().amount"}),
    },
    outputs={
        "number": "@steps('number').output.number",
        "total": "@steps('total').output.total",
    },
)
invoicing = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a000d"),
    name="invoicing",
    steps={
        "invoice": child_flow(
            "invoice",
            {"order": "@triggerBody().order", "amount": "@triggerBody().amount"},
        ),
        "send": Step(
            "SendInvoice",
            inputs={
                "number": "@steps('invoice').output.number",
                "total": "@steps('invoice').output.total",
            },
            run_after={"invoice": ["Succeeded"]},
        ),
    },
)
flows = [invoice, invoicing]
