"""A worker survives a RabbitMQ restart and a mongod restart under load, by itself."""

import asyncio
import subprocess
from collections import Counter
from collections.abc import Callable

from tests.e2e.harness import Deployment, eventually
from tests.services import MongoServer

LOAD = 100
SLOW = {"AMQP_CONCURRENCY": "2"}
"""Few handlers at a time, so the load outlasts `rabbitmqctl stop_app`'s start-up."""


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


async def _started(deployment: Deployment, count: int) -> None:
    async def enough() -> bool:
        return await deployment.count_runs(status="Succeeded") >= count

    await eventually(enough, within=60, what=f"{count} runs done", every=0.02)


async def test_the_worker_survives_a_broker_restart(deployment: Deployment):
    worker = deployment.start_worker(**SLOW)
    await worker.ready()
    job_ids = await deployment.trigger_many("steady", LOAD)

    try:
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        done_while_down = await deployment.count_runs(status="Succeeded")
        await asyncio.to_thread(rabbitmqctl, "start_app")
    finally:
        # Whatever happened, leave the broker running for every other test.
        await asyncio.to_thread(rabbitmqctl, "start_app")
    await asyncio.to_thread(rabbitmqctl, "await_startup")
    runs = await deployment.finished(job_ids, within=120)

    assert done_while_down < LOAD
    assert Counter(r["status"] for r in runs) == {"Succeeded": LOAD}
    assert await deployment.count_runs() == LOAD
    await worker.ready(within=30)
    assert worker.returncode is None


async def test_the_worker_survives_a_mongod_restart(
    make_deployment: Callable[[str], Deployment], mongo_server: MongoServer
):
    deployment = make_deployment(mongo_server.url)
    worker = deployment.start_worker()
    await worker.ready()
    job_ids = await deployment.trigger_many("steady", LOAD)
    await _started(deployment, 1)

    done_before_restart = await deployment.count_runs(status="Succeeded")
    await asyncio.to_thread(mongo_server.restart)
    runs = await deployment.finished(job_ids, within=120)

    assert done_before_restart < LOAD
    assert Counter(r["status"] for r in runs) == {"Succeeded": LOAD}
    assert await deployment.count_runs() == LOAD
    await worker.ready(within=30)
    assert worker.returncode is None
