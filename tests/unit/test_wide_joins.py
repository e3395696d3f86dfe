"""A join after a wide fan-out: counted, not re-read, until its last branch settles."""

from typing import Any

import pytest

from service.engine.model import (
    Flow,
    FlowId,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    after,
)
from service.engine.records import StepRecord
from service.steps.handlers import Failed, Handlers, StepContext
from service.testing import FlowTestHost

WIDTH = 200


def fan_in(*, fail: str | None = None, join_after: tuple[str, ...] = ("Succeeded",)):
    calls: list[str] = []
    handlers = Handlers()
    hosts: list[FlowTestHost] = []

    @handlers.handler("Work")
    async def work(ctx: StepContext, inputs: dict[str, Any]) -> object:
        rows = hosts[0].stores.steps.rows_of(ctx.run_id)
        join = "+join" if any(r.key == "join" for r in rows) else ""
        calls.append(ctx.step_key + join)
        return Failed("no") if ctx.step_key == fail else {"k": ctx.step_key}

    branches = {
        f"b{n}": Step("Work", run_after={"a": ["Succeeded"]}) for n in range(WIDTH)
    }
    steps = {
        "a": Step("Work"),
        **branches,
        "join": Step("Work", run_after={k: after(*join_after) for k in branches}),
    }
    flow = Flow(FlowId("9d2f8e1a-0000-4000-8000-0000000001a1"), "fan", steps=steps)
    hosts.append(FlowTestHost([flow], handlers))
    return hosts[0], calls


def count_rows_read(host: FlowTestHost, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    steps = host.stores.steps.steps

    async def counted(run_id: Any, keys: Any) -> dict[StepKey, StepRecord]:
        rows = await steps(run_id, keys)
        reads.append(len(rows))
        return rows

    monkeypatch.setattr(host.stores.steps, "steps", counted)
    return reads


async def test_the_join_runs_once_and_its_rows_are_read_once(
    monkeypatch: pytest.MonkeyPatch,
):
    host, calls = fan_in()
    reads = count_rows_read(host, monkeypatch)

    result = await host.trigger("fan")

    assert result.status is RunStatus.SUCCEEDED
    assert calls.count("join+join") == 1
    assert result.steps["join"].status is StepStatus.SUCCEEDED
    # Linear in the width: each branch's settle counts instead of reading WIDTH rows.
    assert sum(reads) < 3 * WIDTH


async def test_a_refused_branch_skips_the_join_without_waiting_for_the_rest():
    host, calls = fan_in(fail="b7")

    result = await host.trigger("fan")

    assert result.status is RunStatus.FAILED
    assert result.steps["join"].status is StepStatus.SKIPPED
    assert not any(call.startswith("join") for call in calls)
    # a, b0..b7 ran before the join had a row; every branch after b7 saw it skipped.
    assert calls[:9] == ["a", *(f"b{n}" for n in range(8))]
    assert calls[9:] == [f"b{n}+join" for n in range(8, WIDTH)]


async def test_a_join_that_accepts_failure_runs_after_every_branch():
    host, calls = fan_in(fail="b3", join_after=("Succeeded", "Failed"))

    result = await host.trigger("fan")

    assert calls[-1] == "join+join"
    assert len(calls) == WIDTH + 2
    assert result.steps["join"].status is StepStatus.SUCCEEDED
