"""The composition root: flows, adapters, consumer, scheduler and the health port.

`main(settings)` is the worker. It refuses to start on an invalid flow; otherwise it
answers health probes at once, waits for MongoDB and RabbitMQ, declares the topology,
stores the flows, then runs the consumer and the scheduler in one TaskGroup until
SIGTERM or SIGINT, and closes AMQP, then MongoDB.
"""

import asyncio
import contextlib
import importlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from structlog.typing import FilteringBoundLogger

from service import health, metrics
from service.adapters.amqp.consumer import Consumer, Settled
from service.adapters.amqp.dispatcher import AmqpDispatcher, open_publishing_channel
from service.adapters.amqp.topology import Names, Topology, establish
from service.adapters.clock import SystemClock
from service.adapters.mongo.client import MongoStores
from service.adapters.mongo.client import connect as connect_mongo
from service.engine.model import Flow, JobId
from service.engine.validation import validate_all
from service.errors import FlowDefinitionError, UnavailableError
from service.logs import configure_logging
from service.orchestrator.api import Orchestrator
from service.orchestrator.runtime import (
    Catalog,
    Options,
    Runtime,
    StepRequest,
    TriggerRequest,
    TriggerResult,
)
from service.scheduler import Scheduler, SchedulerOptions
from service.settings import Settings
from service.steps.handlers import Handlers

log: FilteringBoundLogger = structlog.get_logger()

T = TypeVar("T")

READY_TIMEOUT: Final = 2.0
"""Seconds MongoDB's `ping` may take before `/readyz` answers 503."""
HEALTH_HOST: Final = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside
_CLOSE_TIMEOUT: Final = 10.0
_FIRST_RETRY: Final = 0.5
_MAX_RETRY: Final = 15.0


class FlowModuleError(FlowDefinitionError):
    """A FLOW_MODULES entry that can't be imported or lacks `flows` or `handlers`."""

    def __init__(self, module: str, problem: str) -> None:
        self.module = module
        super().__init__(module, problem)
        self.args = (f"flow module '{module}': {problem}",)


def load_flows(modules: Sequence[str]) -> tuple[list[Flow], Handlers]:
    """Import each module and collect its `flows` and its `handlers`.

    Raises:
        FlowModuleError: a module is missing, fails to import, lacks `flows` or
            `handlers`, or registers a handler type another module registered.
    """
    flows: list[Flow] = []
    handlers = Handlers()
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise FlowModuleError(name, f"cannot be imported: {exc}") from exc
        except Exception as exc:
            # Whatever a flow module raises while it loads, the worker must not start.
            problem = f"failed to load: {type(exc).__name__}: {exc}"
            raise FlowModuleError(name, problem) from exc
        found = getattr(module, "flows", None)
        registered = getattr(module, "handlers", None)
        if not isinstance(found, list | tuple) or not all(
            isinstance(flow, Flow) for flow in found
        ):
            raise FlowModuleError(name, "has no `flows` list of Flow")
        if not isinstance(registered, Handlers):
            raise FlowModuleError(name, "has no `handlers` (a Handlers)")
        try:
            handlers.merge(registered)
        except ValueError as exc:
            raise FlowModuleError(name, str(exc)) from exc
        flows.extend(found)
    return flows, handlers


async def main(settings: Settings) -> None:
    """Run a worker until SIGTERM or SIGINT; exit non-zero on an invalid flow."""
    configure_logging(settings.log_level, json=settings.log_json)
    try:
        flows, handlers = load_flows(settings.flow_modules)
        validate_all(flows, handlers.names())
    except FlowDefinitionError as exc:
        raise SystemExit(f"flow-orchestrator refuses to start: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    log.info("worker_starting", worker_id=settings.worker_id, flows=len(flows))
    try:
        await serve(settings, Catalog(flows), handlers, stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("worker_stopped", worker_id=settings.worker_id)


def _on_signal(stop: asyncio.Event, signum: signal.Signals) -> None:
    log.info("shutdown_requested", signal=signum.name)
    stop.set()


async def serve(
    settings: Settings, catalog: Catalog, handlers: Handlers, stop: asyncio.Event
) -> None:
    """Answer probes at once; connect, then consume and schedule until `stop` is set."""
    readiness = Readiness()
    async with asyncio.TaskGroup() as group:
        if settings.health_port:
            # From the start: alive while waiting for MongoDB or RabbitMQ, not ready.
            group.create_task(
                health.serve_until(
                    stop,
                    host=HEALTH_HOST,
                    port=settings.health_port,
                    ready=readiness.problem,
                )
            )
        await _work(settings, catalog, handlers, stop, readiness)


async def _work(
    settings: Settings,
    catalog: Catalog,
    handlers: Handlers,
    stop: asyncio.Event,
    readiness: "Readiness",
) -> None:
    async with _connected(settings, stop) as services:
        if services is None:
            return  # stopped before both services answered
        orchestrator = ObservedOrchestrator(
            Runtime(
                catalog=catalog,
                handlers=handlers,
                stores=services.mongo,
                dispatcher=AmqpDispatcher(services.topology),
                clock=SystemClock(),
                options=_options(settings),
                telemetry=metrics.PrometheusTelemetry(),
            )
        )
        if not await _until_done("store_flows", orchestrator.sync_flows, stop):
            return
        consumer = Consumer(
            services.amqp,
            services.topology,
            orchestrator,
            prefetch=settings.amqp_prefetch,
            concurrency=settings.amqp_concurrency,
            max_body_bytes=settings.max_message_bytes,
            observer=ConsumerMetrics(),
        )
        scheduler = Scheduler(orchestrator, _scheduler_options(settings))
        readiness.services, readiness.consuming = services, consumer.consuming
        async with asyncio.TaskGroup() as group:
            group.create_task(consumer.run_until(stop, grace=settings.shutdown_grace))
            group.create_task(
                scheduler.run_until(stop, every=settings.scheduler_interval)
            )


def _options(settings: Settings) -> Options:
    return Options(
        lease=settings.step_lease,
        heartbeat=settings.step_heartbeat,
        reconcile_after=settings.reconcile_after,
        default_run_timeout=settings.default_run_timeout,
    )


def _scheduler_options(settings: Settings) -> SchedulerOptions:
    # Look for stuck work three times per `reconcile_after`, so a repair comes at
    # most a third of it late; never more often than the scheduler passes.
    every = max(settings.reconcile_after / 3, settings.scheduler_interval)
    return SchedulerOptions(
        owner=settings.worker_id,
        # A timer whose firing worker died is fired again once this lease ends.
        timer_lease=settings.step_lease,
        reconcile_every=every,
        retention=settings.retention,
    )


class Readiness:
    """What `/readyz` checks; filled in once the worker is connected."""

    def __init__(self) -> None:
        self.services: Services | None = None
        self.consuming: asyncio.Event | None = None

    async def problem(self) -> str | None:
        """Why the worker can't take work now, or None when it can."""
        if self.services is None or self.consuming is None:
            return "starting"
        if not self.consuming.is_set():
            return "not consuming"
        return await self.services.problem()


@dataclass(frozen=True, slots=True)
class Services:
    mongo: MongoStores
    amqp: AbstractRobustConnection
    topology: Topology

    async def problem(self) -> str | None:
        """Why the services are not usable now, or None when both answer."""
        if self.amqp.is_closed or not self.amqp.connected.is_set():
            return "the broker connection is down"
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self.mongo.ping()
        except (TimeoutError, UnavailableError):
            return "MongoDB does not answer"
        return None


@contextlib.asynccontextmanager
async def _connected(
    settings: Settings, stop: asyncio.Event
) -> AsyncIterator[Services | None]:
    """MongoDB (indexes ensured), then RabbitMQ (topology declared).

    Each is retried until it answers, or `stop` is set (then None). Closes AMQP, then
    MongoDB, on the way out.
    """
    concern = settings.mongodb_write_concern
    mongo = connect_mongo(
        settings.mongodb_url.get_secret_value(),
        settings.mongodb_database,
        write_concern=int(concern) if concern.isdigit() else concern,
        server_selection_timeout=settings.mongodb_timeout,
        connect_timeout=settings.mongodb_timeout,
        app_name=f"flow-orchestrator {settings.worker_id}",
    )
    try:
        if not await _until_done("mongodb", mongo.ensure_indexes, stop):
            yield None
            return
        opened = await _until_available("rabbitmq", lambda: _open_amqp(settings), stop)
        if opened is None:
            yield None
            return
        amqp, topology = opened
        try:
            yield Services(mongo, amqp, topology)
        finally:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await amqp.close()
    finally:
        await mongo.close()


async def _open_amqp(settings: Settings) -> tuple[AbstractRobustConnection, Topology]:
    """A robust connection (it reconnects by itself) and the declared topology."""
    try:
        connection = await aio_pika.connect_robust(
            settings.amqp_url.get_secret_value(),
            client_properties={"connection_name": settings.worker_id},
        )
    except CONNECTION_EXCEPTIONS as exc:
        raise UnavailableError(f"RabbitMQ is unavailable: {exc!r}") from exc
    try:
        channel = await open_publishing_channel(connection)
        topology = await establish(
            connection,
            channel,
            Names(settings.amqp_prefix),
            delivery_limit=settings.amqp_delivery_limit,
        )
    except CONNECTION_EXCEPTIONS as exc:
        with contextlib.suppress(*CONNECTION_EXCEPTIONS):
            await connection.close()
        raise UnavailableError(f"RabbitMQ is unavailable: {exc!r}") from exc
    return connection, topology


async def _until_available(
    what: str, attempt: Callable[[], Awaitable[T]], stop: asyncio.Event
) -> T | None:
    """`attempt()`, again with backoff after each UnavailableError.

    None when `stop` is set first.
    """
    delay = _FIRST_RETRY
    while not stop.is_set():
        try:
            return await attempt()
        except UnavailableError as exc:
            log.warning("startup_deferred", service=what, error=str(exc), delay_s=delay)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
        delay = min(delay * 2, _MAX_RETRY)
    return None


async def _until_done(
    what: str, attempt: Callable[[], Awaitable[None]], stop: asyncio.Event
) -> bool:
    """Whether `attempt()` succeeded (retried as `_until_available`) before `stop`."""

    async def done() -> bool:
        await attempt()
        return True

    return await _until_available(what, done, stop) is not None


class ConsumerMetrics:
    """The consumer's `Observer`, recording into the Prometheus metrics."""

    def settled(self, event: Settled) -> None:
        metrics.observe_settled(event.kind, event.outcome.value)
        if event.reason is not None:
            metrics.observe_dead_letter(event.reason)

    def deferred(self, kind: str) -> None:
        metrics.observe_settled(kind, "deferred")


class ObservedOrchestrator(Orchestrator):
    """The orchestrator, counting the messages it is handling (the in-flight gauge).

    Runs, steps, timers and repairs are reported from inside through the Telemetry
    port (`metrics.PrometheusTelemetry`).
    """

    async def trigger(self, request: TriggerRequest, *, job_id: JobId) -> TriggerResult:
        with metrics.MESSAGES_IN_FLIGHT.track_inprogress():
            return await super().trigger(request, job_id=job_id)

    async def run_step(self, request: StepRequest) -> None:
        with metrics.MESSAGES_IN_FLIGHT.track_inprogress():
            await super().run_step(request)
