"""Flows of the chaos suite (`FLOW_MODULES=tests.e2e.chaos_flows`), and what each
trigger body must end as.

Every handler first records its invocation, durably, as one document in the
`handler_calls` collection of the worker's own database (`MONGODB_DATABASE`):
`{_id: call id, run_id, step_key, attempt, job_id, worker}`, written with the
database's default write concern (majority on a replica set) before the handler does
anything else, and returns the call id in its output (`call`). So, after any number of
kill -9s, a test can prove that no invocation was lost (every Succeeded step names a
recorded call of its own attempt) and that none was invented (every recorded call
belongs to an attempt the step row recorded).

- `chaos_fan`: `start`, then four parallel branches (`left`/`right` behind When
  clauses on the trigger body, `mid_a`/`mid_b` always), joined by `join`.
- `chaos_loop`: a ForEach over `items`, three at a time, then `total`.
- `chaos_poll`: `submit`, a polling `check` ready on the `polls`-th poll, `done`.
- `chaos_retry`: `flaky` fails its first `failures` attempts, retried after 0.2 s.
- `chaos_doom`: `charge` always fails (two attempts); `compensate` handles the failure
  only when the body says `handled: true`, so the run ends Succeeded or Failed.
"""

import asyncio
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from uuid import uuid4

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from service.adapters.mongo.outage import is_outage
from service.authoring import (
    Failed,
    Flow,
    FlowId,
    Handlers,
    Json,
    RetryPolicy,
    Step,
    StepContext,
    StepResult,
    after,
    for_each,
    polling,
)
from service.settings import Settings

WORK_SECONDS = 0.02
"""Each handler's (asynchronous) work: enough to be caught in flight by a kill."""
CALLS = "handler_calls"
QUICK_RETRY = timedelta(seconds=0.2)
RECORD_WITHIN = 30.0
"""Seconds a handler keeps trying to record its invocation through an outage."""

handlers = Handlers()
_calls: AsyncCollection[dict[str, Any]] | None = None
_worker = ""


def _collection() -> AsyncCollection[dict[str, Any]]:
    """The `handler_calls` collection of this worker's database (made on first use)."""
    global _calls, _worker  # one client per worker process
    if _calls is None:
        settings = Settings()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_url.get_secret_value(), tz_aware=True
        )
        _calls = client[settings.mongodb_database][CALLS]
        _worker = settings.worker_id
    return _calls


async def record_call(ctx: StepContext) -> str:
    """Store one document for this invocation; its id.

    Through a primary's step-down too: the insert is repeated (same id, so at most one
    document) while MongoDB answers with an outage, as the worker's stores do.
    """
    call_id = uuid4().hex
    call = {
        "_id": call_id,
        "run_id": ctx.run_id,
        "step_key": ctx.step_key,
        "attempt": ctx.attempt,
        "job_id": ctx.job_id,
        "worker": _worker,
    }
    deadline = time.monotonic() + RECORD_WITHIN
    while True:
        try:
            await _collection().insert_one(call)
        except DuplicateKeyError:
            pass  # an earlier try was stored, though its answer was lost
        except PyMongoError as error:
            if not is_outage(error) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)  # a pause before trying again, not a wait
            continue
        return call_id


@handlers.handler("ChaosWork")
async def work(ctx: StepContext, inputs: dict[str, object]) -> dict[str, object]:
    call = await record_call(ctx)
    await asyncio.sleep(WORK_SECONDS)
    return {"call": call, "step": ctx.step_key, "item": inputs.get("__loopItem")}


@handlers.handler("ChaosFlaky")
async def flaky(
    ctx: StepContext, inputs: dict[str, object]
) -> StepResult | dict[str, object]:
    """Fails while the attempt number is at most `failures` (None: always)."""
    call = await record_call(ctx)
    await asyncio.sleep(WORK_SECONDS)
    failures = inputs.get("failures")
    if not isinstance(failures, int) or ctx.attempt <= failures:
        return Failed(f"attempt {ctx.attempt} fails on purpose", output={"call": call})
    return {"call": call, "attempt": ctx.attempt}


async def fetch_status(ctx: StepContext, inputs: Mapping[str, Json]) -> Json:
    """Done on the `readyAfter`-th poll (each poll is an attempt of `check`)."""
    call = await record_call(ctx)
    attempt = inputs.get("pollAttempt")
    polls = (attempt if isinstance(attempt, int) else 0) + 1
    ready_after = inputs.get("readyAfter")
    done = not isinstance(ready_after, int) or polls >= ready_after
    return {"status": "done" if done else "running", "polls": polls, "call": call}


handlers.register("ChaosCheck", polling(fetch_status))

_BOTH = ["Succeeded", "Skipped"]

fan = Flow(
    id=FlowId("c4a05000-0000-4000-8000-000000000001"),
    name="chaos_fan",
    steps={
        "start": Step("ChaosWork"),
        "left": Step(
            "ChaosWork",
            run_after={
                "start": after("Succeeded", when="@triggerBody().side == 'left'")
            },
        ),
        "right": Step(
            "ChaosWork",
            run_after={
                "start": after("Succeeded", when="@triggerBody().side == 'right'")
            },
        ),
        "mid_a": Step("ChaosWork", run_after={"start": ["Succeeded"]}),
        "mid_b": Step("ChaosWork", run_after={"start": ["Succeeded"]}),
        "join": Step(
            "ChaosWork",
            run_after={
                "left": _BOTH,
                "right": _BOTH,
                "mid_a": ["Succeeded"],
                "mid_b": ["Succeeded"],
            },
        ),
    },
)

loop = Flow(
    id=FlowId("c4a05000-0000-4000-8000-000000000002"),
    name="chaos_loop",
    steps={
        "items": for_each(
            "@triggerBody().items", {"process": Step("ChaosWork")}, concurrency=3
        ),
        "total": Step("ChaosWork", run_after={"items": ["Succeeded"]}),
    },
)

poll = Flow(
    id=FlowId("c4a05000-0000-4000-8000-000000000003"),
    name="chaos_poll",
    steps={
        "submit": Step("ChaosWork"),
        "check": Step(
            "ChaosCheck",
            inputs={
                "readyAfter": "@triggerBody().polls",
                "pollIntervalSeconds": 1,
                "pollTimeoutSeconds": 3600,
                "pollConditionPath": "status",
                "pollConditionEquals": "done",
            },
            run_after={"submit": ["Succeeded"]},
        ),
        "done": Step("ChaosWork", run_after={"check": ["Succeeded"]}),
    },
)

retry = Flow(
    id=FlowId("c4a05000-0000-4000-8000-000000000004"),
    name="chaos_retry",
    steps={
        "flaky": Step(
            "ChaosFlaky",
            inputs={"failures": "@triggerBody().failures"},
            # Room for the attempts a kill -9 uses up on top of the planned failures.
            retry=RetryPolicy(max_attempts=20, backoff=QUICK_RETRY, factor=1.0),
        ),
        "after": Step("ChaosWork", run_after={"flaky": ["Succeeded"]}),
    },
)

doom = Flow(
    id=FlowId("c4a05000-0000-4000-8000-000000000005"),
    name="chaos_doom",
    steps={
        "charge": Step(
            "ChaosFlaky",
            retry=RetryPolicy(max_attempts=2, backoff=QUICK_RETRY, factor=1.0),
        ),
        "compensate": Step(
            "ChaosWork",
            run_after={
                "charge": after("Failed", when="@triggerBody().handled == true")
            },
        ),
        "confirm": Step("ChaosWork", run_after={"charge": ["Succeeded"]}),
    },
)

flows = [fan, loop, poll, retry, doom]
HANDLER_TYPES = frozenset(handlers.names())


def expected(flow: str, body: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The run status a trigger of `flow` with `body` must end with, and the final
    status of each top-level step (ForEach children are counted separately)."""
    match flow:
        case "chaos_fan":
            side = body.get("side")
            return "Succeeded", {
                "start": "Succeeded",
                "left": "Succeeded" if side == "left" else "Skipped",
                "right": "Succeeded" if side == "right" else "Skipped",
                "mid_a": "Succeeded",
                "mid_b": "Succeeded",
                "join": "Succeeded",
            }
        case "chaos_loop":
            return "Succeeded", {"items": "Succeeded", "total": "Succeeded"}
        case "chaos_poll":
            return "Succeeded", dict.fromkeys(("submit", "check", "done"), "Succeeded")
        case "chaos_retry":
            return "Succeeded", {"flaky": "Succeeded", "after": "Succeeded"}
        case "chaos_doom":
            handled = body.get("handled") is True
            return ("Succeeded" if handled else "Failed"), {
                "charge": "Failed",
                "compensate": "Succeeded" if handled else "Skipped",
                "confirm": "Skipped",
            }
    raise ValueError(f"not a chaos flow: {flow}")
