"""Step timeouts and non-retryable failures, decided by plain calls of the engine."""

from dataclasses import replace
from datetime import timedelta

from service.engine import continuation, timeouts
from service.engine.continuation import Invoke
from service.engine.expressions import Facts
from service.engine.model import (
    JobId,
    RetryPolicy,
    Step,
    StepStatus,
    for_each,
    wait_for_signal,
)
from service.engine.records import Attempt, StepRecord
from service.engine.results import Failed
from tests.unit.engine_cases import NOW, context, finish_of, flow_of, row, timers

FACTS = Facts(body=None, headers={}, steps={}, declared=frozenset({"a"}))
RETRIED = RetryPolicy(max_attempts=3)


def test_a_step_timeout_beats_the_flow_default_and_the_service_default():
    step = Step("Work", timeout=timedelta(seconds=3))
    ctx = replace(
        context({"a": step}),
        flow=flow_of({"a": step}, step_timeout=timedelta(seconds=9)),
    )

    assert timeouts.budget(ctx, step) == timedelta(seconds=3)
    assert timeouts.budget(ctx, Step("Work")) == timedelta(seconds=9)
    service_wide = replace(
        context({"a": Step("Work")}),
        limits=replace(context({}).limits, step_timeout=timedelta(seconds=20)),
    )
    assert timeouts.budget(service_wide, Step("Work")) == timedelta(seconds=20)
    assert timeouts.budget(context({"a": Step("Work")}), Step("Work")) is None


def test_built_in_steps_have_no_handler_to_time_out():
    ctx = replace(context({}), flow=flow_of({}, step_timeout=timedelta(seconds=5)))

    assert timeouts.budget(ctx, wait_for_signal("go")) is None
    assert timeouts.budget(ctx, for_each("@triggerBody()", {"x": Step("W")})) is None


def test_a_claimed_attempt_gets_its_whole_timeout():
    steps = {"a": Step("Work", timeout=timedelta(seconds=30))}
    claimed = replace(row("a"), started_at=NOW)

    begun = continuation.begin(context(steps), claimed, FACTS)

    assert isinstance(begun, Invoke)
    assert begun.timeout == timedelta(seconds=30)


def test_a_step_without_a_timeout_is_invoked_without_one():
    begun = continuation.begin(context({"a": Step("Work")}), row("a"), FACTS)

    assert isinstance(begun, Invoke)
    assert begun.timeout is None


def _lost_then_claimed(lost_at_seconds_ago: int) -> StepRecord:
    lost = Attempt(1, JobId("m1"), NOW - timedelta(seconds=lost_at_seconds_ago))
    current = Attempt(2, JobId("m2"), NOW)
    return replace(row("a", attempt=2), started_at=NOW, attempts=(lost, current))


def test_a_reclaim_shares_the_timeout_of_the_attempt_whose_worker_died():
    steps = {"a": Step("Work", timeout=timedelta(seconds=30))}

    begun = continuation.begin(context(steps), _lost_then_claimed(20), FACTS)

    assert isinstance(begun, Invoke)
    assert begun.timeout == timedelta(seconds=10)


def test_a_reclaim_past_the_timeout_fails_at_once_and_the_retry_policy_applies():
    steps = {"a": Step("Work", timeout=timedelta(seconds=30), retry=RETRIED)}

    begun = continuation.begin(context(steps), _lost_then_claimed(45), FACTS)

    assert not isinstance(begun, Invoke)
    outcome = finish_of(begun.decision).outcome
    assert outcome.status is StepStatus.PENDING  # parked for its retry backoff
    assert outcome.error == "Step timed out after 30 s."
    [wake] = timers(begun.decision)
    assert wake.timer.due_at == NOW + (RETRIED.delay_after(2) or timedelta())


def test_a_parked_attempt_ends_the_chain_a_reclaim_shares():
    polled = Attempt(
        1,
        JobId("m1"),
        NOW - timedelta(hours=1),
        status=StepStatus.PENDING,
        completed_at=NOW - timedelta(hours=1),
    )
    current = Attempt(2, JobId("m2"), NOW)
    claimed = replace(row("a", attempt=2), started_at=NOW, attempts=(polled, current))

    assert timeouts.started(claimed, NOW) == NOW


def test_timed_out_fails_the_attempt_with_the_configured_seconds():
    steps = {"a": Step("Work", timeout=timedelta(milliseconds=1500))}
    call = Invoke(steps["a"], {}, timeout=timedelta(milliseconds=1500))

    done = continuation.timed_out(context(steps), row("a"), call)

    outcome = finish_of(done.decision).outcome
    assert (outcome.status, outcome.error) == (
        StepStatus.FAILED,
        "Step timed out after 1.5 s.",
    )


def test_a_non_retryable_failure_ends_the_step_despite_its_retry_policy():
    steps = {"a": Step("Work", retry=RETRIED)}
    call = Invoke(steps["a"], {})

    done = continuation.after_handler(
        context(steps), row("a"), call, Failed("card declined", retry=False)
    )

    outcome = finish_of(done.decision).outcome
    assert (outcome.status, outcome.error) == (StepStatus.FAILED, "card declined")
    assert timers(done.decision) == []
