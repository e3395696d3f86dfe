"""A worker killed after any write loses nothing (DESIGN invariants, decisions 7-8).

For each flow, a clean run counts the writes (store writes and publishes) that running
it takes. Then, for every N, the run is done again with a crash right after write N:
the message being handled is redelivered (as RabbitMQ does when a worker's connection
dies) and the run goes on. Every such run must end like the clean one, every step final,
with each handler invoked at least as often as in the clean run and at most once more.

Then again with the message lost instead (dead-lettered past its delivery limit, or
acknowledged early for a long step): nothing redelivers it, and the reconciler of the
other workers must finish the run alone, from what the crashed worker had written.
"""

import itertools
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from service.adapters.memory.stores import InMemoryStores
from service.engine.model import (
    Concurrency,
    Flow,
    FlowId,
    JobId,
    RetryPolicy,
    Step,
    StepStatus,
    after,
    child_flow,
    for_each,
    wait_for_signal,
)
from service.orchestrator.api import Orchestrator
from service.orchestrator.runtime import StepRequest, TriggerRequest
from service.ports.dispatch import Dispatch
from service.ports.loops import LoopStore
from service.ports.runs import RunStore
from service.ports.slots import SlotStore
from service.ports.steps import StepStore
from service.ports.stores import (
    EventStore,
    FlowStore,
    ScheduleStore,
    SignalStore,
    TimerStore,
)
from service.steps.handlers import Failed, Handlers, Pending, StepContext
from service.testing import FlowTestHost

FLOW_ID = FlowId("9d2f8e1a-0000-4000-8000-00000000c4a5")

WRITES = frozenset(
    {
        # RunStore
        "create_run",
        "complete_run",
        "reopen_run",
        "request_cancel",
        "mark_timed_out",
        "rechecked",
        # StepStore
        "claim",
        "extend_lease",
        "finish",
        "settle",
        "requeue",
        "add_steps",
        "reset_steps",
        "mark_stopped",
        "admit_run",
        # LoopStore
        "start_loop",
        "advance_loop",
        # SlotStore
        "join",
        "take",
        "free",
        # EventStore, TimerStore, SignalStore
        "append",
        "set",
        "delete",
        "register",
        "deliver",
        # Dispatcher
        "publish",
    }
)


class Crash(BaseException):
    """The worker died right after a write."""


class Fuse:
    """Counts writes; blows once, right after write number `at`."""

    def __init__(self, at: int | None = None) -> None:
        self.at = at
        self.count = 0
        self.blown: str | None = None

    def tick(self, what: str) -> None:
        self.count += 1
        if self.count == self.at:
            self.blown = f"{what} (write {self.count})"
            raise Crash(self.blown)


class Crashing:
    """A store or dispatcher whose writes go through the fuse."""

    def __init__(self, target: object, fuse: Fuse) -> None:
        self._target = target
        self._fuse = fuse

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in WRITES:
            return attr

        async def write(*args: Any, **kwargs: Any) -> Any:
            result = await attr(*args, **kwargs)
            self._fuse.tick(name)
            return result

        return write


class CrashingStores:
    """The host's stores, their writes through the fuse."""

    def __init__(self, stores: InMemoryStores, fuse: Fuse) -> None:
        self._stores = stores
        self.runs: RunStore = Crashing(stores.runs, fuse)
        self.steps: StepStore = Crashing(stores.steps, fuse)
        self.loops: LoopStore = Crashing(stores.loops, fuse)
        self.events: EventStore = Crashing(stores.events, fuse)
        self.timers: TimerStore = Crashing(stores.timers, fuse)
        self.signals: SignalStore = Crashing(stores.signals, fuse)
        self.slots: SlotStore = Crashing(stores.slots, fuse)
        self.flows: FlowStore = stores.flows
        self.schedules: ScheduleStore = stores.schedules

    async def purge(self, *, before: datetime, limit: int) -> int:
        return await self._stores.purge(before=before, limit=limit)


class Ran:
    """What one run did: its outcome, and how often each handler ran."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()


def make(case: "Case", fuse: Fuse) -> tuple[FlowTestHost, Orchestrator, Ran]:
    ran = Ran()
    handlers = Handlers()

    @handlers.handler("Ok")
    async def ok(ctx: StepContext, inputs: dict[str, Any]) -> object:
        ran.calls[ctx.step_key] += 1
        return {"step": ctx.step_key}

    @handlers.handler("Flaky")
    async def flaky(ctx: StepContext, inputs: dict[str, Any]) -> object:
        ran.calls[ctx.step_key] += 1
        if ran.calls[ctx.step_key] == 1:
            return Failed("the first call fails")
        return {"calls": ran.calls[ctx.step_key]}

    @handlers.handler("Poll")
    async def poll(ctx: StepContext, inputs: dict[str, Any]) -> object:
        ran.calls[ctx.step_key] += 1
        polls = int(inputs.get("polls", 0)) + 1
        if polls < 3:
            return Pending(timedelta(seconds=5), inputs={"polls": polls})
        return {"polls": polls}

    @handlers.handler("Item")
    async def item(ctx: StepContext, inputs: dict[str, Any]) -> object:
        ran.calls[ctx.step_key] += 1
        if inputs["__loopItem"] == 3:
            return Failed("item 3 is bad")
        return {"item": inputs["__loopItem"]}

    flow = Flow(FLOW_ID, "t", steps=case.steps, concurrency=case.concurrency)
    host = FlowTestHost([flow, *case.others], handlers)
    runtime = replace(
        host.runtime,
        stores=CrashingStores(host.stores, fuse),
        dispatcher=Crashing(host.dispatcher, fuse),
    )
    return host, Orchestrator(runtime), ran


REPAIR_WINDOW = timedelta(minutes=2)
"""Past every lease and `RECONCILE_AFTER`: long enough for the reconciler to act."""


async def drive(host: FlowTestHost, worker: Orchestrator, *, lose: bool) -> None:
    """`FlowTestHost.settle`, with a worker that may crash.

    Its message comes back, or (`lose`) never does: then only the reconciler of the
    host's own (uncrashed) scheduler finishes what it began, within a few windows.
    """
    windows = 0
    while True:
        while host.dispatcher.pending:
            dispatch: Dispatch = host.dispatcher.take()
            request = StepRequest(
                dispatch.run_id, dispatch.step_key, JobId(dispatch.message_id)
            )
            while True:
                try:
                    await worker.run_step(request)
                    break
                except Crash:
                    if lose:
                        break
                    request = replace(request, redelivered=True)
        report = await host.scheduler.tick()
        if report.timers or report.cron_fires or report.repairs:
            continue  # what fired or was repaired may have published
        due: datetime | None = host.stores.timers.next_due()
        if due is None:
            if not lose or await _all_done(host) or windows == 10:
                return
            windows += 1
            due = host.clock.now() + REPAIR_WINDOW
        host.clock.set(max(due, host.clock.now()))


async def _all_done(host: FlowTestHost) -> bool:
    return all(run.status.is_final for run in host.stores.runs.all_runs())


async def trigger(
    host: FlowTestHost, worker: Orchestrator, n: int, *, lose: bool
) -> None:
    request = TriggerRequest("t", body={"items": [1, 2, 3, 4, 5], "key": "k"})
    while True:
        try:
            result = await worker.trigger(request, job_id=JobId(f"trigger-{n}"))
        except Crash:
            if lose:  # the crash came after a write: the run is there, or nothing is
                return
            continue  # the trigger message is redelivered with its message id
        assert result.run_id is not None
        return


@dataclass(frozen=True)
class Case:
    steps: dict[str, Step]
    signals: tuple[str, ...] = ()
    others: tuple[Flow, ...] = ()
    """Other flows of the host (a child flow)."""
    concurrency: Concurrency | None = None
    runs: int = 1


@dataclass(frozen=True)
class Ending:
    runs: list[tuple[str, int, str, dict[str, StepStatus]]]
    """Each run's flow, depth, status and steps, in a stable order."""
    calls: Counter[str]
    writes: int
    crash: str | None


async def run_once(case: Case, at: int | None, *, lose: bool = False) -> Ending:
    fuse = Fuse(at)
    host, worker, ran = make(case, fuse)
    await host.orchestrator.sync_flows()
    for n in range(1, case.runs + 1):
        await trigger(host, worker, n, lose=lose)
    await drive(host, worker, lose=lose)
    for name in case.signals:
        for run in host.stores.runs.all_runs():
            await host.orchestrator.signal(run.run_id, name, {"by": "test"})
        await drive(host, worker, lose=lose)
    runs = []
    for run in host.stores.runs.all_runs():
        result = await host.result(run.run_id)
        steps = {key: view.status for key, view in result.steps.items()}
        runs.append((run.flow_name, run.depth, result.status.value, steps))
    return Ending(
        sorted(runs, key=lambda r: (r[0], r[1], r[2])),
        ran.calls,
        fuse.count,
        fuse.blown,
    )


CHILD = Flow(
    FlowId("9d2f8e1a-0000-4000-8000-00000000c4a6"),
    "child",
    steps={
        "cx": Step("Flaky"),
        "cy": Step("Ok", run_after={"cx": ["Succeeded"]}),
    },
    outputs={"calls": "@steps('cx').output.calls"},
)


FLOWS: dict[str, Case] = {
    "retry": Case(
        {
            "a": Step("Flaky", retry=RetryPolicy(max_attempts=3)),
            "b": Step("Ok", run_after={"a": ["Succeeded"]}),
        }
    ),
    "poll": Case({"a": Step("Poll"), "b": Step("Ok", run_after={"a": ["Succeeded"]})}),
    "fan-in": Case(
        {
            "a": Step("Ok"),
            **{f"b{n}": Step("Ok", run_after={"a": ["Succeeded"]}) for n in range(3)},
            "join": Step("Ok", run_after={f"b{n}": ["Succeeded"] for n in range(3)}),
        }
    ),
    "for-each": Case(
        {
            "loop": for_each(
                "@triggerBody().items",
                {
                    "x": Step("Item"),
                    "y": Step("Ok", run_after={"x": ["Succeeded"]}),
                },
                concurrency=2,
            ),
            "after": Step("Ok", run_after={"loop": after("Succeeded", "Failed")}),
        }
    ),
    "signal": Case(
        {
            "a": Step("Ok"),
            "wait": wait_for_signal("go", run_after={"a": ["Succeeded"]}),
            "c": Step("Ok", run_after={"wait": ["Succeeded"]}),
        },
        signals=("go",),
    ),
    # The first child fails (its first step fails once), the retry's child succeeds.
    "child-flow": Case(
        {
            "a": Step("Ok"),
            "kid": child_flow(
                "child", run_after={"a": ["Succeeded"]}, retry=RetryPolicy(2)
            ),
            "c": Step("Ok", run_after={"kid": ["Succeeded"]}),
        },
        others=(CHILD,),
    ),
    # Three runs of one key, one at a time.
    "concurrency-key": Case(
        {"a": Step("Ok"), "b": Step("Ok", run_after={"a": ["Succeeded"]})},
        concurrency=Concurrency("@triggerBody().key", 1),
        runs=3,
    ),
}


@pytest.mark.parametrize("lose", [False, True], ids=["redelivered", "lost"])
@pytest.mark.parametrize("name", list(FLOWS))
async def test_a_crash_after_any_write_loses_nothing(name: str, *, lose: bool):
    case = FLOWS[name]
    clean = await run_once(case, at=None)
    assert all(status.is_final for *_, steps in clean.runs for status in steps.values())

    problems: list[str] = []
    for at in range(1, clean.writes + 1):
        crashed = await run_once(case, at=at, lose=lose)
        if crashed.crash is None:
            continue  # this run took fewer writes (an idempotent one was skipped)
        if crashed.runs != clean.runs:
            problems.append(f"crash after {crashed.crash}: {crashed.runs}")
        for key in clean.calls.keys() | crashed.calls.keys():
            if not clean.calls[key] <= crashed.calls[key] <= clean.calls[key] + 1:
                problems.append(
                    f"crash after {crashed.crash}: {key} ran {crashed.calls[key]} "
                    f"times, {clean.calls[key]} in a clean run"
                )

    assert clean.writes > 10
    assert not problems, "\n".join(itertools.islice(problems, 20))
