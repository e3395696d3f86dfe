"""A step timeout: the first fetch hangs past its 1 s timeout, the retry is quick.

The handler waits on `ctx.cancelled`, so it stops as soon as the timeout passes (a
handler that ignores it is cancelled after `STEP_TIMEOUT_GRACE`); the attempt is
Failed with "Step timed out after 1 s." and the retry policy runs it again.
"""

import asyncio
import contextlib
from datetime import timedelta

from service.authoring import Flow, FlowId, Handlers, RetryPolicy, Step, StepContext

handlers = Handlers()
HANG_SECONDS = 30


@handlers.handler("FetchQuote")
async def fetch(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    if ctx.attempt == 1:  # the supplier hangs the first time
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.cancelled.wait(), timeout=HANG_SECONDS)
        return {"stale": True}  # too late: the attempt timed out already
    return {"quote": 42.5, "attempt": ctx.attempt}


@handlers.handler("Book")
async def book(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    return {"booked_at": inputs.get("quote")}


flow = Flow(
    id=FlowId("1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0009"),
    name="timeouts",
    steps={
        "quote": Step(
            "FetchQuote",
            timeout=timedelta(seconds=1),
            retry=RetryPolicy(max_attempts=2, backoff=timedelta(seconds=1)),
        ),
        "book": Step(
            "Book",
            inputs={"quote": "@steps('quote').output.quote"},
            run_after={"quote": ["Succeeded"]},
        ),
    },
)
flows = [flow]
