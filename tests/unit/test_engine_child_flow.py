"""Child flows decided by plain calls: start once, wait parked, follow the child."""

from dataclasses import replace
from datetime import timedelta

from service.engine import child_flow, continuation, stop
from service.engine.decision import CreateRun, Launch, RequeueStep, StopRun
from service.engine.expressions import Facts
from service.engine.model import (
    Concurrency,
    Flow,
    FlowId,
    JobId,
    Json,
    RetryPolicy,
    RunId,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
)
from service.engine.model import (
    child_flow as child_step,
)
from service.engine.records import Attempt, ParentRef, RunRecord, StepRecord
from service.engine.rounds import AwaitChild, ChildParked, Loaded, RunContext
from tests.unit.engine_cases import (
    NOW,
    RUN,
    context,
    finish_of,
    row,
    timers,
    writes,
)

CHILD_FLOW = Flow(
    FlowId("9d2f8e1a-0000-4000-8000-00000000c41d"),
    "bill",
    steps={"b": Step("Work")},
    run_timeout=timedelta(minutes=5),
)
STEPS = {
    "kid": child_step("bill", {"n": "@triggerBody().n"}),
    "next": Step("Work", run_after={"kid": ["Succeeded"]}),
}
RETRIED = {**STEPS, "kid": replace(STEPS["kid"], retry=RetryPolicy(max_attempts=3))}
FACTS = Facts(body={"n": 7}, headers={}, steps={}, declared=frozenset(STEPS))


def ctx_of(steps: dict[str, Step] = STEPS, *, depth: int = 0) -> RunContext:
    ctx = context(steps, body={"n": 7})
    lookup = {"bill": CHILD_FLOW}
    return replace(ctx, run=replace(ctx.run, depth=depth), flows=lookup.get)


def kid(attempt: int = 1, **inputs: Json) -> StepRecord:
    base: dict[str, Json] = {"flow": "bill", "inputs": {"n": "@triggerBody().n"}}
    return row("kid", attempt=attempt, inputs={**base, **inputs}, type_="ChildFlow")


def a_child(status: RunStatus, outputs: Json = None) -> RunRecord:
    return RunRecord(
        RunId("child-1"),
        CHILD_FLOW.id,
        "bill",
        child_flow.TRIGGER,
        JobId("j"),
        NOW,
        status=status,
        outputs=outputs,
    )


def test_the_first_attempt_creates_the_child_then_parks_then_launches_it():
    begun = continuation.begin(ctx_of(), kid(), FACTS)

    assert not isinstance(begun, continuation.Invoke)
    [create] = writes(begun.decision, CreateRun)
    created = create.run
    assert (created.flow_id, created.body, created.depth) == (
        CHILD_FLOW.id,
        {"n": 7},
        1,
    )
    assert created.parent == ParentRef(RUN, StepKey("kid"))
    assert created.deadline_at == NOW + timedelta(minutes=5)
    assert created.idempotency_key == f"child:{RUN}/kid/1"
    outcome = finish_of(begun.decision).outcome
    assert outcome.status is StepStatus.PENDING
    assert (outcome.inputs or {})[child_flow.CHILD] == created.run_id
    assert begun.decision.waves[0] == (create,)  # the child exists before the park
    assert begun.decision.effects == (Launch(created.run_id),)
    [check] = begun.follow
    assert check.load.child == created.run_id
    assert isinstance(check.resume, ChildParked)


def test_a_reclaim_of_a_lost_attempt_finds_the_same_child():
    lost = Attempt(1, JobId("m1"), NOW)
    reclaimed = replace(kid(attempt=2), attempts=(lost, Attempt(2, JobId("m2"), NOW)))

    first = continuation.begin(ctx_of(), kid(), FACTS)
    again = continuation.begin(ctx_of(), reclaimed, FACTS)

    assert not isinstance(first, continuation.Invoke)
    assert not isinstance(again, continuation.Invoke)
    [one] = writes(first.decision, CreateRun)
    [two] = writes(again.decision, CreateRun)
    assert one.run.run_id == two.run.run_id


def test_a_retry_after_a_failed_attempt_starts_a_new_child():
    failed = Attempt(1, JobId("m1"), NOW, StepStatus.FAILED, completed_at=NOW)
    retried = replace(kid(attempt=2), attempts=(failed, Attempt(2, JobId("m2"), NOW)))

    first = continuation.begin(ctx_of(), kid(), FACTS)
    again = continuation.begin(ctx_of(), retried, FACTS)

    assert not isinstance(first, continuation.Invoke)
    assert not isinstance(again, continuation.Invoke)
    [one] = writes(first.decision, CreateRun)
    [two] = writes(again.decision, CreateRun)
    assert one.run.run_id != two.run.run_id


def test_a_child_of_a_keyed_flow_is_created_queued():
    keyed = replace(CHILD_FLOW, concurrency=Concurrency("@triggerBody().n"))
    ctx = replace(ctx_of(), flows={"bill": keyed}.get)

    begun = continuation.begin(ctx, kid(), FACTS)

    assert not isinstance(begun, continuation.Invoke)
    [create] = writes(begun.decision, CreateRun)
    assert (create.run.status, create.run.concurrency_key) == (RunStatus.QUEUED, "7")


def test_past_the_depth_bound_the_step_fails_at_once():
    begun = continuation.begin(
        ctx_of(RETRIED, depth=child_flow.MAX_DEPTH), kid(), FACTS
    )

    assert not isinstance(begun, continuation.Invoke)
    outcome = finish_of(begun.decision).outcome
    assert outcome.status is StepStatus.FAILED  # not retried
    assert "at most 8 deep" in (outcome.error or "")
    assert writes(begun.decision, CreateRun) == []


def test_an_attempt_woken_with_a_child_waits_on_it_and_starts_none():
    begun = continuation.begin(ctx_of(), kid(2, __child="child-1"), FACTS)

    assert not isinstance(begun, continuation.Invoke)
    assert begun.decision.is_empty
    [wait] = begun.follow
    assert wait.load.child == "child-1"
    assert isinstance(wait.resume, AwaitChild)


def test_a_succeeded_child_gives_its_outputs_and_releases_what_follows():
    ctx = ctx_of()
    woken = kid(2, __child="child-1")

    done = child_flow.decide(ctx, woken, a_child(RunStatus.SUCCEEDED, {"total": 3}))

    finish = finish_of(done.decision)
    assert (finish.outcome.status, finish.outcome.output) == (
        StepStatus.SUCCEEDED,
        {"total": 3},
    )
    assert finish.released == ("next",)
    assert child_flow.CHILD not in (finish.outcome.inputs or {})


def test_a_failed_child_fails_the_step_and_the_retry_starts_afresh():
    done = child_flow.decide(
        ctx_of(RETRIED), kid(2, __child="child-1"), a_child(RunStatus.TIMED_OUT)
    )

    outcome = finish_of(done.decision).outcome
    assert outcome.status is StepStatus.PENDING  # its retry policy parks it
    assert outcome.error == "Child run child-1 ended TimedOut."
    assert child_flow.CHILD not in (outcome.inputs or {})
    assert len(timers(done.decision)) == 1


def test_a_child_that_ran_nothing_skips_the_step():
    done = child_flow.decide(
        ctx_of(), kid(2, __child="child-1"), a_child(RunStatus.SKIPPED)
    )

    assert finish_of(done.decision).outcome.status is StepStatus.SKIPPED


def test_a_child_still_running_parks_the_step_again():
    done = child_flow.decide(
        ctx_of(), kid(2, __child="child-1"), a_child(RunStatus.RUNNING)
    )

    outcome = finish_of(done.decision).outcome
    assert outcome.status is StepStatus.PENDING
    assert (outcome.inputs or {})[child_flow.CHILD] == "child-1"


def test_a_child_that_ended_while_the_step_parked_wakes_it():
    parked = replace(kid(1, __child="child-1"), status=StepStatus.PENDING)

    early = child_flow.after_park(ctx_of(), parked, a_child(RunStatus.FAILED))
    late = child_flow.after_park(ctx_of(), parked, a_child(RunStatus.RUNNING))

    assert writes(early.decision, RequeueStep) == [
        RequeueStep(StepKey("kid"), frozenset({StepStatus.PENDING}), 1)
    ]
    assert late.decision.is_empty


def test_a_child_wakes_only_a_step_parked_for_it():
    parked = replace(kid(1, __child="child-1"), status=StepStatus.PENDING)
    backing_off = replace(kid(2), status=StepStatus.PENDING)

    assert not child_flow.child_ended(parked, RunId("child-1")).is_empty
    assert child_flow.child_ended(parked, RunId("other")).is_empty
    assert child_flow.child_ended(backing_off, RunId("child-1")).is_empty
    assert child_flow.child_ended(None, RunId("child-1")).is_empty


def test_a_stop_stops_the_children_of_parked_and_running_child_steps():
    parked = replace(kid(1, __child="child-1"), status=StepStatus.PENDING)
    running = replace(row("other", type_="ChildFlow"), status=StepStatus.RUNNING)
    queued = replace(row("third", type_="ChildFlow"), status=StepStatus.QUEUED)

    closed = stop.close_parked(RunStatus.CANCELLED, [parked, running, queued])

    stops = closed.decision.effects
    assert [s.run_id for s in stops if isinstance(s, StopRun)] == [
        "child-1",
        child_flow.child_run_id(RUN, StepKey("other"), 1),
    ]
    assert stops[0] == StopRun(RunId("child-1"), f"Its parent run {RUN} is Cancelled.")


def test_the_end_of_a_child_wakes_its_parent():
    ctx = ctx_of()
    child_ctx = replace(
        ctx, run=replace(ctx.run, parent=ParentRef(RunId("p"), StepKey("kid")))
    )

    assert continuation.ended(child_ctx).decision.effects[0].run_id == "p"


def test_a_parked_child_step_met_again_looks_at_its_child():
    parked = replace(kid(1, __child="child-1"), status=StepStatus.PENDING)

    again = continuation.recover(ctx_of(), parked)

    [check] = again.follow
    assert check.load.child == "child-1"
    resumed = continuation.resume(
        ctx_of(), check.resume, Loaded(child=a_child(RunStatus.SUCCEEDED))
    )
    assert len(writes(resumed.decision, RequeueStep)) == 1
