"""Order fulfilment: validate; reserve, charge and notify in parallel; then ship."""

from service.authoring import Flow, FlowId, Handlers, RetryPolicy, Step, StepContext

handlers = Handlers()


@handlers.handler("ValidateOrder")
async def validate(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    lines = inputs.get("lines") or []
    if not isinstance(lines, list) or not lines:
        raise ValueError("an order needs at least one line")
    return {"order_id": inputs.get("order_id"), "lines": len(lines)}


@handlers.handler("ReserveStock")
async def reserve(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"reserved": inputs.get("lines")}


@handlers.handler("ChargePayment")
async def charge(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"charged": inputs.get("amount"), "currency": "EUR"}


@handlers.handler("NotifyCustomer")
async def notify(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"sent_to": inputs.get("email")}


@handlers.handler("Ship")
async def ship(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"shipped": inputs.get("order_id"), "charged": inputs.get("charged")}


flow = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0002"),
    name="orders",
    steps={
        "validate": Step(
            "ValidateOrder",
            inputs={
                "order_id": "@triggerBody().order_id",
                "lines": "@triggerBody().lines",
            },
        ),
        "reserve": Step(
            "ReserveStock",
            inputs={"lines": "@steps('validate').output.lines"},
            run_after={"validate": ["Succeeded"]},
        ),
        "charge": Step(
            "ChargePayment",
            inputs={"amount": "@triggerBody().amount"},
            run_after={"validate": ["Succeeded"]},
            retry=RetryPolicy(max_attempts=3),
        ),
        "notify": Step(
            "NotifyCustomer",
            inputs={"email": "@triggerBody()?.customer.email"},
            run_after={"validate": ["Succeeded"]},
        ),
        "ship": Step(
            "Ship",
            inputs={
                "order_id": "@steps('validate').output.order_id",
                "charged": "@steps('charge').output.charged",
            },
            run_after={
                "reserve": ["Succeeded"],
                "charge": ["Succeeded"],
                "notify": ["Succeeded", "Failed"],
            },
        ),
    },
)
flows = [flow]
