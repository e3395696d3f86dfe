"""The flow test host: run flows in-process with a frozen clock, no broker, no database.

Flow authors use it in their own unit tests:

    host = FlowTestHost([orders.flow], orders.handlers)
    result = await host.trigger("orders", body={"id": 7})
    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["ship"].output == {...}

Delays (polling, retry backoff, DelayNextStep, signal timeouts, run deadlines) are
skipped by moving the frozen clock to the next due timer whenever nothing else is left
to do.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from service.adapters.clock import FrozenClock
from service.adapters.memory.dispatcher import InMemoryDispatcher
from service.adapters.memory.stores import InMemoryStores
from service.engine.model import (
    Flow,
    JobId,
    Json,
    RunId,
    RunStatus,
    StepKey,
    StepStatus,
)
from service.engine.records import Event, StepRecord
from service.engine.timeline import timeline
from service.engine.validation import validate_all
from service.orchestrator.api import Orchestrator
from service.orchestrator.runtime import (
    Catalog,
    ControlResult,
    Options,
    Runtime,
    StepRequest,
    TriggerRequest,
)
from service.scheduler import Scheduler, SchedulerOptions
from service.steps.handlers import Handlers


@dataclass(frozen=True, slots=True)
class StepResultView:
    status: StepStatus
    output: Json
    error: str | None
    attempts: int
    inputs: Mapping[str, Json]
    resolved_inputs: Mapping[str, Json] | None

    @classmethod
    def of(cls, row: StepRecord) -> "StepResultView":
        return cls(
            row.status,
            row.output,
            row.error,
            row.attempt,
            row.inputs,
            row.resolved_inputs,
        )


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: RunId
    status: RunStatus
    steps: Mapping[str, StepResultView]
    events: list[Event] = field(default_factory=list)
    duplicate: bool = False

    @property
    def is_finished(self) -> bool:
        return self.status.is_final


class FlowTestHost:
    """In-process orchestrator over the memory adapters and a FrozenClock."""

    def __init__(
        self,
        flows: Iterable[Flow],
        handlers: Handlers,
        *,
        clock: FrozenClock | None = None,
        options: Options | None = None,
    ) -> None:
        flows = list(flows)
        validate_all(flows, handlers.names())
        self.clock = clock or FrozenClock()
        self.stores = InMemoryStores()
        self.dispatcher = InMemoryDispatcher()
        self.runtime = Runtime(
            Catalog(flows),
            handlers,
            self.stores,
            self.dispatcher,
            self.clock,
            options or Options(),
        )
        self.orchestrator = Orchestrator(self.runtime)
        self.scheduler = Scheduler(
            self.orchestrator, SchedulerOptions(owner="test-host")
        )
        self._synced = False
        self._messages = 0

    async def trigger(
        self,
        flow: str,
        *,
        body: Json = None,
        headers: Mapping[str, str] | None = None,
        trigger_key: str = "manual",
        idempotency_key: str | None = None,
        job_id: str | None = None,
        settle: bool = True,
    ) -> RunResult:
        """Trigger a run and, with `settle`, drive it until nothing more can happen."""
        await self._sync()
        self._messages += 1
        result = await self.orchestrator.trigger(
            TriggerRequest(
                flow, trigger_key, body, dict(headers or {}), idempotency_key
            ),
            job_id=JobId(job_id or f"test-trigger-{self._messages}"),
        )
        if result.run_id is None:
            raise RuntimeError(f"flow '{flow}' is disabled: no run was started")
        if settle:
            await self.settle()
        return await self.result(result.run_id, duplicate=result.duplicate)

    async def settle(self, *, max_wait: timedelta = timedelta(minutes=30)) -> None:
        """Deliver every dispatched step, moving the clock to due timers, until idle."""
        deadline = self.clock.now() + max_wait
        while True:
            await self._drain()
            report = await self.scheduler.tick()
            if self.dispatcher.pending or report.timers or report.cron_fires:
                continue
            due = await self._next_due()
            if due is None or due > deadline:
                return
            self.clock.set(max(due, self.clock.now()))

    async def _drain(self) -> None:
        while self.dispatcher.pending:
            dispatch = self.dispatcher.take()
            await self.orchestrator.run_step(
                StepRequest(
                    dispatch.run_id, dispatch.step_key, JobId(dispatch.message_id)
                )
            )

    async def _next_due(self) -> datetime | None:
        return self.stores.timers.next_due()

    async def _sync(self) -> None:
        if not self._synced:
            await self.orchestrator.sync_flows()
            self._synced = True

    async def result(self, run_id: RunId, *, duplicate: bool = False) -> RunResult:
        run = await self.stores.runs.get_run(run_id)
        if run is None:
            raise KeyError(run_id)
        rows = self.stores.steps.rows_of(run_id)
        stored = await self.stores.events.events(run_id, limit=100_000)
        return RunResult(
            run_id,
            run.status,
            {r.key: StepResultView.of(r) for r in rows},
            timeline(run, stored, rows),
            duplicate,
        )

    async def signal(
        self, run_id: RunId, name: str, payload: Json = None
    ) -> ControlResult:
        outcome = await self.orchestrator.signal(run_id, name, payload)
        await self.settle()
        return outcome

    async def cancel(self, run_id: RunId, reason: str | None = None) -> ControlResult:
        outcome = await self.orchestrator.cancel_run(run_id, reason)
        await self.settle()
        return outcome

    async def retry(self, run_id: RunId, step_key: str) -> ControlResult:
        outcome = await self.orchestrator.retry_step(run_id, StepKey(step_key))
        await self.settle()
        return outcome

    async def advance(self, delta: timedelta) -> None:
        """Move the clock on and run whatever became due (cron ticks, timers)."""
        await self._sync()
        self.clock.advance(delta)
        await self.settle(max_wait=timedelta())
