"""What operators see of flow control: `flowctl flows show`, Mermaid, `flowctl run`."""

import json
import re
from datetime import UTC, datetime, timedelta

from service.adapters.mongo.queries import RunDetail
from service.dashboard.graph import flow_graph
from service.engine.manifest import from_manifest, to_manifest
from service.engine.model import (
    Concurrency,
    Flow,
    FlowId,
    JobId,
    RetryPolicy,
    RunId,
    RunStatus,
    Step,
    StepKey,
    TriggerKey,
    child_flow,
)
from service.engine.records import FlowRecord, ParentRef, RunRecord
from service.flow_views import FlowView, flow_text
from service.mermaid import to_mermaid
from service.views import dumps, run_json, run_text

ANSI = re.compile(r"\x1b\[[0-9;]*m")
T0 = datetime(2026, 5, 17, 10, 0, tzinfo=UTC)
FLOW = Flow(
    id=FlowId("f-orders"),
    name="orders",
    steps={
        "charge": Step(
            "Charge", timeout=timedelta(seconds=30), retry=RetryPolicy(max_attempts=4)
        ),
        "invoice": child_flow(
            "billing", {"order": "@triggerBody().id"}, run_after={"charge": []}
        ),
    },
    step_timeout=timedelta(minutes=2),
    concurrency=Concurrency("@triggerBody().customer", 2),
    outputs={"invoice": "@steps('invoice').output.number"},
)
RUN = RunRecord(
    run_id=RunId("run-1"),
    flow_id=FlowId("f-orders"),
    flow_name="orders",
    trigger_key=TriggerKey("manual"),
    job_id=JobId("job-1"),
    started_at=T0,
    status=RunStatus.QUEUED,
    concurrency_key="acme",
)


def plain(text: str) -> str:
    return ANSI.sub("", text)


def test_the_manifest_keeps_every_control_through_a_round_trip():
    manifest = to_manifest(FLOW)

    assert manifest["stepTimeoutSeconds"] == 120
    assert manifest["concurrency"] == {"key": "@triggerBody().customer", "limit": 2}
    assert manifest["outputs"] == {"invoice": "@steps('invoice').output.number"}
    assert manifest["steps"]["charge"]["timeoutSeconds"] == 30  # type: ignore[index,call-overload]
    assert from_manifest(json.loads(json.dumps(manifest))) == FLOW


def test_flows_show_says_the_flow_wide_controls_and_each_step_s():
    view = FlowView(FlowRecord(FLOW.id, FLOW.name, "1", to_manifest(FLOW)), FLOW)

    text = plain(flow_text(view, now=T0))

    assert "step timeout  2m00s" in text
    assert "concurrency   2 runs at a time per @triggerBody().customer" in text
    assert "outputs       invoice" in text
    assert "charge   Charge" in text
    assert "timeout 30.0s, 4 attempts" in text
    assert "invoice  ChildFlow -> billing" in text


def test_mermaid_marks_child_flows_timeouts_and_the_limit():
    chart = to_mermaid(FLOW)

    assert "ChildFlow billing" in chart
    assert "Charge (timeout 30 s)" in chart
    assert "at most 2 per @triggerBody().customer" in chart
    assert "class step_invoice child" in chart


def test_the_dashboard_dag_names_the_child_flow_and_the_timeout():
    nodes = {n["id"]: n["type"] for n in flow_graph(FLOW)["nodes"]}

    assert nodes == {
        "charge": "Charge, timeout 30.0s",
        "invoice": "ChildFlow -> billing",
    }


def test_a_queued_run_shows_its_key_and_its_place_in_line():
    detail = RunDetail(RUN, [], [], flow=FLOW, place=3)

    text = plain(run_text(detail, now=T0))

    assert "status           Queued" in text
    assert "concurrency key  acme (waits for a slot: number 3 in line)" in text
    assert json.loads(dumps(run_json(detail)))["queue_place"] == 3


def test_a_run_shows_its_parent_its_children_and_its_outputs():
    child = RunRecord(
        run_id=RunId("run-2"),
        flow_id=FlowId("f-billing"),
        flow_name="billing",
        trigger_key=TriggerKey("parent"),
        job_id=JobId("run-1:invoice:1"),
        started_at=T0,
        status=RunStatus.SUCCEEDED,
        completed_at=T0 + timedelta(seconds=2),
        parent=ParentRef(RunId("run-1"), StepKey("invoice")),
        depth=1,
        outputs={"number": 7},
    )
    parent = RunDetail(RUN, [], [], flow=FLOW, children=[child])
    of_child = RunDetail(child, [], [])

    parent_text = plain(run_text(parent, now=T0))
    child_text = plain(run_text(of_child, now=T0))

    assert "Child runs" in parent_text
    assert "run-2   billing  invoice  Succeeded" in parent_text
    assert "parent run   run-1 (step invoice, depth 1)" in child_text
    assert 'outputs      {"number":7}' in child_text
    [listed] = json.loads(dumps(run_json(parent)))["child_runs"]
    assert (listed["run_id"], listed["flow"], listed["step_key"]) == (
        "run-2",
        "billing",
        "invoice",
    )
