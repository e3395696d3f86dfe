"""Server time of the dashboard's pages with 100,000 runs stored.

    python -m benchmarks.dashboard [--runs 100000] [--steps 1000] [--repeat 20]

MongoDB from MONGODB_URL, else the bundled mongod. In a database of its own
(`bench_<uuid>`, dropped at the end) it stores `--runs` runs of five flows (statuses
mixed, started over 30 days) and one run of a flow of `--steps` steps with a row per
step, then asks the real app (signed in, every middleware on) for each page
`--repeat` times in-process (no network) and prints the server time: from the request
entering the app to the last byte of its response. Goals: the list < 150 ms, the run
page < 300 ms.
"""

import argparse
import asyncio
import random
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import uuid4

import httpx
from pymongo import AsyncMongoClient

from benchmarks.common import emit, ms, pct, say, servers
from service.adapters.clock import SystemClock
from service.adapters.mongo.client import connect
from service.adapters.mongo.codec import attempt_document, dumps, run_document
from service.dashboard.server import build_app, config_from
from service.engine.manifest import to_manifest
from service.engine.model import (
    Flow,
    FlowId,
    JobId,
    RunId,
    RunStatus,
    Step,
    TriggerKey,
)
from service.engine.records import RunRecord
from tests.dashboard_support import PASSWORDS, csrf_of, dashboard_settings

NOW = SystemClock().now()
STATUSES = [RunStatus.SUCCEEDED] * 85 + [RunStatus.FAILED] * 8 + [RunStatus.RUNNING] * 4
STATUSES += [RunStatus.CANCELLED] * 2 + [RunStatus.TIMED_OUT]
BATCH = 5000


def wide_flow(steps: int) -> Flow:
    """`steps` steps in layers of 20, each after one step of the layer before."""
    keys = [f"s{n:04d}" for n in range(steps)]
    return Flow(
        id=FlowId(str(uuid4())),
        name=f"wide{steps}",
        steps={
            key: Step("Work", run_after={} if n < 20 else {keys[n - 20]: ["Succeeded"]})
            for n, key in enumerate(keys)
        },
    )


def small_flows() -> list[Flow]:
    return [
        Flow(
            id=FlowId(str(uuid4())),
            name=name,
            steps={"a": Step("A"), "b": Step("B", run_after={"a": ["Succeeded"]})},
        )
        for name in ("orders", "billing", "emails", "reports", "sync")
    ]


async def store(db: Any, runs: int, steps: int) -> tuple[Flow, str, list[Flow]]:
    flows = small_flows()
    wide = wide_flow(steps)
    for flow in [*flows, wide]:
        await db.flows.insert_one(
            {
                "_id": flow.id,
                "name": flow.name,
                "version": "1",
                "manifest": dumps(to_manifest(flow)),
                "enabled": True,
                "updated_at": NOW,
            }
        )
    rnd = random.Random(7)
    span = timedelta(days=30).total_seconds()
    batch = []
    for n in range(runs):
        flow = flows[n % len(flows)]
        status = rnd.choice(STATUSES)
        started = NOW - timedelta(seconds=rnd.random() * span)
        run_id = str(uuid4())
        record = RunRecord(
            run_id=RunId(run_id),
            flow_id=flow.id,
            flow_name=flow.name,
            trigger_key=TriggerKey("manual"),
            job_id=JobId(str(uuid4())),
            started_at=started,
            body={"n": n},
            status=status,
            completed_at=None
            if status is RunStatus.RUNNING
            else started + timedelta(seconds=2),
            idempotency_key=f"order-{n}",
        )
        batch.append(run_document(record))
        if len(batch) == BATCH:
            await db.runs.insert_many(batch, ordered=False)
            batch = []
    if batch:
        await db.runs.insert_many(batch, ordered=False)
    run_id = str(uuid4())
    started = NOW - timedelta(minutes=5)
    await db.runs.insert_one(
        run_document(
            RunRecord(
                run_id=RunId(run_id),
                flow_id=wide.id,
                flow_name=wide.name,
                trigger_key=TriggerKey("manual"),
                job_id=JobId(str(uuid4())),
                started_at=started,
                status=RunStatus.SUCCEEDED,
                completed_at=started + timedelta(seconds=60),
            )
        )
    )
    rows = []
    for n, key in enumerate(wide.steps):
        at = started + timedelta(milliseconds=50 * n)
        entry = attempt_document(1, f"{run_id}:{key}:1", at=at)
        entry.update(status="Succeeded", completed_at=at + timedelta(milliseconds=40))
        rows.append(
            {
                "_id": f"{run_id}/{key}",
                "run_id": run_id,
                "key": key,
                "scope": "",
                "type": "Work",
                "status": "Succeeded",
                "dispatched_at": at,
                "inputs": dumps({"n": n}),
                "attempt": 1,
                "job_id": f"{run_id}:{key}:1",
                "lease_until": None,
                "resolved_inputs": dumps({"n": n}),
                "output": dumps({"done": n}),
                "error": None,
                "trace": None,
                "started_at": at,
                "completed_at": at + timedelta(milliseconds=40),
                "attempts": [entry],
            }
        )
    await db.steps.insert_many(rows)
    return wide, run_id, flows


class Timed:
    """The app, timing each request from its start to its last body byte."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.last = 0.0
        self.cpu = 0.0
        """CPU seconds of this process for the last request (one at a time)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        cpu = time.process_time()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last = time.perf_counter() - started
                self.cpu = time.process_time() - cpu

        await self.app(scope, receive, timed_send)


async def measure(
    client: httpx.AsyncClient, timed: Timed, path: str, repeat: int
) -> dict[str, Any]:
    for _ in range(3):  # warm caches and connection pools
        (await client.get(path)).raise_for_status()
    times = []
    cpu = []
    size = 0
    for _ in range(repeat):
        response = await client.get(path)
        response.raise_for_status()
        times.append(timed.last)
        cpu.append(timed.cpu)
        size = len(response.content)
    return {
        "p50_ms": ms(pct(times, 50)),
        "p95_ms": ms(pct(times, 95)),
        "cpu_p50_ms": ms(pct(cpu, 50)),
        "bytes": size,
    }


async def bench(url: str, runs: int, steps: int, repeat: int) -> None:
    database = f"bench_{uuid4().hex}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True)
    stores = connect(url, database)
    try:
        await stores.ensure_indexes()
        say(f"# storing {runs:,} runs and a run of {steps:,} steps ...")
        began = time.perf_counter()
        _, run_id, flows = await store(client[database], runs, steps)
        say(f"# stored in {time.perf_counter() - began:.0f} s")
        settings = dashboard_settings(
            mongodb_url=url,
            database=database,
            amqp_url="amqp://guest:guest@127.0.0.1:1/",
            prefix="bench",
            port=8081,
        )
        timed = Timed(build_app(config_from(settings), stores))
        transport = httpx.ASGITransport(app=timed)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://dash"
        ) as web:
            page = await web.get("/login")
            await web.post(
                "/login",
                data={
                    "name": "vic",
                    "password": PASSWORDS["vic"],
                    "csrf": csrf_of(page.text),
                },
            )
            first = (await web.get("/runs")).text
            deep = re.search(r"before=([^\"&]+)", first)
            cursor = deep.group(1) if deep else ""
            run = f"/runs/{run_id}"
            pages = {
                "runs list (first page, counts by status)": "/runs",
                "runs list, flow + status filter": f"/runs?flow={flows[0].id}"
                "&status=Failed",
                "runs list, text search": "/runs?q=order-4242",
                "runs list, an older page": f"/runs?before={cursor}",
                f"run page, {steps:,} steps": run,
                f"run page live fragment, {steps:,} steps": f"{run}?fragment=1",
                f"run DAG (JSON), {steps:,} steps": f"{run}/graph",
            }
            for name, path in pages.items():
                figures = await measure(web, timed, path, repeat)
                say(
                    f"{name:<44} p50 {figures['p50_ms']:>7} ms  p95 "
                    f"{figures['p95_ms']:>7} ms  app CPU p50 "
                    f"{figures['cpu_p50_ms']:>6} ms  {figures['bytes']:>8,} bytes"
                )
                emit(
                    {
                        "bench": "dashboard",
                        "page": name,
                        "runs": runs,
                        "steps": steps,
                        **figures,
                    }
                )
    finally:
        await client.drop_database(database)
        await client.close()
        await stores.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with servers() as found:
        asyncio.run(bench(found.mongodb_url, args.runs, args.steps, args.repeat))


if __name__ == "__main__":
    main()
