"""ForEach, WaitForSignal, stops and steps met again, by plain calls of the engine."""

from dataclasses import replace
from datetime import timedelta

from service.engine import continuation, foreach, signal_wait, stop
from service.engine.decision import (
    CompleteRun,
    DeleteTimer,
    MarkStopped,
    RegisterWaiter,
    RequeueStep,
    StartLoop,
)
from service.engine.expressions import Facts
from service.engine.model import (
    ITERATION,
    JobId,
    Json,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    after,
    for_each,
    wait_for_signal,
)
from service.engine.records import Attempt, LoopState, Timer, TimerKind, Waiter
from service.engine.rounds import (
    AwaitSignal,
    CloseParked,
    EndScope,
    IterationCounted,
    Loaded,
    RestartLanes,
    SignalParked,
)
from tests.unit.engine_cases import (
    NOW,
    RUN,
    context,
    finish_of,
    inserted,
    released,
    row,
    settled,
    timers,
    writes,
)

LOOP = {
    "loop": for_each(
        "@triggerBody().items",
        {"x": Step("Work"), "y": Step("Work", run_after={"x": ["Succeeded"]})},
        concurrency=2,
    ),
    "after": Step("Work", run_after={"loop": after("Succeeded", "Failed")}),
}
WAIT = {"wait": wait_for_signal("go", timeout=timedelta(minutes=5))}


def facts(body: Json) -> Facts:
    return Facts(body=body, headers={}, steps={}, declared=frozenset(LOOP))


def test_a_loop_stores_its_items_parks_and_starts_one_iteration_per_lane():
    ctx = context(LOOP, body={"items": ["a", "b", "c"]})

    done = foreach.execute(
        ctx, row("loop", type_="ForEach"), LOOP["loop"], facts(ctx.run.body)
    )

    [start] = writes(done.decision, StartLoop)
    assert (start.items, start.concurrency) == (("a", "b", "c"), 2)
    assert finish_of(done.decision).outcome.status is StepStatus.PENDING
    assert inserted(done.decision) == {
        "loop.0": StepStatus.PENDING,
        "loop.1": StepStatus.PENDING,
        "loop.0.x": StepStatus.QUEUED,
        "loop.1.x": StepStatus.QUEUED,
    }
    assert released(done.decision) == ["loop.0.x", "loop.1.x"]
    # The loop's own row parks before any iteration starts.
    order = [type(w).__name__ for wave in done.decision.waves for w in wave]
    assert order.index("FinishStep") < order.index("InsertSteps")


def test_a_loop_over_nothing_succeeds_at_once_and_its_scope_goes_on():
    ctx = context(LOOP, body={"items": []})

    done = foreach.execute(
        ctx, row("loop", type_="ForEach"), LOOP["loop"], facts(ctx.run.body)
    )

    assert finish_of(done.decision).outcome.output == {"iterations": 0}
    assert finish_of(done.decision).released == ("after",)


def test_an_ended_iteration_is_settled_then_counted_and_starts_its_lanes_next():
    ctx = context(LOOP)
    ended = foreach.end_iteration(ctx, StepKey("loop.0"), RunStatus.SUCCEEDED)
    [count] = ended.follow
    counters = LoopState(total=3, concurrency=2, finished=1, done={0: 1})
    loop_row = replace(row("loop", StepStatus.PENDING, type_="ForEach"), loop=counters)

    after_count = continuation.resume(
        ctx, count.resume, Loaded(loop=loop_row, items={(StepKey("loop"), 2): "c"})
    )

    assert settled(ended.decision) == {"loop.0": StepStatus.SUCCEEDED}
    assert count.load.count_iteration is not None
    assert count.resume == IterationCounted(StepKey("loop"), 0)
    assert inserted(after_count.decision) == {
        "loop.2": StepStatus.PENDING,
        "loop.2.x": StepStatus.QUEUED,
    }


def test_the_last_count_settles_the_loop_and_its_scope_goes_on():
    ctx = context(LOOP)
    counters = LoopState(total=2, concurrency=2, finished=2, failed=1, done={0: 3})
    base = row("loop", StepStatus.PENDING, type_="ForEach")
    loop_row = replace(base, loop=counters)

    done = foreach.after_count(
        ctx, IterationCounted(StepKey("loop"), 1), Loaded(loop=loop_row)
    )

    assert settled(done.decision) == {"loop": StepStatus.FAILED}
    assert released(done.decision) == ["after"]  # after accepts Failed


def test_a_stopped_loop_starts_nothing_and_closes():
    ctx = context(LOOP)
    counters = LoopState(total=9, concurrency=2, finished=1, done={0: 1})
    base = row("loop", StepStatus.PENDING, type_="ForEach", stop=RunStatus.CANCELLED)
    loop_row = replace(base, loop=counters)

    done = foreach.after_count(
        ctx, IterationCounted(StepKey("loop"), 0), Loaded(loop=loop_row)
    )

    assert done.decision.is_empty
    [then] = done.follow
    assert then.load.in_flight


def test_a_signal_wait_registers_its_waiter_and_parks_then_looks_again():
    ctx = context(WAIT)
    begun = signal_wait.execute(ctx, row("wait", inputs=WAIT["wait"].inputs))
    [look] = begun.follow

    parked = continuation.resume(ctx, look.resume, Loaded(waiter=None))

    assert look.resume == AwaitSignal(row("wait", inputs=WAIT["wait"].inputs))
    [waiter] = writes(parked.decision, RegisterWaiter)
    assert waiter.expires_at == NOW + timedelta(minutes=5)
    [timer] = timers(parked.decision)
    assert timer.timer.due_at == NOW + timedelta(minutes=5, seconds=1)
    assert finish_of(parked.decision).outcome.status is StepStatus.PENDING
    [again] = parked.follow
    assert isinstance(again.resume, SignalParked)


def test_a_delivered_signal_succeeds_with_its_payload():
    waiter = Waiter(
        RUN, StepKey("wait"), "go", NOW, delivered_at=NOW, payload={"by": "ops"}
    )

    done = signal_wait.decide(context(WAIT), row("wait"), waiter)

    assert finish_of(done.decision).outcome.output == {"by": "ops"}


def test_an_expired_waiter_fails_the_step():
    waiter = Waiter(
        RUN, StepKey("wait"), "go", NOW - timedelta(minutes=5), expires_at=NOW
    )

    done = signal_wait.decide(context(WAIT), row("wait"), waiter)

    outcome = finish_of(done.decision).outcome
    assert (outcome.status, outcome.error) == (
        StepStatus.FAILED,
        "Signal 'go' not received within 300s.",
    )


def test_a_signal_that_came_during_the_park_wakes_the_step():
    waiter = Waiter(RUN, StepKey("wait"), "go", NOW, delivered_at=NOW)

    done = signal_wait.after_park(context(WAIT), row("wait", attempt=2), waiter)

    [requeue] = writes(done.decision, RequeueStep)
    assert requeue.attempt == 2
    assert [(r.key, r.attempt) for r in done.decision.releases] == [("wait", 3)]


def test_a_stop_buries_what_could_still_start_then_marks_and_closes():
    ctx = context(LOOP)
    counters = LoopState(total=5, concurrency=2, finished=1, done={0: 1})
    base = row("loop", StepStatus.PENDING, type_="ForEach")
    loop_row = replace(base, loop=counters)
    rows = (
        loop_row,
        row("loop.0", StepStatus.SUCCEEDED, type_=ITERATION),
        row("loop.1", StepStatus.PENDING, type_=ITERATION),
        row("loop.1.x", StepStatus.RUNNING),
    )

    begun = stop.begin(RunStatus.CANCELLED)
    buried = stop.bury(ctx, RunStatus.CANCELLED, rows)

    assert writes(begun.decision, MarkStopped) == [
        MarkStopped(RunStatus.CANCELLED, loops_only=True)
    ]
    # Started: 0, 1 (lanes) and 2 (after 0 counted); 0 is final.
    assert inserted(buried.decision) == {
        "after": StepStatus.SKIPPED,
        "loop.1.y": StepStatus.SKIPPED,
        "loop.2": StepStatus.SKIPPED,
        "loop.2.x": StepStatus.SKIPPED,
        "loop.2.y": StepStatus.SKIPPED,
    }
    assert writes(buried.decision, MarkStopped) == [MarkStopped(RunStatus.CANCELLED)]
    [then] = buried.follow
    assert then.resume == CloseParked(RunStatus.CANCELLED)


def test_a_stopped_run_completes_with_its_stop_once_nothing_is_in_flight():
    ctx = context(LOOP, deadline=NOW + timedelta(hours=1))

    waiting = stop.close(ctx, RunStatus.TIMED_OUT, [row("x")])
    closed = stop.close(ctx, RunStatus.TIMED_OUT, [])

    assert waiting.decision.is_empty
    assert writes(closed.decision, CompleteRun) == [CompleteRun(RunStatus.TIMED_OUT)]
    assert writes(closed.decision, DeleteTimer) == [DeleteTimer(f"deadline:{RUN}")]


def test_a_claimed_step_of_a_stopped_run_is_skipped_not_run():
    ctx = context(LOOP)
    claimed = row("after", stop=RunStatus.CANCELLED)

    begun = continuation.begin(ctx, claimed, facts(None))

    assert not isinstance(begun, continuation.Invoke)
    outcome = finish_of(begun.decision).outcome
    assert (outcome.status, outcome.error) == (StepStatus.SKIPPED, "Run is Cancelled.")


def test_a_step_claimed_past_the_deadline_is_skipped_as_timed_out():
    ctx = context(LOOP, deadline=NOW - timedelta(seconds=1))

    begun = continuation.begin(ctx, row("after"), facts(None))

    assert not isinstance(begun, continuation.Invoke)
    assert finish_of(begun.decision).outcome.error == "Run is TimedOut."


def test_a_step_whose_worker_died_too_often_fails_instead_of_running():
    lost = tuple(Attempt(n, JobId(f"j{n}"), NOW) for n in range(1, 7))
    base = row("after", attempt=6)
    died = replace(base, attempts=lost)

    begun = continuation.begin(context(LOOP), died, facts(None))

    assert not isinstance(begun, continuation.Invoke)
    assert "died during 5 attempts" in (finish_of(begun.decision).outcome.error or "")


def test_a_final_step_met_again_releases_what_follows_it_again():
    ctx = context(LOOP)

    again = continuation.recover(
        ctx, row("loop", StepStatus.SUCCEEDED, type_="ForEach")
    )

    assert inserted(again.decision) == {"after": StepStatus.QUEUED}
    assert released(again.decision) == ["after"]


def test_a_parked_loop_met_again_restarts_its_lanes():
    counters = LoopState(total=5, concurrency=2)
    base = row("loop", StepStatus.PENDING, type_="ForEach")
    loop_row = replace(base, loop=counters)

    again = continuation.recover(context(LOOP), loop_row)

    [then] = again.follow
    assert then.resume == RestartLanes(StepKey("loop"))
    assert then.load.rows == {"loop.0", "loop.1"}


def test_a_wake_up_requeues_only_the_attempt_that_parked():
    timer = Timer("t", TimerKind.REQUEUE, NOW, RUN, StepKey("after"), attempt=2)

    woken = continuation.woken(timer, row("after", StepStatus.PENDING, attempt=2), NOW)
    later = continuation.woken(timer, row("after", StepStatus.PENDING, attempt=3), NOW)
    parking = continuation.woken(timer, row("after", attempt=2), NOW)

    assert [(r.key, r.attempt) for r in woken.releases] == [("after", 3)]
    assert later.is_empty
    [again] = timers(parking)
    assert again.timer.due_at == NOW + timedelta(seconds=1)


def test_a_delayed_release_is_published_unless_its_step_moved_on():
    timer = Timer("t", TimerKind.PUBLISH, NOW, RUN, StepKey("after"))

    assert released(continuation.published(timer, None)) == ["after"]
    assert continuation.published(timer, row("after")).is_empty


def test_the_classifier_gives_the_stop_however_the_steps_ended():
    ctx = context({"a": Step("Work")})
    rows = (row("a", StepStatus.SUCCEEDED, stop=RunStatus.CANCELLED),)
    end = continuation.resume(ctx, EndScope(""), Loaded(scope_rows=rows))

    assert writes(end.decision, CompleteRun) == [CompleteRun(RunStatus.CANCELLED)]
