"""Events as users read them: stored events merged with those of the attempts."""

from datetime import UTC, datetime, timedelta
from typing import Any

from service.engine.model import (
    ITERATION,
    Flow,
    FlowId,
    JobId,
    RunId,
    Step,
    StepKey,
    StepStatus,
    TriggerKey,
)
from service.engine.records import Attempt, Event, RunRecord, StepRecord
from service.engine.timeline import MAX_MESSAGE, timeline
from service.steps.handlers import Failed, Handlers, StepContext
from service.testing import FlowTestHost

RUN = RunId("run-1")
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)
THE_RUN = RunRecord(
    RUN, FlowId("flow-1"), "orders", TriggerKey("manual"), JobId("job-0"), T0
)


def row(key: str, *attempts: Attempt, type: str = "Work") -> StepRecord:
    status = attempts[-1].status if attempts else StepStatus.QUEUED
    return StepRecord(
        RUN, StepKey(key), type, status, T0, attempt=len(attempts), attempts=attempts
    )


def attempt(n: int, start: int, end: int | None, status: StepStatus, error=None):
    return Attempt(
        n,
        JobId(f"job-{n}"),
        T0 + start * MS,
        status,
        None if end is None else T0 + end * MS,
        error,
    )


def stored(seq: int, type: str, at: int, key: str = "__run") -> Event:
    return Event(RUN, seq, type, T0 + at * MS, key, type)


def test_attempts_become_started_and_completed_or_failed_events_in_time_order():
    rows = [
        row("a", attempt(1, 1, 2, StepStatus.SUCCEEDED)),
        row(
            "b",
            attempt(1, 3, 4, StepStatus.PENDING, "retrying"),
            attempt(2, 6, 7, StepStatus.FAILED, "boom" * 1000),
        ),
        row("c", attempt(1, 8, None, StepStatus.RUNNING)),
    ]
    events = timeline(
        THE_RUN,
        [stored(2, "step.pending", 4, "b"), stored(3, "step.skipped", 7, "d")],
        rows,
    )

    assert [(e.seq, e.type, e.step_key) for e in events] == [
        (1, "run.started", "__run"),
        (2, "step.started", "a"),
        (3, "step.completed", "a"),
        (4, "step.started", "b"),
        (5, "step.pending", "b"),
        (6, "step.started", "b"),
        (7, "step.skipped", "d"),
        (8, "step.failed", "b"),
        (9, "step.started", "c"),
    ]
    assert events[0].message == "Flow run started via trigger 'manual'."
    assert events[2].message == "Step 'a' completed with status Succeeded."
    assert events[7].message == ("boom" * 1000)[:MAX_MESSAGE]


def test_at_one_instant_the_run_starts_first_and_completes_last():
    rows = [row("a", attempt(1, 0, 0, StepStatus.SKIPPED))]

    events = timeline(THE_RUN, [stored(2, "run.completed", 0)], rows)

    assert [e.type for e in events] == [
        "run.started",
        "step.started",
        "step.completed",
        "run.completed",
    ]


def test_iteration_rows_and_unclaimed_rows_add_nothing_to_the_start():
    rows = [
        row("loop.0", attempt(1, 1, 2, StepStatus.SUCCEEDED), type=ITERATION),
        row("never"),
    ]

    assert [e.type for e in timeline(THE_RUN, [], rows)] == ["run.started"]


async def test_a_run_reopened_by_a_retry_shows_both_completions():
    calls: list[int] = []
    handlers = Handlers()

    @handlers.handler("FailOnce")
    async def fail_once(ctx: StepContext, inputs: dict[str, Any]) -> object:
        calls.append(ctx.attempt)
        return Failed("first call") if len(calls) == 1 else {"ok": True}

    flow = Flow(
        FlowId("9d2f8e1a-0000-4000-8000-0000000000e1"), "f", {"a": Step("FailOnce")}
    )
    host = FlowTestHost([flow], handlers)
    failed = await host.trigger("f")

    await host.retry(failed.run_id, "a")
    again = await host.retry(failed.run_id, "a")  # refused: nothing to retry now
    result = await host.result(failed.run_id)

    assert again.status == "refused"
    completions = [e.message for e in result.events if e.type == "run.completed"]
    assert completions == [
        "Run completed with status Failed.",
        "Run completed with status Succeeded.",
    ]
    assert result.events[-1].type == "run.completed"
