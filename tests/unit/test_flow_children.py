"""Child flows through the orchestrator, in process: start, wait, follow, stop."""

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from service.engine import child_flow as child_rules
from service.engine.model import (
    Flow,
    FlowId,
    JobId,
    RetryPolicy,
    RunId,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    child_flow,
    wait_for_signal,
)
from service.engine.records import RunRecord
from service.orchestrator.runtime import StepRequest
from service.steps.handlers import Failed, Handlers, StepContext
from service.testing import FlowTestHost

PARENT = FlowId("9d2f8e1a-0000-4000-8000-00000000c0a1")
CHILD = FlowId("9d2f8e1a-0000-4000-8000-00000000c0a2")
NESTED = FlowId("9d2f8e1a-0000-4000-8000-00000000c0a3")


class Calls:
    def __init__(self) -> None:
        self.bills = 0


def make(*, retry: RetryPolicy | None = None) -> tuple[FlowTestHost, Calls]:
    calls = Calls()
    handlers = Handlers()

    @handlers.handler("Bill")
    async def bill(ctx: StepContext, inputs: dict[str, Any]) -> object:
        calls.bills += 1
        if inputs.get("fail_first") and calls.bills == 1:
            return Failed("declined")
        return {"invoice": f"inv-{inputs['order']}", "attempt": ctx.attempt}

    @handlers.handler("Ship")
    async def ship(ctx: StepContext, inputs: dict[str, Any]) -> object:
        return {"shipped": inputs["invoice"]}

    child = Flow(
        CHILD,
        "billing",
        steps={
            "bill": Step(
                "Bill",
                inputs={
                    "order": "@triggerBody().order",
                    "fail_first": "@triggerBody().fail_first",
                },
            ),
        },
        outputs={"invoice": "@steps('bill').output.invoice"},
    )
    parent = Flow(
        PARENT,
        "orders",
        steps={
            "billing": child_flow(
                "billing",
                {
                    "order": "@triggerBody().order",
                    "fail_first": "@triggerBody().fail_first",
                },
                retry=retry,
            ),
            "ship": Step(
                "Ship",
                inputs={"invoice": "@steps('billing').output.invoice"},
                run_after={"billing": ["Succeeded"]},
            ),
        },
    )
    waits = Flow(
        NESTED,
        "waits",
        steps={
            "child": child_flow("slow"),
        },
    )
    slow = Flow(
        FlowId("9d2f8e1a-0000-4000-8000-00000000c0a4"),
        "slow",
        steps={"wait": wait_for_signal("never")},
    )
    return FlowTestHost([child, parent, waits, slow], handlers), calls


def children_of(host: FlowTestHost, run_id: RunId) -> list[RunRecord]:
    return [
        r
        for r in host.stores.runs.all_runs()
        if r.parent is not None and r.parent.run_id == run_id
    ]


async def test_the_step_succeeds_with_the_child_outputs_and_the_parent_goes_on():
    host, _ = make()

    result = await host.trigger("orders", body={"order": 7})

    [child] = children_of(host, result.run_id)
    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["billing"].output == {"invoice": "inv-7"}
    assert result.steps["ship"].output == {"shipped": "inv-7"}
    assert (child.status, child.outputs, child.depth) == (
        RunStatus.SUCCEEDED,
        {"invoice": "inv-7"},
        1,
    )
    assert child.parent is not None
    assert child.parent.step_key == "billing"
    assert child.body == {"order": 7, "fail_first": None}


async def test_a_failed_child_fails_the_step_and_a_retry_starts_another_child():
    host, calls = make(retry=RetryPolicy(max_attempts=2, backoff=timedelta(seconds=1)))

    result = await host.trigger("orders", body={"order": 8, "fail_first": True})

    first, second = sorted(children_of(host, result.run_id), key=lambda r: r.started_at)
    assert (first.status, second.status) == (RunStatus.FAILED, RunStatus.SUCCEEDED)
    assert result.status is RunStatus.SUCCEEDED
    assert calls.bills == 2


async def test_a_failed_child_without_retries_fails_the_parent():
    host, _ = make()

    result = await host.trigger("orders", body={"order": 9, "fail_first": True})

    [child] = children_of(host, result.run_id)
    assert result.status is RunStatus.FAILED
    assert result.steps["billing"].error == f"Child run {child.run_id} ended Failed."
    assert result.steps["ship"].status is StepStatus.SKIPPED


async def test_cancelling_the_parent_cancels_the_child_it_waits_for():
    host, _ = make()
    started = await host.trigger("waits")
    [child] = children_of(host, started.run_id)

    await host.cancel(started.run_id, "changed my mind")

    parent = await host.result(started.run_id)
    after = await host.stores.runs.get_run(child.run_id)
    assert parent.status is RunStatus.CANCELLED
    assert after is not None
    assert after.status is RunStatus.CANCELLED
    assert after.cancel_reason == f"Its parent run {started.run_id} is Cancelled."


async def test_the_parent_deadline_reaches_the_child():
    host, _ = make()
    # A body may set its run's deadline: this parent has one minute.
    started = await host.trigger("waits", body={"runTimeoutSeconds": 60})
    [child] = children_of(host, started.run_id)

    await host.advance(timedelta(minutes=2))

    assert (await host.result(started.run_id)).status is RunStatus.TIMED_OUT
    after = await host.stores.runs.get_run(child.run_id)
    assert after is not None
    assert after.status is RunStatus.CANCELLED


class WorkerDiedError(Exception):
    pass


async def test_a_redelivered_child_step_starts_one_child(
    monkeypatch: pytest.MonkeyPatch,
):
    host, _ = make()
    started = await host.trigger("waits", settle=False)
    dispatch = host.dispatcher.take()
    request = StepRequest(
        dispatch.run_id, dispatch.step_key, JobId(dispatch.message_id)
    )

    async def dies(*args: object, **kwargs: object) -> None:
        raise WorkerDiedError

    # The worker dies once the child exists, before the step parks.
    with monkeypatch.context() as patched:
        patched.setattr(host.stores.steps, "finish", dies)
        with pytest.raises(WorkerDiedError):
            await host.orchestrator.run_step(request)
    await host.orchestrator.run_step(replace(request, redelivered=True))
    await host.settle()

    [child] = children_of(host, started.run_id)
    row = host.stores.steps.row(started.run_id, StepKey("child"))
    assert row is not None
    assert row.attempt == 2
    assert row.inputs[child_rules.CHILD] == child.run_id


async def test_depth_is_bounded():
    handlers = Handlers()
    recursive = Flow(
        FlowId("9d2f8e1a-0000-4000-8000-00000000c0a5"),
        "again",
        steps={"deeper": child_flow("again")},
    )
    host = FlowTestHost([recursive], handlers)

    result = await host.trigger("again")

    depths = sorted(r.depth for r in host.stores.runs.all_runs())
    deepest = max(host.stores.runs.all_runs(), key=lambda r: r.depth)
    deepest_step = (await host.result(deepest.run_id)).steps["deeper"]
    assert depths == list(range(child_rules.MAX_DEPTH + 1))
    assert result.status is RunStatus.FAILED
    assert "at most 8 deep" in (deepest_step.error or "")
