"""The heartbeat of a running step: it renews the lease and passes on a cancel."""

import asyncio
from datetime import timedelta
from typing import Any

from service.engine.model import Flow, FlowId, RunStatus, Step, StepStatus
from service.engine.records import StepRecord
from service.orchestrator.runtime import Options
from service.steps.handlers import Handlers, StepContext
from service.testing import FlowTestHost

BEAT = timedelta(milliseconds=20)
WITHIN = 5.0


def the_step(host: FlowTestHost) -> StepRecord:
    [run] = host.stores.runs.all_runs()
    [row] = host.stores.steps.rows_of(run.run_id)
    return row


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

    async def renewed() -> None:
        while True:
            until = the_step(host).lease_until
            if until is not None and until > first:
                return
            await asyncio.sleep(BEAT.total_seconds() / 2)

    await asyncio.wait_for(renewed(), WITHIN)
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
