"""A concurrency key: one sync per customer at a time, the others wait in line.

They wait Queued and start in the order they were triggered; different customers
run side by side.
"""

import asyncio

from service.authoring import Concurrency, Flow, FlowId, Handlers, Step, StepContext

handlers = Handlers()
SYNC_SECONDS = 0.2


@handlers.handler("SyncAccount")
async def sync(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    await asyncio.sleep(SYNC_SECONDS)  # the CRM allows one session per customer
    return {"customer": inputs.get("customer"), "synced": True}


flow = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a000b"),
    name="customer-sync",
    concurrency=Concurrency(key="@triggerBody().customer", limit=1),
    steps={
        "sync": Step("SyncAccount", inputs={"customer": "@triggerBody().customer"}),
    },
)
flows = [flow]
