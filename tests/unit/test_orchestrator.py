"""Orchestrator operations on the memory adapters: SPEC 2 and our decisions 1-13."""

from datetime import timedelta
from typing import Any

import pytest

from service.engine.model import (
    Flow,
    FlowId,
    JobId,
    RetryPolicy,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    after,
    for_each,
    wait_for_signal,
)
from service.engine.records import NewStep
from service.orchestrator.runtime import StepRequest
from service.steps.handlers import Failed, Handlers, Pending, StepContext, Succeeded
from service.testing import FlowTestHost

S, F, K, P = (
    StepStatus.SUCCEEDED,
    StepStatus.FAILED,
    StepStatus.SKIPPED,
    StepStatus.PENDING,
)
FLOW_ID = FlowId("9d2f8e1a-0000-4000-8000-000000000001")


class Calls:
    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def hit(self, key: str) -> int:
        self.count[key] = self.count.get(key, 0) + 1
        return self.count[key]


def make_host(steps, **flow_kwargs) -> tuple[FlowTestHost, Calls]:
    calls = Calls()
    handlers = Handlers()

    @handlers.handler("Ok")
    async def ok(ctx: StepContext, inputs: dict[str, Any]) -> object:
        calls.hit(ctx.step_key)
        return {"step": ctx.step_key, **inputs}

    @handlers.handler("Fail")
    async def fail(ctx: StepContext, inputs: dict[str, Any]) -> object:
        calls.hit(ctx.step_key)
        return Failed("boom")

    @handlers.handler("Flaky")
    async def flaky(ctx: StepContext, inputs: dict[str, Any]) -> object:
        n = calls.hit(ctx.step_key)
        if n < inputs.get("succeed_on", 3):
            raise RuntimeError(f"attempt {n} failed")
        return {"attempt": ctx.attempt}

    @handlers.handler("Delay")
    async def delay(ctx: StepContext, inputs: dict[str, Any]) -> object:
        calls.hit(ctx.step_key)
        return Succeeded({"delayed": True}, delay_next=timedelta(minutes=5))

    @handlers.handler("Park")
    async def park(ctx: StepContext, inputs: dict[str, Any]) -> object:
        calls.hit(ctx.step_key)
        return Pending(timedelta(hours=1))

    flow = Flow(FLOW_ID, "t", steps=steps, **flow_kwargs)
    return FlowTestHost([flow], handlers), calls


async def test_one_run_per_idempotency_key():
    host, _ = make_host({"a": Step("Ok")})

    first = await host.trigger("t", idempotency_key="Order-1 ")
    second = await host.trigger("t", idempotency_key="order-1")

    assert second.run_id == first.run_id
    assert second.duplicate
    assert len(host.stores.runs.all_runs()) == 1


async def test_a_redelivered_trigger_message_starts_one_run():
    host, _ = make_host({"a": Step("Ok")})

    first = await host.trigger("t", job_id="msg-1")
    second = await host.trigger("t", job_id="msg-1")

    assert (second.run_id, second.duplicate) == (first.run_id, True)


async def test_the_idempotency_header_is_honoured_case_insensitively():
    host, _ = make_host({"a": Step("Ok")})

    first = await host.trigger("t", headers={"Idempotency-Key": "K"})
    second = await host.trigger("t", headers={"X-Idempotency-Key": "k"})
    other = await host.trigger("t", headers={"Idempotency-Key": "other"})

    assert second.run_id == first.run_id
    assert other.run_id != first.run_id


async def test_a_duplicate_run_step_records_one_result():
    host, calls = make_host({"a": Step("Ok"), "b": Step("Ok", run_after={"a": []})})
    result = await host.trigger("t")

    await host.orchestrator.run_step(
        StepRequest(result.run_id, StepKey("a"), JobId(f"{result.run_id}:a:1"))
    )
    await host.settle()
    after_dup = await host.result(result.run_id)

    assert calls.count == {"a": 1, "b": 1}
    assert after_dup.steps["a"].attempts == 1


async def test_a_redelivered_final_step_repeats_its_continuation():
    host, calls = make_host({"a": Step("Ok"), "b": Step("Ok", run_after={"a": []})})
    started = await host.trigger("t", settle=False)
    host.dispatcher.take()  # deliver `a` by hand, then lose the continuation's work
    await host.orchestrator.run_step(
        StepRequest(started.run_id, StepKey("a"), JobId("m-a"))
    )
    await host.stores.steps.reset_steps(started.run_id, [StepKey("b")])
    host.dispatcher.clear()

    await host.orchestrator.run_step(
        StepRequest(started.run_id, StepKey("a"), JobId("m-a"), redelivered=True)
    )
    await host.settle()
    result = await host.result(started.run_id)

    assert result.status is RunStatus.SUCCEEDED
    assert calls.count == {"a": 1, "b": 1}


async def test_the_skip_cascade_gives_every_step_a_final_status():
    steps = {
        "a": Step("Fail"),
        "b": Step("Ok", run_after={"a": ["Succeeded"]}),
        "c": Step("Ok", run_after={"b": ["Succeeded"]}),
        "d": Step("Ok", run_after={"c": ["Succeeded"]}),
    }
    host, _ = make_host(steps)

    result = await host.trigger("t")

    assert result.status is RunStatus.FAILED
    assert {k: s.status for k, s in result.steps.items()} == {
        "a": F,
        "b": K,
        "c": K,
        "d": K,
    }


async def test_a_run_completes_once_with_one_completed_event():
    steps = {
        "a": Step("Ok"),
        "b": Step("Ok"),
        "c": Step("Ok"),
        "j": Step("Ok", run_after={"a": [], "b": [], "c": []}),
    }
    host, _ = make_host(steps)

    result = await host.trigger("t")

    assert [e.type for e in result.events].count("run.completed") == 1
    assert result.status is RunStatus.SUCCEEDED


async def test_when_false_skips_with_a_trace():
    steps = {
        "a": Step("Ok", inputs={"n": "@triggerBody().n"}),
        "b": Step(
            "Ok",
            run_after={"a": after("Succeeded", when="@steps('a').output.n > 1000")},
        ),
    }
    host, _ = make_host(steps)

    result = await host.trigger("t", body={"n": 500})

    assert result.steps["b"].status is K
    assert result.steps["b"].error == (
        "When clause '@steps('a').output.n > 1000' evaluated to false (500 > 1000)."
    )
    assert result.status is RunStatus.SUCCEEDED


async def test_an_entry_step_with_a_false_when_is_skipped():
    steps = {
        "a": Step("Ok", run_after={"": after(when="@triggerBody().go == true")}),
        "b": Step("Ok", run_after={"a": ["Skipped"]}),
    }
    host, calls = make_host(steps)

    result = await host.trigger("t", body={"go": False})

    assert result.steps["a"].status is K
    assert result.steps["b"].status is S
    assert calls.count == {"b": 1}


async def test_an_expression_error_in_a_when_skips_and_never_fails():
    steps = {
        "a": Step("Ok"),
        "b": Step("Ok", run_after={"a": after(when="@steps('a').output.x > 'y'")}),
    }
    host, _ = make_host(steps)

    result = await host.trigger("t")

    assert result.steps["b"].status is K
    assert result.status is RunStatus.SUCCEEDED


async def test_an_automatic_retry_policy_retries_through_the_timer_store():
    steps = {
        "a": Step(
            "Flaky",
            inputs={"succeed_on": 3},
            retry=RetryPolicy(max_attempts=3, backoff=timedelta(seconds=5)),
        )
    }
    host, calls = make_host(steps)

    result = await host.trigger("t")

    assert result.status is RunStatus.SUCCEEDED
    assert calls.count == {"a": 3}
    assert result.steps["a"].attempts == 3
    assert result.steps["a"].output == {"attempt": 3}


async def test_retries_run_out():
    steps = {
        "a": Step(
            "Flaky",
            inputs={"succeed_on": 9},
            retry=RetryPolicy(max_attempts=2, backoff=timedelta(seconds=1)),
        )
    }
    host, calls = make_host(steps)

    result = await host.trigger("t")

    assert result.status is RunStatus.FAILED
    assert calls.count == {"a": 2}
    assert "attempt 2 failed" in (result.steps["a"].error or "")


async def test_a_manual_retry_resets_the_cascade_and_completes_the_run():
    steps = {
        "a": Step("Flaky", inputs={"succeed_on": 2}),
        "b": Step("Ok", run_after={"a": ["Succeeded"]}),
        "c": Step("Ok", run_after={"b": ["Succeeded"]}),
    }
    host, _ = make_host(steps)
    failed = await host.trigger("t")

    answer = await host.retry(failed.run_id, "a")
    result = await host.result(failed.run_id)

    assert failed.status is RunStatus.FAILED
    assert answer.status == "accepted"
    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["a"].attempts == 2
    assert result.steps["c"].status is S


async def test_only_a_failed_step_can_be_retried():
    host, _ = make_host({"a": Step("Ok")})
    done = await host.trigger("t")

    answer = await host.retry(done.run_id, "a")

    assert answer.status == "refused"


async def test_cancel_reaches_parked_steps_and_closes_the_run():
    steps = {"a": Step("Park"), "b": Step("Ok", run_after={"a": []})}
    host, _ = make_host(steps)
    parked = await host.trigger("t", settle=False)
    await host._drain()

    answer = await host.cancel(parked.run_id, "no longer needed")
    result = await host.result(parked.run_id)

    assert answer.status == "accepted"
    assert result.status is RunStatus.CANCELLED
    assert result.steps["a"].status is K
    assert result.steps["b"].status is K
    assert result.steps["b"].error == "Run is Cancelled."


async def test_a_run_deadline_is_enforced_by_the_scheduler():
    host, _ = make_host({"a": Step("Park")}, run_timeout=timedelta(minutes=10))
    parked = await host.trigger("t", settle=False)
    await host._drain()

    await host.advance(timedelta(minutes=11))
    result = await host.result(parked.run_id)

    assert result.status is RunStatus.TIMED_OUT
    assert result.steps["a"].error == "Run is TimedOut."


async def test_delay_next_step_holds_the_dispatch():
    steps = {"a": Step("Delay"), "b": Step("Ok", run_after={"a": []})}
    host, calls = make_host(steps)
    started = host.clock.now()

    result = await host.trigger("t")

    assert result.status is RunStatus.SUCCEEDED
    assert host.clock.now() - started >= timedelta(minutes=5)
    assert calls.count == {"a": 1, "b": 1}


async def test_a_signal_delivered_before_the_step_parks_is_not_lost():
    steps = {
        "w": wait_for_signal("go"),
        "b": Step("Ok", run_after={"w": ["Succeeded"]}),
    }
    host, _ = make_host(steps)
    started = await host.trigger("t", settle=False)
    message = host.dispatcher.take()
    await host.stores.signals.register(
        started.run_id, StepKey("w"), "go", expires_at=None, now=host.clock.now()
    )
    await host.stores.signals.deliver(
        started.run_id, "go", {"ok": 1}, now=host.clock.now()
    )

    await host.orchestrator.run_step(
        StepRequest(started.run_id, StepKey("w"), JobId(message.message_id))
    )
    await host.settle()
    result = await host.result(started.run_id)

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["w"].output == {"ok": 1}


async def test_a_signal_sent_again_wakes_the_step_its_first_delivery_did_not():
    """The first delivery died between recording the signal and waking the step."""
    steps = {
        "w": wait_for_signal("go"),
        "b": Step("Ok", run_after={"w": ["Succeeded"]}),
    }
    host, _ = make_host(steps)
    parked = await host.trigger("t")
    await host.stores.signals.deliver(
        parked.run_id, "go", {"ok": 1}, now=host.clock.now()
    )

    answer = await host.signal(parked.run_id, "go", {"ok": 2})
    result = await host.result(parked.run_id)

    assert parked.status is RunStatus.RUNNING
    assert answer.status == "duplicate"
    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["w"].output == {"ok": 1}


async def test_a_signal_to_a_finished_run_is_refused():
    host, _ = make_host({"a": Step("Ok")})
    done = await host.trigger("t")

    answer = await host.signal(done.run_id, "go", None)

    assert answer.status == "refused"


async def test_for_each_keeps_its_concurrency_bound():
    seen: list[int] = []
    handlers = Handlers()
    host_ref: list[FlowTestHost] = []

    @handlers.handler("Item")
    async def item(ctx: StepContext, inputs: dict[str, Any]) -> object:
        rows = host_ref[0].stores.steps.rows_of(ctx.run_id)
        seen.append(sum(1 for r in rows if r.type == "__iteration" and r.status is P))
        return inputs["__loopItem"]

    flow = Flow(
        FLOW_ID,
        "t",
        steps={
            "loop": for_each(list(range(20)), {"item": Step("Item")}, concurrency=4)
        },
    )
    host = FlowTestHost([flow], handlers)
    host_ref.append(host)

    result = await host.trigger("t")

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["loop"].output == {"iterations": 20, "failed": 0}
    assert max(seen) == 4
    assert len(seen) == 20


async def test_for_each_over_nothing_succeeds_at_once():
    steps = {
        "loop": for_each("@triggerBody().items", {"x": Step("Ok")}),
        "after": Step("Ok", run_after={"loop": ["Succeeded"]}),
    }
    host, _ = make_host(steps)

    result = await host.trigger("t", body={"items": []})

    assert result.steps["loop"].output == {"iterations": 0}
    assert result.status is RunStatus.SUCCEEDED


async def test_downstream_of_a_for_each_waits_for_every_iteration():
    steps = {
        "loop": for_each(
            [1, 2, 3], {"x": Step("Ok"), "y": Step("Ok", run_after={"x": []})}
        ),
        "after": Step("Ok", run_after={"loop": ["Succeeded"]}),
    }
    host, calls = make_host(steps)

    result = await host.trigger("t")

    assert result.status is RunStatus.SUCCEEDED
    assert calls.count["after"] == 1
    assert all(result.steps[f"loop.{i}.y"].status is S for i in range(3))
    assert result.steps["loop.2.y"].inputs["__loopIndex"] == 2


async def test_a_failed_iteration_fails_the_loop():
    steps = {
        "loop": for_each([1, 2], {"x": Step("Fail")}),
        "after": Step("Ok", run_after={"loop": ["Succeeded"]}),
    }
    host, _ = make_host(steps)

    result = await host.trigger("t")

    assert result.steps["loop"].status is F
    assert result.steps["after"].status is K
    assert result.status is RunStatus.FAILED


async def test_a_disabled_flow_starts_no_run():
    host, _ = make_host({"a": Step("Ok")})
    await host._sync()
    await host.orchestrator.set_enabled("t", enabled=False)

    with pytest.raises(RuntimeError, match="disabled"):
        await host.trigger("t")


async def test_rerun_starts_a_new_run_with_lineage():
    host, _ = make_host({"a": Step("Ok", inputs={"v": "@triggerBody().v"})})
    first = await host.trigger("t", body={"v": 1}, headers={"Idempotency-Key": "k"})

    again = await host.orchestrator.rerun(first.run_id, job_id=JobId("rerun-1"))
    await host.settle()
    assert again.run_id is not None
    run = await host.stores.runs.get_run(again.run_id)

    assert again.run_id != first.run_id
    assert run is not None
    assert run.source_run_id == first.run_id
    assert run.status is RunStatus.SUCCEEDED
    assert run.body == {"v": 1}


async def test_an_undeclared_step_in_inputs_fails_the_step():
    host, _ = make_host({"a": Step("Ok", inputs={"x": "@steps('nope').output"})})

    result = await host.trigger("t")

    assert result.steps["a"].status is F


async def test_the_reconciler_republishes_a_dispatch_whose_message_was_lost():
    host, calls = make_host({"a": Step("Ok"), "b": Step("Ok", run_after={"a": []})})
    started = await host.trigger("t", settle=False)
    host.dispatcher.clear()  # the publish of `a` never reached the broker

    await host.advance(host.runtime.options.reconcile_after + timedelta(seconds=1))
    await host.settle()
    result = await host.result(started.run_id)

    assert result.status is RunStatus.SUCCEEDED
    assert calls.count == {"a": 1, "b": 1}


async def test_the_reconciler_takes_back_a_step_whose_worker_died():
    host, calls = make_host({"a": Step("Ok")})
    started = await host.trigger("t", settle=False)
    message = host.dispatcher.take()
    await host.stores.steps.claim(  # a worker claims `a`, then dies without a trace
        started.run_id,
        StepKey("a"),
        job_id=JobId(message.message_id),
        now=host.clock.now(),
        lease=host.runtime.options.lease,
        new=NewStep(StepKey("a"), "Ok", StepStatus.QUEUED),  # released: no row yet
    )

    await host.advance(host.runtime.options.lease + timedelta(seconds=11))
    await host.settle()
    result = await host.result(started.run_id)

    assert result.status is RunStatus.SUCCEEDED
    assert result.steps["a"].attempts == 2
    assert calls.count == {"a": 1}
