"""The planner: readiness (AND-join), the complete skip cascade and the run status."""

import pytest

from service.engine import planner
from service.engine.model import RunStatus, Step, StepStatus, after

S, F, K, R, P, Q = (
    StepStatus.SUCCEEDED,
    StepStatus.FAILED,
    StepStatus.SKIPPED,
    StepStatus.RUNNING,
    StepStatus.PENDING,
    StepStatus.QUEUED,
)

CHAIN = {
    "a": Step("T"),
    "b": Step("T", run_after={"a": ["Succeeded"]}),
    "c": Step("T", run_after={"b": ["Succeeded"]}),
    "d": Step("T", run_after={"c": ["Succeeded"]}),
}
DIAMOND = {
    "a": Step("T"),
    "b": Step("T", run_after={"a": ["Succeeded"]}),
    "c": Step("T", run_after={"a": ["Succeeded"]}),
    "d": Step("T", run_after={"b": ["Succeeded"], "c": ["Succeeded"]}),
}


@pytest.mark.parametrize(
    ("statuses", "ready", "blocked", "waiting"),
    [
        ({}, [], [], ["b", "c", "d"]),
        ({"a": S}, ["b", "c"], [], ["d"]),
        ({"a": S, "b": S}, ["c"], [], ["d"]),
        ({"a": S, "b": S, "c": R}, [], [], ["d"]),
        ({"a": S, "b": S, "c": S}, ["d"], [], []),
        ({"a": S, "b": F}, ["c"], ["d"], []),
        ({"a": F}, [], ["b", "c"], ["d"]),
    ],
    ids=[
        "nothing",
        "entry-done",
        "one-branch",
        "branch-running",
        "join",
        "one-failed",
        "entry-failed",
    ],
)
def test_readiness_is_an_and_join(statuses, ready, blocked, waiting):
    result = planner.readiness(DIAMOND, statuses, ["b", "c", "d"])

    assert (result.ready, result.blocked, result.waiting) == (ready, blocked, waiting)


def test_entry_steps_are_those_without_run_after_or_with_only_the_entry_marker():
    steps = {
        "a": Step("T"),
        "b": Step("T", run_after={"": after(when="@triggerBody().go == true")}),
        "c": Step("T", run_after={"a": []}),
    }

    assert planner.entry_steps(steps) == ["a", "b"]


def test_the_entry_marker_is_vacuously_satisfied():
    steps = {"b": Step("T", run_after={"": after(when="true")})}

    assert planner.readiness(steps, {}, ["b"]).ready == ["b"]


@pytest.mark.parametrize("status", [R, P, Q], ids=["running", "pending", "queued"])
def test_empty_statuses_accept_only_final_statuses(status):
    steps = {"a": Step("T"), "b": Step("T", run_after={"a": []})}

    assert planner.readiness(steps, {"a": status}, ["b"]).waiting == ["b"]


@pytest.mark.parametrize("status", [S, F, K], ids=["succeeded", "failed", "skipped"])
def test_empty_statuses_accept_any_final_status(status):
    steps = {"a": Step("T"), "b": Step("T", run_after={"a": []})}

    assert planner.readiness(steps, {"a": status}, ["b"]).ready == ["b"]


def test_the_skip_cascade_is_complete():
    ready, skipped = planner.cascade(CHAIN, {"a": S, "b": F})

    assert (ready, skipped) == ([], ["c", "d"])


def test_a_step_accepting_skipped_runs_after_the_cascade():
    steps = {**CHAIN, "e": Step("T", run_after={"d": ["Succeeded", "Skipped"]})}

    ready, skipped = planner.cascade(steps, {"a": F})

    assert (ready, skipped) == (["e"], ["b", "c", "d"])


def test_dependencies_are_the_run_after_keys_without_the_entry_marker():
    steps = {**DIAMOND, "e": Step("T", run_after={"": after(when="true")})}

    assert planner.dependencies(steps, ["d", "e"]) == {"b", "c"}


def test_next_candidates_are_the_dependents():
    assert planner.next_candidates(DIAMOND, ["a"]) == {"b", "c"}


ON_FAILURE = {
    "charge": Step("T"),
    "compensate": Step("T", run_after={"charge": ["Failed"]}),
    "confirm": Step("T", run_after={"charge": ["Succeeded"]}),
}


@pytest.mark.parametrize(
    ("steps", "statuses", "expected"),
    [
        (CHAIN, {"a": S, "b": S, "c": S, "d": S}, RunStatus.SUCCEEDED),
        (CHAIN, {"a": S, "b": F, "c": K, "d": K}, RunStatus.FAILED),
        (ON_FAILURE, {"charge": F, "compensate": S, "confirm": K}, RunStatus.SUCCEEDED),
        (ON_FAILURE, {"charge": F, "compensate": F, "confirm": K}, RunStatus.FAILED),
        (ON_FAILURE, {"charge": S, "compensate": K, "confirm": S}, RunStatus.SUCCEEDED),
        (CHAIN, {"a": K, "b": K, "c": K, "d": K}, RunStatus.SKIPPED),
        (CHAIN, {"a": F, "b": K, "c": K, "d": K}, RunStatus.FAILED),
    ],
    ids=[
        "all-succeeded",
        "unhandled-failure",
        "handled-failure",
        "handler-failed",
        "happy-path-with-skipped-handler",
        "nothing-ran",
        "entry-crash",
    ],
)
def test_run_status(steps, statuses, expected):
    assert planner.run_status(steps, statuses) is expected
