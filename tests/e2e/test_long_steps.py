"""Steps that outlive the broker's consumer_timeout, and runs stopped while one runs.

RabbitMQ closes a channel whose delivery stays unacked past `consumer_timeout` (30 min
by default, quorum queues included). These tests lower it on the local broker for the
worker's channels: a channel reads the timeout when it opens, and checks it at each of
its ticks, so `rabbitmqctl eval` sets both the timeout and a short tick before the
worker connects, and restores both after (RabbitMQ 3.10 has no per-queue setting; 3.12
adds `x-consumer-timeout`). The suite runs one test at a time, so no other test's
channel opens under the lowered timeout.
"""

import contextlib
import shutil
import subprocess
from collections.abc import Iterator

from tests.e2e.harness import Deployment, Worker, eventually

TIMEOUT_MS = 4000
"""The lowered consumer_timeout: a step of 2.5 times it outlives it for sure."""
NAP = 10
LONG_STEP = {"STEP_ACK_AFTER": "1", "STEP_HEARTBEAT": "0.5", "STEP_LEASE": "5"}
DEFAULTS = {"consumer_timeout": 1_800_000, "channel_tick_interval": 60_000}


def _broker_env(**values: int) -> None:
    ctl = shutil.which("rabbitmqctl")
    assert ctl, "rabbitmqctl is needed to lower the broker's consumer_timeout"
    calls = ", ".join(
        f"application:set_env(rabbit, {k}, {v})" for k, v in values.items()
    )
    subprocess.run([ctl, "eval", f"{calls}."], check=True, capture_output=True)


@contextlib.contextmanager
def lowered_consumer_timeout() -> Iterator[None]:
    """Channels opened meanwhile time out after TIMEOUT_MS, checked every second."""
    _broker_env(consumer_timeout=TIMEOUT_MS, channel_tick_interval=1000)
    try:
        yield
    finally:
        _broker_env(**DEFAULTS)


def released(worker: Worker) -> list[dict[str, object]]:
    return [e for e in worker.events() if e.get("event") == "step_delivery_released"]


def lost(worker: Worker) -> list[dict[str, object]]:
    return [e for e in worker.events() if e.get("event") == "delivery_lost"]


async def test_a_step_longer_than_the_consumer_timeout_runs_once_on_an_open_channel(
    deployment: Deployment,
):
    with lowered_consumer_timeout():
        worker = deployment.start_worker(**LONG_STEP)
        await worker.ready()
        job = await deployment.trigger("slow", {"seconds": NAP})
        [run] = await deployment.finished([job], within=NAP + 30)

    [step] = await deployment.steps(run_id=run["_id"])
    assert run["status"] == "Succeeded", deployment.report()
    assert (step["attempt"], len(step["attempts"])) == (1, 1)
    assert len(released(worker)) == 1
    assert lost(worker) == [], worker.tail()
    assert (
        worker.metric(
            "flow_messages_consumed_total", kind="run_step", outcome="released"
        )
        == 1
    )
    assert (
        worker.metric("flow_messages_consumed_total", kind="run_step", outcome="lost")
        == 0
    )


async def test_without_the_early_ack_the_broker_takes_the_step_back_until_it_fails(
    deployment: Deployment,
):
    """The control: the same step, acknowledged only at its end (as before the early
    ack). Each time the broker closes the channel it delivers the step again, the
    redelivery takes the claim over (its holder looks dead), and the step starts
    again, until its lost attempts fail it."""
    with lowered_consumer_timeout():
        worker = deployment.start_worker(**LONG_STEP | {"STEP_ACK_AFTER": "600"})
        await worker.ready()
        job = await deployment.trigger("slow", {"seconds": NAP})
        [run] = await deployment.finished([job], within=NAP * 6)
    # The channel is opened again: the worker goes on consuming.
    after = await deployment.trigger("slow", {"seconds": 0})
    [next_run] = await deployment.finished([after], within=30)

    [step] = await deployment.steps(run_id=run["_id"])
    assert run["status"] == "Failed", deployment.report()
    assert step["attempt"] > 1
    assert released(worker) == []
    assert lost(worker), worker.tail()
    assert next_run["status"] == "Succeeded", deployment.report()


async def _running(deployment: Deployment, job: str) -> dict[str, object]:
    async def started() -> dict[str, object] | None:
        run = await deployment.run_of_job(job)
        if run is None or not await deployment.steps(
            run_id=run["_id"], status="Running"
        ):
            return None
        return run

    return await eventually(started, within=30, what="the step runs")


async def test_a_run_cancelled_while_its_last_step_runs_ends_cancelled(
    deployment: Deployment,
):
    worker = deployment.start_worker()
    await worker.ready()
    job = await deployment.trigger("slow", {"seconds": 3})
    run = await _running(deployment, job)
    await deployment.cancel(str(run["_id"]), "not needed")
    [done] = await deployment.finished([job], within=30)

    assert done["status"] == "Cancelled", deployment.report()


async def test_a_run_past_its_deadline_while_its_last_step_runs_ends_timed_out(
    deployment: Deployment,
):
    worker = deployment.start_worker()
    await worker.ready()
    job = await deployment.trigger("slow", {"seconds": 6, "runTimeoutSeconds": 2})
    await _running(deployment, job)
    [done] = await deployment.finished([job], within=30)

    assert done["status"] == "TimedOut", deployment.report()
