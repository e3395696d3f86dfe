"""Claim and finish rates of the MongoDB run store, and its round trips per step.

    MONGODB_URL=mongodb://... python -m benchmarks.bench_store [--steps 20000]

Without MONGODB_URL it starts the bundled mongod (`tests.services.MongoServer`). It
works in a database of its own (`bench_<uuid>`), dropped at the end. Round trips are
counted exactly, as the commands a pymongo `CommandListener` sees.
"""

import argparse
import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from pymongo import AsyncMongoClient, monitoring

from service.adapters.clock import SystemClock
from service.adapters.mongo.client import MongoStores, redacted
from service.adapters.mongo.indexes import ensure_indexes
from service.engine.model import (
    FlowId,
    JobId,
    RunId,
    StepKey,
    StepStatus,
    TriggerKey,
)
from service.engine.records import NewEvent, NewStep, Outcome, RunRecord
from service.logs import configure_logging

CONCURRENCY = 64
STEPS_PER_RUN = 100
LEASE = timedelta(minutes=5)
DONE = Outcome(StepStatus.SUCCEEDED, output={"ok": True, "total": 3})


class Commands(monitoring.CommandListener):
    """Every command the client sends, by name: one round trip each."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    @contextlib.contextmanager
    def counting(self) -> Iterator[Counter[str]]:
        """The commands sent inside the block."""
        before = self.sent.copy()
        counted: Counter[str] = Counter()
        yield counted
        counted.update(self.sent - before)


@contextlib.contextmanager
def mongodb_url() -> Iterator[str]:
    if url := os.environ.get("MONGODB_URL"):
        yield url
        return
    from tests.services import MongoServer

    with MongoServer() as server:
        yield server.url


def a_run(now: datetime) -> RunRecord:
    run_id = RunId(str(uuid4()))
    return RunRecord(
        run_id=run_id,
        flow_id=FlowId("bench"),
        flow_name="Bench",
        trigger_key=TriggerKey("manual"),
        job_id=JobId(f"msg-{run_id}"),
        started_at=now,
        body={"order": 42},
    )


async def in_parallel(
    work: list[Any], call: Callable[[Any], Awaitable[object]]
) -> float:
    """Seconds to `call` every item of `work` from CONCURRENCY coroutines."""
    queue = iter(work)

    async def worker() -> None:
        for item in queue:
            await call(item)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(CONCURRENCY):
            group.create_task(worker())
    return time.perf_counter() - started


Row = tuple[RunId, StepKey]


async def queued_rows(stores: MongoStores, steps: int, now: datetime) -> list[Row]:
    """`steps` Queued rows, in runs of STEPS_PER_RUN."""
    rows: list[Row] = []
    for _ in range(max(1, steps // STEPS_PER_RUN)):
        run, _ = await stores.runs.create_run(a_run(now))
        keys = [StepKey(f"step-{n}") for n in range(STEPS_PER_RUN)]
        new = [NewStep(key, "Http", StepStatus.QUEUED, {"url": "x"}) for key in keys]
        await stores.steps.add_steps(run.run_id, new, at=now)
        rows += [(run.run_id, key) for key in keys]
    return rows


async def rates(stores: MongoStores, steps: int) -> list[Row]:
    """Claims, finishes and lost claims per second, each row by one coroutine."""
    now = SystemClock().now()
    rows = await queued_rows(stores, steps, now)

    async def claim(row: Row) -> None:
        job = JobId(f"{row[0]}:{row[1]}:1")
        if not (await stores.steps.claim(*row, job_id=job, now=now, lease=LEASE)).won:
            raise RuntimeError(f"claim of {row} lost")

    async def finish(row: Row) -> None:
        job = JobId(f"{row[0]}:{row[1]}:1")
        if not await stores.steps.finish(*row, DONE, job_id=job, attempt=1, now=now):
            raise RuntimeError(f"finish of {row} lost")

    async def lost_claim(row: Row) -> None:
        await stores.steps.claim(*row, job_id=JobId("late"), now=now, lease=LEASE)

    for name, call in (
        ("claim", claim),
        ("finish", finish),
        ("lost claim", lost_claim),
    ):
        seconds = await in_parallel(rows, call)
        rate = len(rows) / seconds
        print(f"{name:>12}: {rate:8.0f} ops/s  ({len(rows)} in {seconds:.2f} s)")
    return rows


async def races(stores: MongoStores, rows: list[Row]) -> None:
    """Rows requeued, then each claimed by CONCURRENCY coroutines at once."""
    now = SystemClock().now()
    for row in rows:
        await stores.steps.requeue(
            *row, expected=frozenset({StepStatus.SUCCEEDED}), now=now
        )
    started = time.perf_counter()
    for run_id, key in rows:
        claims = await asyncio.gather(
            *(
                stores.steps.claim(
                    run_id, key, job_id=JobId(f"j{n}"), now=now, lease=LEASE
                )
                for n in range(CONCURRENCY)
            )
        )
        if sum(c.won for c in claims) != 1:
            raise RuntimeError(f"{run_id}/{key}: not exactly one winner")
    seconds = time.perf_counter() - started
    print(
        f"{'64-way race':>12}: {len(rows) / seconds:8.0f} races/s "
        f"(64 claims each, one winner; {len(rows) * 64 / seconds:.0f} claims/s)"
    )


async def round_trips(stores: MongoStores, commands: Commands) -> None:
    """The store calls of one executed step in a chain, counted one by one."""
    now = SystemClock().now()
    run, _ = await stores.runs.create_run(a_run(now))
    first, second = StepKey("first"), StepKey("second")
    await stores.steps.add_steps(
        run.run_id, [NewStep(first, "Http", StepStatus.QUEUED)], at=now
    )
    job = JobId(f"{run.run_id}:first:1")
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        (
            "claim",
            lambda: stores.steps.claim(
                run.run_id, first, job_id=job, now=now, lease=LEASE
            ),
        ),
        ("get_run", lambda: stores.runs.get_run(run.run_id)),
        (
            "finish",
            lambda: stores.steps.finish(
                run.run_id, first, DONE, job_id=job, attempt=1, now=now
            ),
        ),
        (
            "add_steps (next step)",
            lambda: stores.steps.add_steps(
                run.run_id, [NewStep(second, "Http", StepStatus.QUEUED)], at=now
            ),
        ),
        (
            "events.append (2 events)",
            lambda: stores.events.append(
                run.run_id,
                [
                    NewEvent("step.started", now, first),
                    NewEvent("step.completed", now, first),
                ],
            ),
        ),
    ]
    total = 0
    print("round trips per executed step (store calls of a step in a chain):")
    for name, call in calls:
        with commands.counting() as sent:
            await call()
        total += sum(sent.values())
        print(f"  {name:<26} {sum(sent.values())}  {dict(sent)}")
    print(f"  {'total':<26} {total}")


async def orchestrated(stores: MongoStores, commands: Commands, runs: int) -> None:
    """Round trips per executed step of the real orchestrator running examples.hello."""
    from examples import hello
    from service.adapters.memory.dispatcher import InMemoryDispatcher
    from service.orchestrator.api import Orchestrator
    from service.orchestrator.runtime import (
        Catalog,
        Runtime,
        StepRequest,
        TriggerRequest,
    )

    dispatcher = InMemoryDispatcher()
    runtime = Runtime(
        Catalog(hello.flows), hello.handlers, stores, dispatcher, SystemClock()
    )
    orchestrator = Orchestrator(runtime)
    await orchestrator.sync_flows()
    steps = 0
    with commands.counting() as triggered:
        for n in range(runs):
            request = TriggerRequest("hello", body={"name": f"n{n}"})
            await orchestrator.trigger(request, job_id=JobId(f"bench-{uuid4()}"))
    with commands.counting() as executed:
        while dispatcher.pending:
            dispatch = dispatcher.take()
            await orchestrator.run_step(
                StepRequest(
                    dispatch.run_id, dispatch.step_key, JobId(dispatch.message_id)
                )
            )
            steps += 1
    per_step = sum(executed.values()) / steps
    print(
        f"orchestrator, examples.hello x{runs} ({steps} steps): "
        f"{per_step:.2f} round trips per executed step, "
        f"{sum(triggered.values()) / runs:.2f} per trigger"
    )
    by_command = {name: round(sent / steps, 2) for name, sent in executed.items()}
    print(f"  per step by command: {by_command}")


@contextlib.asynccontextmanager
async def bench_stores(url: str, commands: Commands) -> AsyncIterator[MongoStores]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url, tz_aware=True, w="majority", event_listeners=[commands]
    )
    db = client[f"bench_{uuid4().hex}"]
    try:
        await ensure_indexes(db)
        yield MongoStores(db)
    finally:
        await client.drop_database(db.name)
        await client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=200, help="hello runs to execute")
    options = parser.parse_args()
    configure_logging("warning", json=False)  # the orchestrator logs every step
    commands = Commands()
    with mongodb_url() as url:
        print(
            f"MongoDB {redacted(url)}; {CONCURRENCY} concurrent coroutines, w=majority"
        )
        async with bench_stores(url, commands) as stores:
            info = await stores.database.client.server_info()
            print(f"server {info['version']}")
            rows = await rates(stores, options.steps)
            await races(stores, rows[:500])
            await round_trips(stores, commands)
            await orchestrated(stores, commands, options.runs)


if __name__ == "__main__":
    asyncio.run(main())
