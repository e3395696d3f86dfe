"""What the orchestrator tells the Telemetry and Tracer ports, on the memory adapters.

The hooks the lead carries over to the new hot path (issue 11): attempts, completions
and reopened runs for metrics; attempt spans, skips, completions, timer and control
spans, and the trace contexts stored on rows, timers and the links of a join.
"""

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from service.engine.model import Flow, FlowId, RunStatus, Step, StepKey
from service.engine.records import NO_CONTEXT, RunFacts, StepRecord
from service.ports.dispatch import Dispatch
from service.steps.handlers import Failed, Handlers, Pending, StepContext
from service.testing import FlowTestHost
from service.tracing import Carrier

FLOW_ID = FlowId("9d2f8e1a-0000-4000-8000-00000000aaaa")


class Recorder:
    """A Telemetry and a Tracer that write down every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._stack: list[str] = []

    # Telemetry
    def run_started(self, flow_id: str, trigger_key: str) -> None:
        self.calls.append(("metric.run_started", trigger_key))

    def run_completed(self, flow_id: str, status: str) -> None:
        self.calls.append(("metric.run_completed", status))

    def run_reopened(self, flow_id: str) -> None:
        self.calls.append(("metric.run_reopened",))

    def attempt_started(self, *args: Any) -> None:
        if isinstance(args[0], RunFacts):  # the Tracer's
            step: StepRecord = args[1]
            self._stack.append(f"{step.key}#{step.attempt}")
            self.calls.append(("span.attempt", step.key, step.attempt))
        else:
            _, key, attempt = args
            self.calls.append(("metric.attempt", key, attempt))

    def step_finished(self, *_: Any, **__: Any) -> None:
        return

    def timer_fired(self, *_: Any, **__: Any) -> None:
        return

    def repaired(self, *_: Any) -> None:
        return

    # Tracer
    def current(self) -> Carrier:
        return {"traceparent": self._stack[-1]} if self._stack else NO_CONTEXT

    @contextlib.contextmanager
    def resumed(self, name: str, parent: Carrier) -> Iterator[None]:
        self.calls.append(("span.resumed", name, parent.get("traceparent")))
        self._stack.append(name)
        try:
            yield
        finally:
            self._stack.pop()

    def attempt_finished(self, status: str, error: str | None) -> None:
        self.calls.append(("span.finished", self._stack.pop(), status, error))

    def step_skipped(self, run: RunFacts, key: str, reason: str | None) -> None:
        self.calls.append(("span.skipped", key, reason))

    def run_completed_span(self, status: str) -> None:
        self.calls.append(("span.run_completed", status))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [call[1:] for call in self.calls if call[0] == kind]


class RecordingTracer:
    """The Recorder as a Tracer (its run_completed differs from the Telemetry's)."""

    def __init__(self, recorder: Recorder) -> None:
        self._r = recorder
        self.current = recorder.current
        self.resumed = recorder.resumed
        self.attempt_finished = recorder.attempt_finished
        self.step_skipped = recorder.step_skipped

    def run_started(self, run: RunFacts) -> None:
        self._r.calls.append(("span.run_started", run.flow_name))

    def attempt_started(self, run: RunFacts, step: StepRecord) -> None:
        self._r.attempt_started(run, step)

    def run_completed(self, run: RunFacts, status: str) -> None:
        self._r.run_completed_span(status)


class Published:
    """Wraps the host's dispatcher, keeping every dispatch."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.all: list[Dispatch] = []

    async def publish(self, dispatches: Sequence[Dispatch]) -> None:
        self.all.extend(dispatches)
        await self.inner.publish(dispatches)


def observed_host(steps: dict[str, Step]) -> tuple[FlowTestHost, Recorder, Published]:
    handlers = Handlers()
    tries: dict[str, int] = {}

    @handlers.handler("Ok")
    async def ok(ctx: StepContext, inputs: dict[str, Any]) -> object:
        return {"step": ctx.step_key}

    @handlers.handler("FailOnce")
    async def fail_once(ctx: StepContext, inputs: dict[str, Any]) -> object:
        tries[ctx.step_key] = tries.get(ctx.step_key, 0) + 1
        return Failed("boom") if tries[ctx.step_key] == 1 else {"ok": True}

    @handlers.handler("PollTwice")
    async def poll_twice(ctx: StepContext, inputs: dict[str, Any]) -> object:
        return {"ok": True} if ctx.attempt > 1 else Pending()

    host = FlowTestHost([Flow(FLOW_ID, "observed", steps=steps)], handlers)
    recorder = Recorder()
    published = Published(host.dispatcher)
    host.runtime = replace(
        host.runtime,
        telemetry=recorder,
        tracer=RecordingTracer(recorder),
        dispatcher=published,
    )
    host.orchestrator.runtime = host.runtime
    return host, recorder, published


async def test_a_retried_run_counts_two_completions_and_one_reopening():
    host, rec, _ = observed_host(
        {"a": Step("FailOnce"), "b": Step("Ok", run_after={"a": ["Succeeded"]})}
    )

    first = await host.trigger("observed")
    assert first.status is RunStatus.FAILED
    await host.retry(first.run_id, "a")

    assert (await host.result(first.run_id)).status is RunStatus.SUCCEEDED
    assert rec.of("metric.run_completed") == [("Failed",), ("Succeeded",)]
    assert rec.of("metric.run_reopened") == [()]
    assert rec.of("metric.attempt") == [("a", 1), ("a", 2), ("b", 1)]


async def test_attempts_skips_completions_and_the_retry_are_traced():
    host, rec, _ = observed_host(
        {"a": Step("FailOnce"), "b": Step("Ok", run_after={"a": ["Succeeded"]})}
    )

    run = await host.trigger("observed")
    await host.retry(run.run_id, "a")

    assert rec.of("span.run_started") == [("observed",)]
    assert rec.of("span.attempt") == [("a", 1), ("a", 2), ("b", 1)]
    assert rec.of("span.finished") == [
        ("a#1", "Failed", "boom"),
        ("a#2", "Succeeded", None),
        ("b#1", "Succeeded", None),
    ]
    [(key, reason)] = rec.of("span.skipped")
    assert key == "b"
    assert "runAfter" in str(reason)
    # The retry continues from the failed attempt, whose context its row keeps.
    assert rec.of("span.resumed") == [("retry", "a#1")]
    assert rec.of("span.run_completed") == [("Failed",), ("Succeeded",)]


async def test_a_join_links_the_attempts_of_its_predecessors():
    host, _, published = observed_host(
        {
            "a": Step("Ok"),
            "b": Step("Ok", run_after={"a": []}),
            "c": Step("Ok", run_after={"a": []}),
            "d": Step("Ok", run_after={"b": [], "c": []}),
        }
    )

    await host.trigger("observed")

    [join] = [d for d in published.all if d.step_key == StepKey("d")]
    assert sorted(link["traceparent"] for link in join.links) == ["b#1", "c#1"]
    assert all(not d.links for d in published.all if d.step_key != StepKey("d"))


async def test_a_timer_wakes_a_parked_step_in_the_context_that_parked_it():
    host, rec, _ = observed_host({"poll": Step("PollTwice")})

    run = await host.trigger("observed")

    assert run.status is RunStatus.SUCCEEDED
    assert ("timer requeue", "poll#1") in rec.of("span.resumed")
