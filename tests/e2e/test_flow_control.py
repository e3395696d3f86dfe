"""Flow control through real worker processes, RabbitMQ and MongoDB: step timeouts,
non-retryable failures, concurrency keys (sampled from MongoDB, through a kill -9) and
child flows (one child per try, whatever the redeliveries)."""

import asyncio
import json
import signal
from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any
from uuid import uuid4

import aio_pika

from service.adapters.clock import SystemClock
from service.adapters.mongo.queries import RunQueries
from tests.e2e.harness import Deployment, Document, Worker, eventually, json_field

MODULES = "tests.e2e.control_flows"
KEYS = 4
LIMIT = 2
KEYED_RUNS = 64
CLOCK = SystemClock()


async def started(deployment: Deployment, **env: str) -> Worker:
    worker = deployment.start_worker(
        FLOW_MODULES=MODULES, STEP_TIMEOUT_GRACE="0.5", **env
    )
    await worker.ready()
    return worker


def logged(workers: list[Worker], event: str) -> list[Document]:
    return [e for w in workers for e in w.events() if e.get("event") == event]


async def only_row(deployment: Deployment, run: Document) -> Document:
    [row] = await deployment.steps(run_id=run["_id"])
    return row


async def test_a_step_past_its_timeout_is_failed_and_retried(deployment: Deployment):
    worker = await started(deployment)

    job = await deployment.trigger("slow", {"recover_on": 2})
    [run] = await deployment.finished([job], within=60)

    row = await only_row(deployment, run)
    assert run["status"] == "Succeeded"
    assert [a["error"] for a in row["attempts"]] == ["Step timed out after 2 s.", None]
    assert json_field(row, "output") == {"recovered_on": 2}
    assert [e["step_attempt"] for e in logged([worker], "hang_called")] == [1, 2]
    assert len(logged([worker], "step_timed_out")) == 1


async def test_a_plain_def_past_its_timeout_fails_while_its_thread_runs_on(
    deployment: Deployment,
):
    worker = await started(deployment)

    job = await deployment.trigger("blocking", {})
    [run] = await deployment.finished([job], within=60)
    await eventually(
        lambda: _async(logged([worker], "block_returned")),
        within=30,
        what="the thread ran to its end",
    )

    row = await only_row(deployment, run)
    assert run["status"] == "Failed"
    assert row["error"] == "Step timed out after 1 s."
    assert json_field(row, "output") is None  # what the thread returned is lost
    assert worker.http("/healthz")[0] == 200


async def test_a_worker_dying_in_a_step_never_gives_it_a_new_timeout(
    deployment: Deployment,
):
    first = await started(deployment)
    job = await deployment.trigger("slow", {})  # it hangs on every attempt
    run = await eventually(
        lambda: deployment.run_of_job(job), within=30, what="the run exists"
    )

    async def running() -> Document | None:
        rows = await deployment.steps(run_id=run["_id"], status="Running")
        return rows[0] if rows else None

    row = await eventually(running, within=30, what="the step runs")
    await eventually(
        lambda: _async(logged([first], "hang_called")),
        within=30,
        what="the handler was called",
    )  # claimed is not yet called: killed in between, there is no attempt to count
    first.send(signal.SIGKILL)
    await first.exited(within=10)
    # Nothing runs the step until its timeout (counted from the attempt that died)
    # has passed: the worker that takes it over must not start a new one.
    passed = row["attempts"][0]["started_at"] + timedelta(seconds=2.5)
    await eventually(
        lambda: _async(CLOCK.now() >= passed), within=10, what="timeout passed"
    )
    second = await started(deployment)
    [done] = await deployment.finished([job], within=60)

    row = await only_row(deployment, done)
    attempts = [(a["status"], a["error"]) for a in row["attempts"]]
    assert done["status"] == "Failed"
    assert attempts == [("Running", None), ("Failed", "Step timed out after 2 s.")]
    assert [e["step_attempt"] for e in logged([first], "hang_called")] == [1]
    assert logged([second], "hang_called") == []  # failed at once, not run again


async def test_a_non_retryable_failure_ends_the_step_at_once(deployment: Deployment):
    worker = await started(deployment)

    job = await deployment.trigger("declining", {})
    [run] = await deployment.finished([job], within=60)

    row = await only_row(deployment, run)
    assert run["status"] == "Failed"
    assert row["attempt"] == 1
    assert row["error"].startswith("NonRetryable: card declined")
    assert len(logged([worker], "decline_called")) == 1


class Peaks:
    """The most runs of each key seen Running, and holding a slot, at once."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self.holders: Counter[str] = Counter()
        self.samples = 0

    async def watch(self, deployment: Deployment, stop: asyncio.Event) -> None:
        db = deployment.db
        while not stop.is_set():
            cursor = await db.runs.aggregate(
                [
                    {"$match": {"flow_name": "keyed", "status": "Running"}},
                    {"$group": {"_id": "$ckey", "n": {"$sum": 1}}},
                ]
            )
            for group in await cursor.to_list(None):
                self.running[group["_id"]] = max(self.running[group["_id"]], group["n"])
            for slots in await db.slots.find({}).to_list(None):
                held = len(slots["holders"])
                self.holders[slots["key"]] = max(self.holders[slots["key"]], held)
            self.samples += 1
            await asyncio.sleep(0.02)


async def keyed_load(deployment: Deployment) -> list[str]:
    """64 triggers of `keyed` over 4 keys, published at once; their message ids."""
    ids = [str(uuid4()) for _ in range(KEYED_RUNS)]
    channel = await (await deployment.connection()).channel()
    try:
        exchange = await channel.get_exchange(f"{deployment.prefix}.ingress")
        for n, message_id in enumerate(ids):
            body = {"flow": "keyed", "body": {"key": f"k{n % KEYS}", "n": n}}
            await exchange.publish(
                aio_pika.Message(
                    json.dumps(body).encode(),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    type="trigger",
                    message_id=message_id,
                ),
                "trigger.keyed",
                mandatory=True,
            )
    finally:
        await channel.close()
    return ids


def admitted_in_ticket_order(runs: list[Document]) -> dict[str, list[int]]:
    """Per key, the tickets of its runs in the order they were admitted."""
    by_key: dict[str, list[Document]] = defaultdict(list)
    for run in runs:
        if run.get("admitted") is not None:
            by_key[run["ckey"]].append(run)
    return {
        key: [r["ticket"] for r in sorted(found, key=lambda r: r["admitted"])]
        for key, found in by_key.items()
    }


async def run_keyed(
    deployment: Deployment, *, kill: bool
) -> tuple[list[Document], Peaks]:
    workers = [await started(deployment), await started(deployment)]
    peaks = Peaks()
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(peaks.watch(deployment, stop))
        try:
            job_ids = await keyed_load(deployment)
            if kill:

                async def some_done() -> bool:
                    return await deployment.count_runs(status="Succeeded") >= 8

                await eventually(some_done, within=60, what="8 runs done")
                workers[0].send(signal.SIGKILL)
                await workers[0].exited(within=10)
                await started(deployment)
            runs = await deployment.finished(job_ids, within=180)
        finally:
            stop.set()
    return runs, peaks


async def test_a_key_never_runs_more_than_its_limit_and_keeps_trigger_order(
    deployment: Deployment,
):
    runs, peaks = await run_keyed(deployment, kill=False)

    assert Counter(r["status"] for r in runs) == {"Succeeded": KEYED_RUNS}
    assert peaks.samples > 10
    assert set(peaks.running) == {f"k{n}" for n in range(KEYS)}
    assert max(peaks.running.values()) == LIMIT  # reached, never passed
    assert max(peaks.holders.values()) == LIMIT
    order = admitted_in_ticket_order(runs)
    assert sum(len(tickets) for tickets in order.values()) == KEYED_RUNS
    assert all(tickets == sorted(tickets) for tickets in order.values()), order
    slots = await deployment.db.slots.find({}).to_list(None)
    assert [(s["holders"], s["waiting"]) for s in slots] == [([], [])] * KEYS


async def test_a_worker_killed_mid_way_loses_no_slot(deployment: Deployment):
    runs, peaks = await run_keyed(deployment, kill=True)

    assert Counter(r["status"] for r in runs) == {"Succeeded": KEYED_RUNS}
    assert max(peaks.running.values()) <= LIMIT
    assert max(peaks.holders.values()) <= LIMIT
    order = admitted_in_ticket_order(runs)
    assert all(tickets == sorted(tickets) for tickets in order.values()), order
    slots = await deployment.db.slots.find({}).to_list(None)
    assert [(s["holders"], s["waiting"]) for s in slots] == [([], [])] * KEYS


async def children_of(deployment: Deployment, run_id: str) -> list[Document]:
    return await deployment.runs(**{"parent.run_id": run_id})


async def test_a_child_flow_runs_and_its_outputs_come_back(deployment: Deployment):
    await started(deployment)

    job = await deployment.trigger("parent", {"n": 21})
    [run] = await deployment.finished([job], within=60)

    [child] = await children_of(deployment, run["_id"])
    rows = {r["key"]: r for r in await deployment.steps(run_id=run["_id"])}
    detail = await RunQueries(deployment.db).run_detail(run["_id"])
    assert run["status"] == "Succeeded"
    assert json_field(rows["kid"], "output") == {"doubled": 42}
    assert json_field(rows["after"], "output") == {"key": None, "n": 42}
    assert (child["status"], child["depth"]) == ("Succeeded", 1)
    assert child["parent"] == {"run_id": run["_id"], "step_key": "kid"}
    assert detail is not None
    assert [c.run_id for c in detail.children] == [child["_id"]]


async def test_a_failed_child_fails_its_step(deployment: Deployment):
    await started(deployment)

    job = await deployment.trigger("parent", {"n": 1, "fail": True})
    [run] = await deployment.finished([job], within=60)

    [child] = await children_of(deployment, run["_id"])
    rows = {r["key"]: r for r in await deployment.steps(run_id=run["_id"])}
    assert (run["status"], child["status"]) == ("Failed", "Failed")
    assert rows["kid"]["error"] == f"Child run {child['_id']} ended Failed."
    assert rows["after"]["status"] == "Skipped"


async def test_cancelling_a_parent_cancels_the_child_it_waits_for(
    deployment: Deployment,
):
    await started(deployment)
    job = await deployment.trigger("waiting-parent", {})
    run = await eventually(
        lambda: deployment.run_of_job(job), within=30, what="the run exists"
    )

    async def waiting_child() -> list[Document]:
        kids = await children_of(deployment, run["_id"])
        steps = await deployment.steps(status="Pending", key="wait")
        return kids if kids and steps else []

    [child] = await eventually(waiting_child, within=30, what="the child waits")
    await deployment.cancel(run["_id"], "not needed")
    [done] = await deployment.finished([job], within=60)

    stopped = await deployment.db.runs.find_one({"_id": child["_id"]})
    assert done["status"] == "Cancelled"
    assert stopped is not None
    assert stopped["status"] == "Cancelled"
    assert stopped["cancel"]["reason"] == f"Its parent run {run['_id']} is Cancelled."


async def test_a_worker_killed_among_child_flows_starts_one_child_per_step(
    deployment: Deployment,
):
    first = await started(deployment)
    job_ids = [await deployment.trigger("parent", {"n": n}) for n in range(30)]

    async def some_done() -> bool:
        return await deployment.count_runs(flow_name="parent", status="Succeeded") >= 3

    await eventually(some_done, within=60, what="3 parents done")
    first.send(signal.SIGKILL)
    await first.exited(within=10)
    await started(deployment)
    runs = await deployment.finished(job_ids, within=120)

    assert Counter(r["status"] for r in runs) == {"Succeeded": 30}
    children = await deployment.runs(flow_name="kid")
    per_parent = Counter(c["parent"]["run_id"] for c in children)
    assert sorted(per_parent.values()) == [1] * 30
    assert all(c["status"] == "Succeeded" for c in children)


async def _async(value: Any) -> Any:
    return value
