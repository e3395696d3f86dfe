"""What every orchestrator operation works with: flows, handlers, ports and options.

Also the request and answer types the runtime adapters pass in and get back.
"""

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from service.engine.model import Flow, FlowId, JobId, Json, RunId, RunStatus, StepKey
from service.engine.records import RunFacts
from service.engine.rounds import Limits, Round, RunContext
from service.orchestrator.run_cache import RunCache
from service.ports.clock import Clock
from service.ports.dispatch import Dispatcher
from service.ports.stores import Stores
from service.ports.telemetry import Telemetry
from service.steps.handlers import Handlers
from service.tracing import NoTracer, Tracer


@dataclass(frozen=True, slots=True)
class Options:
    lease: timedelta = timedelta(seconds=30)
    """How long a claim holds without a heartbeat before another worker may take it."""
    heartbeat: timedelta = timedelta(seconds=10)
    ack_after: timedelta = timedelta(minutes=10)
    """A step running this long has its delivery acknowledged at its next heartbeat
    (`StepRequest.let_go`): the broker's consumer_timeout never ends its channel."""
    max_output_bytes: int = 1_000_000
    reconcile_after: timedelta = timedelta(seconds=30)
    """Age after which a dispatched, never-claimed step is published again."""
    default_run_timeout: timedelta | None = None
    idempotency_header: str = "idempotency-key"
    lost_attempts: int = 5
    """A step whose worker died during this many attempts fails instead of running."""
    step_timeout: timedelta | None = None
    """The timeout of handler steps whose step and flow set none."""
    timeout_grace: timedelta = timedelta(seconds=5)
    """How long a timed-out handler has, once told (`cancelled`), before its task is
    cancelled."""

    @property
    def limits(self) -> Limits:
        return Limits(
            max_output_bytes=self.max_output_bytes,
            reconcile_after=self.reconcile_after,
            lost_attempts=self.lost_attempts,
            step_timeout=self.step_timeout,
            default_run_timeout=self.default_run_timeout,
        )


class Catalog:
    """The flows this worker knows, by id and by name."""

    def __init__(self, flows: Iterable[Flow]) -> None:
        self._by_id = {f.id: f for f in flows}
        self._by_name = {f.name.lower(): f for f in self._by_id.values()}

    def get(self, flow_id: str) -> Flow | None:
        return self._by_id.get(FlowId(flow_id))

    def find(self, id_or_name: str) -> Flow | None:
        return self._by_id.get(FlowId(id_or_name)) or self._by_name.get(
            id_or_name.lower()
        )

    def __iter__(self) -> Iterator[Flow]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)


class NoTelemetry:
    """Telemetry that records nothing (the flow test host, embedded use)."""

    def run_started(self, flow_id: str, trigger_key: str) -> None:
        return

    def run_completed(self, flow_id: str, status: str) -> None:
        return

    def step_finished(
        self, flow_id: str, step_key: str, status: str, *, seconds: float
    ) -> None:
        return

    def timer_fired(self, kind: str, *, lag_seconds: float) -> None:
        return

    def repaired(self, action: str, count: int) -> None:
        return

    def attempt_started(self, flow_id: str, step_key: str, attempt: int) -> None:
        return

    def run_reopened(self, flow_id: str) -> None:
        return


@dataclass(frozen=True, slots=True)
class Runtime:
    catalog: Catalog
    handlers: Handlers
    stores: Stores
    dispatcher: Dispatcher
    clock: Clock
    options: Options = Options()
    telemetry: Telemetry = field(default_factory=NoTelemetry)
    tracer: Tracer = field(default_factory=NoTracer)
    runs: RunCache = field(default_factory=RunCache)
    """This worker's memory of the runs it met."""

    def context(
        self,
        flow: Flow,
        run: RunFacts,
        stop: RunStatus | None = None,
        *,
        now: datetime | None = None,
    ) -> RunContext:
        """What a decision about `run` starts from.

        `now` (the clock's by default), this worker's limits and flows, the trace
        context of what decides, and the run's stop if known.
        """
        return RunContext(
            flow,
            run,
            now or self.clock.now(),
            stop,
            self.options.limits,
            trace=self.tracer.current(),
            flows=self.catalog.find,
        )


@dataclass(frozen=True, slots=True)
class Driving:
    """A round to drive in a run's context (what an effect asks of another run)."""

    ctx: RunContext
    first: Round
    only_unclaimed: bool = False
    """Publish only the releases whose step has no row yet, or a Queued one."""


@dataclass(frozen=True, slots=True)
class TriggerRequest:
    flow: str
    """A flow id or name."""
    trigger_key: str = "manual"
    body: Json = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    run_id: RunId | None = None
    source_run_id: RunId | None = None


@dataclass(frozen=True, slots=True)
class TriggerResult:
    run_id: RunId | None
    duplicate: bool = False
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class StepRequest:
    run_id: RunId
    step_key: StepKey
    job_id: JobId
    redelivered: bool = False
    """The broker delivered this message before: the last holder may have died."""
    dispatch_id: str = ""
    """Which copy of the message this is (its `x-dispatch-id` header): a repair may
    publish a dispatch again, under the same job id; only a redelivery of the copy
    that holds the claim takes it over."""
    let_go: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)
    """Acknowledges the delivery before the step ends (a long step, `ack_after`);
    from then on the step's row and lease carry it. Safe to call more than once."""


ControlStatus = Literal[
    "accepted", "duplicate", "disabled", "delivered", "refused", "not_found"
]


@dataclass(frozen=True, slots=True)
class ControlResult:
    status: ControlStatus
    message: str
    run_id: RunId | None = None
    step_key: StepKey | None = None
    data: Mapping[str, Json] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("accepted", "duplicate", "delivered", "disabled")
