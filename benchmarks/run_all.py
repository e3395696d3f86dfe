"""Run every benchmark against one RabbitMQ and one MongoDB; write results.md.

    .venv/bin/python -m benchmarks.run_all [--only throughput,latency,...] [--quick]

Each scenario runs as its own process (`python -m benchmarks.<name>`), all of them
against the same servers: AMQP_URL (default: the broker on 127.0.0.1:5672) and
MONGODB_URL, else one bundled mongod started here for all of them. Every JSON line
they print is collected in benchmarks/results.jsonl; their summaries become the tables
of benchmarks/results.md. `celery_compare` needs Celery installed (`uv pip install
celery`); it is skipped, and said so, when it is not.
"""

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, say

HERE = REPO / "benchmarks"

SCENARIOS: dict[str, tuple[list[str], list[str]]] = {
    # name: (full arguments, --quick arguments)
    "throughput": (
        ["--runs", "300", "--repeat", "3"],
        ["--runs", "100", "--repeat", "1"],
    ),
    "latency": (
        ["--hop-runs", "30", "--e2e-runs", "100"],
        ["--hop-runs", "5", "--e2e-runs", "10", "--ref-runs", "1"],
    ),
    "fanout": (
        ["--sizes", "100,1000,10000", "--timeout", "600"],
        ["--sizes", "100", "--timeout", "120", "--no-fanout"],
    ),
    "scale": (
        ["--backlog", "100000", "--duration", "60", "--workers", "1,2,4"],
        ["--backlog", "2000", "--duration", "15", "--workers", "1,2", "--runs", "100"],
    ),
    "celery_compare": (["--repeat", "2"], ["--repeat", "1", "--modes", "durable"]),
}


@contextlib.contextmanager
def mongodb_url() -> Iterator[tuple[str, str]]:
    """The MongoDB URL for every scenario, and the pid of the mongod ("" if unknown)."""
    if url := os.environ.get("MONGODB_URL"):
        yield url, os.environ.get("BENCH_MONGOD_PID", "")
        return
    from tests.services import MongoServer

    with MongoServer() as server:
        process = server._process
        yield server.url, str(process.pid) if process else ""


def run(name: str, args: list[str], env: dict[str, str]) -> tuple[int, float]:
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *args]
    say(f"\n## {name}: python -m benchmarks.{name} {' '.join(args)}")
    started = time.monotonic()
    code = subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode  # noqa: S603
    return code, time.monotonic() - started


def load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def summary(records: list[dict[str, Any]], bench: str) -> dict[str, Any] | None:
    found = [
        r for r in records if r.get("bench") == bench and r.get("who") == "summary"
    ]
    return found[-1] if found else None


def _fanout_cases(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each fan-out case, fan-out first, ForEach by size."""
    cases = {
        r["case"]: r
        for r in records
        if r.get("bench") == "fanout" and r.get("who") == "ours" and "case" in r
    }
    return dict(
        sorted(cases.items(), key=lambda kv: (kv[0] != "fanout1000", len(kv[0]), kv[0]))
    )


def _old_durations(path: Path) -> str:
    if not path.exists():
        return ""
    lines = path.read_text().splitlines()
    found = next((line for line in lines if line.startswith("Durations:")), "")
    return found.split(" Tables rebuilt from", 1)[0]  # said once, below


def fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def tables(  # noqa: C901 - one section per scenario
    records: list[dict[str, Any]], commands: dict[str, str]
) -> str:
    out: list[str] = []
    if s := summary(records, "throughput"):
        out += [
            "## 1. Throughput (no-op linear 10-step flow, one worker)",
            "",
            f"`{commands['throughput']}`",
            "",
            "| figure | ours | reference | ratio (goal >= 0.7) |",
            "| --- | ---: | ---: | ---: |",
            f"| steps/s (steady) | {fmt(s['ours_steady_steps_s'])} | "
            f"{fmt(s['reference_steps_s'])} | **{fmt(s['ratio'])}** |",
            f"| steps/s (overall, triggers and tail included) | "
            f"{fmt(s['ours_overall_steps_s'])} | | |",
        ]
        ours_cpu = s.get("ours_cpu_ms_per_step") or {}
        ref_cpu = s.get("reference_cpu_ms_per_step") or {}
        for group in ("worker", "mongod", "rabbitmq"):
            out.append(
                f"| CPU ms per step, {group} | {fmt(ours_cpu.get(group))} | "
                f"{fmt(ref_cpu.get(group))} | |"
            )
        ops = s.get("ours_mongo_ops_per_step") or {}
        out += [
            f"| MongoDB operations per step | {fmt(round(sum(ops.values()), 1))} "
            f"({', '.join(f'{k} {v}' for k, v in ops.items())}) | 2 (+1 seed) | |",
            "",
            f"Reference: `{s.get('reference_command')}` (interleaved with ours, "
            f"{s.get('repeat')} times; medians). Other load on the machine during "
            f"ours: {fmt(s.get('ours_others_cpu_pct'))} % of a core.",
            "",
        ]
    if s := summary(records, "latency"):
        out += [
            "## 2. Latency (one run at a time, one worker)",
            "",
            f"`{commands['latency']}`",
            "",
            "| figure | ours | reference (1 chain) | ratio (goal <= 1.5) |",
            "| --- | ---: | ---: | ---: |",
            f"| hop p50, ms | {fmt(s['ours_hop_p50_ms'])} | "
            f"{fmt(s['reference_hop_p50_ms'])} | **{fmt(s['hop_ratio'])}** |",
            f"| hop p99, ms | {fmt(s['ours_hop_p99_ms'])} | "
            f"{fmt(s['reference_hop_p99_ms'])} | |",
            f"| gap p50 (completed_at k -> started_at k+1), ms | "
            f"{fmt(s['ours_gap_p50_ms'])} | | |",
            f"| 3-step trigger-to-completion p50, ms | "
            f"{fmt(s['ours_trigger_to_completion_p50_ms'])} | | |",
            f"| 3-step trigger-to-completion p99, ms | "
            f"{fmt(s['ours_trigger_to_completion_p99_ms'])} | | |",
            "",
            f"Reference: `{s.get('reference_command')}`.",
            "",
        ]
    if cases := _fanout_cases(records):
        # The reference beside the fan-out runs: the last fan-out summary names it.
        refs = [
            {
                "steps_s": r.get("reference_steps_s"),
                "command": r.get("reference_command"),
            }
            for r in records
            if r.get("bench") == "fanout" and r.get("who") == "summary"
        ]
        ref = refs[-1] if refs else {}
        step_ms = 1e3 / ref["steps_s"] if ref.get("steps_s") else None
        out += [
            "## 3. Fan-out (one worker)",
            "",
            f"`{commands['fanout']}`",
            "",
            "| case | total, s | per step/item, ms | floor (reference) |",
            "| --- | ---: | ---: | ---: |",
        ]
        for case, r in cases.items():
            if case == "fanout1000":
                floor = 1001 * step_ms / 1e3 if step_ms else None
                times = (
                    f"{r['total_s'] / floor:.1f}x" if floor and r["total_s"] else "—"
                )
                out.append(
                    f"| 1,000-way parallel + join (1,001 steps) | {fmt(r['total_s'])} "
                    f"| {fmt(r.get('per_step_ms'))} | {fmt(floor)} s (ours {times}) |"
                )
            else:
                out.append(
                    f"| ForEach {r['items']:,} items, concurrency 50 | "
                    f"{fmt(r['total_s'])} | {fmt(r.get('per_item_ms'))} | "
                    f"{fmt(step_ms)} ms per step |"
                )
        out += ["", f"Reference: `{ref.get('command')}`.", ""]
    if s := summary(records, "scale"):
        mem = s.get("memory") or {}
        out += [
            "## 4. Scale",
            "",
            f"`{commands['scale']}`",
            "",
        ]
        if mem:
            out += [
                "| memory, one worker, backlog of triggers | value |",
                "| --- | ---: |",
                f"| triggers queued before the worker started | {fmt(mem['queued'])} "
                f"(published in {fmt(mem['publish_s'])} s) |",
                f"| RSS after 10 s, MiB | {fmt(mem['rss_at_10s_mib'])} |",
                f"| RSS max / last, MiB | {fmt(mem['rss_max_mib'])} / "
                f"{fmt(mem['rss_last_mib'])} |",
                f"| growth 10 s -> {fmt(mem['duration_s'])} s, MiB | "
                f"{fmt(mem['rss_growth_10s_to_end_mib'])} (flat: "
                f"**{mem['flat']}**) |",
                f"| runs started / finished / triggers left at the end | "
                f"{fmt(mem['runs_started'])} / {fmt(mem['runs_finished'])} / "
                f"{fmt(mem['triggers_left'])} |",
                "",
            ]
        out += [
            "| worker processes | ours steps/s | reference steps/s (same procs) "
            "| ratio | machine busy % |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in s.get("workers") or []:
            out.append(
                f"| {row['workers']} | {fmt(row['ours_steps_s'])} | "
                f"{fmt(row['reference_steps_s'])} | {fmt(row['ratio'])} | "
                f"{fmt(row['machine_busy_pct'])} |"
            )
        out.append("")
    if s := summary(records, "celery_compare"):
        out += [
            "## 5. Celery, a chain of 1,000 no-op tasks (one worker each)",
            "",
            f"`{commands['celery_compare']}`",
            "",
            "| system | end-to-end, s | ours faster by (goal >= 2x) |",
            "| --- | ---: | ---: |",
            f"| ours (1,000 steps, each persisted w:majority) | "
            f"{fmt(s['ours_total_s'])} | |",
        ]
        for mode in ("durable", "default"):
            if f"celery_{mode}_total_s" in s:
                out.append(
                    f"| Celery {s['celery_version']} ({mode}) | "
                    f"{fmt(s[f'celery_{mode}_total_s'])} | "
                    f"**{fmt(s[f'speedup_vs_celery_{mode}'])}x** |"
                )
        out += [
            f"| reference floor (1,000 / one-chain steps/s) | "
            f"{fmt(s['reference_floor_s'])} | |",
            "",
            f"Reference: `{s.get('reference_command')}`.",
            "",
        ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    parser.add_argument("--jsonl", type=Path, default=HERE / "results.jsonl")
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="run nothing: rewrite results.md from results.jsonl",
    )
    a = parser.parse_args()
    names = [n for n in a.only.split(",") if n]
    if a.tables_only:
        names = []
    else:
        a.jsonl.unlink(missing_ok=True)
    commands = {
        name: f".venv/bin/python -m benchmarks.{name} "
        + " ".join(SCENARIOS[name][1 if a.quick else 0])
        for name in SCENARIOS
    }
    timings: dict[str, str] = {}
    if names:
        with mongodb_url() as (url, pid):
            env = dict(
                os.environ,
                MONGODB_URL=url,
                BENCH_MONGOD_PID=pid,
                RESULTS_FILE=str(a.jsonl),
            )
            for name in names:
                if name == "celery_compare" and not importlib.util.find_spec("celery"):
                    timings[name] = "skipped: Celery is not installed"
                    say("## celery_compare skipped: `uv pip install celery` first")
                    continue
                code, seconds = run(name, SCENARIOS[name][1 if a.quick else 0], env)
                timings[name] = f"{seconds:.0f} s" + (f", exit {code}" if code else "")
    records = load(a.jsonl)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")  # noqa: TID251
    head = [
        "# Benchmark results",
        "",
        f"Written by `.venv/bin/python -m benchmarks.run_all"
        f"{' --quick' if a.quick else ''}` on "
        f"{stamp}: {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; RabbitMQ and the bundled mongod "
        "(one-member replica set) on the same cores; w:majority, quorum queues, one "
        "worker unless said otherwise. Every scenario ran the reference loop "
        "(`benchmarks/reference/bench_steploop.py`) in the same run, against the same "
        "servers. Raw JSON lines: `benchmarks/results.jsonl`.",
        "",
        "Durations: " + ", ".join(f"{k} {v}" for k, v in timings.items()) + "."
        if timings
        else _old_durations(a.out)
        + " Tables rebuilt from results.jsonl (`--tables-only`), which may hold "
        "records appended by scenarios run on their own since.",
        "",
    ]
    a.out.write_text("\n".join(head) + "\n" + tables(records, commands))
    say(f"\nwrote {a.out}")


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    main()
