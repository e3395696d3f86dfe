"""One trace per run, across the real broker: the example flows under OpenTelemetry.

A worker runs in-process (consumer, scheduler, MongoDB stores) with an
`InMemorySpanExporter`, so the test reads the spans themselves; every hop between
steps goes through the real RabbitMQ and every stored context through the real MongoDB.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import timedelta
from typing import Any

import aio_pika
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from examples import failures, orders, polling
from service.adapters import otel
from service.adapters.amqp.consumer import Consumer, Tally
from service.adapters.amqp.dispatcher import AmqpDispatcher, open_publishing_channel
from service.adapters.amqp.topology import declare
from service.adapters.clock import SystemClock
from service.adapters.mongo.client import MongoStores
from service.engine.model import Flow, RunId, RunStatus
from service.engine.validation import validate_all
from service.orchestrator.api import Orchestrator
from service.orchestrator.runtime import Catalog, Runtime
from service.scheduler import Scheduler, SchedulerOptions
from service.steps.handlers import Handlers
from tests.integration.amqp import DEADLINE, Client, until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


class Traced:
    """A worker whose spans land in `exporter`."""

    def __init__(self, stores: MongoStores, exporter: InMemorySpanExporter) -> None:
        self.stores = stores
        self.exporter = exporter
        self.tally = Tally()

    async def finished(self, run_id: str) -> RunStatus:
        async with asyncio.timeout(DEADLINE):
            while True:
                run = await self.stores.runs.get_run(RunId(run_id))
                if run is not None and run.status is not RunStatus.RUNNING:
                    return run.status
                await asyncio.sleep(0.05)

    def spans(self, run_id: str) -> list[ReadableSpan]:
        """Every finished span of the run's trace (found by its trigger span)."""
        every = self.exporter.get_finished_spans()
        roots = [s for s in every if attrs(s).get(otel.RUN_ID) == run_id]
        assert roots, f"no span names run {run_id}"
        trace_id = _ctx(roots[0]).trace_id
        return [s for s in every if _ctx(s).trace_id == trace_id]


@contextlib.asynccontextmanager
async def traced_worker(
    url: str, names, db, flows: Iterable[Flow], handlers: Handlers
) -> AsyncIterator[Traced]:
    flows = list(flows)
    validate_all(flows, handlers.names())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = otel.OtelTracer(provider)
    stores = MongoStores(db)
    await stores.ensure_indexes()
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await open_publishing_channel(connection)
        topology = await declare(channel, names, delivery_limit=5)
        runtime = Runtime(
            Catalog(flows),
            handlers,
            stores,
            AmqpDispatcher(topology, spans=tracer),
            SystemClock(),
            tracer=tracer,
        )
        orchestrator = Orchestrator(runtime)
        await orchestrator.sync_flows()
        worker = Traced(stores, exporter)
        consumer = Consumer(
            connection, topology, orchestrator, observer=worker.tally, spans=tracer
        )
        scheduler = Scheduler(orchestrator, SchedulerOptions(owner="traced"))
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(consumer.run_until(stop, grace=timedelta(seconds=5)))
            group.create_task(scheduler.run_until(stop, every=timedelta(seconds=0.05)))
            await until(consumer.consuming.is_set)
            try:
                yield worker
            finally:
                stop.set()
    finally:
        await connection.close()
        provider.shutdown()


async def trigger(
    client: Client, flow: str, body: object, headers: dict[str, str] | None = None
) -> str:
    run_id = str(uuid.uuid4())
    await client.publish(
        f"trigger.{flow}",
        {"flow": flow, "trigger_key": "manual", "body": body, "run_id": run_id},
        kind="trigger",
        headers=headers,
    )
    return run_id


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _ctx(span: ReadableSpan):
    context = span.context
    assert context is not None
    return context


def _by_id(spans: Sequence[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {_ctx(s).span_id: s for s in spans}


def _named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _parent(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    return spans[span.parent.span_id]


@pytest.fixture
async def orders_worker(rabbitmq_url, names, mongo_db) -> AsyncIterator[Traced]:
    flows = [*orders.flows, *failures.flows, *polling.flows]
    handlers = Handlers()
    for module in (orders, failures, polling):
        handlers.merge(module.handlers)
    async with traced_worker(rabbitmq_url, names, mongo_db, flows, handlers) as w:
        yield w


async def test_a_run_is_one_trace_under_the_triggers_traceparent(
    orders_worker: Traced, client: Client
):
    body = {"order_id": 7, "lines": [{"sku": "a"}], "amount": 12, "customer": {}}
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
    run_id = await trigger(client, "orders", body, {"traceparent": traceparent})
    assert await orders_worker.finished(run_id) is RunStatus.SUCCEEDED
    await until(lambda: bool(_named(orders_worker.spans(run_id), "run completed")))

    spans = orders_worker.spans(run_id)
    by_id = _by_id(spans)
    # The trigger's own context is the parent: the run is in the caller's trace.
    [root] = _named(spans, "run orders")
    assert format(_ctx(root).trace_id, "032x") == TRACE_ID
    assert root.parent is not None
    assert format(root.parent.span_id, "016x") == PARENT_SPAN
    assert root.kind is SpanKind.CONSUMER
    assert attrs(root)["messaging.system"] == "rabbitmq"
    # One span per attempt of every step, each inside the delivery of its message,
    # which is a child of the publish that sent it: parentage across the broker.
    attempts = {attrs(s)[otel.STEP_KEY]: s for s in spans if s.name.startswith("step ")}
    assert set(attempts) == {"validate", "reserve", "charge", "notify", "ship"}
    for key, attempt in attempts.items():
        assert attrs(attempt)[otel.STEP_STATUS] == "Succeeded"
        assert attrs(attempt)[otel.ATTEMPT] == 1
        assert attrs(attempt)[otel.RUN_ID] == run_id
        delivery = _parent(attempt, by_id)
        assert delivery.kind is SpanKind.CONSUMER, key
        publish = _parent(delivery, by_id)
        assert publish.kind is SpanKind.PRODUCER, key
        assert publish.name == "publish run_step"
    # validate's attempt published the three branches (its continuation runs in it).
    for key in ("reserve", "charge", "notify"):
        publish = _parent(_parent(attempts[key], by_id), by_id)
        assert _parent(publish, by_id) is attempts["validate"]
    # The join's publish links the attempts of all three predecessors.
    ship_publish = _parent(_parent(attempts["ship"], by_id), by_id)
    linked = {link.context.span_id for link in ship_publish.links}
    assert linked == {
        _ctx(attempts[k]).span_id for k in ("reserve", "charge", "notify")
    }
    [completed] = _named(spans, "run completed")
    assert attrs(completed)[otel.RUN_STATUS] == "Succeeded"


async def test_a_failed_step_has_an_error_span_and_a_skipped_step_says_why(
    orders_worker: Traced, client: Client
):
    run_id = await trigger(client, "failures", {"fail": True})
    assert await orders_worker.finished(run_id) is RunStatus.SUCCEEDED
    await until(lambda: bool(_named(orders_worker.spans(run_id), "run completed")))

    spans = orders_worker.spans(run_id)
    [charge] = [s for s in spans if attrs(s).get(otel.STEP_KEY) == "charge"]
    assert charge.status.status_code is StatusCode.ERROR
    assert charge.status.description == "card declined"
    [event] = [e for e in charge.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.message"] == "card declined"
    [confirm] = [s for s in spans if attrs(s).get(otel.STEP_KEY) == "confirm"]
    assert attrs(confirm)[otel.STEP_STATUS] == "Skipped"
    assert "runAfter" in str(attrs(confirm)[otel.SKIP_REASON])
    # Without a traceparent the trigger's delivery starts the trace.
    [root] = _named(spans, "run failures")
    assert root.parent is None


async def test_polls_woken_by_timers_stay_in_the_runs_trace(
    orders_worker: Traced, client: Client
):
    run_id = await trigger(client, "polling", {"polls": 2})
    assert await orders_worker.finished(run_id) is RunStatus.SUCCEEDED
    await until(lambda: bool(_named(orders_worker.spans(run_id), "run completed")))

    spans = orders_worker.spans(run_id)
    by_id = _by_id(spans)
    checks = sorted(
        (s for s in spans if attrs(s).get(otel.STEP_KEY) == "check"),
        key=lambda s: attrs(s)[otel.ATTEMPT],
    )
    assert [attrs(s)[otel.ATTEMPT] for s in checks] == [1, 2]
    assert attrs(checks[0])[otel.STEP_STATUS] == "Pending"
    # The second poll was published by the timer, in the first poll's context.
    publish = _parent(_parent(checks[1], by_id), by_id)
    timer = _parent(publish, by_id)
    assert timer.name == "timer requeue"
    assert _parent(timer, by_id) is checks[0]
    # The delivery's queue wait was measured from the dispatcher's header.
    assert any(flow == polling.flow.id for flow, _ in orders_worker.tally.waits)
