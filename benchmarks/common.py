"""What every benchmark shares: servers, workers, triggers, figures and the reference.

- `servers()`: RabbitMQ from AMQP_URL (default: the broker on 127.0.0.1:5672) and
  MongoDB from MONGODB_URL, else the bundled mongod started as a one-member replica
  set (`tests.services.MongoServer`), stopped at the end.
- `Scenario`: one measurement's own AMQP prefix and database, its worker processes
  (`python -m service`, LOG_LEVEL=warning, HEALTH_PORT=0, FLOW_MODULES=benchmarks.flows,
  MONGODB_WRITE_CONCERN=majority; the queues are quorum queues, as the worker always
  declares them), a confirmed publisher of raw JSON triggers, and MongoDB reads of the
  `runs` and `steps` documents the figures come from.
- `reference()`: `benchmarks/reference/bench_steploop.py` against the same servers, with
  `--wc majority --queue-type quorum`; its median JSON line.
- `emit()`: one JSON line on stdout (and appended to $RESULTS_FILE when set).

Nothing here is a test: scripts print figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import aio_pika
import orjson
from pymongo import AsyncMongoClient

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parent / "reference"
STEPLOOP = REFERENCE / "bench_steploop.py"
LOCAL_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
FLOW_MODULES = "benchmarks.flows"
WRITE_CONCERN = "majority"
QUEUE_TYPE = "quorum"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

Document = dict[str, Any]


# -- output ----------------------------------------------------------------------------


def emit(record: dict[str, Any]) -> None:
    """Print one JSON line; also append it to $RESULTS_FILE if set."""
    line = json.dumps(record, sort_keys=True, default=str)
    print(line, flush=True)
    if path := os.environ.get("RESULTS_FILE"):
        with open(path, "a") as out:
            out.write(line + "\n")


def say(text: str) -> None:
    """A readable line (progress or summary) on stderr-free stdout, flushed."""
    print(text, flush=True)


def pct(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100), the reference loop's definition."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100.0 * (len(s) - 1))))
    return s[k]


def ms(seconds: float | None, digits: int = 2) -> float | None:
    return None if seconds is None else round(seconds * 1e3, digits)


def median(values: Iterable[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def ratio(ours: float | None, reference: float | None) -> float | None:
    if ours is None or not reference:
        return None
    return round(ours / reference, 3)


def epoch(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


# -- servers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    amqp_url: str
    mongodb_url: str
    mongod_pid: int | None = None


@contextlib.contextmanager
def servers() -> Iterator[Servers]:
    """The broker and the database every part of one benchmark run uses."""
    amqp_url = os.environ.get("AMQP_URL", LOCAL_BROKER)
    if url := os.environ.get("MONGODB_URL"):
        # run_all passes the pid of the mongod it started, for CPU attribution.
        pid = os.environ.get("BENCH_MONGOD_PID")
        yield Servers(amqp_url, url, int(pid) if pid else None)
        return
    from tests.services import MongoServer

    with MongoServer() as server:
        pid = server._process.pid if server._process else None
        say(f"# bundled mongod at {server.url} (pid {pid})")
        yield Servers(amqp_url, server.url, pid)


# -- CPU and memory --------------------------------------------------------------------


def pgrep(pattern: str) -> list[int]:
    out = subprocess.run(  # noqa: S603
        ["pgrep", "-f", pattern],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [int(x) for x in out.split()]


def proc_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])
    except (OSError, IndexError, ValueError):
        return 0


def rss_mib(pid: int) -> float | None:
    """Resident set size of `pid` in MiB (VmRSS), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _machine() -> tuple[int, int]:
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    return sum(vals), vals[3] + vals[4]


class CpuMeter:
    """CPU of process groups (100 % = one core) and whole-machine busy %."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def start(self) -> CpuMeter:
        self.t0 = time.monotonic()
        self.m0 = _machine()
        self.g0 = {
            g: sum(proc_ticks(p) for p in pids) for g, pids in self.groups.items()
        }
        return self

    def stop(self) -> dict[str, float | None]:
        dt = time.monotonic() - self.t0
        tot, idle = _machine()
        res: dict[str, float | None] = {}
        for g, pids in self.groups.items():
            ticks = sum(proc_ticks(p) for p in pids) - self.g0[g]
            res[f"{g}_cpu_pct"] = round(100.0 * ticks / CLK_TCK / dt, 1)
        dtot = tot - self.m0[0]
        busy = 100.0 * (1 - (idle - self.m0[1]) / dtot) if dtot else None
        res["machine_busy_pct"] = None if busy is None else round(busy, 1)
        if busy is not None:
            # CPU used by processes outside the measured groups (other work on the
            # machine), 100 % = one core: figures taken while it is high are noisy.
            ours = sum(v or 0 for k, v in res.items() if k.endswith("_cpu_pct"))
            res["others_cpu_pct"] = round(max(0.0, busy * NCPU - ours), 1)
        res["seconds"] = round(dt, 3)
        return res


def server_pids(servers: Servers) -> dict[str, list[int]]:
    mongod = [servers.mongod_pid] if servers.mongod_pid else pgrep("bin/mongod")
    return {"rabbitmq": pgrep("beam.smp"), "mongod": mongod}


# -- the scenario: prefix, database, workers, triggers, reads --------------------------


class Worker:
    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service"],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self) -> None:
        if (code := self.process.poll()) is not None:
            tail = "\n".join(
                self.log_path.read_text(errors="replace").splitlines()[-30:]
            )
            raise RuntimeError(f"worker {self.name} exited with {code}:\n{tail}")

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def warnings(self) -> list[str]:
        """Log lines at warning or above (the worker runs with LOG_LEVEL=warning)."""
        return [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if line.strip()
        ]


@dataclass
class Scenario:
    """One measurement's prefix, database, workers, publisher and reader."""

    servers: Servers
    name: str = "bench"
    env: dict[str, str] = field(default_factory=dict)
    prefix: str = ""
    database: str = ""

    def __post_init__(self) -> None:
        tag = uuid4().hex[:8]
        self.prefix = self.prefix or f"bench{tag}"
        self.database = self.database or f"bench_{self.name}_{tag}"
        self.workers: list[Worker] = []
        self.logs = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.mongo: AsyncMongoClient[Document] = AsyncMongoClient(
            self.servers.mongodb_url, tz_aware=True, serverSelectionTimeoutMS=30_000
        )
        self.db = self.mongo[self.database]
        self._amqp: aio_pika.abc.AbstractConnection | None = None

    async def __aenter__(self) -> Scenario:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- workers ---------------------------------------------------------------------

    def worker_env(self, **overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            AMQP_URL=self.servers.amqp_url,
            AMQP_PREFIX=self.prefix,
            MONGODB_URL=self.servers.mongodb_url,
            MONGODB_DATABASE=self.database,
            MONGODB_WRITE_CONCERN=WRITE_CONCERN,
            FLOW_MODULES=FLOW_MODULES,
            LOG_LEVEL="warning",
            HEALTH_PORT="0",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.env)
        env.update(overrides)
        return env

    def start_workers(self, count: int, **env: str) -> list[Worker]:
        started = []
        for _ in range(count):
            name = f"w{len(self.workers) + 1}"
            worker = Worker(
                name,
                self.worker_env(WORKER_ID=f"{self.prefix}-{name}", **env),
                self.logs / f"{name}.log",
            )
            self.workers.append(worker)
            started.append(worker)
        return started

    def check_workers(self) -> None:
        for worker in self.workers:
            worker.check()

    async def connection(self) -> aio_pika.abc.AbstractConnection:
        # Robust: the broker may be restarted by someone else's test on a shared
        # machine; the connection comes back by itself.
        if self._amqp is None or self._amqp.is_closed:
            self._amqp = await aio_pika.connect_robust(self.servers.amqp_url)
        return self._amqp

    async def consumers(self, queue: str) -> int | None:
        """Consumers on `<prefix>.<queue>`; None while the queue does not exist."""
        found = await self._declared(queue)
        return None if found is None else found.consumer_count

    async def queue_depth(self, queue: str) -> int | None:
        """Messages ready in `<prefix>.<queue>`; None while the queue does not exist."""
        found = await self._declared(queue)
        return None if found is None else found.message_count

    async def _declared(self, queue: str) -> Any:
        """The broker's answer to a passive declare of `<prefix>.<queue>`, or None."""
        channel = await (await self.connection()).channel()
        try:
            declared = await channel.declare_queue(
                f"{self.prefix}.{queue}", passive=True
            )
        except aio_pika.exceptions.ChannelClosed:
            return None
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return declared.declaration_result

    async def queue_depth_or_none(self, queue: str) -> int | None:
        """`queue_depth`, or None when the broker can't be asked right now."""
        try:
            return await self.queue_depth(queue)
        except (RuntimeError, aio_pika.exceptions.AMQPError, OSError):
            return None

    async def ready(self, count: int | None = None, within: float = 60) -> float:
        """Wait until `count` workers (default: all) consume the steps and triggers
        queues; seconds it took.
        """
        wanted = len(self.workers) if count is None else count
        started = time.monotonic()
        while True:
            self.check_workers()
            steps = await self.consumers("steps")
            triggers = await self.consumers("triggers")
            if (steps or 0) >= wanted and (triggers or 0) >= wanted:
                return time.monotonic() - started
            if time.monotonic() - started > within:
                raise TimeoutError(f"{wanted} workers not consuming within {within} s")
            await asyncio.sleep(0.1)

    async def declare_topology(self) -> None:
        """Declare the worker's topology (exchange, queues, bindings) without a worker,
        so triggers can wait in the queue before any worker starts.
        """
        from service.adapters.amqp.topology import Names, declare
        from service.settings import DELIVERY_LIMIT

        channel = await (await self.connection()).channel()
        try:
            await declare(channel, Names(self.prefix), delivery_limit=DELIVERY_LIMIT)
        finally:
            await channel.close()

    # -- triggers --------------------------------------------------------------------

    async def trigger(self, flow: str, body: object = None) -> tuple[str, float]:
        """Publish one trigger (confirmed); its message id and the publish time
        (time.time() just before the publish call).
        """
        ids, times = await self.trigger_many(flow, [body])
        return ids[0], times[0]

    async def trigger_many(
        self, flow: str, bodies: Sequence[object], *, window: int = 500
    ) -> tuple[list[str], list[float]]:
        """Publish a trigger per body on one confirmed channel, `window` publishes in
        flight at a time; message ids and publish times.
        """
        channel = await (await self.connection()).channel(publisher_confirms=True)
        ids = [str(uuid4()) for _ in bodies]
        times: list[float] = [0.0] * len(bodies)
        try:
            exchange = await channel.get_exchange(f"{self.prefix}.ingress")

            async def one(n: int) -> None:
                message = aio_pika.Message(
                    orjson.dumps({"flow": flow, "body": bodies[n]}),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    type="trigger",
                    message_id=ids[n],
                )
                times[n] = time.time()
                await exchange.publish(message, f"trigger.{flow}", mandatory=True)

            for start in range(0, len(bodies), window):
                await asyncio.gather(
                    *(one(n) for n in range(start, min(start + window, len(bodies))))
                )
        finally:
            await channel.close()
        return ids, times

    # -- reading MongoDB ---------------------------------------------------------------

    async def finished_count(self, job_ids: Sequence[str] | None = None) -> int:
        query: Document = {"status": {"$ne": "Running"}}
        if job_ids is not None:
            query["job_id"] = {"$in": list(job_ids)}
        return await self.db.runs.count_documents(query)

    async def wait_finished(
        self,
        count: int,
        *,
        within: float,
        every: float = 0.25,
        job_ids: Sequence[str] | None = None,
        progress: bool = False,
    ) -> float:
        """Poll `runs` until `count` runs are not Running; seconds waited."""
        started = time.monotonic()
        last_report = started
        while True:
            self.check_workers()
            done = await self.finished_count(job_ids)
            if done >= count:
                return time.monotonic() - started
            now = time.monotonic()
            if now - started > within:
                raise TimeoutError(
                    f"{self.name}: {done} of {count} runs finished after {within} s"
                )
            if progress and now - last_report >= 10:
                say(f"#   ... {done}/{count} runs finished ({now - started:.0f} s)")
                last_report = now
            await asyncio.sleep(every)

    async def runs(self, job_ids: Sequence[str] | None = None) -> list[Document]:
        query: Document = {} if job_ids is None else {"job_id": {"$in": list(job_ids)}}
        return await self.db.runs.find(
            query, {"job_id": 1, "status": 1, "started_at": 1, "completed_at": 1}
        ).to_list(None)

    async def step_rows(self, query: Document | None = None) -> list[Document]:
        return await self.db.steps.find(
            query or {},
            {
                "run_id": 1,
                "key": 1,
                "type": 1,
                "status": 1,
                "output": 1,
                "started_at": 1,
                "completed_at": 1,
                "attempts.started_at": 1,
                "attempts.completed_at": 1,
            },
        ).to_list(None)

    async def attempts(self, query: Document | None = None) -> list[Document]:
        """Every attempt of every executed (non-bookkeeping) step, with its run id."""
        found = []
        for row in await self.step_rows(query):
            found.extend(
                {"run_id": row["run_id"], "key": row["key"], **attempt}
                for attempt in row.get("attempts") or []
            )
        return found

    async def opcounters(self) -> dict[str, int]:
        """mongod's operation counters (every client's; the workers are the only busy
        ones during a measurement, plus the scheduler passes)."""
        status = await self.mongo.admin.command("serverStatus")
        return {k: int(v) for k, v in status["opcounters"].items()}

    # -- the end -----------------------------------------------------------------------

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    async def close(self) -> None:
        self.stop_workers()
        with contextlib.suppress(Exception):
            connection = await self.connection()
            channel = await connection.channel()
            for queue in ("triggers", "steps", "control", "unroutable", "dead"):
                await channel.queue_delete(f"{self.prefix}.{queue}")
            for exchange in ("ingress", "unroutable", "dlx"):
                await channel.exchange_delete(f"{self.prefix}.{exchange}")
            await connection.close()
        with contextlib.suppress(Exception):
            await self.mongo.drop_database(self.database)
        await self.mongo.close()


# -- figures from MongoDB --------------------------------------------------------------


def completion_rate(times: Sequence[float], lo: float, hi: float) -> float | None:
    """Events per second between `lo` and `hi` (epoch seconds)."""
    if hi <= lo:
        return None
    return sum(1 for t in times if lo <= t < hi) / (hi - lo)


def output_stamps(rows: Iterable[Document]) -> dict[str, dict[str, float]]:
    """run_id -> step key -> the handler's `t` (time.time() when it ran)."""
    stamps: dict[str, dict[str, float]] = {}
    for row in rows:
        text = row.get("output")
        if not text:
            continue
        value = json.loads(text)
        if isinstance(value, dict) and "t" in value:
            stamps.setdefault(row["run_id"], {})[row["key"]] = float(value["t"])
    return stamps


# -- the reference loop ----------------------------------------------------------------


def reference(
    servers: Servers,
    *,
    chains: int,
    runs: int = 3,
    duration: float = 8.0,
    procs: int = 1,
) -> dict[str, Any]:
    """Run the reference step loop on the same servers; its median record."""
    if not STEPLOOP.exists():
        raise FileNotFoundError(f"the reference loop is missing: {STEPLOOP}")
    cmd = [
        sys.executable,
        str(STEPLOOP),
        *("--chains", str(chains), "--procs", str(procs)),
        *("--wc", WRITE_CONCERN, "--queue-type", QUEUE_TYPE),
        *("--runs", str(runs), "--duration", str(duration)),
    ]
    env = dict(os.environ)
    env.pop("RESULTS_FILE", None)
    env.update(AMQP_URL=servers.amqp_url, MONGODB_URL=servers.mongodb_url)
    say(f"# reference: {' '.join(cmd[1:])}")
    done = subprocess.run(  # noqa: S603
        cmd,
        cwd=REFERENCE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60 + runs * (duration + 30),
    )
    if done.returncode != 0:
        raise RuntimeError(f"reference loop failed:\n{done.stdout}\n{done.stderr}")
    records = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    found = [r for r in records if r.get("run") == "median"]
    if not found:
        raise RuntimeError(f"no median line from the reference loop:\n{done.stdout}")
    result = dict(found[0])
    result["per_run"] = [
        {k: r.get(k) for k in ("steps_s", "hop_p50_ms", "hop_p99_ms")}
        for r in records
        if r.get("run") != "median"
    ]
    result["command"] = reference_command(chains, runs, duration)
    return result


def reference_command(chains: int, runs: int = 3, duration: float = 8.0) -> str:
    return (
        f"python benchmarks/reference/bench_steploop.py --chains {chains} --procs 1 "
        f"--wc {WRITE_CONCERN} --queue-type {QUEUE_TYPE} --runs {runs} "
        f"--duration {duration:g}"
    )


def run_main(main: Any) -> None:
    """asyncio.run(main()) with the repo on sys.path (scripts run as modules)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    asyncio.run(main())


# -- profiling -------------------------------------------------------------------------


def py_spy(output: Path, *, rate: int = 200, fmt: str = "flamegraph") -> Any:
    """A `profile(pids)` hook for `throughput.measure`: py-spy records the first worker
    (`--nonblocking`, so the worker never pauses) until the returned stop() is called.
    """

    def start(pids: list[int]) -> Any:
        process = subprocess.Popen(  # noqa: S603
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                *("--pid", str(pids[0]), "--rate", str(rate)),
                *("--format", fmt, "-o", str(output)),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

        def stop() -> None:
            process.send_signal(signal.SIGINT)
            try:
                _, err = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
            if not output.exists():
                say(f"# py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")

        return stop

    return start
