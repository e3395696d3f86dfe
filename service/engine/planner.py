"""Readiness, the skip cascade and the run status: pure functions of a scope's statuses.

A scope is the top level of a flow or one ForEach iteration; keys here are local to it.
No I/O, no clock: the orchestrator loads the statuses it needs and acts on the answer.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from service.engine.model import (
    ENTRY_MARKER,
    RunStatus,
    Step,
    StepStatus,
    dependents,
)


@dataclass(frozen=True, slots=True)
class Readiness:
    """What became of the candidates: ready to dispatch, blocked for good or waiting."""

    ready: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


def readiness(
    steps: Mapping[str, Step],
    statuses: Mapping[str, StepStatus],
    candidates: Iterable[str],
) -> Readiness:
    """Classify the candidates that have no status yet (AND-join, SPEC 2.6, decision 3).

    Ready: every runAfter entry accepts its dependency's final status (the `""` entry
    is vacuously satisfied). Blocked: some dependency is final and not accepted, so the
    step can never run. Waiting: otherwise. Candidates are returned in manifest order.
    """
    wanted = set(candidates)
    result = Readiness()
    for key, step in steps.items():
        if key not in wanted or key in statuses:
            continue
        verdict = _verdict(step, statuses)
        getattr(result, verdict).append(key)
    return result


def _verdict(step: Step, statuses: Mapping[str, StepStatus]) -> str:
    verdict = "ready"
    for dep, condition in step.conditions.items():
        if dep == ENTRY_MARKER:
            continue
        status = statuses.get(dep)
        if status is None or not status.is_final:
            verdict = "waiting"
        elif not condition.accepts(status):
            return "blocked"
    return verdict


def dependencies(steps: Mapping[str, Step], of: Iterable[str]) -> set[str]:
    """The keys whose statuses decide the readiness of `of` (the entry marker aside)."""
    return {dep for key in of for dep in steps[key].run_after if dep != ENTRY_MARKER}


def entry_steps(steps: Mapping[str, Step]) -> list[str]:
    return [key for key, step in steps.items() if step.is_entry]


def next_candidates(steps: Mapping[str, Step], settled: Iterable[str]) -> set[str]:
    """Steps whose readiness may have changed once `settled` got a final status."""
    return dependents(steps, settled)


def cascade(
    steps: Mapping[str, Step], statuses: Mapping[str, StepStatus]
) -> tuple[list[str], list[str]]:
    """The complete skip cascade over a fully known scope (decision 1).

    Returns (ready, skipped): the steps that can be dispatched now and every step that
    can never run, found by repeating readiness until nothing more is blocked.
    """
    known = dict(statuses)
    skipped: list[str] = []
    while True:
        result = readiness(steps, known, steps)
        if not result.blocked:
            return result.ready, skipped
        skipped.extend(result.blocked)
        known.update(dict.fromkeys(result.blocked, StepStatus.SKIPPED))


def run_status(
    steps: Mapping[str, Step],
    statuses: Mapping[str, StepStatus],
    *,
    stop: RunStatus | None = None,
) -> RunStatus:
    """The status of a finished scope (decision 2).

    The stop (Cancelled or TimedOut) of a stopped run, however its steps ended; else
    Failed if a failure is unhandled (a Failed step is handled when a step that lists it
    in runAfter Succeeded); else Succeeded if any step Succeeded; else Skipped.
    """
    if stop is not None:
        return stop
    for key, status in statuses.items():
        if status is StepStatus.FAILED and not _handled(steps, statuses, key):
            return RunStatus.FAILED
    if any(s is StepStatus.SUCCEEDED for s in statuses.values()):
        return RunStatus.SUCCEEDED
    return RunStatus.SKIPPED


def _handled(
    steps: Mapping[str, Step], statuses: Mapping[str, StepStatus], failed: str
) -> bool:
    return any(
        statuses.get(handler) is StepStatus.SUCCEEDED
        for handler in dependents(steps, [failed])
    )
