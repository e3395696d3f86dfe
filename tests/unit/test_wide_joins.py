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

    @handlers.handler("Work")
    async def work(ctx: StepContext, inputs: dict[str, Any]) -> object:
        calls.append(ctx.step_key)
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
    return FlowTestHost([flow], handlers), calls


def count_rows_read(host: FlowTestHost, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    steps = host.stores.runs.steps

    async def counted(run_id: Any, keys: Any) -> dict[StepKey, StepRecord]:
        rows = await steps(run_id, keys)
        reads.append(len(rows))
        return rows

    monkeypatch.setattr(host.stores.runs, "steps", counted)
    return reads


async def test_the_join_runs_once_and_its_rows_are_read_once(
    monkeypatch: pytest.MonkeyPatch,
):
    host, calls = fan_in()
    reads = count_rows_read(host, monkeypatch)

    result = await host.trigger("fan")

    assert result.status is RunStatus.SUCCEEDED
    assert calls.count("join") == 1
    assert result.steps["join"].status is StepStatus.SUCCEEDED
    # Linear in the width: each branch's settle counts instead of reading WIDTH rows.
    assert sum(reads) < 3 * WIDTH


async def test_a_refused_branch_skips_the_join_without_waiting_for_the_rest():
    host, calls = fan_in(fail="b7")

    result = await host.trigger("fan")

    assert result.status is RunStatus.FAILED
    assert result.steps["join"].status is StepStatus.SKIPPED
    assert "join" not in calls
    skipped = [e for e in result.events if e.type == "step.skipped"]
    finished = [e for e in result.events if e.step_key == "b7"]
    assert skipped[0].step_key == "join"
    # Skipped right after b7 settled: before the branches dispatched after it finished.
    assert result.events.index(skipped[0]) < result.events.index(finished[-1]) + 3


async def test_a_join_that_accepts_failure_runs_after_every_branch():
    host, calls = fan_in(fail="b3", join_after=("Succeeded", "Failed"))

    result = await host.trigger("fan")

    assert calls[-1] == "join"
    assert calls.count("join") == 1
    assert result.steps["join"].status is StepStatus.SUCCEEDED
