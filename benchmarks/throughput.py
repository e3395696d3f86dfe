"""Throughput: steps/s of ONE worker running many no-op linear 10-step runs at once.

    .venv/bin/python -m benchmarks.throughput [--runs 300] [--repeat 3]
        [--tracing off|on|both]

Per repeat: a fresh prefix and database, one `python -m service` worker, then `--runs`
triggers of `bench-linear10` published at once (confirmed), then wait until every run
is final. Figures come from MongoDB: each step attempt's `completed_at`.

- `steady_steps_s`: step attempts completed between the moment the last run started
  (max `runs.started_at`) and the moment the first run completed (min
  `runs.completed_at`): every run is in flight and no trigger is being handled. When
  that window is shorter than 1 s, the middle 80 % of the completions instead
  (`window: "p10-p90"`).
- `overall_steps_s`: every step / (last step completed - first trigger published),
  triggers, ramp-up and tail included.

Then the reference loop, same servers, same run: `bench_steploop.py --chains 16
--procs 1 --wc majority --queue-type quorum`; ratio = ours / reference (goal >= 0.7).

`--tracing on` runs the workers with OpenTelemetry tracing on (the `otel` extra; OTLP
over HTTP, batch exporter) to a local sink (`tests/otlp_sink.py`) that counts the spans;
`--tracing both` alternates off and on in each repeat and prints the overhead (goal
<= 10 %).
"""

import argparse
import time
from typing import Any

from benchmarks.common import (
    CpuMeter,
    Scenario,
    Servers,
    completion_rate,
    emit,
    epoch,
    median,
    pct,
    ratio,
    reference,
    rss_mib,
    run_main,
    say,
    server_pids,
    servers,
)
from benchmarks.flows import LINEAR10
from tests.otlp_sink import OtlpSink

STEPS_PER_RUN = len(LINEAR10.steps)


async def measure(
    srv: Servers,
    *,
    runs: int,
    workers: int = 1,
    name: str = "throughput",
    env: dict[str, str] | None = None,
    profile: Any = None,
) -> dict[str, Any]:
    """One measurement: `runs` linear-10 runs through `workers` worker processes.

    `profile(pids)`, if given, is called once the workers are ready and must return a
    callable that is called when the runs are finished (py-spy start/stop).
    """
    async with Scenario(srv, name, env=env or {}) as sc:
        procs = sc.start_workers(workers)
        await sc.ready()
        pids = [w.pid for w in procs]
        stop_profile = profile(pids) if profile else None
        ops0 = await sc.opcounters()
        meter = CpuMeter({**server_pids(srv), "workers": pids}).start()
        t0 = time.time()
        _, sent = await sc.trigger_many(LINEAR10.name, [{"n": n} for n in range(runs)])
        published = time.time() - t0
        await sc.wait_finished(runs, within=60 + runs * STEPS_PER_RUN / 20)
        cpu = meter.stop()
        ops1 = await sc.opcounters()
        if stop_profile:
            stop_profile()
        rss = [r for r in (rss_mib(p) for p in pids) if r is not None]
        docs = await sc.runs()
        attempts = await sc.attempts()
    statuses = {d["status"] for d in docs}
    done = sorted(epoch(a["completed_at"]) for a in attempts if a.get("completed_at"))
    last_start = max(epoch(d["started_at"]) for d in docs)
    first_end = min(epoch(d["completed_at"]) for d in docs)
    window = "all-in-flight"
    lo, hi = last_start, first_end
    if hi - lo < 1.0:
        window = "p10-p90"
        lo, hi = pct(done, 10), pct(done, 90)
    steady = completion_rate(done, lo, hi)
    total_s = done[-1] - min(sent)
    overall = len(done) / total_s
    # Whole-measurement costs per executed step (the runs' triggers included).
    per_step = {
        f"{group}_cpu_ms_per_step": round(
            cpu[f"{key}_cpu_pct"] * 10 * cpu["seconds"] / len(done), 2
        )
        for group, key in (
            ("worker", "workers"),
            ("mongod", "mongod"),
            ("rabbitmq", "rabbitmq"),
        )
    }
    mongo_ops = {k: ops1[k] - ops0[k] for k in ops0 if ops1[k] - ops0[k]}
    return {
        "runs": runs,
        "workers": workers,
        "steps": len(done),
        "statuses": sorted(statuses),
        "steady_steps_s": round(steady, 1) if steady else None,
        "window": window,
        "window_s": round(hi - lo, 2),
        "overall_steps_s": round(overall, 1),
        "publish_s": round(published, 2),
        "total_s": round(done[-1] - min(sent), 2),
        "worker_rss_mib": rss,
        **cpu,
        **per_step,
        "mongo_ops_per_step": {
            k: round(v / len(done), 2) for k, v in sorted(mongo_ops.items())
        },
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chains", type=int, default=16, help="reference chains")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--tracing", choices=["off", "on", "both"], default="off")
    a = parser.parse_args()
    if a.tracing != "off":
        await tracing_overhead(a.runs, a.repeat, both=a.tracing == "both")
        return
    with servers() as srv:
        ours, refs = [], []
        # Interleaved (ours, reference, ours, ...) so that a change of load on a shared
        # machine hits both alike; medians of the repeats.
        for n in range(a.repeat):
            res = await measure(srv, runs=a.runs)
            ours.append(res)
            emit({"bench": "throughput", "who": "ours", "repeat": n, **res})
            if not a.no_reference:
                ref = reference(srv, chains=a.chains, runs=1)
                refs.append(ref)
                emit({**ref, "bench": "throughput", "who": "reference", "repeat": n})
        steady = median(r["steady_steps_s"] for r in ours)
        overall = median(r["overall_steps_s"] for r in ours)
        ref_steps = median(r["steps_s"] for r in refs)
        summary = {
            "bench": "throughput",
            "who": "summary",
            "runs": a.runs,
            "repeat": a.repeat,
            "ours_steady_steps_s": steady,
            "ours_overall_steps_s": overall,
            "ours_worker_cpu_pct": median(r["workers_cpu_pct"] for r in ours),
            "ours_cpu_ms_per_step": {
                g: median(r[f"{g}_cpu_ms_per_step"] for r in ours)
                for g in ("worker", "mongod", "rabbitmq")
            },
            "ours_mongo_ops_per_step": ours[len(ours) // 2]["mongo_ops_per_step"],
            "ours_others_cpu_pct": median(r.get("others_cpu_pct") for r in ours),
            "reference_steps_s": ref_steps,
            "reference_chains": a.chains,
            "reference_cpu_ms_per_step": {
                g: median(round(r[f"{k}_cpu_pct"] * 10 / r["steps_s"], 2) for r in refs)
                for g, k in (
                    ("worker", "workers"),
                    ("mongod", "mongod"),
                    ("rabbitmq", "rabbitmq"),
                )
            }
            if refs
            else None,
            "reference_command": refs[0]["command"] if refs else None,
            "ratio": ratio(steady, ref_steps),
            "goal": ">= 0.7",
        }
        emit(summary)
        say(
            f"throughput: ours {steady} steps/s steady ({overall} overall, "
            f"{a.runs} runs x {STEPS_PER_RUN} steps, 1 worker), reference "
            f"{ref_steps} steps/s ({a.chains} chains): "
            f"ratio {summary['ratio']} (goal >= 0.7)"
        )
        say(
            f"  CPU ms per step, ours {summary['ours_cpu_ms_per_step']}, reference "
            f"{summary['reference_cpu_ms_per_step']}; MongoDB ops per step "
            f"{summary['ours_mongo_ops_per_step']}"
        )


async def tracing_overhead(runs: int, repeat: int, *, both: bool) -> None:
    """Tracing on (and, with `both`, off in turn): steps/s and the overhead."""
    settings = ["off", "on"] if both else ["on"]
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    with servers() as srv, OtlpSink(keep=False) as sink:
        traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint}
        for n in range(repeat):
            for setting in settings:
                spans = sink.spans
                env = traced if setting == "on" else {}
                res = await measure(srv, runs=runs, env=env, name=f"tracing-{setting}")
                res["spans_exported"] = sink.spans - spans
                results[setting].append(res)
                emit({"bench": "throughput", "tracing": setting, "repeat": n, **res})
    steady = {
        s: round(median(r["steady_steps_s"] for r in results[s]), 1) for s in settings
    }
    cpu = {
        s: round(median(r["worker_cpu_ms_per_step"] for r in results[s]), 2)
        for s in settings
    }
    summary: dict[str, Any] = {
        "bench": "throughput",
        "who": "tracing-summary",
        "runs": runs,
        "repeat": repeat,
        "steady_steps_s": steady,
        "worker_cpu_ms_per_step": cpu,
        "spans_per_run": round(
            median(r["spans_exported"] for r in results["on"]) / runs, 1
        ),
    }
    if both:
        summary["overhead_pct"] = round(100 * (1 - steady["on"] / steady["off"]), 1)
        summary["goal"] = "<= 10 %"
    emit(summary)
    say(f"throughput with tracing: {summary}")


if __name__ == "__main__":
    run_main(main)
