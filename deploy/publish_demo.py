"""Publish one trigger as an outside service would, then print the run it started.

The compose `demo` service runs this with the worker image's Python (aio-pika and
pymongo are installed there); it is mounted, not baked into the image. Anywhere else:

    AMQP_URL=... MONGODB_URL=... python deploy/publish_demo.py --flow hello

It waits for the worker to have declared the topology (the `<prefix>.ingress` exchange),
publishes raw JSON with a fresh message id (the run's job id), with publisher confirms
and `mandatory`, so an unroutable trigger is an error, then polls MongoDB for the run
until it is final and prints each step. Exits 1 if the run does not finish in time.
"""

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any
from uuid import uuid4

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from pymongo import AsyncMongoClient

RETRY_PAUSE = 1.0


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--flow", default="hello", help="flow name or id")
    parser.add_argument("--body", default="{}", help="the trigger body, as JSON")
    parser.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait (0: do not wait)"
    )
    return parser.parse_args()


async def exchange_when_declared(
    connection: AbstractRobustConnection, name: str, deadline: float
) -> AbstractExchange:
    """The ingress exchange, once a worker has declared it."""
    while True:
        channel = await connection.channel()  # a failed passive declare closes it
        try:
            return await channel.get_exchange(name, ensure=True)
        except aio_pika.exceptions.ChannelClosed:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"demo: no exchange {name!r}: is a worker up?"
                ) from None
            say(f"waiting for a worker to declare {name!r}...")
            await asyncio.sleep(RETRY_PAUSE)


async def connect(url: str, deadline: float) -> AbstractRobustConnection:
    while True:
        try:
            return await aio_pika.connect_robust(url)
        except (ConnectionError, aio_pika.exceptions.AMQPConnectionError):
            if time.monotonic() > deadline:
                raise SystemExit("demo: RabbitMQ does not answer") from None
            await asyncio.sleep(RETRY_PAUSE)


async def publish(flow: str, body: object, deadline: float) -> str:
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    prefix = os.environ.get("AMQP_PREFIX", "flow")
    connection = await connect(url, deadline)
    async with connection:
        exchange = await exchange_when_declared(
            connection, f"{prefix}.ingress", deadline
        )
        message_id = str(uuid4())
        await exchange.publish(
            aio_pika.Message(
                json.dumps({"flow": flow, "body": body}).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                type="trigger",
                message_id=message_id,
            ),
            routing_key=f"trigger.{flow}",
            mandatory=True,
        )
    say(f"published trigger {flow} with message id (job id) {message_id}")
    return message_id


async def show_run(job_id: str, deadline: float) -> bool:
    url = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017/")
    database = os.environ.get("MONGODB_DATABASE", "flow_orchestrator")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True)
    try:
        db = client[database]
        while time.monotonic() < deadline:
            run = await db.runs.find_one({"job_id": job_id})
            if run is not None and run["status"] != "Running":
                say(f"run {run['_id']}: {run['status']}")
                steps = db.steps.find({"run_id": run["_id"]}).sort("dispatched_at")
                async for step in steps:
                    shown = step.get("output") or (step.get("error") or "").strip()
                    say(f"  {step['key']:<12} {step['status']:<10} {shown}")
                return run["status"] == "Succeeded"
            await asyncio.sleep(0.5)
    finally:
        await client.close()
    say(f"demo: the run of job {job_id} did not finish in time")
    return False


async def main() -> int:
    args = arguments()
    deadline = time.monotonic() + max(args.wait, 30.0)
    job_id = await publish(args.flow, json.loads(args.body), deadline)
    if args.wait <= 0:
        return 0
    ok = await show_run(job_id, time.monotonic() + args.wait)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
