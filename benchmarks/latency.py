"""Latency: one run at a time, ONE worker; per-step hop and trigger-to-completion.

    .venv/bin/python -m benchmarks.latency [--hop-runs 30] [--e2e-runs 100]

1. Hop: `--hop-runs` runs of `bench-linear10`, one after the other (the next trigger is
   published once the previous run is final). hop = the moment step k+1's handler ran
   minus the moment step k's handler ran (each no-op handler returns `time.time()`), so
   one hop is the whole engine cycle of one step: finish k, plan, publish k+1, consume,
   claim, load the run, resolve the inputs, invoke. That is the reference loop's
   definition too (receipt of step k to receipt of step k+1 of one chain). Also
   `gap`: step k `completed_at` -> step k+1 `started_at` in MongoDB (ms precision): the
   part of the hop between our two store writes.
2. Trigger to completion: `--e2e-runs` runs of the 3-step `bench-three`, one at a time:
   publish time (client clock, just before the confirmed publish) -> `runs.completed_at`
   (worker clock; same machine).

Then the reference loop, same servers: `bench_steploop.py --chains 1 --procs 1
--wc majority --queue-type quorum`; ratio = our hop p50 / the reference hop p50
(goal <= 1.5).
"""

import argparse
import asyncio
import itertools
import time
from typing import Any

from benchmarks.common import (
    CpuMeter,
    Scenario,
    Servers,
    emit,
    epoch,
    ms,
    output_stamps,
    pct,
    reference,
    run_main,
    say,
    server_pids,
    servers,
)
from benchmarks.flows import LINEAR10, THREE


async def one_at_a_time(
    sc: Scenario, flow: str, count: int, *, poll: float = 0.01
) -> list[tuple[str, float]]:
    """Trigger `flow` `count` times, each once the previous run is final."""
    done = []
    for n in range(count):
        job_id, sent = await sc.trigger(flow, {"n": n})
        deadline = time.monotonic() + 60
        while await sc.finished_count([job_id]) < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {job_id} of {flow} not final within 60 s")
            sc.check_workers()
            await asyncio.sleep(poll)
        done.append((job_id, sent))
    return done


async def measure(srv: Servers, *, hop_runs: int, e2e_runs: int) -> dict[str, Any]:
    async with Scenario(srv, "latency") as sc:
        procs = sc.start_workers(1)
        await sc.ready()
        await one_at_a_time(sc, THREE.name, 3)  # warm-up: connections, code paths
        meter = CpuMeter({**server_pids(srv), "workers": [procs[0].pid]}).start()
        hop_jobs = await one_at_a_time(sc, LINEAR10.name, hop_runs)
        cpu = meter.stop()
        e2e_jobs = await one_at_a_time(sc, THREE.name, e2e_runs)
        runs = {d["job_id"]: d for d in await sc.runs()}
        hop_run_ids = [runs[j]["_id"] for j, _ in hop_jobs]
        rows = await sc.step_rows({"run_id": {"$in": hop_run_ids}})
    stamps = output_stamps(rows)
    by_key = {(r["run_id"], r["key"]): r for r in rows}
    keys = list(LINEAR10.steps)
    hops, gaps = [], []
    for run_id in hop_run_ids:
        for before, after in itertools.pairwise(keys):
            hops.append(stamps[run_id][after] - stamps[run_id][before])
            gap = epoch(by_key[run_id, after]["started_at"]) - epoch(
                by_key[run_id, before]["completed_at"]
            )
            gaps.append(gap)
    e2e = [epoch(runs[j]["completed_at"]) - sent for j, sent in e2e_jobs]
    statuses = sorted({runs[j]["status"] for j, _ in [*hop_jobs, *e2e_jobs]})
    return {
        "hop_runs": hop_runs,
        "hops": len(hops),
        "hop_p50_ms": ms(pct(hops, 50)),
        "hop_p99_ms": ms(pct(hops, 99)),
        "hop_mean_ms": ms(sum(hops) / len(hops)),
        "gap_p50_ms": ms(pct(gaps, 50)),
        "gap_p99_ms": ms(pct(gaps, 99)),
        "e2e_runs": e2e_runs,
        "trigger_to_completion_p50_ms": ms(pct(e2e, 50)),
        "trigger_to_completion_p99_ms": ms(pct(e2e, 99)),
        "trigger_to_completion_max_ms": ms(max(e2e)),
        "statuses": statuses,
        **{f"hop_phase_{k}": v for k, v in cpu.items()},
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hop-runs", type=int, default=30)
    parser.add_argument("--e2e-runs", type=int, default=100)
    parser.add_argument("--ref-runs", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true")
    a = parser.parse_args()
    with servers() as srv:
        ours = await measure(srv, hop_runs=a.hop_runs, e2e_runs=a.e2e_runs)
        emit({"bench": "latency", "who": "ours", **ours})
        ref: dict[str, Any] = {}
        if not a.no_reference:
            ref = reference(srv, chains=1, runs=a.ref_runs)
            emit({**ref, "bench": "latency", "who": "reference"})
    hop_ratio = (
        round(ours["hop_p50_ms"] / ref["hop_p50_ms"], 2)
        if ref.get("hop_p50_ms")
        else None
    )
    summary = {
        "bench": "latency",
        "who": "summary",
        "ours_hop_p50_ms": ours["hop_p50_ms"],
        "ours_hop_p99_ms": ours["hop_p99_ms"],
        "ours_gap_p50_ms": ours["gap_p50_ms"],
        "ours_trigger_to_completion_p50_ms": ours["trigger_to_completion_p50_ms"],
        "ours_trigger_to_completion_p99_ms": ours["trigger_to_completion_p99_ms"],
        "reference_hop_p50_ms": ref.get("hop_p50_ms"),
        "reference_hop_p99_ms": ref.get("hop_p99_ms"),
        "reference_command": ref.get("command"),
        "hop_ratio": hop_ratio,
        "goal": "hop p50 <= 1.5x reference",
    }
    emit(summary)
    say(
        f"latency: hop p50 {ours['hop_p50_ms']} ms / p99 {ours['hop_p99_ms']} ms "
        f"(reference one chain: p50 {ref.get('hop_p50_ms')} ms / p99 "
        f"{ref.get('hop_p99_ms')} ms): {hop_ratio}x (goal <= 1.5x); "
        f"3-step trigger-to-completion p50 {ours['trigger_to_completion_p50_ms']} ms "
        f"/ p99 {ours['trigger_to_completion_p99_ms']} ms"
    )


if __name__ == "__main__":
    run_main(main)
