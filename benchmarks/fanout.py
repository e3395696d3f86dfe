"""Fan-out: a 1,000-way parallel step with a join; ForEach over 100 to 10,000 items.

    .venv/bin/python -m benchmarks.fanout [--sizes 100,1000,10000] [--timeout 600]

ONE worker. Each case is one run, triggered once the worker is ready; total time =
`runs.completed_at` - publish time.

1. `bench-fanout1000`: p0000..p0999 (no-op, all entry steps) then `join` after all of
   them: 1,001 executed steps.
2. `bench-foreach`: ForEach over `@triggerBody().items` with concurrency 50, its body
   one no-op step; per-item cost = total / items (it should stay flat as items grow).
   A case that is not done within `--timeout` s is reported with the iterations it
   finished (`loop.finished` of the ForEach step) and its rate so far.

The floor beside them is the reference loop's steps/s (`--chains 16`, same servers):
1,001 steps at that rate, and one reference step per item.
"""

import argparse
import asyncio
import time
from typing import Any

from benchmarks.common import (
    CpuMeter,
    Scenario,
    Servers,
    emit,
    epoch,
    reference,
    run_main,
    say,
    server_pids,
    servers,
)
from benchmarks.flows import FANOUT1000, FOREACH, FOREACH_CONCURRENCY


async def one_run(
    srv: Servers, flow: str, body: object, *, limit: float, name: str
) -> dict[str, Any]:
    async with Scenario(srv, name) as sc:
        procs = sc.start_workers(1)
        await sc.ready()
        meter = CpuMeter({**server_pids(srv), "workers": [procs[0].pid]}).start()
        job_id, sent = await sc.trigger(flow, body)
        timed_out = False
        try:
            await sc.wait_finished(1, within=limit, job_ids=[job_id], progress=True)
        except TimeoutError:
            timed_out = True
        elapsed = time.time() - sent
        cpu = meter.stop()
        runs = await sc.runs([job_id])
        run = runs[0] if runs else {}
        executed = await sc.db.steps.count_documents(
            {"type": {"$ne": "__iteration"}, "status": {"$in": ["Succeeded", "Failed"]}}
        )
        loop = await sc.db.steps.find_one({"key": "items"}, {"loop": 1})
        dead = await sc.queue_depth_or_none("dead")
    total = (
        epoch(run["completed_at"]) - sent
        if run.get("completed_at") is not None
        else None
    )
    return {
        "status": run.get("status"),
        "timed_out": timed_out,
        "total_s": round(total, 3) if total is not None else None,
        "elapsed_s": round(elapsed, 3),
        "executed_steps": executed,
        "loop": (loop or {}).get("loop"),
        "dead_letters": dead,
        **cpu,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-fanout", action="store_true")
    parser.add_argument("--no-reference", action="store_true")
    a = parser.parse_args()
    sizes = [int(x) for x in a.sizes.split(",") if x]
    results: dict[str, Any] = {}
    with servers() as srv:
        if not a.no_fanout:
            res = await one_run(
                srv, FANOUT1000.name, None, limit=a.timeout, name="fanout"
            )
            steps = len(FANOUT1000.steps)
            res["per_step_ms"] = (
                round(res["total_s"] * 1e3 / steps, 2) if res["total_s"] else None
            )
            results["fanout1000"] = res
            emit({"bench": "fanout", "who": "ours", "case": "fanout1000", **res})
            say(f"# fan-out 1000 + join: {res['total_s']} s ({res['status']})")
        for size in sizes:
            body = {"items": list(range(size))}
            res = await one_run(
                srv, FOREACH.name, body, limit=a.timeout, name=f"foreach{size}"
            )
            done = (res["loop"] or {}).get("finished") or 0
            if res["total_s"]:
                res["per_item_ms"] = round(res["total_s"] * 1e3 / size, 2)
            elif done:
                res["per_item_ms"] = round(res["elapsed_s"] * 1e3 / done, 2)
            res["items"] = size
            res["concurrency"] = FOREACH_CONCURRENCY
            results[f"foreach{size}"] = res
            emit({"bench": "fanout", "who": "ours", "case": f"foreach{size}", **res})
            say(
                f"# ForEach {size}: {res['total_s']} s, {res.get('per_item_ms')} ms "
                f"per item ({res['status']}, {done} iterations finished)"
            )
            await asyncio.sleep(0)
        ref: dict[str, Any] = {}
        if not a.no_reference:
            ref = reference(srv, chains=16, runs=1)
            emit({**ref, "bench": "fanout", "who": "reference"})
    ref_step_ms = round(1e3 / ref["steps_s"], 3) if ref.get("steps_s") else None
    summary: dict[str, Any] = {
        "bench": "fanout",
        "who": "summary",
        "reference_steps_s": ref.get("steps_s"),
        "reference_step_ms": ref_step_ms,
        "reference_command": ref.get("command"),
    }
    if "fanout1000" in results:
        r = results["fanout1000"]
        floor = len(FANOUT1000.steps) * ref_step_ms / 1e3 if ref_step_ms else None
        summary["fanout1000_total_s"] = r["total_s"]
        summary["fanout1000_floor_s"] = round(floor, 2) if floor else None
        summary["fanout1000_ratio_to_floor"] = (
            round(r["total_s"] / floor, 2) if floor and r["total_s"] else None
        )
    for size in sizes:
        r = results[f"foreach{size}"]
        summary[f"foreach{size}_total_s"] = r["total_s"]
        summary[f"foreach{size}_per_item_ms"] = r.get("per_item_ms")
    emit(summary)
    say(
        "fan-out: "
        + ", ".join(f"{k} {v}" for k, v in summary.items() if k not in ("bench", "who"))
    )


if __name__ == "__main__":
    run_main(main)
