"""Worker processes and what an outside service sees of them: raw AMQP and MongoDB.

A `Deployment` is one test's world: its own topology prefix and database, the worker
processes it starts (`python -m service`, configured by environment variables only),
a publisher that speaks raw JSON over AMQP, and a reader of the MongoDB documents.
Every wait polls a condition under a deadline; nothing sleeps to synchronise.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast
from uuid import uuid4

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiormq.abc import ChannelFrame
from pamqp import commands
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pymongo import AsyncMongoClient

from service.adapters.mongo.queries import RunQueries

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
Document = dict[str, Any]

FAST = {
    # Small intervals so that repairs after a crash happen within the test's patience.
    "SCHEDULER_INTERVAL": "0.2",
    "STEP_LEASE": "3",
    "STEP_HEARTBEAT": "1",
    "RECONCILE_AFTER": "3",
    "SHUTDOWN_GRACE": "10",
    "MONGODB_TIMEOUT": "5",
    "LOG_LEVEL": "info",
    "LOG_JSON": "true",
}


ACTIVE = ["Queued", "Running"]
"""Run statuses that are not final (a Queued run waits for a slot of its key)."""

PATIENT = {"STEP_LEASE": "30", "STEP_HEARTBEAT": "10"}
"""For tests where no worker dies: a lease that a loaded machine never lets expire
(the heartbeat covers the handler only, not loading inputs or saving the result), so
any second attempt is a real duplicate, not a slow first one taken over."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    within: float,
    what: str,
    every: float = 0.1,
    alive: Callable[[], None] = lambda: None,
) -> T:
    """`check()`'s first truthy result; AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        alive()
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s (last: {result!r})")
        await asyncio.sleep(every)


class Worker:
    """One `python -m service` process; its output goes to a log file."""

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.health_port = int(env["HEALTH_PORT"])
        self.expected_exit = False
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service"],
                cwd=REPO,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[Document]:
        """The JSON log lines, parsed (other lines are skipped)."""
        found = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def check_alive(self) -> None:
        if not self.expected_exit and self.returncode is not None:
            raise AssertionError(
                f"worker {self.name} exited with {self.returncode}:\n{self.tail()}"
            )

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def http(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on `/metrics` (0 when it is absent)."""
        _, text = self.http("/metrics")
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            if (sample == name and not labels) or _same_sample(sample, name, labels):
                return float(value)
        return 0.0

    async def ready(self, within: float = 30) -> None:
        """Wait until `/readyz` answers 200 (topology declared, consuming)."""

        async def answered() -> bool:
            try:
                status, _ = await asyncio.to_thread(self.http, "/readyz")
            except OSError:
                return False
            return status == 200

        await eventually(
            answered, within=within, what=f"{self.name} ready", alive=self.check_alive
        )

    def send(self, signum: signal.Signals) -> None:
        self.expected_exit = True
        if self.returncode is None:
            self.process.send_signal(signum)

    async def exited(self, within: float) -> int:
        async def gone() -> bool:
            return self.returncode is not None

        await eventually(gone, within=within, what=f"{self.name} exit", every=0.05)
        code = self.returncode
        assert code is not None
        return code

    def reap(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL past `timeout`: no process outlives its test."""
        self.expected_exit = True
        if self.returncode is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Deployment:
    """One test's prefix, database, workers, publisher and reader."""

    def __init__(
        self, *, amqp_url: str, mongodb_url: str, logs: Path, prefix: str | None = None
    ) -> None:
        self.amqp_url = amqp_url
        self.mongodb_url = mongodb_url
        self.prefix = prefix or f"e2e{uuid4().hex[:8]}"
        self.database = f"test_{uuid4().hex}"
        self.logs = logs
        self.workers: list[Worker] = []
        self.mongo: AsyncMongoClient[Document] = AsyncMongoClient(
            mongodb_url, tz_aware=True, serverSelectionTimeoutMS=30_000
        )
        self.db = self.mongo[self.database]
        self._amqp: AbstractRobustConnection | None = None

    # -- names -------------------------------------------------------------------

    @property
    def queues(self) -> list[str]:
        roles = ("triggers", "steps", "control", "unroutable", "dead")
        return [f"{self.prefix}.{role}" for role in roles]

    @property
    def exchanges(self) -> list[str]:
        return [f"{self.prefix}.{role}" for role in ("ingress", "unroutable", "dlx")]

    # -- workers -----------------------------------------------------------------

    def env(self, **overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(FAST)
        env.update(
            AMQP_URL=self.amqp_url,
            AMQP_PREFIX=self.prefix,
            MONGODB_URL=self.mongodb_url,
            MONGODB_DATABASE=self.database,
            FLOW_MODULES="tests.e2e.flows",
            PYTHONUNBUFFERED="1",
        )
        env.update(overrides)
        return env

    def start_worker(self, **env: str) -> Worker:
        name = f"w{len(self.workers) + 1}"
        settings = self.env(HEALTH_PORT=str(free_port()), WORKER_ID=name, **env)
        worker = Worker(name, settings, self.logs / f"{self.prefix}-{name}.log")
        self.workers.append(worker)
        return worker

    def check_alive(self) -> None:
        for worker in self.workers:
            worker.check_alive()

    # -- publishing ----------------------------------------------------------------

    async def connection(self) -> AbstractRobustConnection:
        if self._amqp is None:
            self._amqp = await aio_pika.connect_robust(self.amqp_url)
        return self._amqp

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        kind: str | None,
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish raw bytes to the ingress exchange, as an outside service would."""
        channel = await (await self.connection()).channel()
        try:
            exchange = await channel.get_exchange(f"{self.prefix}.ingress")
            message = aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                type=kind,
                message_id=message_id,
                headers=dict(headers or {}),
            )
            await exchange.publish(message, routing_key, mandatory=True)
        finally:
            await channel.close()

    async def publish_without_message_id(
        self, routing_key: str, body: bytes, *, kind: str
    ) -> None:
        """aiormq gives every publish a message id: write the frames by hand, on a
        channel without confirms (hand-written frames would upset their count).
        """
        channel = await (await self.connection()).channel(publisher_confirms=False)
        try:
            # The concrete aiormq channel: the abstract one has no write queue.
            raw = cast(aiormq.Channel, await channel.get_underlay_channel())
            frames: list[Frame | ContentHeader | ContentBody] = [
                commands.Basic.Publish(
                    exchange=f"{self.prefix}.ingress", routing_key=routing_key
                ),
                ContentHeader(
                    body_size=len(body),
                    properties=commands.Basic.Properties(
                        message_type=kind,
                        delivery_mode=2,
                        content_type="application/json",
                    ),
                ),
                ContentBody(body),
            ]
            await raw.write_queue.put(
                ChannelFrame.marshall(frames=frames, channel_number=raw.number)
            )
        finally:
            await channel.close()

    async def trigger(
        self,
        flow: str,
        body: object = None,
        *,
        message_id: str | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Publish a `trigger` as raw JSON; its message id (the run's job id)."""
        message_id = message_id or str(uuid4())
        payload: dict[str, object] = {"flow": flow, "body": body}
        if idempotency_key is not None:
            payload["idempotency_key"] = idempotency_key
        await self.publish(
            f"trigger.{flow}",
            json.dumps(payload).encode(),
            kind="trigger",
            message_id=message_id,
            headers=headers,
        )
        return message_id

    async def cancel(self, run_id: str, reason: str) -> None:
        """Publish a `cancel_run` as raw JSON, as an operator's tool would."""
        body = {"run_id": run_id, "reason": reason}
        await self.publish(
            "control.cancel_run",
            json.dumps(body).encode(),
            kind="cancel_run",
            message_id=str(uuid4()),
        )

    async def trigger_many(self, flow: str, count: int) -> list[str]:
        """`count` triggers on one channel with confirms; their message ids."""
        channel = await (await self.connection()).channel()
        ids = [str(uuid4()) for _ in range(count)]
        try:
            exchange = await channel.get_exchange(f"{self.prefix}.ingress")
            for n, message_id in enumerate(ids):
                body = json.dumps({"flow": flow, "body": {"n": n}}).encode()
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        type="trigger",
                        message_id=message_id,
                    ),
                    f"trigger.{flow}",
                    mandatory=True,
                )
        finally:
            await channel.close()
        return ids

    async def dead_letters(self, count: int, *, within: float) -> list[Any]:
        """Take `count` messages from the dead-letter queue (acked)."""
        channel = await (await self.connection()).channel()
        taken: list[AbstractIncomingMessage] = []
        try:
            queue = await channel.get_queue(f"{self.prefix}.dead")

            async def more() -> bool:
                while len(taken) < count:
                    message = await queue.get(no_ack=True, fail=False)
                    if message is None:
                        return False
                    taken.append(message)
                return True

            await eventually(
                more,
                within=within,
                what=f"{count} dead letters",
                alive=self.check_alive,
            )
        finally:
            await channel.close()
        return taken

    # -- reading MongoDB -----------------------------------------------------------

    async def runs(self, **query: object) -> list[Document]:
        return await self.db.runs.find(query).to_list(None)

    async def run_of_job(self, job_id: str) -> Document | None:
        return await self.db.runs.find_one({"job_id": job_id})

    async def steps(self, **query: object) -> list[Document]:
        return await self.db.steps.find(query).to_list(None)

    async def count_runs(self, **query: object) -> int:
        return await self.db.runs.count_documents(query)

    async def finished(
        self,
        job_ids: list[str],
        *,
        within: float,
        what: str = "runs finished",
        at_least: int | None = None,
    ) -> list[Document]:
        """Wait until a run exists and is final for each job id (or for `at_least` of
        them); those runs.
        """
        wanted = len(job_ids) if at_least is None else at_least

        async def done() -> list[Document] | None:
            runs = await self.db.runs.find(
                {"job_id": {"$in": job_ids}, "status": {"$nin": ACTIVE}}
            ).to_list(None)
            return runs if len(runs) >= wanted else None

        return await eventually(
            done, within=within, what=what, every=0.2, alive=self.check_alive
        )

    async def events_per_run(self, kind: str) -> Counter[str]:
        """How many events of `kind` each run shows, as `flowctl run` lists them
        (stored events merged with those read off the run and its attempts).
        """
        queries = RunQueries(self.db)
        counts: Counter[str] = Counter()
        for run in await self.db.runs.find({}, {"_id": 1}).to_list(None):
            detail = await queries.run_detail(run["_id"])
            assert detail is not None
            counts[run["_id"]] = sum(e.type == kind for e in detail.events)
        return counts

    # -- the end -------------------------------------------------------------------

    async def close(self) -> None:
        for worker in self.workers:
            await asyncio.to_thread(worker.reap)
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel()
            for queue in self.queues:
                await channel.queue_delete(queue)
            for exchange in self.exchanges:
                await channel.exchange_delete(exchange)
        finally:
            await connection.close()
        if self._amqp is not None:
            await self._amqp.close()
        try:
            await self.mongo.drop_database(self.database)
        finally:
            await self.mongo.close()

    def report(self) -> str:
        return "\n".join(
            f"--- {w.name} (exit {w.returncode}) ---\n{w.tail(60)}"
            for w in self.workers
        )


def _same_sample(sample: str, name: str, labels: Mapping[str, str]) -> bool:
    """Whether `sample` is `name` with exactly `labels`, in any order."""
    if not sample.startswith(name + "{"):
        return False
    pairs = sample[len(name) + 1 : -1].split(",")
    return sorted(pairs) == sorted(f'{k}="{v}"' for k, v in labels.items())


def json_field(doc: Document, name: str) -> object:
    """A flow author's value, which the Mongo stores keep as JSON text."""
    text = doc.get(name)
    return None if text is None else json.loads(text)
