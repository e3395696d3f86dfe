"""The dashboard for tests: served for real by uvicorn, its users, stored runs to show.

`served_dashboard` runs the real app (lifespan, change stream, middleware) on a free
port of 127.0.0.1 in the test's event loop; `signed_in` is an HTTP client with a
session; `seed_*` write runs, steps and flows as the stores write them (the codec's
documents), so the read side is tested on the shapes the workers produce.
"""

import asyncio
import contextlib
import functools
import re
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import aio_pika
import httpx
import uvicorn
from pydantic import SecretStr
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo.client import connect
from service.adapters.mongo.codec import (
    attempt_document,
    dumps,
    dumps_mapping,
    flow_record,
    run_document,
    step_document,
)
from service.dashboard.auth import hash_password
from service.dashboard.server import build_app, config_from
from service.engine.manifest import to_manifest
from service.engine.model import (
    Flow,
    FlowId,
    JobId,
    Json,
    RunId,
    RunStatus,
    StepKey,
    StepStatus,
    TriggerKey,
)
from service.engine.records import NewStep, RunRecord
from service.settings import Settings

PASSWORDS = {"ada": "ada-operator-password", "vic": "vic-viewer-password"}
ROLES = {"ada": "operator", "vic": "viewer"}
SECRET_KEY = "k" * 48
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
Document = dict[str, Any]


@functools.cache
def users_setting() -> str:
    """DASHBOARD_USERS for `ada` (operator) and `vic` (viewer), hashed once."""
    return ";".join(
        f"{name}:{ROLES[name]}:{hash_password(password)}"
        for name, password in PASSWORDS.items()
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def dashboard_settings(
    *, mongodb_url: str, database: str, amqp_url: str, prefix: str, port: int
) -> Settings:
    return Settings(
        mongodb_url=SecretStr(mongodb_url),
        mongodb_database=database,
        amqp_url=SecretStr(amqp_url),
        amqp_prefix=prefix,
        dashboard_users=SecretStr(users_setting()),
        dashboard_secret_key=SecretStr(SECRET_KEY),
        dashboard_port=port,
        mongodb_timeout=timedelta(seconds=5),
    )


@contextlib.asynccontextmanager
async def served_dashboard(
    *, mongodb_url: str, database: str, amqp_url: str, prefix: str
) -> AsyncIterator[str]:
    """The dashboard served on a free port until the block ends; its base URL."""
    port = free_port()
    config = config_from(
        dashboard_settings(
            mongodb_url=mongodb_url,
            database=database,
            amqp_url=amqp_url,
            prefix=prefix,
            port=port,
        )
    )
    stores = connect(
        mongodb_url, database, server_selection_timeout=timedelta(seconds=10)
    )
    await stores.ensure_indexes()
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(config, stores),
            host="127.0.0.1",
            port=port,
            log_config=None,
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(20):
            await task
        await stores.close()


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


async def signed_in(url: str, name: str) -> httpx.AsyncClient:
    """A client with a session of `name` (its CSRF token in `client.csrf`)."""
    client = httpx.AsyncClient(base_url=url, follow_redirects=False, timeout=30)
    page = await client.get("/login")
    response = await client.post(
        "/login",
        data={
            "name": name,
            "password": PASSWORDS[name],
            "csrf": csrf_of(page.text),
            "next": "/runs",
        },
    )
    assert response.status_code == 303, response.text
    runs = await client.get("/runs")
    client.headers["x-test-csrf"] = csrf_of(runs.text)
    return client


def token(client: httpx.AsyncClient) -> str:
    return client.headers["x-test-csrf"]


# -- stored documents ------------------------------------------------------------


async def seed_flow(db: AsyncDatabase[Document], flow: Flow) -> None:
    manifest = to_manifest(flow)
    await db.flows.replace_one(
        {"_id": flow.id},
        {
            "_id": flow.id,
            "name": flow.name,
            "version": flow.version,
            "manifest": dumps(manifest),
            "enabled": True,
            "updated_at": T0,
        },
        upsert=True,
    )
    flow_record(await db.flows.find_one({"_id": flow.id}) or {})  # it reads back


def a_run(
    flow: Flow,
    *,
    run_id: str | None = None,
    status: RunStatus = RunStatus.SUCCEEDED,
    started_at: datetime = T0,
    body: Json = None,
    headers: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    source_run_id: str | None = None,
) -> RunRecord:
    run_id = run_id or str(uuid4())
    return RunRecord(
        run_id=RunId(run_id),
        flow_id=FlowId(flow.id),
        flow_name=flow.name,
        trigger_key=TriggerKey("manual"),
        job_id=JobId(f"job-{run_id}"),
        started_at=started_at,
        body=body,
        headers=dict(headers or {}),
        status=status,
        completed_at=None
        if status is RunStatus.RUNNING
        else started_at + timedelta(seconds=3),
        idempotency_key=idempotency_key,
        source_run_id=RunId(source_run_id) if source_run_id else None,
    )


async def seed_run(db: AsyncDatabase[Document], run: RunRecord) -> RunRecord:
    await db.runs.insert_one(run_document(run))
    return run


async def seed_step(
    db: AsyncDatabase[Document],
    run: RunRecord,
    key: str,
    status: StepStatus,
    *,
    type_: str = "Hello",
    inputs: Mapping[str, Json] | None = None,
    resolved: Mapping[str, Json] | None = None,
    output: Json = None,
    error: str | None = None,
    trace: Json = None,
    attempts: int = 1,
    loop: Mapping[str, int] | None = None,
    at: datetime | None = None,
) -> None:
    """A step row as the stores leave it after `attempts` attempts."""
    at = at or run.started_at
    doc = step_document(
        run.run_id,
        NewStep(StepKey(key), type_, StepStatus.QUEUED, inputs=dict(inputs or {})),
        at=at,
    )
    entries = []
    for n in range(1, attempts + 1):
        entry = attempt_document(
            n, f"{run.run_id}:{key}:{n}", at=at + timedelta(seconds=n)
        )
        last = n == attempts
        entry["status"] = str(status if last else StepStatus.FAILED)
        entry["completed_at"] = (
            None
            if last and status is StepStatus.RUNNING
            else at + timedelta(seconds=n + 0.5)
        )
        entry["error"] = error if last else "an earlier failure"
        entries.append(entry)
    doc.update(
        status=str(status),
        attempt=attempts,
        job_id=f"{run.run_id}:{key}:{attempts}" if attempts else None,
        resolved_inputs=dumps_mapping(resolved),
        output=None if output is None else dumps(output),
        error=error,
        trace=None if trace is None else dumps(trace),
        started_at=at + timedelta(seconds=1) if attempts else None,
        completed_at=None
        if not status.is_final
        else at + timedelta(seconds=attempts + 0.5),
        attempts=entries,
    )
    if loop is not None:
        doc["loop"] = dict(loop)
    await db.steps.insert_one(doc)


def finished(run: RunRecord, status: RunStatus) -> RunRecord:
    return replace(
        run, status=status, completed_at=run.started_at + timedelta(seconds=3)
    )


async def put_dead_letter(
    amqp_url: str,
    prefix: str,
    body: Json,
    *,
    kind: str,
    routing_key: str,
    reason: str,
    message_id: str,
) -> None:
    """A letter in `<prefix>.dead` as the consumer writes one (reason and origin in
    headers), for a message that would be fine if replayed now."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(
                dumps(body).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                type=kind,
                message_id=message_id,
                headers={
                    "x-dead-letter-reason": reason,
                    "x-dead-letter-detail": "a test put it here",
                    "x-original-type": kind,
                    "x-original-routing-key": routing_key,
                    "x-original-exchange": f"{prefix}.ingress",
                    "x-original-message-id": message_id,
                },
            ),
            routing_key=f"{prefix}.dead",
        )
