"""`Heartbeat`: a claim's lease kept alive while its step runs, and the run's stop seen.

The beating starts after one heartbeat period, so the many steps that are over before
then pay for a timer handle, not a task. Each beat renews the lease; the renewal says
whether the run's stop has marked the row, and the run's deadline is known, so the
handler's `cancelled` event is set within a beat of a cancel or a timeout.

A step that runs longer than `ack_after` lets its delivery go (`let_go`) after the
next renewal, a majority write that also makes its claim durable: the broker's
consumer_timeout never closes the channel under a long handler, and from then on the
row carries the step. A worker that dies later leaves a lease that ends, and the
reconciler publishes the step again; a result saved later is rechecked by it too.
"""

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType

import structlog

from service.engine.model import JobId
from service.engine.records import RunFacts, StepRecord
from service.errors import UnavailableError
from service.orchestrator.runtime import Runtime

log = structlog.get_logger()


class Heartbeat:
    def __init__(
        self,
        rt: Runtime,
        row: StepRecord,
        run: RunFacts,
        *,
        let_go: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._rt = rt
        self._row = row
        self._run = run
        self._let_go = let_go
        self._began = rt.clock.now()
        self._done = asyncio.Event()
        self.cancelled = asyncio.Event()
        """Set when the run is cancelled or times out while the step runs."""
        self._group = asyncio.TaskGroup()
        self._start: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> asyncio.Event:
        await self._group.__aenter__()
        every = self._rt.options.heartbeat.total_seconds()
        self._start = asyncio.get_running_loop().call_later(every, self._begin)
        return self.cancelled

    def _begin(self) -> None:
        self._group.create_task(self._beat())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._start is not None:
            self._start.cancel()
        self._done.set()
        # The group ends as if its body had ended well: the beat stops at once, and
        # whatever the body raised goes on unchanged (not inside an ExceptionGroup).
        await self._group.__aexit__(None, None, None)

    async def _beat(self) -> None:
        """Renew the lease every heartbeat; tell the handler when the run stops."""
        rt, row = self._rt, self._row
        every = rt.options.heartbeat.total_seconds()
        while not self._done.is_set():
            now = rt.clock.now()
            try:
                renewal = await rt.stores.steps.extend_lease(
                    row.run_id,
                    row.key,
                    job_id=row.job_id or JobId(""),
                    until=now + rt.options.lease,
                )
            except UnavailableError as exc:  # the next beat tries again
                log.warning("heartbeat_missed", error=str(exc))
            else:
                deadline = self._run.deadline_at
                if renewal.stop is not None or (deadline and now >= deadline):
                    self.cancelled.set()
                if renewal.held and now - self._began >= rt.options.ack_after:
                    await self._release()
            try:
                await asyncio.wait_for(self._done.wait(), timeout=every)
            except TimeoutError:
                continue

    async def _release(self) -> None:
        """Let the delivery go, once: the durable row and its lease carry the step."""
        if self._let_go is None:
            return
        let_go, self._let_go = self._let_go, None
        log.info(
            "step_delivery_released", after_s=self._rt.options.ack_after.total_seconds()
        )
        await let_go()
