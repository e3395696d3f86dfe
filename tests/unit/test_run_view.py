"""`flowctl run` as an operator reads it: steps in DAG order from the manifest, ForEach
iterations collapsed, the exception line first, signal waits, lineage, honest durations.
"""

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from service.adapters.mongo.queries import RunDetail
from service.engine.model import (
    Flow,
    FlowId,
    JobId,
    RunId,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    TriggerKey,
    for_each,
    wait_for_signal,
)
from service.engine.records import Event, LoopState, RunRecord, StepRecord, Waiter
from service.step_rows import dag_order, error_line
from service.views import dumps, run_json, run_text

ANSI = re.compile(r"\x1b\[[0-9;]*m")
T0 = datetime(2026, 5, 17, 10, 0, tzinfo=UTC)
S = timedelta(seconds=1)
RUN = RunRecord(
    run_id=RunId("run-1"),
    flow_id=FlowId("f-batch"),
    flow_name="batch",
    trigger_key=TriggerKey("manual"),
    job_id=JobId("job-1"),
    started_at=T0,
)
# Declared out of DAG order on purpose: `report` first, `fetch` last.
FLOW = Flow(
    id=FlowId("f-batch"),
    name="batch",
    steps={
        "report": Step("Report", run_after={"each": ["Succeeded"]}),
        "approve": wait_for_signal(
            "approval", timeout=timedelta(hours=1), run_after={"fetch": []}
        ),
        "each": for_each(
            "@steps('fetch').output",
            {"work": Step("Work"), "log": Step("Log", run_after={"work": []})},
            concurrency=2,
            run_after={"approve": ["Succeeded"]},
        ),
        "fetch": Step("Fetch"),
    },
)


def plain(text: str) -> str:
    return ANSI.sub("", text)


def row(key: str, status: StepStatus, **fields: object) -> StepRecord:
    return StepRecord(
        run_id=RUN.run_id,
        key=StepKey(key),
        type=str(fields.pop("type", "Work")),
        status=status,
        dispatched_at=T0,
        attempt=int(fields.pop("attempt", 1)),  # type: ignore[call-overload]
        started_at=T0,
        completed_at=None if status.is_final is False else T0 + S,
        **fields,  # type: ignore[arg-type]
    )


def steps_of(text: str) -> list[list[str]]:
    block = text.split("Steps\n", 1)[1].split("\n\n", 1)[0]
    return [line.split() for line in block.splitlines()[1:]]


def test_steps_follow_the_dag_not_the_declaration_or_the_dispatch_order():
    detail = RunDetail(
        RUN,
        [row("fetch", StepStatus.SUCCEEDED, type="Fetch")],
        [],
        flow=FLOW,
    )

    keys = [cells[0] for cells in steps_of(plain(run_text(detail, now=T0)))]

    assert dag_order(FLOW.steps) == ["fetch", "approve", "each", "report"]
    assert keys == ["fetch", "approve", "each", "each.*.work", "each.*.log", "report"]


def test_a_step_without_a_row_yet_is_listed_not_started():
    detail = RunDetail(RUN, [row("fetch", StepStatus.RUNNING)], [], flow=FLOW)

    lines = steps_of(plain(run_text(detail, now=T0 + S)))

    assert lines[1][:4] == ["approve", "WaitForSignal", "not", "started"]


def test_iterations_are_collapsed_with_counts_by_status_and_expand_on_demand():
    loop = row(
        "each",
        StepStatus.PENDING,
        type="ForEach",
        loop=LoopState(total=5, concurrency=2, finished=3, failed=1),
    )
    rows = [
        row("fetch", StepStatus.SUCCEEDED, type="Fetch"),
        loop,
        *(row(f"each.{i}", StepStatus.SUCCEEDED, type="__iteration") for i in range(3)),
        row("each.0.work", StepStatus.SUCCEEDED),
        row("each.1.work", StepStatus.FAILED, error="ValueError: bad item\n\nTrace…"),
        row("each.2.work", StepStatus.SUCCEEDED),
        row("each.3.work", StepStatus.RUNNING),
        row("each.0.log", StepStatus.SUCCEEDED, type="Log"),
    ]
    detail = RunDetail(RUN, rows, [], flow=FLOW)

    collapsed = plain(run_text(detail, now=T0 + S))
    expanded = plain(run_text(detail, now=T0 + S, iterations=True))

    work = next(
        line for line in collapsed.splitlines() if line.startswith("each.*.work")
    )
    assert "1 Running, 2 Succeeded, 1 Failed, 1 not started" in work
    assert "ValueError: bad item" in work
    assert "Trace" not in work
    log = next(line for line in collapsed.splitlines() if line.startswith("each.*.log"))
    assert "1 Succeeded, 4 not started" in log
    assert "each.1.work" not in collapsed
    keys = [cells[0] for cells in steps_of(expanded)]
    assert keys[keys.index("each") + 1 :][:4] == [
        "each.0",
        "each.0.work",
        "each.0.log",
        "each.1",
    ]
    assert "each.3.work" in keys


def test_the_error_column_starts_with_the_exception_line():
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "    raise KeyError('sku')\n"
        "KeyError: 'sku'\n"
    )

    assert error_line("KeyError: 'sku'\n\n" + traceback) == "KeyError: 'sku'"
    assert error_line(traceback) == "KeyError: 'sku'"
    assert error_line(None) == ""
    detail = RunDetail(RUN, [row("fetch", StepStatus.FAILED, error=traceback)], [])
    [fetch] = [c for c in steps_of(plain(run_text(detail, now=T0))) if c[0] == "fetch"]
    assert fetch[5:] == ["KeyError:", "'sku'"]


def test_a_signal_wait_names_its_signal_and_deadline():
    waiter = Waiter(
        RUN.run_id,
        StepKey("approve"),
        "approval",
        created_at=T0,
        expires_at=T0 + timedelta(hours=1),
    )
    rows = [
        row("fetch", StepStatus.SUCCEEDED, type="Fetch"),
        row("approve", StepStatus.PENDING, type="WaitForSignal"),
    ]
    detail = RunDetail(RUN, rows, [], flow=FLOW, waiters=[waiter])

    text = plain(run_text(detail, now=T0 + 5 * 60 * S))
    data = json.loads(dumps(run_json(detail)))

    approve = next(line for line in text.splitlines() if line.startswith("approve"))
    assert (
        "waits for signal 'approval' until 2026-05-17 11:00:00 (in 55m00s)" in approve
    )
    assert data["waits"] == [
        {
            "step_key": "approve",
            "signal": "approval",
            "since": "2026-05-17T10:00:00+00:00",
            "expires_at": "2026-05-17T11:00:00+00:00",
        }
    ]


def test_lineage_both_ways_in_text_and_json():
    derived = [
        replace(RUN, run_id=RunId(f"run-{n}"), source_run_id=RUN.run_id)
        for n in (4, 3, 2)
    ]
    detail = RunDetail(
        replace(RUN, source_run_id=RunId("run-0")),
        [],
        [],
        derived=derived,
        derived_total=25,
    )

    text = plain(run_text(detail, now=T0))
    data = json.loads(dumps(run_json(detail)))

    assert "source run    run-0" in text
    assert "derived runs  run-4, run-3, run-2 and 22 more" in text
    assert "Derived runs\nRUN ID" in text
    assert "newest 3 of 25: flowctl runs --source run-1" in text
    assert data["run"]["source_run_id"] == "run-0"
    assert [d["run_id"] for d in data["derived_runs"]] == ["run-4", "run-3", "run-2"]
    assert data["derived_total"] == 25


def test_a_reopened_run_counts_the_time_it_was_open():
    run = replace(RUN, status=RunStatus.SUCCEEDED, completed_at=T0 + 3600 * S + 3 * S)
    history = [
        Event(RUN.run_id, 1, "run.started", T0, "__run", ""),
        Event(RUN.run_id, 2, "run.completed", T0 + 2 * S, "__run", "Failed"),
        Event(RUN.run_id, 3, "step.retried", T0 + 3600 * S, "fetch", ""),
        Event(RUN.run_id, 4, "run.completed", T0 + 3603 * S, "__run", "Succeeded"),
    ]

    text = plain(run_text(RunDetail(run, [], history), now=T0 + 7200 * S))
    plain_run = plain(
        run_text(
            RunDetail(replace(run, completed_at=T0 + 2 * S), [], history[:2]), now=T0
        )
    )

    assert "duration     5.0s open, over 1h00m (reopened 1 time by a retry)" in text
    assert "duration     2.0s\n" in plain_run
