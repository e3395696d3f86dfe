"""Concurrency keys decided by plain calls: a run's key, and who may take a slot."""

from dataclasses import replace
from datetime import timedelta

import pytest

from service.engine import concurrency, continuation, ending
from service.engine.concurrency import Slots, Ticket
from service.engine.decision import CompleteRun, FreeSlot, Launch, SetTimer
from service.engine.model import (
    Concurrency,
    JobId,
    Json,
    RunId,
    RunStatus,
    Step,
    TriggerKey,
)
from service.engine.records import RunRecord
from tests.unit.engine_cases import FLOW_ID, NOW, RUN, context, flow_of, writes

KEYED = flow_of({"a": Step("Work")}, concurrency=Concurrency("@triggerBody().c", 2))


def ticket(n: int, admitted: int | None = None) -> Ticket:
    return Ticket(RunId(f"r{n}"), n, admitted)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"c": "acme"}, "acme"),
        ({"c": 42}, "42"),
        ({"c": {"b": 1, "a": [2]}}, '{"a":[2],"b":1}'),
        ({}, "null"),
        (None, "null"),
    ],
    ids=["string", "number", "object", "missing", "no-body"],
)
def test_the_key_is_the_value_as_text(body, key):
    assert concurrency.key_of(KEYED, body, {}) == key


def test_a_long_key_is_its_digest():
    key = concurrency.key_of(KEYED, {"c": "x" * 500}, {})

    assert key is not None
    assert key.startswith("sha256:")
    assert len(key) == len("sha256:") + 64


def a_run(body: Json = None) -> RunRecord:
    return RunRecord(RUN, FLOW_ID, "f", TriggerKey("manual"), JobId("j"), NOW, body)


def test_a_flow_without_a_key_has_none_and_its_runs_are_not_queued():
    flow = flow_of({"a": Step("Work")})
    run = a_run()

    assert concurrency.key_of(flow, {"c": 1}, {}) is None
    assert concurrency.queued(flow, run) is run


def test_a_keyed_run_is_created_queued_under_its_key():
    run = a_run({"c": "acme"})

    queued = concurrency.queued(KEYED, run)

    assert (queued.status, queued.concurrency_key) == (RunStatus.QUEUED, "acme")


def test_the_head_takes_a_free_slot():
    slots = Slots(FLOW_ID, "k", holders=(ticket(1, 1),), waiting=(ticket(2), ticket(3)))

    plan = concurrency.admission(slots, {RunId("r1"): RunStatus.RUNNING}, limit=2)

    assert plan.take == ticket(2)
    assert (plan.free, plan.resume) == ((), ())


def test_nobody_takes_a_slot_when_all_are_held():
    slots = Slots(FLOW_ID, "k", holders=(ticket(1, 1),), waiting=(ticket(2),))

    plan = concurrency.admission(slots, {RunId("r1"): RunStatus.RUNNING}, limit=1)

    assert plan.take is None


@pytest.mark.parametrize(
    "status", [RunStatus.SUCCEEDED, RunStatus.CANCELLED, None], ids=str
)
def test_a_slot_of_a_run_that_ended_or_is_gone_is_freed_first(status):
    slots = Slots(FLOW_ID, "k", holders=(ticket(1, 1),), waiting=(ticket(2),))
    statuses = {} if status is None else {RunId("r1"): status}

    plan = concurrency.admission(slots, statuses, limit=1)

    assert plan == concurrency.Admission(free=(RunId("r1"),))


def test_a_holder_still_queued_is_resumed():
    slots = Slots(FLOW_ID, "k", holders=(ticket(1, 1),))

    plan = concurrency.admission(slots, {RunId("r1"): RunStatus.QUEUED}, limit=1)

    assert plan.resume == (ticket(1, 1),)
    assert plan.take is None


def test_a_queued_run_sets_its_deadline_then_waits_for_a_slot():
    ctx = context({"a": Step("Work")}, deadline=NOW)

    queued = continuation.queue_run(ctx)

    assert [w.timer.kind for w in writes(queued.decision, SetTimer)] == ["deadline"]
    assert queued.decision.effects == (Launch(RUN),)
    assert queued.decision.releases == ()


def test_the_end_of_a_keyed_run_frees_its_slot_and_asks_for_a_recheck():
    ctx = context({"a": Step("Work")})
    keyed = replace(ctx, run=replace(ctx.run, concurrency_key="acme"))

    done = ending.completion(keyed, RunStatus.SUCCEEDED)
    again = continuation.ended(keyed)

    [complete] = writes(done, CompleteRun)
    assert complete.recheck_at == NOW + timedelta(seconds=30)
    assert done.effects == again.decision.effects == (FreeSlot(FLOW_ID, "acme", RUN),)


def test_the_end_of_a_plain_run_sets_nothing_off():
    done = ending.completion(context({"a": Step("Work")}), RunStatus.SUCCEEDED)

    [complete] = writes(done, CompleteRun)
    assert (complete.recheck_at, done.effects) == (None, ())
