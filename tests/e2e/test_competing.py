"""Two workers on the same queues: each run completes once, each step runs once, and a
cron tick fires one run whichever worker sees it first."""

import itertools
from collections import Counter
from datetime import datetime

from tests.e2e.harness import PATIENT, Deployment, Document, eventually
from tests.e2e.ticking import EVERY_SECONDS

RUNS = 80


async def test_two_workers_complete_every_run_once(deployment: Deployment):
    workers = [deployment.start_worker(**PATIENT), deployment.start_worker(**PATIENT)]
    for worker in workers:
        await worker.ready()

    job_ids = await deployment.trigger_many("steady", RUNS)
    runs = await deployment.finished(job_ids, within=90)
    steps = await deployment.steps()

    assert await deployment.count_runs() == RUNS
    assert Counter(r["status"] for r in runs) == {"Succeeded": RUNS}
    assert len(steps) == 3 * RUNS
    assert all(s["status"] == "Succeeded" for s in steps)
    # No step attempt recorded twice: one claim, one attempt entry, per step.
    assert [
        s["_id"] for s in steps if s["attempt"] != 1 or len(s["attempts"]) != 1
    ] == []
    completed = await deployment.events_per_run("run.completed")
    assert sorted(completed.values()) == [1] * RUNS
    for worker in workers:
        assert (
            worker.metric(
                "flow_messages_consumed_total", kind="run_step", outcome="acked"
            )
            > 0
        ), f"{worker.name} took no step"


async def test_a_cron_tick_fires_once_with_two_workers(deployment: Deployment):
    modules = {"FLOW_MODULES": "tests.e2e.ticking"}
    workers = [deployment.start_worker(**modules), deployment.start_worker(**modules)]
    for worker in workers:
        await worker.ready()

    async def ticks() -> list[Document] | None:
        runs = await deployment.runs(status="Succeeded")
        return runs if len(runs) >= 4 else None

    await eventually(
        ticks, within=30, what="4 cron ticks", alive=deployment.check_alive
    )
    runs = await deployment.runs()

    fired = [datetime.fromisoformat(r["job_id"].split(":", 3)[3]) for r in runs]
    per_tick = Counter(fired)
    assert all(n == 1 for n in per_tick.values()), per_tick
    assert all(t.second % EVERY_SECONDS == 0 and t.microsecond == 0 for t in fired)
    assert len({r["idem"] for r in runs}) == len(runs)
    assert all(r["trigger_key"] == "every2s" for r in runs)
    ordered = sorted(per_tick)
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(ordered)}
    assert gaps == {float(EVERY_SECONDS)}, ordered
