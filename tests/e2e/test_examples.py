"""Every example flow, triggered by raw JSON over AMQP, reaches its expected status."""

import json

from service.settings import EXAMPLE_FLOWS
from tests.e2e.harness import PATIENT, Deployment, eventually, json_field

CASES = [
    # (flow, body, expected run status, {step: expected status})
    ("hello", {"name": "Ada"}, "Succeeded", {"sign": "Succeeded"}),
    (
        "orders",
        {"order_id": 7, "lines": [{"sku": "a"}], "amount": 12, "customer": {}},
        "Succeeded",
        {"ship": "Succeeded"},
    ),
    ("orders", {"order_id": 8, "lines": []}, "Failed", {"ship": "Skipped"}),
    ("branches", {"score": 80}, "Succeeded", {"approve": "Succeeded"}),
    ("branches", {"score": 10}, "Succeeded", {"approve": "Skipped"}),
    ("failures", {"fail": True}, "Succeeded", {"compensate": "Succeeded"}),
    ("batch", {"items": ["a", "b", "c", "d"]}, "Succeeded", {"summarize": "Succeeded"}),
    ("polling", {"polls": 2}, "Succeeded", {"check": "Succeeded"}),
    ("nightly", None, "Succeeded", {"cleanup": "Succeeded"}),
    ("timeouts", None, "Succeeded", {"quote": "Succeeded", "book": "Succeeded"}),
    ("declines", {"card": "declined"}, "Succeeded", {"charge": "Failed"}),
    ("customer-sync", {"customer": "ada"}, "Succeeded", {"sync": "Succeeded"}),
    ("customer-sync", {"customer": "ada"}, "Succeeded", {"sync": "Succeeded"}),
    ("invoicing", {"order": 7, "amount": 10}, "Succeeded", {"send": "Succeeded"}),
]


async def test_every_example_flow_reaches_its_expected_status(deployment: Deployment):
    worker = deployment.start_worker(FLOW_MODULES=",".join(EXAMPLE_FLOWS))
    await worker.ready()

    job_ids = [await deployment.trigger(flow, body) for flow, body, _, _ in CASES]
    approval_job = await deployment.trigger("approval", {"approver": "ops"})
    approval = await _signal_when_waiting(deployment, approval_job)
    runs = await deployment.finished([*job_ids, approval_job], within=60)

    by_job = {run["job_id"]: run for run in runs}
    for job_id, (flow, _, status, steps) in zip(job_ids, CASES, strict=True):
        run = by_job[job_id]
        assert (run["flow_name"], run["status"]) == (flow, status), run
        rows = {s["key"]: s for s in await deployment.steps(run_id=run["_id"])}
        assert {k: rows[k]["status"] for k in steps} == steps
        assert all(
            row["status"] in {"Succeeded", "Failed", "Skipped"} for row in rows.values()
        )
    assert by_job[approval_job]["status"] == "Succeeded"
    fulfil = await deployment.db.steps.find_one({"run_id": approval, "key": "fulfil"})
    assert fulfil is not None
    assert json_field(fulfil, "output") == {"fulfilled": True, "approved_by": "ops"}


async def test_a_run_keeps_its_trigger_message_id_as_job_id(deployment: Deployment):
    worker = deployment.start_worker(**PATIENT)
    await worker.ready()

    job_id = await deployment.trigger("steady", {"n": 1}, message_id="order-42-created")
    [run] = await deployment.finished([job_id], within=30)

    assert run["job_id"] == "order-42-created"
    assert run["status"] == "Succeeded"
    steps = await deployment.steps(run_id=run["_id"])
    assert sorted(s["key"] for s in steps) == ["one", "three", "two"]
    # Each attempt's job id is the id of the run_step message that executed it.
    assert {s["attempts"][0]["job_id"] for s in steps} == {
        f"{run['_id']}:{key}:1" for key in ("one", "two", "three")
    }


async def test_the_health_port_answers_probes_and_scrapes(deployment: Deployment):
    worker = deployment.start_worker()
    await worker.ready()
    job_id = await deployment.trigger("steady", {"n": 1})
    await deployment.finished([job_id], within=30)

    healthz = worker.http("/healthz")
    readyz = worker.http("/readyz")
    status, scraped = worker.http("/metrics")
    missing = worker.http("/nope")

    assert healthz == (200, "ok\n")
    assert readyz == (200, "ready\n")
    assert status == 200
    assert 'flow_messages_consumed_total{kind="trigger",outcome="acked"} 1.0' in scraped
    assert (
        'flow_messages_consumed_total{kind="run_step",outcome="acked"} 3.0' in scraped
    )
    assert "flow_runs_started_total" in scraped
    assert missing[0] == 404


async def _signal_when_waiting(deployment: Deployment, job_id: str) -> str:
    """Once the approval step of the run waits, send it its signal; the run id."""

    async def waiting() -> str | None:
        run = await deployment.run_of_job(job_id)
        if run is None:
            return None
        step = await deployment.db.steps.find_one(
            {"run_id": run["_id"], "key": "approval", "status": "Pending"}
        )
        return run["_id"] if step is not None else None

    run_id = await eventually(
        waiting, within=30, what="approval waiting", alive=deployment.check_alive
    )
    signal = {"run_id": run_id, "signal": "APPROVAL", "payload": {"by": "ops"}}
    await deployment.publish(
        "control.signal", json.dumps(signal).encode(), kind="signal", message_id="sig-1"
    )
    return run_id
