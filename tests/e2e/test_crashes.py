"""A worker killed with SIGKILL loses no run; one stopped with SIGTERM finishes or gives
back what it holds, and exits 0."""

import signal
from collections import Counter

from tests.e2e.harness import PATIENT, Deployment, eventually

LOAD = 200
GRACEFUL_LOAD = 60


async def _succeeded_at_least(deployment: Deployment, count: int) -> None:
    async def enough() -> bool:
        return await deployment.count_runs(status="Succeeded") >= count

    await eventually(enough, within=60, what=f"{count} runs done", every=0.02)


async def test_a_worker_killed_mid_load_loses_and_duplicates_no_run(
    deployment: Deployment,
):
    worker = deployment.start_worker()
    await worker.ready()
    job_ids = await deployment.trigger_many("steady", LOAD)

    await _succeeded_at_least(deployment, 5)
    worker.send(signal.SIGKILL)
    await worker.exited(within=10)
    done_at_kill = await deployment.count_runs(status="Succeeded")
    running = await deployment.steps(status="Running")
    again = deployment.start_worker()
    await again.ready()
    runs = await deployment.finished(job_ids, within=120)
    steps = await deployment.steps()

    assert done_at_kill < LOAD
    assert running, "no step was running when the worker was killed"
    assert await deployment.count_runs() == LOAD
    assert len({r["job_id"] for r in runs}) == LOAD
    assert Counter(r["status"] for r in runs) == {"Succeeded": LOAD}
    assert len(steps) == 3 * LOAD
    assert all(s["status"] == "Succeeded" for s in steps)
    for step in steps:
        results = [a for a in step["attempts"] if a["status"] == "Succeeded"]
        assert len(results) == 1, step["_id"]
    # Exactly one run.completed event per run, however the kills fell: a run completes
    # once (a guarded update), and its event is read off that record.
    completed = await deployment.events_per_run("run.completed")
    assert sorted(completed.values()) == [1] * len(runs)


async def test_sigterm_finishes_in_flight_work_and_requeues_the_rest(
    deployment: Deployment,
):
    worker = deployment.start_worker(SHUTDOWN_GRACE="10", **PATIENT)
    await worker.ready()
    job_ids = await deployment.trigger_many("steady", GRACEFUL_LOAD)

    await _succeeded_at_least(deployment, 5)
    worker.send(signal.SIGTERM)
    code = await worker.exited(within=30)
    done_at_stop = await deployment.count_runs(status="Succeeded")
    running = await deployment.steps(status="Running")
    again = deployment.start_worker(**PATIENT)
    await again.ready()
    runs = await deployment.finished(job_ids, within=60)
    steps = await deployment.steps()

    assert code == 0, worker.tail()
    assert done_at_stop < GRACEFUL_LOAD
    assert running == [], "a step was left Running after a graceful stop"
    stopped = [e for e in worker.events() if e.get("event") == "consumer_stopped"]
    assert [e["cut_short"] for e in stopped] == [0]
    assert Counter(r["status"] for r in runs) == {"Succeeded": GRACEFUL_LOAD}
    assert await deployment.count_runs() == GRACEFUL_LOAD
    # Whatever was in flight finished; the rest ran once, on the next worker.
    rerun = [(s["_id"], s["attempts"]) for s in steps if s["attempt"] != 1]
    assert rerun == [], deployment.report()
