"""The composition root: flows, adapters, consumer, scheduler and the health port.

`main(settings)` is the worker. It refuses to start on an invalid flow or a health
port it can't open (one error, raised before anything runs); otherwise it answers
health probes at once, waits for MongoDB and RabbitMQ (saying which URL it tries, and
that it keeps trying), declares the topology, stores the flows, then runs the consumer
and the scheduler in one TaskGroup until SIGTERM or SIGINT, and closes AMQP, then
MongoDB.
"""

import asyncio
import importlib
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import structlog
from structlog.typing import FilteringBoundLogger

from service import health, metrics
from service.adapters import census
from service.adapters.amqp.consumer import Consumer
from service.adapters.amqp.dispatcher import AmqpDispatcher
from service.adapters.clock import SystemClock
from service.adapters.mongo.client import redacted
from service.adapters.observers import ConsumerMetrics, open_tracer
from service.engine.model import Flow, JobId
from service.engine.validation import validate_all
from service.errors import FlowDefinitionError
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
from service.startup import Services, Waiting, connected, until_done
from service.steps.handlers import Handlers
from service.tracing import NoTracer

if TYPE_CHECKING:
    from service.adapters.otel import OtelTracer

log: FilteringBoundLogger = structlog.get_logger()

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
    """Run a worker until SIGTERM or SIGINT.

    Raises:
        FlowDefinitionError: a flow module or a flow is invalid.
        SettingsError: the health port can't be opened.
    """
    tracer = open_tracer(settings.tracing)
    context = [tracer.log_context] if tracer is not None else []
    configure_logging(settings.log_level, json=settings.log_json, context=context)
    flows, handlers = load_flows(settings.flow_modules)
    validate_all(flows, handlers.names())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    try:
        await serve(settings, Catalog(flows), handlers, stop, tracer=tracer)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("worker_stopped", worker_id=settings.worker_id)


def _on_signal(stop: asyncio.Event, signum: signal.Signals) -> None:
    log.info("shutdown_requested", signal=signum.name)
    stop.set()


async def serve(
    settings: Settings,
    catalog: Catalog,
    handlers: Handlers,
    stop: asyncio.Event,
    *,
    tracer: "OtelTracer | None" = None,
) -> None:
    """Answer probes at once; connect, then consume and schedule until `stop` is set.

    `tracer`: OpenTelemetry tracing (`open_tracer`), or None for none.
    """
    readiness = Readiness()
    # Opened before anything runs, so a busy port is one error, not a task's crash.
    server = (
        await health.listen(
            host=HEALTH_HOST, port=settings.health_port, ready=readiness.problem
        )
        if settings.health_port
        else None
    )
    log.info(
        "worker_starting",
        worker_id=settings.worker_id,
        flows=len(catalog),
        tracing=settings.tracing,
    )
    async with asyncio.TaskGroup() as group:
        if server is not None:
            # From the start: alive while waiting for MongoDB or RabbitMQ, not ready.
            group.create_task(health.serve_until(stop, server))
        await _work(settings, catalog, handlers, stop, readiness, tracer)


async def _work(
    settings: Settings,
    catalog: Catalog,
    handlers: Handlers,
    stop: asyncio.Event,
    readiness: "Readiness",
    tracer: "OtelTracer | None",
) -> None:
    async with connected(settings, stop) as services:
        if services is None:
            return  # stopped before both services answered
        names = metrics.FlowNames({flow.id: flow.name for flow in catalog})
        metrics.observe_concurrency(settings.amqp_concurrency)
        orchestrator = ObservedOrchestrator(
            Runtime(
                catalog=catalog,
                handlers=handlers,
                stores=services.mongo,
                dispatcher=AmqpDispatcher(services.topology, spans=tracer),
                clock=SystemClock(),
                options=_options(settings),
                telemetry=metrics.PrometheusTelemetry(names),
                tracer=tracer or NoTracer(),
            )
        )
        storing = Waiting(
            "store_flows", "MongoDB", redacted(settings.mongodb_url.get_secret_value())
        )
        if not await until_done(storing, orchestrator.sync_flows, stop):
            return
        consumer = Consumer(
            services.amqp,
            services.topology,
            orchestrator,
            prefetch=settings.amqp_prefetch,
            concurrency=settings.amqp_concurrency,
            max_body_bytes=settings.max_message_bytes,
            observer=ConsumerMetrics(names),
            spans=tracer,
        )
        scheduler = Scheduler(orchestrator, _scheduler_options(settings))
        readiness.services, readiness.consuming = services, consumer.consuming
        async with asyncio.TaskGroup() as group:
            group.create_task(consumer.run_until(stop, grace=settings.shutdown_grace))
            group.create_task(
                scheduler.run_until(stop, every=settings.scheduler_interval)
            )
            group.create_task(
                census.refresh_until(
                    stop,
                    every=settings.gauge_interval,
                    db=services.mongo.database,
                    connection=services.amqp,
                    names=services.topology.names,
                    flows=names,
                )
            )


def _options(settings: Settings) -> Options:
    return Options(
        lease=settings.step_lease,
        heartbeat=settings.step_heartbeat,
        ack_after=settings.step_ack_after,
        reconcile_after=settings.reconcile_after,
        default_run_timeout=settings.default_run_timeout,
        step_timeout=settings.step_timeout,
        timeout_grace=settings.step_timeout_grace,
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
        retention_every=settings.retention_interval,
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
