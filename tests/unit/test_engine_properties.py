"""Hypothesis on the engine alone: its incremental cascade agrees with the planner's.

A drawn flow runs step by step with drawn outcomes. After each result the engine is
asked what follows (knowing every row, as a loaded scope would), and what it releases
and skips is checked against `planner.cascade` over the statuses so far: the same steps
become ready, the same steps can never run, none too early, none forgotten, and once
every step is final the run gets the classifier's status. No store: plain calls.
"""

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.engine import cascade, continuation, planner
from service.engine.decision import CompleteRun, Decision, InsertSteps
from service.engine.model import Flow, RunStatus, StepStatus
from service.engine.records import StepRecord
from service.engine.rounds import ContinueScope, EndScope, Load, Loaded, Round
from tests.strategies import flows
from tests.unit.engine_cases import context, row, writes

OUTCOMES = (StepStatus.SUCCEEDED, StepStatus.SUCCEEDED, StepStatus.FAILED)


def decided_rows(decision: Decision) -> dict[str, StepStatus]:
    return {r.key: r.status for w in writes(decision, InsertSteps) for r in w.rows}


def expectation(
    flow: Flow, statuses: dict[str, StepStatus]
) -> tuple[set[str], set[str]]:
    """What the planner says of the whole scope: (ready to dispatch, never to run)."""
    ready, skipped = planner.cascade(flow.steps, statuses)
    return set(ready), set(skipped)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(flow=flows(max_steps=7, max_depth=0, whens=False), seed=st.integers(0, 2**32))
def test_the_engines_cascade_agrees_with_the_planner(flow: Flow, seed: int):
    draw = random.Random(seed)
    ctx = context(flow.steps)
    rows: dict[str, StepRecord] = {}

    def take(decision: Decision) -> tuple[set[str], set[str]]:
        got = decided_rows(decision)
        for key, status in got.items():
            rows.setdefault(key, row(key, status))
        released = {str(r.key) for r in decision.releases}
        return released, {k for k, s in got.items() if s is StepStatus.SKIPPED}

    start = cascade.start(ctx, "")
    released, skipped = take(start.decision)
    ready, never = expectation(flow, {})
    assert released == ready
    assert skipped == never
    running = set(released)

    while running:
        key = draw.choice(sorted(running))
        running.discard(key)
        rows[key] = replace(rows[key], status=draw.choice(OUTCOMES))
        statuses = {k: r.status for k, r in rows.items() if r.status.is_final}
        state = ContinueScope(
            "", frozenset({key}), dict(rows), seen=frozenset(flow.steps)
        )

        after = cascade.resume(ctx, state, None)
        released, skipped = take(after.decision)

        ready, never = expectation(flow, statuses)
        assert released == ready - running - statuses.keys(), key
        assert skipped == never - statuses.keys(), key
        running |= released
        if not running:  # nothing left to run: the engine must look at the end
            [ended] = after.follow
            assert ended.resume == EndScope("")

    final = {k: r.status for k, r in rows.items()}
    assert set(final) == set(flow.steps)  # every step ends with a row
    assert all(s.is_final for s in final.values())
    scope_rows = tuple(rows.values())
    end = continuation.resume(ctx, EndScope(""), Loaded(scope_rows=scope_rows))
    assert writes(end.decision, CompleteRun) == [
        CompleteRun(planner.run_status(flow.steps, final))
    ]


class Shell:
    """The orchestrator's part, by plain calls: rows inserted if absent, loads answered
    as the store would."""

    def __init__(self, flow: Flow) -> None:
        self.ctx = context(flow.steps)
        self.rows: dict[str, StepRecord] = {}

    def answer(self, load: Load) -> Loaded:
        rows = self.rows
        final = {k for k, r in rows.items() if r.status.is_final}
        return Loaded(
            rows={k: rows[k] for k in load.rows if k in rows},
            scope_rows=tuple(rows.values()) if load.scope is not None else (),
            counts=tuple(len(keys & final) for keys in load.counts),
            scope_final=len(final) if load.count_scope is not None else 0,
        )

    def drive(self, first: Round) -> tuple[set[str], set[str], list[CompleteRun]]:
        """Every round that follows `first`: (released, skipped, run completions)."""
        released: set[str] = set()
        skipped: set[str] = set()
        completed: list[CompleteRun] = []
        rounds = [first]
        while rounds:
            done = rounds.pop()
            for key, status in decided_rows(done.decision).items():
                if key not in self.rows:  # inserted if absent
                    self.rows[key] = row(key, status)
                    if status is StepStatus.SKIPPED:
                        skipped.add(key)
            released |= {str(r.key) for r in done.decision.releases}
            completed += writes(done.decision, CompleteRun)
            rounds += [
                continuation.resume(self.ctx, then.resume, self.answer(then.load))
                for then in done.follow
            ]
        for key in released:
            self.rows.setdefault(key, row(key))
        return released, skipped, completed


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(flow=flows(max_steps=7, max_depth=0, whens=False), seed=st.integers(0, 2**32))
def test_the_engine_asking_only_for_what_it_needs_agrees_with_the_planner(
    flow: Flow, seed: int
):
    """As the shell runs it: the engine knows the row that ended, and asks for more."""
    draw = random.Random(seed)
    shell = Shell(flow)
    running, _, _ = shell.drive(cascade.start(shell.ctx, ""))
    while running:
        key = draw.choice(sorted(running))
        running.discard(key)
        ended = shell.rows[key] = replace(shell.rows[key], status=draw.choice(OUTCOMES))
        statuses = {k: r.status for k, r in shell.rows.items() if r.status.is_final}
        state = ContinueScope("", frozenset({key}), {key: ended})

        released, skipped, completed = shell.drive(
            cascade.resume(shell.ctx, state, None)
        )

        ready, never = expectation(flow, statuses)
        assert released == ready - running - statuses.keys(), key
        assert skipped == never - statuses.keys(), key
        running |= released
        final = {k: r.status for k, r in shell.rows.items()}
        if running or set(final) != set(flow.steps):
            assert completed == [], key
        else:
            assert completed == [CompleteRun(planner.run_status(flow.steps, final))]


@given(
    flow=flows(max_steps=5, max_depth=0, whens=False),
    stop=st.sampled_from((RunStatus.CANCELLED, RunStatus.TIMED_OUT)),
    outcomes=st.lists(st.sampled_from(OUTCOMES), min_size=5, max_size=5),
)
def test_a_stopped_run_completes_with_its_stop_whatever_its_steps_did(
    flow: Flow, stop: RunStatus, outcomes: list[StepStatus]
):
    statuses = dict(zip(flow.steps, outcomes, strict=False))
    rows = tuple(row(k, statuses.get(k, StepStatus.SKIPPED)) for k in flow.steps)
    ctx = context(flow.steps, stop=stop)

    end = continuation.resume(ctx, EndScope(""), Loaded(scope_rows=rows))

    assert writes(end.decision, CompleteRun) == [CompleteRun(stop)]
    assert planner.run_status(flow.steps, statuses, stop=stop) is stop
