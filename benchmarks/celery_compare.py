"""Celery (the peer a Python team would pick) against our worker: a 1,000-step chain.

    uv pip install celery        # temporarily; not a project dependency
    .venv/bin/python -m benchmarks.celery_compare [--repeat 2] \\
        [--modes mongodb,durable,default]

Same RabbitMQ, one worker process each, one chain at a time; end-to-end time.

- Celery: `chain(noop.si() x 1000, done.si(path))` sent with `apply_async()`; the
  worker is `celery -A benchmarks.celery_app worker --pool solo --concurrency 1`
  (no child process between the broker and the task: Celery's fastest pool for a
  chain, which runs one task at a time anyway). The `done` task writes
  time.time() to a file the driver polls; time = that - the time before
  `apply_async()`. Without a backend Celery persists nothing per task.
  Modes: `durable` = quorum queue, publisher confirms, `task_acks_late` (as close to
  our guarantees as Celery gets); `mongodb` = durable, and every task's result stored
  by Celery's MongoDB result backend in the same mongod (what "each step persisted"
  costs Celery); `default` = Celery's defaults (classic queue, no confirms, ack on
  receipt).
- Ours: one `bench-linear1000` run (1,000 no-op steps, each claimed, recorded and
  continued in MongoDB with w:majority, each next step published with a confirm):
  `runs.completed_at` - publish time.
- Floor: the reference loop with one chain (`--chains 1`): 1,000 / its steps/s.

Goal: ours >= 2x faster than Celery (celery time / our time >= 2).
"""

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import aio_pika
from pymongo import AsyncMongoClient

from benchmarks.common import (
    REPO,
    CpuMeter,
    Scenario,
    Servers,
    emit,
    epoch,
    median,
    reference,
    run_main,
    say,
    server_pids,
    servers,
)
from benchmarks.flows import LINEAR1000

CHAIN = 1000


async def ours(srv: Servers, repeat: int) -> list[dict[str, Any]]:
    results = []
    async with Scenario(srv, "linear1000") as sc:
        procs = sc.start_workers(1)
        await sc.ready()
        for n in range(repeat):
            meter = CpuMeter({**server_pids(srv), "workers": [procs[0].pid]}).start()
            job_id, sent = await sc.trigger(LINEAR1000.name, {"n": n})
            await sc.wait_finished(1, within=900, job_ids=[job_id], every=0.1)
            cpu = meter.stop()
            (run,) = await sc.runs([job_id])
            steps = await sc.db.steps.count_documents(
                {"run_id": run["_id"], "status": "Succeeded"}
            )
            total = epoch(run["completed_at"]) - sent
            results.append(
                {
                    "repeat": n,
                    "status": run["status"],
                    "steps_succeeded": steps,
                    "total_s": round(total, 3),
                    "per_step_ms": round(total * 1e3 / CHAIN, 2),
                    **cpu,
                }
            )
            emit({"bench": "celery_compare", "who": "ours", **results[-1]})
    return results


async def _consumers(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        return 0
    else:
        return declared.declaration_result.consumer_count
    finally:
        await connection.close()


async def _delete(url: str, queue: str) -> None:
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await connection.close()


async def celery(srv: Servers, repeat: int, mode: str) -> list[dict[str, Any]]:
    queue = f"bench.celery.{uuid4().hex[:8]}"
    env = dict(os.environ)
    env.update(
        AMQP_URL=srv.amqp_url,
        CELERY_BENCH_QUEUE=queue,
        CELERY_BENCH_DURABLE="0" if mode == "default" else "1",
    )
    if mode == "mongodb":  # durable, and each task's result stored in MongoDB
        env["CELERY_BENCH_BACKEND"] = srv.mongodb_url
        env["CELERY_BENCH_DATABASE"] = f"bench_celery_{uuid4().hex[:8]}"
    logs = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    cmd = [
        str(Path(sys.executable).with_name("celery")),
        *("-A", "benchmarks.celery_app", "worker"),
        *("--pool", "solo", "--concurrency", "1", "--loglevel", "warning"),
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        *("-Q", queue),
    ]
    results = []
    with (logs / "worker.log").open("ab") as log:
        worker = subprocess.Popen(  # noqa: S603, ASYNC220
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while await _consumers(srv.amqp_url, queue) < 1:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"celery worker not consuming: {(logs / 'worker.log').read_text()}"
                )
            await asyncio.sleep(0.2)
        for n in range(repeat):
            marker = logs / f"done-{n}"
            meter = CpuMeter({**server_pids(srv), "workers": [worker.pid]}).start()
            # Sent from a process of its own, configured like the worker.
            started = time.time()
            sender = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "benchmarks.celery_app",
                    str(marker),
                    str(CHAIN),
                ],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            sent = float(sender.stdout.strip().splitlines()[-1])
            enqueued = time.time() - started
            deadline = time.monotonic() + 900
            while not marker.exists() or not marker.read_text():
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"celery chain not done: {(logs / 'worker.log').read_text()}"
                    )
                await asyncio.sleep(0.05)
            cpu = meter.stop()
            total = float(marker.read_text()) - sent
            results.append(
                {
                    "repeat": n,
                    "mode": mode,
                    "celery": _version(),
                    "total_s": round(total, 3),
                    "per_task_ms": round(total * 1e3 / (CHAIN + 1), 2),
                    "sender_process_s": round(enqueued, 3),
                    **cpu,
                }
            )
            emit({"bench": "celery_compare", "who": "celery", **results[-1]})
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        await _delete(srv.amqp_url, queue)
        if database := env.get("CELERY_BENCH_DATABASE"):
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(srv.mongodb_url)
            await client.drop_database(database)
            await client.close()
    return results


def _version() -> str:
    import celery as package

    return package.__version__


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--modes", default="mongodb,durable,default")
    parser.add_argument("--no-reference", action="store_true")
    a = parser.parse_args()
    modes = [m for m in a.modes.split(",") if m]
    with servers() as srv:
        mine = await ours(srv, a.repeat)
        theirs = {mode: await celery(srv, a.repeat, mode) for mode in modes}
        ref: dict[str, Any] = {}
        if not a.no_reference:
            ref = reference(srv, chains=1, runs=1)
            emit({**ref, "bench": "celery_compare", "who": "reference"})
    our_s = round(median(r["total_s"] for r in mine), 2)
    summary: dict[str, Any] = {
        "bench": "celery_compare",
        "who": "summary",
        "chain": CHAIN,
        "ours_total_s": our_s,
        "reference_floor_s": round(CHAIN / ref["steps_s"], 2)
        if ref.get("steps_s")
        else None,
        "reference_command": ref.get("command"),
        "celery_version": _version(),
        "goal": "celery_s / ours_s >= 2",
    }
    for mode, rows in theirs.items():
        celery_s = round(median(r["total_s"] for r in rows), 2)
        summary[f"celery_{mode}_total_s"] = celery_s
        summary[f"speedup_vs_celery_{mode}"] = (
            round(celery_s / our_s, 2) if celery_s and our_s else None
        )
    emit(summary)
    say(
        f"celery: ours {our_s} s for {CHAIN} persisted steps; "
        + "; ".join(
            f"celery {mode} {summary[f'celery_{mode}_total_s']} s "
            f"(ours {summary[f'speedup_vs_celery_{mode}']}x faster)"
            for mode in theirs
        )
        + f"; reference floor {summary['reference_floor_s']} s (goal: >= 2x)"
    )


if __name__ == "__main__":
    run_main(main)
