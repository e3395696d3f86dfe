"""Scale: a worker's memory over a 100,000-trigger backlog; steps/s with 1-4 workers.

    .venv/bin/python -m benchmarks.scale [--backlog 100000] [--duration 60]
                                         [--workers 1,2,4] [--runs 300]

1. Memory: the topology is declared and `--backlog` `bench-three` triggers are
   published (confirmed, 1,000 in flight) to the triggers queue BEFORE any worker
   starts. Then ONE worker starts and works through them for `--duration` s while its
   RSS (/proc/<pid>/status VmRSS) is sampled every second. Prefetch (AMQP_PREFETCH, 64
   per queue) bounds what the worker holds, so RSS should stay flat: reported as the
   RSS after 10 s, the max, the last, and the growth from 10 s to the end.
2. Workers: the throughput scenario (`--runs` linear-10 runs at once) with 1, 2 and 4
   worker processes, each beside the reference loop with as many processes
   (`bench_steploop.py --chains 16 --procs N --wc majority --queue-type quorum`).
   Two cores are shared by the broker, mongod and every worker: expect no gain.
"""

import argparse
import asyncio
import time
from typing import Any

from benchmarks.common import (
    Scenario,
    Servers,
    emit,
    median,
    ratio,
    reference,
    rss_mib,
    run_main,
    say,
    servers,
)
from benchmarks.flows import THREE
from benchmarks.throughput import measure as throughput


async def memory(srv: Servers, *, backlog: int, duration: float) -> dict[str, Any]:
    async with Scenario(srv, "scale-memory") as sc:
        await sc.declare_topology()
        t0 = time.time()
        batch = 10_000
        for start in range(0, backlog, batch):
            count = min(batch, backlog - start)
            await sc.trigger_many(
                THREE.name, [{"n": start + n} for n in range(count)], window=1000
            )
        publish_s = time.time() - t0
        queued = await sc.queue_depth("triggers")
        say(f"# {queued} triggers queued in {publish_s:.1f} s; starting one worker")
        (worker,) = sc.start_workers(1)
        started = time.monotonic()
        samples: list[tuple[float, float]] = []
        finished: list[tuple[float, int]] = []
        ready_s = None
        while (elapsed := time.monotonic() - started) < duration:
            sc.check_workers()
            rss = rss_mib(worker.pid)
            if rss is not None:
                samples.append((round(elapsed, 1), rss))
            if ready_s is None and (await sc.consumers("triggers") or 0) >= 1:
                ready_s = round(elapsed, 1)
            if len(samples) % 5 == 0:
                finished.append((round(elapsed, 1), await sc.finished_count()))
            await asyncio.sleep(1.0)
        remaining = await sc.queue_depth("triggers")
        done = await sc.finished_count()
        started_runs = await sc.db.runs.count_documents({})
    after10 = next((rss for t, rss in samples if t >= 10), samples[-1][1])
    peak = max(rss for _, rss in samples)
    last = samples[-1][1]
    growth = round(last - after10, 1)
    return {
        "backlog": backlog,
        "publish_s": round(publish_s, 1),
        "queued": queued,
        "duration_s": duration,
        "ready_s": ready_s,
        "runs_started": started_runs,
        "runs_finished": done,
        "triggers_left": remaining,
        "rss_at_10s_mib": after10,
        "rss_max_mib": peak,
        "rss_last_mib": last,
        "rss_growth_10s_to_end_mib": growth,
        "flat": abs(growth) <= max(5.0, 0.05 * after10),
        "rss_samples": samples,
        "finished_samples": finished,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-reference", action="store_true")
    a = parser.parse_args()
    counts = [int(x) for x in a.workers.split(",") if x]
    with servers() as srv:
        mem: dict[str, Any] = {}
        if not a.no_memory:
            mem = await memory(srv, backlog=a.backlog, duration=a.duration)
            emit({"bench": "scale", "who": "ours", "case": "memory", **mem})
            say(
                f"# memory: RSS {mem['rss_at_10s_mib']} MiB at 10 s, max "
                f"{mem['rss_max_mib']}, last {mem['rss_last_mib']} "
                f"(flat: {mem['flat']}); {mem['runs_finished']} runs done in "
                f"{a.duration:g} s"
            )
        rows = []
        for n in counts:
            ours = await throughput(srv, runs=a.runs, workers=n, name=f"scale{n}")
            emit({"bench": "scale", "who": "ours", "case": f"workers{n}", **ours})
            ref: dict[str, Any] = {}
            if not a.no_reference:
                ref = reference(srv, chains=16, runs=1, procs=n)
                emit({**ref, "bench": "scale", "who": "reference", "procs": n})
            rows.append(
                {
                    "workers": n,
                    "ours_steps_s": ours["steady_steps_s"],
                    "ours_workers_cpu_pct": ours["workers_cpu_pct"],
                    "machine_busy_pct": ours["machine_busy_pct"],
                    "others_cpu_pct": ours.get("others_cpu_pct"),
                    "reference_steps_s": ref.get("steps_s"),
                    "ratio": ratio(ours["steady_steps_s"], ref.get("steps_s")),
                }
            )
            say(f"# {n} worker(s): {rows[-1]}")
    summary = {
        "bench": "scale",
        "who": "summary",
        "memory": {k: v for k, v in mem.items() if not k.endswith("_samples")},
        "workers": rows,
        "gain_most_vs_fewest_workers": ratio(
            median(r["ours_steps_s"] for r in rows if r["workers"] == max(counts)),
            median(r["ours_steps_s"] for r in rows if r["workers"] == min(counts)),
        ),
    }
    emit(summary)
    for r in rows:
        say(
            f"scale: {r['workers']} worker(s) {r['ours_steps_s']} steps/s, reference "
            f"{r['reference_steps_s']} ({r['workers']} procs), ratio {r['ratio']}"
        )


if __name__ == "__main__":
    run_main(main)
