"""The cascade and an attempt's end, by plain calls: no store, no clock, no loop."""

from datetime import timedelta

from service.engine import attempt, cascade, continuation
from service.engine.decision import AppendEvents, CompleteRun, InsertSteps, decided
from service.engine.model import (
    RetryPolicy,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    after,
)
from service.engine.records import Outcome
from service.engine.results import Failed, Pending, Succeeded
from service.engine.rounds import ContinueScope, EndScope, Loaded
from tests.unit.engine_cases import (
    NOW,
    context,
    finish_of,
    inserted,
    released,
    row,
    timers,
    writes,
)

LINE = {"a": Step("Work"), "b": Step("Work", run_after={"a": ["Succeeded"]})}
JOIN = {
    "a": Step("Work"),
    "b": Step("Work"),
    "j": Step("Work", run_after={"a": ["Succeeded"], "b": ["Succeeded"]}),
}


def test_a_linear_step_records_its_release_with_its_result_and_nothing_else():
    ctx = context(LINE)

    done = attempt.finished(ctx, row("a"), Outcome(StepStatus.SUCCEEDED, {"x": 1}))

    finish = finish_of(done.decision)
    assert finish.released == ("b",)
    assert finish.recheck_at == NOW + timedelta(seconds=30)
    assert inserted(done.decision) == {}  # b's row comes with its claim
    assert released(done.decision) == ["b"]
    assert done.follow == ()


def test_a_join_decides_after_the_result_is_saved_then_releases_with_links():
    ctx = context(JOIN, trace={"traceparent": "a-span"})

    done = attempt.finished(ctx, row("a"), Outcome(StepStatus.SUCCEEDED))
    [then] = done.follow
    other = row("b", StepStatus.SUCCEEDED)
    resumed = continuation.resume(ctx, then.resume, Loaded(rows={StepKey("b"): other}))

    assert finish_of(done.decision).released == ()
    assert released(done.decision) == []
    assert then.load.rows == {"b"}
    assert inserted(resumed.decision) == {"j": StepStatus.QUEUED}
    [join] = resumed.decision.releases
    assert join.key == "j"
    assert join.links == ({"traceparent": "a-span"},)  # b's row has no context


def test_a_join_waits_while_a_branch_is_not_final():
    ctx = context(JOIN)
    done = attempt.finished(ctx, row("a"), Outcome(StepStatus.SUCCEEDED))
    [then] = done.follow

    resumed = continuation.resume(
        ctx, then.resume, Loaded(rows={StepKey("b"): row("b")})
    )

    assert resumed.decision.is_empty
    assert resumed.follow == ()  # b is still to run: the scope cannot have ended


def test_the_skip_cascade_is_complete_and_releases_what_accepts_a_skip():
    steps = {
        "a": Step("Work"),
        "b": Step("Work", run_after={"a": ["Succeeded"]}),
        "c": Step("Work", run_after={"b": ["Succeeded"]}),
        "d": Step("Work", run_after={"c": after("Skipped")}),
    }

    done = attempt.finished(context(steps), row("a"), Outcome(StepStatus.FAILED))

    assert inserted(done.decision) == {"b": StepStatus.SKIPPED, "c": StepStatus.SKIPPED}
    assert finish_of(done.decision).released == ("d",)
    [events] = writes(done.decision, AppendEvents)
    assert [e.step_key for e in events.events] == ["b", "c"]


def test_a_step_refused_by_an_earlier_branch_is_not_decided_again():
    """`b` was skipped when `a` succeeded (it runs after `a` failed), and `c` has run
    since; `x` ending later must not release `c` again, and may end the run."""
    steps = {
        "a": Step("Work"),
        "x": Step("Work"),
        "b": Step("Work", run_after={"a": ["Failed"], "x": []}),
        "c": Step("Work", run_after={"b": []}),
    }
    ctx = context(steps)
    done = attempt.finished(ctx, row("x"), Outcome(StepStatus.SUCCEEDED))
    [deps] = done.follow
    asked = continuation.resume(
        ctx, deps.resume, Loaded(rows={StepKey("a"): row("a", StepStatus.SUCCEEDED)})
    )
    [own] = asked.follow
    skipped = row("b", StepStatus.SKIPPED)
    resumed = continuation.resume(ctx, own.resume, Loaded(rows={StepKey("b"): skipped}))

    assert deps.load.rows == {"a"}
    assert own.load.rows == {"b"}
    assert resumed.decision.is_empty
    [end] = resumed.follow
    assert end.resume == EndScope("")


def test_a_false_when_skips_with_its_trace():
    steps = {
        "a": Step("Work"),
        "b": Step(
            "Work", run_after={"a": after("Succeeded", when="@steps('a').output.n > 5")}
        ),
    }

    done = attempt.finished(
        context(steps), row("a"), Outcome(StepStatus.SUCCEEDED, {"n": 2})
    )

    [insert] = writes(done.decision, InsertSteps)
    [skip] = insert.rows
    assert skip.status is StepStatus.SKIPPED
    assert "2 > 5" in (skip.error or "")
    assert skip.trace is not None


def test_a_sink_asks_for_its_scope_and_completes_the_run_with_the_classifier():
    ctx = context(LINE)
    done = attempt.finished(ctx, row("b"), Outcome(StepStatus.SUCCEEDED))
    [end] = done.follow

    rows = (row("a", StepStatus.SUCCEEDED), row("b", StepStatus.SUCCEEDED))
    completed = continuation.resume(ctx, end.resume, Loaded(scope_rows=rows))

    assert end.resume == EndScope("")
    [complete] = writes(completed.decision, CompleteRun)
    assert complete == CompleteRun(RunStatus.SUCCEEDED)


def test_a_stop_known_from_a_row_closes_instead_of_going_on():
    ctx = context(LINE)
    stopped = row("a", StepStatus.SUCCEEDED, stop=RunStatus.CANCELLED)
    state = ContinueScope("", frozenset({"a"}), {"a": stopped})

    closing = cascade.resume(ctx, state, None)

    assert closing.decision.is_empty
    [then] = closing.follow
    assert then.load.in_flight


def test_delay_next_releases_through_publish_timers():
    ctx = context(LINE)
    result = Succeeded({"ok": True}, delay_next=timedelta(minutes=5))
    call = continuation.Invoke(LINE["a"], {})

    done = continuation.after_handler(ctx, row("a"), call, result)

    [timer] = timers(done.decision)
    assert timer.timer.due_at == NOW + timedelta(minutes=5)
    assert timer.timer.step_key == "b"
    assert released(done.decision) == []
    assert finish_of(done.decision).released == ("b",)
    assert finish_of(done.decision).recheck_at == NOW + timedelta(minutes=5, seconds=30)


def test_a_failure_with_tries_left_parks_with_its_wake_up_set_first():
    steps = {"a": Step("Work", retry=RetryPolicy(max_attempts=3))}
    call = continuation.Invoke(steps["a"], {})

    done = continuation.after_handler(context(steps), row("a"), call, Failed("no"))

    first, second, _ = done.decision.waves
    [timer] = timers(decided(first))
    assert timer.timer.due_at == NOW + timedelta(seconds=5)
    assert finish_of(done.decision).outcome.status is StepStatus.PENDING
    assert second == (finish_of(done.decision),)


def test_a_poll_parks_with_its_next_inputs():
    steps = {"a": Step("Work")}
    call = continuation.Invoke(steps["a"], {"n": 1})

    done = continuation.after_handler(
        context(steps), row("a"), call, Pending(timedelta(seconds=7), inputs={"n": 2})
    )

    outcome = finish_of(done.decision).outcome
    assert (outcome.status, outcome.inputs) == (StepStatus.PENDING, {"n": 2})
    assert timers(done.decision)[0].timer.due_at == NOW + timedelta(seconds=7)


def test_an_output_past_the_limit_fails_the_step():
    call = continuation.Invoke(LINE["a"], {})

    done = continuation.after_handler(
        context(LINE), row("a"), call, Succeeded("x" * 2000)
    )

    outcome = finish_of(done.decision).outcome
    assert outcome.status is StepStatus.FAILED
    assert "exceeds the limit of 1000 bytes" in (outcome.error or "")
