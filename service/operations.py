"""What `flowctl` does against RabbitMQ and MongoDB; it prints nothing.

A `Target` holds the plain values every command needs (from `Settings` and the command
line). Writes are control requests answered on `reply_to`, reads query MongoDB, and
dead letters are read from the broker. Errors: `UnavailableError` (a server can't be
reached, no reply in time), `NotFoundError`, `TopologyMissingError`.

The broker's client (aio-pika) and the wire contracts are imported by the functions
that talk to the broker, so a read command loads MongoDB's driver alone.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from service.adapters.mongo.client import MongoStores
from service.adapters.mongo.oneshot import opened
from service.adapters.mongo.queries import RunDetail
from service.engine.manifest import from_manifest
from service.engine.model import Flow, RunId, RunStatus
from service.engine.records import FlowRecord, RunRecord
from service.errors import UnavailableError, UnknownReferenceError
from service.flow_views import FlowView

if TYPE_CHECKING:
    from pydantic import BaseModel

    from contracts import Reply
    from service.adapters.amqp.deadletters import (
        DeadLetterQueue,
    )
    from service.adapters.amqp.topology import Names

POLL_EVERY: Final = 0.5
"""Seconds between two reads of a run that is awaited."""
EVERY_LETTER: Final = 1 << 62
"""A browse limit no queue reaches."""


class NotFoundError(UnknownReferenceError):
    """A run, flow or dead letter the operator named that does not exist."""

    def __init__(self, what: str, name: str, *, where: str) -> None:
        super().__init__(what, name)
        self.where = where
        self.args = (f"no {what} '{name}' {where}",)


class WaitTimeoutError(UnavailableError):
    """An awaited run is still not final at the deadline."""

    reason = "wait_timeout"

    def __init__(self, run_id: str, status: str, waited: timedelta) -> None:
        self.run_id = run_id
        super().__init__(
            f"run {run_id} still {status} after {waited.total_seconds():g} s "
            f"(`flowctl run {run_id}` shows where it is)"
        )


@dataclass(frozen=True, slots=True)
class Target:
    """Where the workers are: the broker and prefix, MongoDB and database."""

    amqp_url: str
    prefix: str
    mongodb_url: str
    database: str
    mongodb_timeout: timedelta = timedelta(seconds=10)
    connect_timeout: timedelta = timedelta(seconds=10)

    @property
    def names(self) -> "Names":
        from service.adapters.amqp.topology import Names  # the broker's, on demand

        return Names(self.prefix)


async def request(
    target: Target,
    routing_key: str,
    body: "BaseModel",
    *,
    kind: str,
    within: timedelta,
    message_id: str | None = None,
) -> "Reply":
    """Publish one control request and return the worker's reply."""
    from service.adapters.amqp.control import control_client

    async with control_client(
        target.amqp_url, target.names, connect_timeout=target.connect_timeout
    ) as client:
        return await client.request(
            routing_key, body, kind=kind, within=within, message_id=message_id
        )


@contextlib.asynccontextmanager
async def database(target: Target) -> AsyncIterator[MongoStores]:
    async with opened(
        target.mongodb_url, target.database, server_timeout=target.mongodb_timeout
    ) as stores:
        yield stores


@contextlib.asynccontextmanager
async def dead_letters(target: Target) -> AsyncIterator["DeadLetterQueue"]:
    from service.adapters.amqp.deadletters import dead_letter_queue

    async with dead_letter_queue(
        target.amqp_url, target.names, connect_timeout=target.connect_timeout
    ) as queue:
        yield queue


async def resolve_run(stores: MongoStores, ref: str, *, where: str) -> RunRecord:
    """The run `ref` names.

    Its id, else the one run whose id, job id or idempotency key starts so.

    Raises:
        NotFoundError: no run, or more than one, matches.
    """
    found = await stores.queries.run(RunId(ref))
    if found is not None:
        return found
    matches, total = await stores.queries.find_runs(text=ref, limit=2)
    if total == 1:
        return matches[0]
    if total > 1:
        raise NotFoundError("single run", ref, where=f"{where}: {total} runs match")
    raise NotFoundError("run", ref, where=where)


async def find_run(stores: MongoStores, ref: str, *, where: str) -> RunDetail:
    """The run `ref` names (as `resolve_run`), in full."""
    run = await resolve_run(stores, ref, where=where)
    detail = await stores.queries.run_detail(run.run_id)
    if detail is None:  # deleted in between, by retention
        raise NotFoundError("run", ref, where=where)
    return detail


async def resolve_flow(
    stores: MongoStores, ref: str, *, where: str, trigger_key: str | None = None
) -> FlowView:
    """The stored flow `ref` names (an id or a name) and, if given, its trigger.

    Raises:
        NotFoundError: no such flow, or the flow has no trigger `trigger_key`.
    """
    view = await find_flow(stores, ref, where=where)
    if trigger_key is None or view.flow is None or trigger_key in view.flow.triggers:
        return view
    known = ", ".join(view.flow.triggers) or "none"
    raise NotFoundError(
        "trigger",
        trigger_key,
        where=f"on flow '{view.record.name}' (its triggers: {known})",
    )


async def wait_for_run(
    stores: MongoStores,
    run_id: str,
    *,
    within: timedelta,
    seen: Callable[[RunDetail], None] = lambda _: None,
) -> RunDetail:
    """Read the run every POLL_EVERY seconds until it is final; `seen` each read.

    Raises:
        WaitTimeoutError: the run is not final `within` this long.
    """
    deadline = time.monotonic() + within.total_seconds()
    status = "missing"
    while True:
        detail = await stores.queries.run_detail(RunId(run_id))
        if detail is not None:
            seen(detail)
            status = detail.run.status
            if detail.run.status.is_final:
                return detail
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(run_id, status, within)
        await asyncio.sleep(POLL_EVERY)


async def flow_views(stores: MongoStores) -> list[FlowView]:
    """Every stored flow with its schedules, by name."""
    schedules = await stores.schedules.all()
    views = [
        FlowView(
            record,
            _flow_of(record),
            [s for s in schedules if s.flow_id == record.flow_id],
        )
        for record in await stores.flows.all()
    ]
    return sorted(views, key=lambda view: view.record.name.lower())


async def find_flow(stores: MongoStores, ref: str, *, where: str) -> FlowView:
    """The stored flow with this id, or this name (case-insensitive)."""
    for view in await flow_views(stores):
        if ref == view.record.flow_id or ref.lower() == view.record.name.lower():
            return view
    raise NotFoundError("flow", ref, where=where)


async def flow_id_of(stores: MongoStores, ref: str) -> str:
    """The id of the flow named `ref`, or `ref` itself (it may be an id)."""
    for record in await stores.flows.all():
        if ref.lower() == record.name.lower():
            return record.flow_id
    return ref


async def find_runs(
    stores: MongoStores,
    *,
    flow: str | None,
    status: RunStatus | None,
    since: datetime | None,
    until: datetime | None,
    text: str | None,
    skip: int,
    limit: int,
    source: RunId | None = None,
) -> tuple[list[RunRecord], int]:
    flow_id = None if flow is None else await flow_id_of(stores, flow)
    return await stores.queries.find_runs(
        source=source,
        flow=flow_id,
        status=status,
        since=since,
        until=until,
        text=text,
        skip=skip,
        limit=limit,
    )


def _flow_of(record: FlowRecord) -> Flow | None:
    try:
        return from_manifest(record.manifest)
    except ValueError:
        return None
