"""Builders for the engine's plain-call tests: a run context, rows, their answers."""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from service.engine.decision import (
    Decision,
    FinishStep,
    InsertSteps,
    SetTimer,
    SettleStep,
    Write,
)
from service.engine.model import (
    Flow,
    FlowId,
    JobId,
    Json,
    RunId,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    TriggerKey,
)
from service.engine.records import RunFacts, StepRecord
from service.engine.rounds import Limits, RunContext

W = TypeVar("W", bound=Write)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
RUN = RunId("run-1")
FLOW_ID = FlowId("9d2f8e1a-0000-4000-8000-00000000e71e")


def flow_of(steps: Mapping[str, Step], **extra: object) -> Flow:
    return Flow(FLOW_ID, "f", steps=steps, **extra)  # type: ignore[arg-type]


def context(
    steps: Mapping[str, Step],
    *,
    body: Json = None,
    stop: RunStatus | None = None,
    deadline: datetime | None = None,
    trace: Mapping[str, str] | None = None,
) -> RunContext:
    run = RunFacts(
        RUN,
        FLOW_ID,
        "f",
        TriggerKey("manual"),
        JobId("trigger-1"),
        NOW,
        body=body,
        deadline_at=deadline,
    )
    return RunContext(
        flow_of(steps),
        run,
        NOW,
        stop,
        Limits(max_output_bytes=1000, reconcile_after=timedelta(seconds=30)),
        trace=trace or {},
    )


def row(
    key: str,
    status: StepStatus = StepStatus.RUNNING,
    *,
    attempt: int = 1,
    output: Json = None,
    inputs: Mapping[str, Json] | None = None,
    stop: RunStatus | None = None,
    type_: str = "Work",
) -> StepRecord:
    return StepRecord(
        RUN,
        StepKey(key),
        type_,
        status,
        NOW,
        inputs=dict(inputs or {}),
        attempt=attempt,
        job_id=JobId(f"{RUN}:{key}:{attempt}"),
        output=output,
        stop=stop,
    )


def writes(decision: Decision, kind: type[W]) -> list[W]:
    return [w for w in decision.writes() if isinstance(w, kind)]


def inserted(decision: Decision) -> dict[str, StepStatus]:
    return {r.key: r.status for w in writes(decision, InsertSteps) for r in w.rows}


def finish_of(decision: Decision) -> FinishStep:
    [finish] = writes(decision, FinishStep)
    return finish


def released(decision: Decision) -> list[str]:
    return [r.key for r in decision.releases]


def timers(decision: Decision) -> list[SetTimer]:
    return writes(decision, SetTimer)


def settled(decision: Decision) -> dict[str, StepStatus]:
    return {w.key: w.outcome.status for w in writes(decision, SettleStep)}
