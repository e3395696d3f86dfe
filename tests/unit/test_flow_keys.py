"""Concurrency keys through the orchestrator, in process: limits, order, stops."""

from datetime import timedelta
from typing import Any

from service.engine.model import (
    Concurrency,
    Flow,
    FlowId,
    JobId,
    RunId,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    wait_for_signal,
)
from service.orchestrator.runtime import TriggerRequest
from service.steps.handlers import Handlers, StepContext
from service.testing import FlowTestHost

FLOW_ID = FlowId("9d2f8e1a-0000-4000-8000-00000000c0e1")


def make(limit: int = 2, **flow: Any) -> FlowTestHost:
    handlers = Handlers()

    @handlers.handler("Ok")
    async def ok(ctx: StepContext, inputs: dict[str, Any]) -> object:
        return {"run": ctx.run_id}

    steps = {
        "first": Step("Ok"),
        "hold": wait_for_signal("go", run_after={"first": ["Succeeded"]}),
    }
    keyed = Flow(
        FLOW_ID,
        "keyed",
        steps=steps,
        concurrency=Concurrency("@triggerBody().customer", limit),
        **flow,
    )
    return FlowTestHost([keyed], handlers)


async def start(host: FlowTestHost, customer: str, count: int) -> list[RunId]:
    return [
        (await host.trigger("keyed", body={"customer": customer, "n": n})).run_id
        for n in range(count)
    ]


async def statuses(host: FlowTestHost, runs: list[RunId]) -> list[str]:
    return [(await host.result(r)).status.value for r in runs]


async def test_at_most_limit_runs_of_a_key_run_and_the_others_wait_queued():
    host = make(limit=2)

    acme = await start(host, "acme", 4)
    other = await start(host, "other", 1)

    assert await statuses(host, acme) == ["Running", "Running", "Queued", "Queued"]
    assert await statuses(host, other) == ["Running"]
    assert (await host.result(acme[2])).steps == {}  # nothing of it started


async def test_queued_runs_start_in_trigger_order_as_runs_end():
    host = make(limit=1)
    runs = await start(host, "acme", 3)

    await host.signal(runs[0], "go")
    after_first = await statuses(host, runs)
    await host.signal(runs[1], "go")
    await host.signal(runs[2], "go")

    assert after_first == ["Succeeded", "Running", "Queued"]
    assert await statuses(host, runs) == ["Succeeded"] * 3
    found = [await host.stores.runs.get_run(r) for r in runs]
    assert [(r.ticket, r.admitted) for r in found if r] == [(1, 1), (2, 2), (3, 3)]
    slots = await host.stores.slots.slots(FLOW_ID, "acme")
    assert slots is not None
    assert (slots.holders, slots.waiting) == ((), ())


async def test_a_queued_run_is_cancelled_and_leaves_the_queue():
    host = make(limit=1)
    first, second, third = await start(host, "acme", 3)

    answer = await host.cancel(second, "not needed")
    await host.signal(first, "go")

    cancelled = await host.result(second)
    assert answer.status == "accepted"
    assert cancelled.status is RunStatus.CANCELLED
    assert {k: s.status for k, s in cancelled.steps.items()} == {
        "first": StepStatus.SKIPPED,
        "hold": StepStatus.SKIPPED,
    }
    assert await statuses(host, [first, third]) == ["Succeeded", "Running"]


async def test_a_deadline_passes_while_the_run_waits():
    host = make(limit=1, run_timeout=timedelta(minutes=10))
    first, second = await start(host, "acme", 2)

    await host.advance(timedelta(minutes=11))

    assert await statuses(host, [first, second]) == ["TimedOut", "TimedOut"]
    slots = await host.stores.slots.slots(FLOW_ID, "acme")
    assert slots is not None
    assert (slots.holders, slots.waiting) == ((), ())


async def test_a_run_without_a_key_value_shares_the_null_key():
    host = make(limit=1)

    runs = [(await host.trigger("keyed", body={"n": n})).run_id for n in range(2)]

    waiting = await host.stores.runs.get_run(runs[1])
    assert await statuses(host, runs) == ["Running", "Queued"]
    assert waiting is not None
    assert waiting.concurrency_key == "null"


async def test_a_slot_held_by_a_run_that_is_gone_never_blocks_the_key():
    host = make(limit=1)
    first, second = await start(host, "acme", 2)
    host.stores.runs.forget([first])  # as if deleted under the key's feet

    host.clock.advance(timedelta(minutes=5))  # the reconciler looks at the waiting run
    await host.settle()

    assert await statuses(host, [second]) == ["Running"]


async def test_a_redelivered_trigger_of_a_queued_run_queues_it_once():
    host = make(limit=1)
    await start(host, "acme", 1)
    request = TriggerRequest("keyed", body={"customer": "acme"})

    one = await host.orchestrator.trigger(request, job_id=JobId("m-1"))
    two = await host.orchestrator.trigger(request, job_id=JobId("m-1"))

    slots = await host.stores.slots.slots(FLOW_ID, "acme")
    assert two.duplicate
    assert two.run_id == one.run_id
    assert slots is not None
    assert [t.run_id for t in slots.waiting] == [one.run_id]


async def test_a_step_of_a_keyed_run_is_not_retried_by_hand():
    host = make(limit=1)
    [run] = await start(host, "acme", 1)

    answer = await host.retry(run, "first")

    assert answer.status == "refused"
    assert "rerun" in answer.message
    assert StepKey("first") in (await host.result(run)).steps
