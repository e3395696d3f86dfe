"""Every example flow runs to its expected terminal status in the flow test host."""

from datetime import timedelta

import pytest

from examples import (
    approval,
    batch,
    branches,
    customers,
    declines,
    failures,
    hello,
    invoices,
    nightly,
    orders,
    polling,
    timeouts,
)
from service.engine.model import Json, RunStatus, StepStatus
from service.steps.handlers import Handlers
from service.testing import FlowTestHost

S, F, K = StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED


def host_for(*modules) -> FlowTestHost:
    handlers = Handlers()
    flows = []
    for module in modules:
        handlers.merge(module.handlers)
        flows.extend(module.flows)
    return FlowTestHost(flows, handlers)


async def test_hello_runs_its_chain():
    host = host_for(hello)

    result = await host.trigger("hello", body={"name": "Ada"})

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["shout"].output == {"text": "HELLO, ADA!"}
    assert result.events[0].type == "run.started"
    assert result.events[-1].type == "run.completed"


async def test_orders_fan_out_and_join():
    host = host_for(orders)
    body: dict[str, Json] = {
        "order_id": 7,
        "lines": [{"sku": "a"}],
        "amount": 12,
        "customer": {"email": "x@y"},
    }

    result = await host.trigger("orders", body=body)

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["ship"].output == {"shipped": 7, "charged": 12}
    assert all(s.attempts == 1 for s in result.steps.values())


async def test_orders_with_no_lines_fails_and_skips_everything_after():
    host = host_for(orders)

    result = await host.trigger("orders", body={"order_id": 8, "lines": []})

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
async def test_branches_take_one_side_and_join(score, taken, skipped):
    host = host_for(branches)

    result = await host.trigger("branches", body={"score": score})

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps[taken].status is S
    assert result.steps[skipped].status is K
    assert "evaluated to false" in (result.steps[skipped].error or "")
    assert result.steps["record"].status is S


@pytest.mark.parametrize(
    ("fail", "ran", "skipped"),
    [(True, "compensate", "confirm"), (False, "confirm", "compensate")],
    ids=["failure-handled", "happy-path"],
)
async def test_failures_are_handled_by_the_on_failure_branch(fail, ran, skipped):
    host = host_for(failures)

    result = await host.trigger("failures", body={"fail": fail})

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps[ran].status is S
    assert result.steps[skipped].status is K


async def test_batch_runs_each_item_and_then_summarizes():
    host = host_for(batch)

    result = await host.trigger("batch", body={"items": ["a", "b", "c", "d", "e"]})

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["items"].output == {"iterations": 5, "failed": 0}
    assert result.steps["items.4.process"].output == {"index": 4, "item": "e"}
    assert result.steps["summarize"].status is S


async def test_polling_parks_until_the_job_is_done():
    host = host_for(polling)

    result = await host.trigger("polling", body={"polls": 3})

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["check"].attempts == 3
    assert result.steps["publish"].output == {
        "published": {"status": "done", "polls": 3}
    }


async def test_approval_waits_for_its_signal():
    host = host_for(approval)
    waiting = await host.trigger("approval", body={"approver": "ops"})

    answer = await host.signal(waiting.run_id, "APPROVAL", {"by": "ops"})
    result = await host.result(waiting.run_id)

    assert waiting.status is RunStatus.RUNNING
    assert waiting.steps["approval"].status is StepStatus.PENDING
    assert answer.status == "delivered"
    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["fulfil"].output == {"fulfilled": True, "approved_by": "ops"}


async def test_approval_times_out_without_a_signal():
    host = host_for(approval)
    waiting = await host.trigger("approval")

    await host.advance(timedelta(hours=2))
    result = await host.result(waiting.run_id)

    assert result.status is RunStatus.FAILED
    assert "not received within 3600s" in (result.steps["approval"].error or "")


async def test_nightly_fires_on_its_cron():
    host = host_for(nightly)
    await host.advance(timedelta(days=1, hours=1))

    runs = host.stores.runs.all_runs()

    assert len(runs) == 1
    assert runs[0].status is RunStatus.SUCCEEDED
    assert runs[0].trigger_key == "nightly"


async def test_timeouts_retries_the_step_that_hung_past_its_timeout():
    host = host_for(timeouts)

    result = await host.trigger("timeouts")

    [row] = [r for r in host.stores.steps.rows_of(result.run_id) if r.key == "quote"]
    assert result.status is RunStatus.SUCCEEDED
    assert [a.error for a in row.attempts] == ["Step timed out after 1 s.", None]
    assert result.steps["book"].output == {"booked_at": 42.5}


@pytest.mark.parametrize(
    ("card", "charge", "apologise"), [("declined", F, S), ("visa", S, K)], ids=str
)
async def test_declines_fails_a_declined_card_at_once(card, charge, apologise):
    host = host_for(declines)

    result = await host.trigger("declines", body={"card": card, "amount": 10})

    assert result.status is RunStatus.SUCCEEDED
    assert (result.steps["charge"].status, result.steps["charge"].attempts) == (
        charge,
        1,
    )
    assert result.steps["apologise"].status is apologise


async def test_customer_syncs_run_one_at_a_time_per_customer_in_order():
    host = host_for(customers)
    started = [
        await host.trigger("customer-sync", body={"customer": c}, settle=False)
        for c in ("ada", "ada", "bob", "ada")
    ]

    waiting = [r.status for r in started]
    await host.settle()
    runs = [await host.stores.runs.get_run(r.run_id) for r in started]

    assert waiting == [
        RunStatus.RUNNING,
        RunStatus.QUEUED,
        RunStatus.RUNNING,
        RunStatus.QUEUED,
    ]
    assert [r.status for r in runs if r] == [RunStatus.SUCCEEDED] * 4
    assert [(r.concurrency_key, r.admitted) for r in runs if r] == [
        ("ada", 1),
        ("ada", 2),
        ("bob", 1),
        ("ada", 3),
    ]


async def test_invoicing_waits_for_its_invoice_child_and_sends_its_outputs():
    host = host_for(invoices)

    result = await host.trigger("invoicing", body={"order": 7, "amount": 10})

    [child] = [r for r in host.stores.runs.all_runs() if r.parent is not None]
    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["invoice"].output == {"number": "INV-7", "total": 12.0}
    assert result.steps["send"].output == {"sent": "INV-7", "total": 12.0}
    assert (child.flow_name, child.status) == ("invoice", RunStatus.SUCCEEDED)
