"""Every example flow reaches its expected status with the orchestrator on MongoDB.

The flow test host drives the runs (in-memory dispatcher, frozen clock), but every
record lives in a real mongod through the MongoDB stores.
"""

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from examples import (
    approval,
    batch,
    branches,
    customers,
    failures,
    hello,
    invoices,
    nightly,
    orders,
    polling,
)
from service.adapters.mongo.client import MongoStores
from service.adapters.mongo.indexes import ensure_indexes
from service.engine.model import Json, RunId, RunStatus, StepStatus
from service.orchestrator.api import Orchestrator
from service.scheduler import Scheduler, SchedulerOptions
from service.steps.handlers import Handlers
from service.testing import FlowTestHost, RunResult, StepResultView

S, F, K = StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED


class MongoHost(FlowTestHost):
    """The flow test host with its stores swapped for the MongoDB ones."""

    def __init__(self, modules: tuple[Any, ...], stores: MongoStores) -> None:
        handlers = Handlers()
        for module in modules:
            handlers.merge(module.handlers)
        super().__init__([f for m in modules for f in m.flows], handlers)
        self.mongo = stores
        self.runtime = replace(self.runtime, stores=stores)
        self.orchestrator = Orchestrator(self.runtime)
        self.scheduler = Scheduler(self.orchestrator, SchedulerOptions(owner="test"))

    async def _next_due(self) -> datetime | None:
        cursor = await self.mongo.database["timers"].aggregate(
            [
                {
                    "$project": {
                        "at": {
                            "$max": [
                                "$due_at",
                                {"$ifNull": ["$lease_until", "$due_at"]},
                            ]
                        }
                    }
                },
                {"$group": {"_id": None, "at": {"$min": "$at"}}},
            ]
        )
        found = await cursor.to_list(1)
        return found[0]["at"] if found else None

    async def result(self, run_id: RunId, *, duplicate: bool = False) -> RunResult:
        detail = await self.mongo.queries.run_detail(run_id)
        assert detail is not None
        steps: dict[str, StepResultView] = {
            row.key: StepResultView.of(row) for row in detail.steps
        }
        return RunResult(run_id, detail.run.status, steps, detail.events, duplicate)


@pytest.fixture
async def stores(mongo_db: AsyncDatabase[dict[str, Any]]) -> MongoStores:
    await ensure_indexes(mongo_db)
    return MongoStores(mongo_db)


async def test_hello_runs_its_chain(stores: MongoStores):
    result = await MongoHost((hello,), stores).trigger("hello", body={"name": "Ada"})

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["shout"].output == {"text": "HELLO, ADA!"}
    assert (result.events[0].type, result.events[-1].type) == (
        "run.started",
        "run.completed",
    )


async def test_orders_fan_out_and_join(stores: MongoStores):
    body: Json = {"order_id": 7, "lines": [{"sku": "a"}], "amount": 12, "customer": {}}

    result = await MongoHost((orders,), stores).trigger("orders", body=body)

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["ship"].output == {"shipped": 7, "charged": 12}
    assert all(s.attempts == 1 for s in result.steps.values())


async def test_orders_without_lines_fail_and_skip_the_rest(stores: MongoStores):
    result = await MongoHost((orders,), stores).trigger(
        "orders", body={"order_id": 8, "lines": []}
    )

    assert result.status is RunStatus.FAILED
    assert {k: s.status for k, s in result.steps.items()} == {
        "validate": F,
        "reserve": K,
        "charge": K,
        "notify": K,
        "ship": K,
    }


@pytest.mark.parametrize(
    ("score", "taken", "skipped"),
    [(80, "approve", "reject"), (10, "reject", "approve")],
    ids=["approved", "rejected"],
)
async def test_branches_take_one_side_and_join(
    stores: MongoStores, score: int, taken: str, skipped: str
):
    result = await MongoHost((branches,), stores).trigger(
        "branches", body={"score": score}
    )

    assert result.status is RunStatus.SUCCEEDED
    assert (result.steps[taken].status, result.steps[skipped].status) == (S, K)
    assert result.steps["record"].status is S


@pytest.mark.parametrize(
    ("fail", "ran", "skipped"),
    [(True, "compensate", "confirm"), (False, "confirm", "compensate")],
    ids=["failure-handled", "happy-path"],
)
async def test_failures_are_handled_by_the_on_failure_branch(
    stores: MongoStores, fail: bool, ran: str, skipped: str
):
    result = await MongoHost((failures,), stores).trigger(
        "failures", body={"fail": fail}
    )

    assert result.status is RunStatus.SUCCEEDED
    assert (result.steps[ran].status, result.steps[skipped].status) == (S, K)


async def test_batch_runs_each_item_and_then_summarizes(stores: MongoStores):
    items: list[Json] = [f"item-{n}" for n in range(40)]

    result = await MongoHost((batch,), stores).trigger("batch", body={"items": items})

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["items"].output == {"iterations": 40, "failed": 0}
    assert result.steps["items.39.process"].output == {"index": 39, "item": "item-39"}
    assert result.steps["summarize"].status is S


async def test_polling_parks_until_the_job_is_done(stores: MongoStores):
    result = await MongoHost((polling,), stores).trigger("polling", body={"polls": 3})

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["check"].attempts == 3


async def test_approval_waits_for_its_signal(stores: MongoStores):
    host = MongoHost((approval,), stores)
    waiting = await host.trigger("approval", body={"approver": "ops"})

    answer = await host.signal(waiting.run_id, "APPROVAL", {"by": "ops"})
    result = await host.result(waiting.run_id)

    assert waiting.status is RunStatus.RUNNING
    assert waiting.steps["approval"].status is StepStatus.PENDING
    assert answer.status == "delivered"
    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["fulfil"].output == {"fulfilled": True, "approved_by": "ops"}


async def test_approval_times_out_without_a_signal(stores: MongoStores):
    host = MongoHost((approval,), stores)
    waiting = await host.trigger("approval")

    await host.advance(timedelta(hours=2))
    result = await host.result(waiting.run_id)

    assert result.status is RunStatus.FAILED
    assert "not received within 3600s" in (result.steps["approval"].error or "")


async def test_nightly_fires_on_its_cron(stores: MongoStores):
    host = MongoHost((nightly,), stores)

    await host.advance(timedelta(days=1, hours=1))

    runs, total = await stores.queries.find_runs()
    assert total == 1
    assert (runs[0].status, runs[0].trigger_key) == (RunStatus.SUCCEEDED, "nightly")


async def test_customer_syncs_take_turns_per_customer(stores: MongoStores):
    host = MongoHost((customers,), stores)
    started = [
        await host.trigger("customer-sync", body={"customer": c}, settle=False)
        for c in ("ada", "ada", "bob", "ada")
    ]

    waiting = [r.status for r in started]
    await host.settle()
    runs = [await stores.runs.get_run(r.run_id) for r in started]

    assert waiting == [
        RunStatus.RUNNING,
        RunStatus.QUEUED,
        RunStatus.RUNNING,
        RunStatus.QUEUED,
    ]
    assert [(r.status, r.admitted) for r in runs if r] == [
        (RunStatus.SUCCEEDED, 1),
        (RunStatus.SUCCEEDED, 2),
        (RunStatus.SUCCEEDED, 1),
        (RunStatus.SUCCEEDED, 3),
    ]
    slots = await stores.slots.slots(customers.flow.id, "ada")
    assert slots is not None
    assert (slots.holders, slots.waiting, slots.tickets) == ((), (), 3)


async def test_invoicing_gets_its_invoice_from_a_child_run(stores: MongoStores):
    host = MongoHost((invoices,), stores)

    result = await host.trigger("invoicing", body={"order": 7, "amount": 10})

    detail = await stores.queries.run_detail(result.run_id)
    assert detail is not None
    [child] = detail.children
    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["send"].output == {"sent": "INV-7", "total": 12.0}
    assert (child.flow_name, child.outputs) == (
        "invoice",
        {"number": "INV-7", "total": 12.0},
    )
