"""Profile ONE worker with py-spy during the throughput scenario; print the hot spots.

    .venv/bin/python -m benchmarks.profile_worker [--runs 300]

Needs py-spy (`uv pip install py-spy`; not a project dependency). Runs the throughput
scenario twice while `py-spy record --nonblocking` samples the worker (on-CPU samples
only): once as a flamegraph (`--svg`, default benchmarks/profile.svg) and once as raw
collapsed stacks (`--raw`), from which it prints:

- the top functions by self time and by inclusive time, as % of busy samples;
- inclusive % of a few groups that matter for suggestions (MongoDB driver, aio-pika /
  aiormq, logging, JSON, pydantic, the orchestrator).
"""

import argparse
import re
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.common import REPO, emit, py_spy, run_main, say, servers
from benchmarks.throughput import measure

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")

GROUPS = {
    "pymongo (driver, BSON, network)": ("pymongo/", "bson/"),
    "aio-pika/aiormq/pamqp (AMQP)": ("aio_pika/", "aiormq/", "pamqp/"),
    "structlog/logging": ("structlog/", "logging/", "service/logs.py"),
    "json/orjson (stdlib json)": ("json/",),
    "pydantic (contracts)": ("pydantic/", "pydantic_core/", "contracts/"),
    "asyncio event loop (own)": ("asyncio/",),
    "service/orchestrator": ("service/orchestrator/",),
    "service/engine": ("service/engine/",),
    "service/adapters/mongo": ("service/adapters/mongo/",),
    "service/adapters/amqp": ("service/adapters/amqp/",),
    "prometheus_client": ("prometheus_client/",),
}


def short(path: str) -> str:
    for marker in ("site-packages/", "python3.11/", str(REPO) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def parse(raw: Path) -> tuple[int, int, Counter[str], Counter[str], Counter[str]]:
    """(all samples, busy samples, self by function, inclusive by function,
    inclusive by group) from py-spy's raw collapsed stacks."""
    total = busy = 0
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        matches = [FRAME.match(f) for f in stack.split(";")]
        total += count
        names = [(m["func"], short(m["file"])) for m in matches if m]
        if not names:
            continue
        leaf_func, leaf_file = names[-1]
        if _idle(leaf_func, leaf_file):
            continue
        busy += count
        self_time[f"{leaf_func} ({leaf_file})"] += count
        for name in {f"{func} ({file})" for func, file in names}:
            inclusive[name] += count
        files = {file for _, file in names}
        for group, markers in GROUPS.items():
            if any(any(m in f for m in markers) for f in files):
                groups[group] += count
    return total, busy, self_time, inclusive, groups


def _idle(func: str, file: str) -> bool:
    """A thread waiting, not working (epoll, an idle thread-pool thread)."""
    return (
        (func.endswith("select") and "selectors" in file)
        or (func == "_worker" and "concurrent/futures/thread" in file)
        or (func.endswith("wait") and file == "threading.py")
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--svg", type=Path, default=REPO / "benchmarks" / "profile.svg")
    parser.add_argument(
        "--raw", type=Path, default=Path(tempfile.gettempdir()) / "flow-profile.txt"
    )
    parser.add_argument("--top", type=int, default=25)
    a = parser.parse_args()
    with servers() as srv:
        res_svg = await measure(srv, runs=a.runs, name="profile", profile=py_spy(a.svg))
        say(f"# flamegraph: {a.svg} ({res_svg['steady_steps_s']} steps/s under py-spy)")
        res = await measure(
            srv, runs=a.runs, name="profile", profile=py_spy(a.raw, fmt="raw")
        )
    total, busy, self_time, inclusive, groups = parse(a.raw)
    pct = lambda n: round(100.0 * n / busy, 1) if busy else None  # noqa: E731
    emit(
        {
            "bench": "profile",
            "steady_steps_s": res["steady_steps_s"],
            "worker_cpu_pct": res["workers_cpu_pct"],
            "worker_cpu_ms_per_step": res["worker_cpu_ms_per_step"],
            "samples": total,
            "busy_pct": round(100.0 * busy / total, 1) if total else None,
            "groups_pct_of_busy": {g: pct(n) for g, n in groups.most_common()},
            "top_self_pct": {k: pct(n) for k, n in self_time.most_common(a.top)},
            "top_inclusive_pct": {k: pct(n) for k, n in inclusive.most_common(a.top)},
        }
    )
    say(
        f"\nworker: {res['steady_steps_s']} steps/s under py-spy, "
        f"{res['workers_cpu_pct']} % CPU, {res['worker_cpu_ms_per_step']} ms CPU/step; "
        f"{busy} on-CPU samples of {total}"
    )
    say("\ninclusive % of busy samples, by group:")
    for g, n in groups.most_common():
        say(f"  {pct(n):5.1f}  {g}")
    say("\ntop self time (% of busy samples):")
    for k, n in self_time.most_common(a.top):
        say(f"  {pct(n):5.1f}  {k}")
    say("\ntop inclusive time (% of busy samples):")
    for k, n in inclusive.most_common(a.top * 2):
        say(f"  {pct(n):5.1f}  {k}")


if __name__ == "__main__":
    run_main(main)
