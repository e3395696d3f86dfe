"""The dashboard's actions against a real worker process, RabbitMQ and MongoDB.

Each action publishes the control message `flowctl` publishes; the test reads the
worker's reply on the next page (the flash) and the effect in MongoDB. Dead letters
are put in the queue as the consumer writes them, then listed, shown, replayed, purged.
"""

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import aio_pika
import httpx
import pytest

from tests.dashboard_support import put_dead_letter, served_dashboard, signed_in, token
from tests.e2e.harness import PATIENT, Deployment, eventually

FLOWS = (
    "examples.hello,examples.approval,examples.nightly,tests.integration.flowctl_flows"
)
WAIT = 30.0
NIGHTLY = "1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0008"
HELLO = "1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0001"


@pytest.fixture
async def deployment(
    rabbitmq_url: str, mongodb_url: str, tmp_path: Path
) -> AsyncIterator[Deployment]:
    made = Deployment(amqp_url=rabbitmq_url, mongodb_url=mongodb_url, logs=tmp_path)
    worker = made.start_worker(FLOW_MODULES=FLOWS, **PATIENT)
    await worker.ready()
    yield made
    print(made.report())  # noqa: T201 - shown by pytest when the test failed
    await made.close()


@pytest.fixture
async def ada(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with served_dashboard(
        mongodb_url=deployment.mongodb_url,
        database=deployment.database,
        amqp_url=deployment.amqp_url,
        prefix=deployment.prefix,
    ) as url:
        client = await signed_in(url, "ada")
        yield client
        await client.aclose()


async def post(client: httpx.AsyncClient, path: str, **form: str) -> str:
    """POST a form (with the CSRF token); the page it leads to, with its flash."""
    answer = await client.post(path, data={**form, "csrf": token(client)})
    assert answer.status_code == 303, answer.text
    page = await client.get(answer.headers["location"])
    assert page.status_code == 200
    return page.text


def flash(page: str) -> str:
    found = re.search(
        r'<div class="flash[^"]*" role="status" id="flash">(.*?)</div>', page, re.S
    )
    assert found is not None, "no flash on the page"
    return html.unescape(" ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split()))


async def run_of(deployment: Deployment, job_id: str) -> str:
    async def created() -> str | None:
        run = await deployment.run_of_job(job_id)
        return None if run is None else str(run["_id"])

    return await eventually(created, within=WAIT, what=f"run of {job_id}")


async def status_is(deployment: Deployment, run_id: str, status: str) -> Any:
    async def reached() -> Any:
        run = await deployment.db.runs.find_one({"_id": run_id})
        return run if run is not None and run["status"] == status else None

    return await eventually(reached, within=WAIT, what=f"run {run_id} {status}")


async def parked(deployment: Deployment, run_id: str) -> None:
    async def waiting() -> bool:
        row = await deployment.db.steps.find_one({"run_id": run_id, "key": "approval"})
        return row is not None and row["status"] == "Pending"

    await eventually(waiting, within=WAIT, what=f"run {run_id} waiting")


async def test_retry_signal_cancel_and_rerun_act_through_the_worker(
    deployment: Deployment, ada: httpx.AsyncClient
):
    flaky = await run_of(deployment, await deployment.trigger("flaky", {"amount": 5}))
    await status_is(deployment, flaky, "Failed")
    retried = await post(ada, f"/runs/{flaky}/retry", step_key="charge")
    await status_is(deployment, flaky, "Succeeded")

    waiting = await run_of(deployment, await deployment.trigger("approval", {}))
    await parked(deployment, waiting)
    bad_json = await post(
        ada, f"/runs/{waiting}/signal", name="approval", payload="{by"
    )
    signalled = await post(
        ada, f"/runs/{waiting}/signal", name="approval", payload='{"by": "ops"}'
    )
    done = await status_is(deployment, waiting, "Succeeded")

    doomed = await run_of(deployment, await deployment.trigger("approval", {}))
    await parked(deployment, doomed)
    cancelled = await post(ada, f"/runs/{doomed}/cancel", reason="customer withdrew")
    stopped = await status_is(deployment, doomed, "Cancelled")

    again = await post(ada, f"/runs/{flaky}/rerun")
    copies = await deployment.runs(source_run_id=flaky)

    assert "accepted" in flash(retried)
    assert "not JSON" in flash(bad_json)
    assert "delivered" in flash(signalled)
    assert done["_id"] == waiting
    assert "accepted" in flash(cancelled)
    assert stopped["cancel"]["reason"] == "customer withdrew"
    assert "accepted" in flash(again)
    (copy,) = copies
    assert copy["_id"] in flash(again)


async def test_a_refused_action_shows_the_workers_answer(
    deployment: Deployment, ada: httpx.AsyncClient
):
    run = await run_of(deployment, await deployment.trigger("hello", {"name": "Ada"}))
    await status_is(deployment, run, "Succeeded")

    page = await post(ada, f"/runs/{run}/retry", step_key="greet")

    assert "refused" in flash(page) or "not_found" in flash(page)


async def test_flows_switch_and_schedules_pause_resume_retime_and_fire(
    deployment: Deployment, ada: httpx.AsyncClient
):
    disabled = await post(ada, f"/flows/{HELLO}/disable")
    off = await deployment.db.flows.find_one({"_id": HELLO})
    enabled = await post(ada, f"/flows/{HELLO}/enable")
    on = await deployment.db.flows.find_one({"_id": HELLO})
    base = f"/schedules/{NIGHTLY}/nightly"
    paused = await post(ada, f"{base}/pause")
    schedule_paused = await deployment.db.schedules.find_one({"flow_id": NIGHTLY})
    await post(ada, f"{base}/resume")
    retimed = await post(ada, f"{base}/cron", cron="0 3 * * *")
    overridden = await deployment.db.schedules.find_one({"flow_id": NIGHTLY})
    nonsense = await post(ada, f"{base}/cron", cron="every tuesday")
    await post(ada, f"{base}/cron", cron="0 3 * * *", clear="1")
    cleared = await deployment.db.schedules.find_one({"flow_id": NIGHTLY})
    fired = await post(ada, f"{base}/trigger")

    async def nightly_run() -> bool:
        return await deployment.count_runs(flow_id=NIGHTLY) > 0

    await eventually(nightly_run, within=WAIT, what="a nightly run")
    assert "accepted" in flash(disabled)
    assert off is not None
    assert off["enabled"] is False
    assert "accepted" in flash(enabled)
    assert on is not None
    assert on["enabled"] is True
    assert "accepted" in flash(paused)
    assert schedule_paused is not None
    assert schedule_paused["paused"] is True
    assert "accepted" in flash(retimed)
    assert overridden is not None
    assert overridden["cron_override"] == "0 3 * * *"
    assert "error" in flash(nonsense) or "refused" in flash(nonsense)
    assert cleared is not None
    assert cleared["cron_override"] is None
    assert "accepted" in flash(fired)


async def test_a_bulk_action_says_how_many_then_acts_on_that_many(
    deployment: Deployment, ada: httpx.AsyncClient
):
    waiting = [
        await run_of(deployment, await deployment.trigger("approval", {}))
        for _ in range(3)
    ]
    for run_id in waiting:
        await parked(deployment, run_id)
    failing = [
        await run_of(deployment, await deployment.trigger("flaky", {"amount": n}))
        for n in range(2)
    ]
    for run_id in failing:
        await status_is(deployment, run_id, "Failed")
    approval = "1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0007"

    confirm = await ada.post(
        "/runs/bulk/confirm",
        data={"action": "cancel", "flow": approval, "csrf": token(ada)},
    )
    cancelled = await post(
        ada, "/runs/bulk", action="cancel", flow=approval, expected="3", reason="bulk"
    )
    for run_id in waiting:
        await status_is(deployment, run_id, "Cancelled")
    retry_confirm = await ada.post(
        "/runs/bulk/confirm", data={"action": "retry", "csrf": token(ada)}
    )
    retried = await post(ada, "/runs/bulk", action="retry", expected="2")
    for run_id in failing:
        await status_is(deployment, run_id, "Succeeded")

    assert "Cancel 3 runs?" in confirm.text
    assert "3 accepted" in flash(cancelled)
    assert "Retry the failed steps of 2 runs?" in retry_confirm.text
    assert "2 accepted" in flash(retried)


async def test_dead_letters_are_listed_shown_replayed_and_purged(
    deployment: Deployment, ada: httpx.AsyncClient
):
    good = str(uuid4())
    await put_dead_letter(
        deployment.amqp_url,
        deployment.prefix,
        {"flow": "hello", "body": {"name": "from the dead"}},
        kind="trigger",
        routing_key="trigger.hello",
        reason="crashed",
        message_id=good,
    )
    await deployment.publish(
        "trigger.nope", b"not json", kind="trigger", message_id="bad-1"
    )

    async def both() -> str | None:
        page = (await ada.get("/dead-letters")).text
        return page if "bad-1" in page and good in page else None

    listed = await eventually(both, within=WAIT, what="two dead letters listed")
    shown = (await ada.get(f"/dead-letters/{good}")).text
    still = (await ada.get("/dead-letters?reason=crashed")).text
    replayed = await post(ada, "/dead-letters/replay", letter_id=good)
    run = await run_of(deployment, good)
    await status_is(deployment, run, "Succeeded")
    refused = await post(ada, "/dead-letters/purge", confirm="no")
    purged = await post(ada, "/dead-letters/purge", confirm="purge")
    async with await aio_pika.connect(deployment.amqp_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{deployment.prefix}.dead", passive=True)
        left = queue.declaration_result.message_count

    assert "not_json" in listed
    assert "crashed" in listed
    assert "from the dead" in shown
    assert "trigger.hello" in shown
    assert good in still  # showing it left it in the queue
    assert "bad-1" not in still  # filtered by reason
    assert "1 replayed, 0 failed" in flash(replayed)
    assert "type 'purge'" in flash(refused)
    assert "purged 1 letters" in flash(purged)
    assert left == 0
