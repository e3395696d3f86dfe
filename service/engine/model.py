"""The flow model: flows, steps, triggers, statuses and identifiers.

Pure data (frozen dataclasses and enums) plus the key arithmetic of loop scopes. It must
not import anything that does I/O.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import NewType, TypeAlias

Json: TypeAlias = "bool | int | float | str | list[Json] | dict[str, Json] | None"

FlowId = NewType("FlowId", str)
RunId = NewType("RunId", str)
StepKey = NewType("StepKey", str)
JobId = NewType("JobId", str)
TriggerKey = NewType("TriggerKey", str)

FOR_EACH = "ForEach"
WAIT_FOR_SIGNAL = "WaitForSignal"
CHILD_FLOW = "ChildFlow"
ITERATION = "__iteration"
"""The type of the bookkeeping row of one ForEach iteration (`loop.<i>`)."""
BUILTIN_TYPES = frozenset({FOR_EACH, WAIT_FOR_SIGNAL, CHILD_FLOW})
_BUILTIN_FOLDED = frozenset(t.lower() for t in BUILTIN_TYPES)
ENTRY_MARKER = ""
"""The `""` runAfter key: an entry step that carries a When clause."""


class StepStatus(StrEnum):
    QUEUED = "Queued"
    """Dispatched (the dispatch ledger) and not claimed yet."""
    RUNNING = "Running"
    PENDING = "Pending"
    """Parked: polling, waiting for a signal, waiting for a retry or a loop."""
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED}
)
IN_FLIGHT_STATUSES = frozenset(
    {StepStatus.QUEUED, StepStatus.RUNNING, StepStatus.PENDING}
)


class RunStatus(StrEnum):
    QUEUED = "Queued"
    """Waiting for a slot of its concurrency key: nothing of it has started."""
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"
    TIMED_OUT = "TimedOut"

    @property
    def is_final(self) -> bool:
        return self not in ACTIVE_RUN_STATUSES


ACTIVE_RUN_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})
"""A run in one of these is not over: it may be cancelled, it is never purged."""


class TriggerType(StrEnum):
    MANUAL = "Manual"
    CRON = "Cron"


@dataclass(frozen=True, slots=True)
class Trigger:
    type: TriggerType = TriggerType.MANUAL
    cron: str | None = None


def manual() -> Trigger:
    """A trigger fired by a `trigger` message (or `flowctl trigger`)."""
    return Trigger(TriggerType.MANUAL)


def cron(expression: str) -> Trigger:
    """A trigger fired by the scheduler: 5 fields, or 6 with seconds first, in UTC."""
    return Trigger(TriggerType.CRON, cron=expression)


@dataclass(frozen=True, slots=True)
class RunAfter:
    """One runAfter entry: the statuses accepted (empty: any final one) and a When."""

    statuses: frozenset[StepStatus] = frozenset()
    when: str | None = None

    def __post_init__(self) -> None:
        if not self.when:
            object.__setattr__(self, "when", None)

    def accepts(self, status: StepStatus) -> bool:
        if not status.is_final:
            return False
        return not self.statuses or status in self.statuses


def after(*statuses: str | StepStatus, when: str | None = None) -> RunAfter:
    """`after("Succeeded", "Skipped", when="...")`: a runAfter condition."""
    return RunAfter(frozenset(StepStatus(s) for s in statuses), when or None)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Automatic retries of a failed attempt, through the timer store."""

    max_attempts: int = 3
    backoff: timedelta = timedelta(seconds=5)
    factor: float = 2.0
    cap: timedelta = timedelta(minutes=5)

    def delay_after(self, attempt: int) -> timedelta | None:
        """Wait before the next attempt once `attempt` failed; None if out of tries."""
        if attempt >= self.max_attempts:
            return None
        delay = self.backoff * (self.factor ** (attempt - 1))
        return min(delay, self.cap)


RunAfterSpec: TypeAlias = RunAfter | Sequence[str | StepStatus]


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a flow: a handler type, inputs, runAfter and, for ForEach, a body.

    `timeout`: how long one attempt's handler may run (handler steps only).
    """

    type: str
    inputs: Mapping[str, Json] = field(default_factory=dict)
    run_after: Mapping[str, RunAfterSpec] = field(default_factory=dict)
    retry: RetryPolicy | None = None
    for_each: Json = None
    concurrency: int = 1
    steps: Mapping[str, "Step"] = field(default_factory=dict)
    timeout: timedelta | None = None

    def __post_init__(self) -> None:
        normal = {
            key: spec if isinstance(spec, RunAfter) else after(*spec)
            for key, spec in self.run_after.items()
        }
        object.__setattr__(self, "run_after", normal)

    @property
    def conditions(self) -> Mapping[str, RunAfter]:
        """The runAfter entries, normalised (the constructor accepts status lists)."""
        return self.run_after  # type: ignore[return-value] # normalised in __post_init__

    @property
    def is_entry(self) -> bool:
        return not self.run_after or set(self.run_after) == {ENTRY_MARKER}

    @property
    def is_loop(self) -> bool:
        return self.type.lower() == FOR_EACH.lower()

    @property
    def is_child(self) -> bool:
        return self.type.lower() == CHILD_FLOW.lower()

    @property
    def runs_a_handler(self) -> bool:
        """Not a built-in type: a handler runs each attempt."""
        return self.type.lower() not in _BUILTIN_FOLDED


def for_each(
    source: Json,
    steps: Mapping[str, Step],
    *,
    concurrency: int = 1,
    run_after: Mapping[str, RunAfterSpec] | None = None,
) -> Step:
    """ForEach step: runs `steps` once per item of `source`, `concurrency` at a time."""
    return Step(
        FOR_EACH,
        run_after=run_after or {},
        for_each=source,
        concurrency=concurrency,
        steps=steps,
    )


def wait_for_signal(
    signal: str,
    *,
    timeout: timedelta | None = None,
    run_after: Mapping[str, RunAfterSpec] | None = None,
) -> Step:
    """A step that parks until a `signal` named `signal` reaches the run."""
    inputs: dict[str, Json] = {"signalName": signal}
    if timeout is not None:
        inputs["timeoutSeconds"] = timeout.total_seconds()
    return Step(WAIT_FOR_SIGNAL, inputs=inputs, run_after=run_after or {})


def child_flow(
    flow: str,
    inputs: Mapping[str, Json] | None = None,
    *,
    run_after: Mapping[str, RunAfterSpec] | None = None,
    retry: RetryPolicy | None = None,
) -> Step:
    """A step that starts the flow `flow` (id or name) and waits for its run to end.

    The child's trigger body is `inputs`, resolved (expressions allowed); the step
    waits parked, holding no worker, and its output is the child's outputs.
    """
    return Step(
        CHILD_FLOW,
        inputs={"flow": flow, "inputs": dict(inputs or {})},
        run_after=run_after or {},
        retry=retry,
    )


@dataclass(frozen=True, slots=True)
class Concurrency:
    """At most `limit` runs of the flow per value of `key` run at once.

    `key` is an expression over the trigger (`@triggerBody().customer_id`); the others
    wait, Queued, and start in the order they were triggered as runs end.
    """

    key: str
    limit: int = 1


@dataclass(frozen=True, slots=True)
class Flow:
    """A flow definition: a stable id, a name, a version label, triggers and steps.

    `step_timeout`: the timeout of its handler steps that set none. `concurrency`: a
    limit on its runs per key. `outputs`: what a finished run gives back (expressions
    over its steps), the output of the step that started it as a child.
    """

    id: FlowId
    name: str
    steps: Mapping[str, Step]
    triggers: Mapping[str, Trigger] = field(
        default_factory=lambda: {"manual": manual()}
    )
    version: str = "1"
    run_timeout: timedelta | None = None
    step_timeout: timedelta | None = None
    concurrency: Concurrency | None = None
    outputs: Mapping[str, Json] = field(default_factory=dict)
    _after: dict[str, Mapping[str, frozenset[str]]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    """Per scope template ("" or "loop."): each step's dependents, found once."""

    def scope(self, prefix: str = "") -> "Scope":
        """The steps visible under a runtime key prefix ("" or "loop.3.")."""
        steps = self.body_of(prefix)
        template = "".join(f"{part}." for part in template_parts(prefix))
        after = self._after.get(template)
        if after is None:
            after = self._after[template] = _reverse(steps)
        return Scope(prefix, steps, after)

    def body_of(self, prefix: str) -> Mapping[str, Step]:
        steps = self.steps
        for part in template_parts(prefix.rstrip(".")):
            steps = steps[part].steps
        return steps

    def find(self, key: str) -> Step | None:
        """The manifest step of a runtime key: `loop.3.child` finds `loop`'s `child`."""
        steps = self.steps
        found: Step | None = None
        for part in template_parts(key):
            found = steps.get(part)
            if found is None:
                return None
            steps = found.steps
        return found

    def walk(self) -> Iterator[tuple[str, Step]]:
        """Every manifest step with its template path (`loop.child`), parents first."""
        yield from _walk(self.steps, "")


def _walk(steps: Mapping[str, Step], prefix: str) -> Iterator[tuple[str, Step]]:
    for key, step in steps.items():
        yield prefix + key, step
        yield from _walk(step.steps, f"{prefix}{key}.")


@dataclass(frozen=True, slots=True)
class Scope:
    """Sibling steps under one runtime prefix: the top level or one loop iteration."""

    prefix: str
    steps: Mapping[str, Step]
    after: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Each step's dependents (built by `Flow.scope`; empty: found by a scan)."""

    def dependents(self, of: Iterable[str]) -> set[str]:
        """Keys of this scope's steps that list any of `of` in their runAfter."""
        if not self.after:
            return dependents(self.steps, of)
        found: set[str] = set()
        for key in of:
            found |= self.after.get(key, frozenset())
        return found

    def key(self, local: str) -> StepKey:
        return StepKey(self.prefix + local)

    def local(self, key: str) -> str:
        return key[len(self.prefix) :]

    def keys(self) -> list[StepKey]:
        return [self.key(k) for k in self.steps]

    @property
    def name(self) -> str:
        """The scope as stored on step rows: "" or "loop.3"."""
        return self.prefix.rstrip(".")


def template_parts(key: str) -> list[str]:
    """`loop.3.child` -> ["loop", "child"]: the manifest path of a runtime key."""
    return [part for part in key.split(".") if part and not part.isdigit()]


def scope_of(key: str) -> str:
    """The scope of a runtime key: "" for top-level keys, "loop.3" for loop children."""
    head, _, _ = key.rpartition(".")
    return head


def scope_prefix(key: str) -> str:
    """The runtime prefix of a key's scope: "" for top-level keys, "loop.3." below."""
    head, _, _ = key.rpartition(".")
    return f"{head}." if head else ""


def iteration_key(loop: str, index: int) -> StepKey:
    return StepKey(f"{loop}.{index}")


def dependents(steps: Mapping[str, Step], of: Iterable[str]) -> set[str]:
    """Keys of `steps` that list any of `of` in their runAfter."""
    wanted = set(of)
    return {k for k, s in steps.items() if wanted.intersection(s.run_after)}


def _reverse(steps: Mapping[str, Step]) -> dict[str, frozenset[str]]:
    """Each key's dependents in `steps` (the steps that list it in their runAfter)."""
    found: dict[str, set[str]] = {}
    for key, step in steps.items():
        for dep in step.run_after:
            found.setdefault(dep, set()).add(key)
    return {dep: frozenset(keys) for dep, keys in found.items()}


def descendants(steps: Mapping[str, Step], of: str) -> set[str]:
    """Every step that runs after `of`, directly or transitively."""
    found: set[str] = set()
    frontier = {of}
    while frontier:
        frontier = dependents(steps, frontier) - found
        found |= frontier
    return found
