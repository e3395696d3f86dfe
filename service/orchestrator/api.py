"""`Orchestrator`: the IFlowOrchestrator operations, as the runtime adapters call them.

A thin facade over `control`, `hop`, `upkeep` and `reconciler`; it holds the Runtime
and nothing else.
"""

from service.engine.model import JobId, Json, RunId, StepKey
from service.engine.records import Timer
from service.orchestrator import control, hop, reconciler, upkeep
from service.orchestrator.runtime import (
    ControlResult,
    Runtime,
    StepRequest,
    TriggerRequest,
    TriggerResult,
)


class Orchestrator:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def trigger(self, request: TriggerRequest, *, job_id: JobId) -> TriggerResult:
        """Start a run (one per idempotency key) and dispatch its entry steps."""
        return await control.trigger(self.runtime, request, job_id=job_id)

    async def run_step(self, request: StepRequest) -> None:
        """Execute a dispatched step, persist its result and dispatch what is ready."""
        await hop.run_step(self.runtime, request)

    async def retry_step(self, run_id: RunId, step_key: StepKey) -> ControlResult:
        return await control.retry_step(self.runtime, run_id, step_key)

    async def cancel_run(
        self, run_id: RunId, reason: str | None = None
    ) -> ControlResult:
        return await control.cancel_run(self.runtime, run_id, reason)

    async def signal(self, run_id: RunId, name: str, payload: Json) -> ControlResult:
        return await control.signal(self.runtime, run_id, name, payload)

    async def rerun(self, run_id: RunId, *, job_id: JobId) -> TriggerResult:
        return await control.rerun(self.runtime, run_id, job_id=job_id)

    async def set_enabled(self, flow: str, *, enabled: bool) -> ControlResult:
        return await upkeep.set_enabled(self.runtime, flow, enabled=enabled)

    async def update_schedule(
        self,
        flow: str,
        trigger_key: str,
        *,
        paused: bool | None = None,
        cron: str | None = None,
        clear_cron: bool = False,
    ) -> ControlResult:
        return await upkeep.update_schedule(
            self.runtime,
            flow,
            trigger_key,
            paused=paused,
            cron=cron,
            clear_cron=clear_cron,
        )

    async def trigger_schedule_now(
        self, flow: str, trigger_key: str, *, job_id: JobId
    ) -> ControlResult:
        return await upkeep.trigger_schedule_now(
            self.runtime, flow, trigger_key, job_id=job_id
        )

    async def sync_flows(self) -> None:
        """Store manifests and cron schedules of every known flow (at start)."""
        await upkeep.sync_flows(self.runtime)

    async def fire_timer(self, timer: Timer) -> None:
        await upkeep.fire_timer(self.runtime, timer)

    async def fire_schedules(self, *, limit: int = 100) -> int:
        return await upkeep.fire_schedules(self.runtime, limit=limit)

    async def reconcile(self, *, limit: int = 100) -> int:
        return await reconciler.reconcile(self.runtime, limit=limit)
