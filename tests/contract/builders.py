"""Builders of the records the contract suites store: defaults, and any override."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from service.engine.model import (
    FlowId,
    JobId,
    RunId,
    StepKey,
    StepStatus,
    TriggerKey,
)
from service.engine.records import (
    FlowRecord,
    NewStep,
    RunRecord,
    Schedule,
    Timer,
    TimerKind,
    schedule_job_id,
)

START = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
"""Where the `clock` fixture starts, and the default instant of every builder."""


def a_run_id() -> RunId:
    return RunId(f"run-{uuid4().hex[:12]}")


def a_run(**overrides: Any) -> RunRecord:
    run_id = a_run_id()
    run = RunRecord(
        run_id=run_id,
        flow_id=FlowId("orders"),
        flow_name="Orders",
        trigger_key=TriggerKey("manual"),
        job_id=JobId(f"msg-{run_id}"),
        started_at=START,
        body={"order": 42, "lines": [{"sku": "A-1", "qty": 2}]},
        headers={"x-source": "tests"},
    )
    return replace(run, **overrides)


def a_step(key: str = "fetch", **overrides: Any) -> NewStep:
    step = NewStep(
        key=StepKey(key),
        type="Http",
        status=StepStatus.QUEUED,
        inputs={"url": "https://shop.test/orders/42"},
    )
    return replace(step, **overrides)


def a_timer(run_id: RunId, **overrides: Any) -> Timer:
    timer = Timer(
        id=f"timer-{uuid4().hex[:12]}",
        kind=TimerKind.REQUEUE,
        due_at=START,
        run_id=run_id,
        step_key=StepKey("poll"),
    )
    return replace(timer, **overrides)


def a_flow(**overrides: Any) -> FlowRecord:
    flow = FlowRecord(
        flow_id=FlowId("orders"),
        name="Orders",
        version="1",
        manifest={"steps": {"fetch": {"type": "Http"}}},
        updated_at=START,
    )
    return replace(flow, **overrides)


def a_schedule(**overrides: Any) -> Schedule:
    schedule = Schedule(
        job_id=schedule_job_id("orders", "nightly"),
        flow_id=FlowId("orders"),
        trigger_key=TriggerKey("nightly"),
        cron="0 2 * * *",
        next_fire_at=START + timedelta(hours=16, minutes=30),
    )
    return replace(schedule, **overrides)
