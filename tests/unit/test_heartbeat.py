"""The heartbeat of a running step: it renews the lease, passes on a cancel and lets
a long step's delivery go."""

import asyncio
from datetime import datetime, timedelta
from typing import Any

from service.engine.model import Flow, FlowId, JobId, RunStatus, Step, StepStatus
from service.engine.records import StepRecord
from service.orchestrator.runtime import Options, StepRequest
from service.steps.handlers import Handlers, StepContext
from service.testing import FlowTestHost

BEAT = timedelta(milliseconds=20)
WITHIN = 5.0


def the_step(host: FlowTestHost) -> StepRecord:
    [run] = host.stores.runs.all_runs()
    [row] = host.stores.steps.rows_of(run.run_id)
    return row


async def renewed_after(host: FlowTestHost, last: datetime) -> datetime:
    """The lease's end once a beat renews it past `last`."""
    while True:
        until = the_step(host).lease_until
        if until is not None and until > last:
            return until
        await asyncio.sleep(BEAT.total_seconds() / 2)


def slow_host(started: asyncio.Event, release: asyncio.Event) -> FlowTestHost:
    handlers = Handlers()

    @handlers.handler("Slow")
    async def slow(ctx: StepContext, inputs: dict[str, Any]) -> object:
        started.set()
        release_or_cancel = asyncio.ensure_future(release.wait())
        cancelled = asyncio.ensure_future(ctx.cancelled.wait())
        await asyncio.wait(
            [release_or_cancel, cancelled], return_when=asyncio.FIRST_COMPLETED
        )
        release_or_cancel.cancel()
        cancelled.cancel()
        return {"cancelled": ctx.cancelled.is_set()}

    flow = Flow(
        FlowId("9d2f8e1a-0000-4000-8000-0000000000b1"), "slow", {"s": Step("Slow")}
    )
    return FlowTestHost(
        [flow], handlers, options=Options(heartbeat=BEAT, lease=timedelta(seconds=1))
    )


async def test_a_long_step_has_its_lease_renewed_while_it_runs():
    started, release = asyncio.Event(), asyncio.Event()
    host = slow_host(started, release)
    run = asyncio.create_task(host.trigger("slow"))
    await asyncio.wait_for(started.wait(), WITHIN)
    first = the_step(host).lease_until
    assert first is not None

    host.clock.advance(timedelta(seconds=10))  # the claim's lease is long over

    await asyncio.wait_for(renewed_after(host, first), WITHIN)
    release.set()
    result = await asyncio.wait_for(run, WITHIN)

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["s"].output == {"cancelled": False}


async def test_a_running_handler_sees_its_run_cancelled():
    started, release = asyncio.Event(), asyncio.Event()
    host = slow_host(started, release)
    run = asyncio.create_task(host.trigger("slow"))
    await asyncio.wait_for(started.wait(), WITHIN)
    await host.orchestrator.cancel_run(the_step(host).run_id, "test")
    result = await asyncio.wait_for(run, WITHIN)

    assert result.status is RunStatus.CANCELLED
    assert result.steps["s"].output == {"cancelled": True}
    assert result.steps["s"].status is StepStatus.SUCCEEDED


async def test_a_step_running_past_ack_after_lets_its_delivery_go_once_renewed():
    started, release = asyncio.Event(), asyncio.Event()
    host = slow_host(started, release)
    await host.trigger("slow", settle=False)
    dispatch = host.dispatcher.take()
    released: list[datetime] = []

    async def let_go() -> None:
        released.append(host.clock.now())

    request = StepRequest(
        dispatch.run_id, dispatch.step_key, JobId(dispatch.message_id), let_go=let_go
    )
    running = asyncio.create_task(host.orchestrator.run_step(request))
    await asyncio.wait_for(started.wait(), WITHIN)
    began = host.clock.now()
    lease = the_step(host).lease_until
    assert lease is not None

    host.clock.advance(timedelta(minutes=9))  # renewed, not yet long enough
    lease = await asyncio.wait_for(renewed_after(host, lease), WITHIN)
    assert released == []

    host.clock.advance(timedelta(minutes=2))  # past ack_after (10 min by default)
    lease = await asyncio.wait_for(renewed_after(host, lease), WITHIN)
    host.clock.advance(timedelta(seconds=1))
    await asyncio.wait_for(renewed_after(host, lease), WITHIN)  # one beat later
    release.set()
    await asyncio.wait_for(running, WITHIN)

    assert released == [began + timedelta(minutes=11)]  # once, at a renewed beat
    assert the_step(host).status is StepStatus.SUCCEEDED
