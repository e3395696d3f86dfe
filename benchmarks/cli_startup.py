"""`flowctl` start-up: seconds from process start to exit, per command (median of N).

    python -m benchmarks.cli_startup [--runs 9] [--run-id ID]

`--help` and the subcommands' help need no server. The read commands (`runs`,
`flows`, `run ID`) read the MongoDB of `MONGODB_URL` / `MONGODB_DATABASE`; they are
measured only when `MONGODB_URL` is set. Each figure is the whole process (interpreter
start, imports, the command, exit), as an operator waits for it; `python -X importtime`
shows where the import part goes.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOWCTL = [sys.executable, "-c", "from service.cli import main; main()"]


def seconds(arguments: list[str], runs: int) -> tuple[float, float, float]:
    """Min, median and max wall seconds of `flowctl arguments` over `runs` runs."""
    times = []
    for _ in range(runs + 1):  # the first run warms the file cache, not counted
        started = time.perf_counter()
        subprocess.run(  # noqa: S603 - our own command line
            [*FLOWCTL, *arguments],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        times.append(time.perf_counter() - started)
    counted = times[1:]
    return min(counted), statistics.median(counted), max(counted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--run-id", help="A run to show with `flowctl run`.")
    args = parser.parse_args()
    commands = [["--help"], ["run", "--help"], ["dlq", "replay", "--help"]]
    if os.environ.get("MONGODB_URL"):
        commands += [["runs"], ["flows"]]
        if args.run_id:
            commands.append(["run", args.run_id])
    print(f"{'command':<28} {'min s':>7} {'median s':>9} {'max s':>7}")
    for arguments in commands:
        low, middle, high = seconds(arguments, args.runs)
        shown = "flowctl " + " ".join(
            a if len(a) < 14 else a[:8] + "…" for a in arguments
        )
        print(f"{shown:<28} {low:>7.3f} {middle:>9.3f} {high:>7.3f}")


if __name__ == "__main__":
    main()
