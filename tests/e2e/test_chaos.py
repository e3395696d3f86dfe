"""Chaos: mixed flows in flight through kill -9 cycles, a broker and a mongod restart,
SIGTERM, and a replica set whose primary steps down; afterwards every invariant of
DESIGN.md holds (see `chaos_support.verify`).

CI runs a small size; `scripts/chaos` runs the same tests at full size through
CHAOS_RUNS, CHAOS_CYCLES, CHAOS_OUTAGE_RUNS, CHAOS_SIGTERM_RUNS and
CHAOS_STEPDOWN_RUNS (and CHAOS_SEED to replay a load).
"""

import asyncio
import random
import signal
import subprocess
import time
from collections.abc import Callable

from tests.e2e.chaos_support import (
    env_flows,
    env_int,
    kill_cycles,
    logged,
    mixed_load,
    patience,
    publish_load,
    report,
    step_downs,
    terminal_runs,
    until_terminal,
    verify,
)
from tests.e2e.harness import PATIENT, Deployment
from tests.replica_set import MongoReplicaSet
from tests.services import MongoServer

CHAOS = {"FLOW_MODULES": "tests.e2e.chaos_flows"}
RUNS = env_int("CHAOS_RUNS", 150)
CYCLES = env_int("CHAOS_CYCLES", 4)
SEED = env_int("CHAOS_SEED", 20261123)
FLOWS = env_flows()
OUTAGE_RUNS = env_int("CHAOS_OUTAGE_RUNS", 80)
SIGTERM_RUNS = env_int("CHAOS_SIGTERM_RUNS", 80)
STEPDOWN_RUNS = env_int("CHAOS_STEPDOWN_RUNS", 150)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


async def test_kill_9_cycles_lose_no_run_attempt_or_invocation(
    deployment: Deployment,
):
    rng = random.Random(SEED)
    load = mixed_load(RUNS, rng, FLOWS)
    workers = [deployment.start_worker(**CHAOS), deployment.start_worker(**CHAOS)]
    for worker in workers:
        await worker.ready()
    started = time.monotonic()

    kills = await kill_cycles(
        deployment, workers, load, cycles=CYCLES, rng=rng, env=CHAOS
    )
    await until_terminal(deployment, RUNS, within=patience(RUNS))
    elapsed = time.monotonic() - started
    findings = await verify(deployment, load)

    report(
        "kill_9_cycles",
        seed=SEED,
        cycles=CYCLES,
        seconds=round(elapsed, 1),
        kills=[vars(k) for k in kills],
        **findings.figures,
    )
    findings.assert_none()
    assert len(kills) == CYCLES
    # Every kill hit a load still in flight.
    assert all(k.terminal_before < RUNS for k in kills), kills
    assert any(k.running_steps > 0 for k in kills), kills
    for worker in workers:
        worker.check_alive()


async def test_a_broker_and_a_mongod_restart_mid_load_need_no_operator(
    make_deployment: Callable[[str], Deployment], mongo_server: MongoServer
):
    deployment = make_deployment(mongo_server.url)
    rng = random.Random(SEED + 1)
    load = mixed_load(OUTAGE_RUNS, rng, FLOWS)
    (first, first_sends), (second, second_sends) = load.waves(2)
    workers = [deployment.start_worker(**CHAOS), deployment.start_worker(**CHAOS)]
    for worker in workers:
        await worker.ready()

    await publish_load(deployment, first_sends)
    await until_terminal(deployment, first // 4, within=patience(OUTAGE_RUNS))
    done_at_broker_stop = await terminal_runs(deployment)
    try:
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        done_while_broker_down = await terminal_runs(deployment)
        await asyncio.to_thread(rabbitmqctl, "start_app")
    finally:
        # Whatever happened, leave the broker running for every other test.
        await asyncio.to_thread(rabbitmqctl, "start_app")
    await asyncio.to_thread(rabbitmqctl, "await_startup")
    await publish_load(deployment, second_sends)
    await until_terminal(deployment, first + second // 4, within=patience(OUTAGE_RUNS))
    done_at_mongod_restart = await terminal_runs(deployment)
    await asyncio.to_thread(mongo_server.restart)
    await until_terminal(deployment, OUTAGE_RUNS, within=patience(OUTAGE_RUNS))
    findings = await verify(deployment, load)

    report(
        "broker_and_mongod_restart",
        done_at_broker_stop=done_at_broker_stop,
        done_while_broker_down=done_while_broker_down,
        done_at_mongod_restart=done_at_mongod_restart,
        **findings.figures,
    )
    findings.assert_none()
    assert done_at_broker_stop < first
    assert done_at_mongod_restart < OUTAGE_RUNS
    for worker in workers:
        await worker.ready(within=30)
        assert worker.returncode is None


async def test_sigterm_mid_load_finishes_or_requeues_in_flight_work(
    deployment: Deployment,
):
    rng = random.Random(SEED + 2)
    load = mixed_load(SIGTERM_RUNS, rng, FLOWS)
    env = CHAOS | PATIENT | {"SHUTDOWN_GRACE": "20"}
    stopped, other = deployment.start_worker(**env), deployment.start_worker(**env)
    for worker in (stopped, other):
        await worker.ready()
    await publish_load(deployment, load.sends)

    await until_terminal(deployment, SIGTERM_RUNS // 4, within=patience(SIGTERM_RUNS))
    done_at_stop = await terminal_runs(deployment)
    in_flight = await deployment.db.steps.count_documents(
        {"status": {"$in": ["Queued", "Running"]}}
    )
    stopped.send(signal.SIGTERM)
    code = await stopped.exited(within=40)
    replacement = deployment.start_worker(**env)
    await replacement.ready()
    await until_terminal(deployment, SIGTERM_RUNS, within=patience(SIGTERM_RUNS))
    findings = await verify(deployment, load)
    # Every attempt the stopped worker began, it also finished: none was abandoned.
    began = await deployment.db.handler_calls.find(
        {"worker": stopped.name}, {"run_id": 1, "step_key": 1, "attempt": 1}
    ).to_list(None)
    abandoned = []
    for call in began:
        step = await deployment.db.steps.find_one(
            {"run_id": call["run_id"], "key": call["step_key"]}
        )
        attempts = (step or {}).get("attempts", [])
        entry = next((a for a in attempts if a["number"] == call["attempt"]), None)
        if entry is None or entry["completed_at"] is None:
            abandoned.append(call)
    events = stopped.events()
    stopping = [e for e in events if e.get("event") == "consumer_stopped"]
    requeued = sum(1 for e in events if e.get("event") == "message_requeued")

    report(
        "sigterm",
        exit_code=code,
        done_at_stop=done_at_stop,
        steps_in_flight_at_stop=in_flight,
        invocations_by_stopped=len(began),
        requeued_by_stopped=requeued,
        **findings.figures,
    )
    assert code == 0, stopped.tail()
    assert done_at_stop < SIGTERM_RUNS
    assert in_flight > 0
    assert [e["cut_short"] for e in stopping] == [0]
    assert began, "the stopped worker ran no handler"
    assert abandoned == []
    findings.assert_none()
    assert findings.abandoned == []


async def test_two_primary_step_downs_in_a_replica_set_lose_and_repeat_nothing(
    make_deployment: Callable[[str], Deployment], mongo_replica_set: MongoReplicaSet
):
    deployment = make_deployment(mongo_replica_set.url)
    rng = random.Random(SEED + 3)
    load = mixed_load(STEPDOWN_RUNS, rng, FLOWS)
    workers = [deployment.start_worker(**CHAOS), deployment.start_worker(**CHAOS)]
    for worker in workers:
        await worker.ready()
    started = time.monotonic()

    await publish_load(deployment, load.sends)
    stepped = await step_downs(
        deployment, mongo_replica_set, runs=STEPDOWN_RUNS, times=2
    )
    await until_terminal(deployment, STEPDOWN_RUNS, within=patience(STEPDOWN_RUNS))
    elapsed = time.monotonic() - started
    findings = await verify(deployment, load)

    report(
        "replica_set_step_downs",
        seed=SEED + 3,
        seconds=round(elapsed, 1),
        deferred=logged(workers, "message_deferred"),
        scheduler_deferred=logged(workers, "scheduler_deferred"),
        step_downs=[vars(s) for s in stepped],
        **findings.figures,
    )
    findings.assert_none()
    assert [s.step_down for s in stepped] == [1, 2]
    # Each step-down handed the primary to another member, with runs in flight.
    assert all(s.new_primary != s.old_primary for s in stepped), stepped
    assert stepped[1].old_primary == stepped[0].new_primary, stepped
    assert all(s.terminal_before < STEPDOWN_RUNS for s in stepped), stepped
    assert logged(workers, "message_crashed") == 0
    for worker in workers:
        await worker.ready(within=30)
        assert worker.returncode is None
