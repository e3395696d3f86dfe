"""Hypothesis strategies for flow definitions, shared by the manifest and planner tests.

`flows()` draws valid flows (they pass `validate(flow, HANDLER_TYPES)`): random DAGs
per scope, nested ForEach, WaitForSignal, retries, triggers and Whens from a small set.
"""

from collections.abc import Sequence
from datetime import timedelta

from hypothesis import strategies as st

from service.engine.model import (
    ENTRY_MARKER,
    FOR_EACH,
    WAIT_FOR_SIGNAL,
    Flow,
    FlowId,
    Json,
    RetryPolicy,
    RunAfter,
    Step,
    StepStatus,
    cron,
    manual,
)

HANDLER_TYPES = ("Work", "Check", "Notify")
"""The plain step types drawn; register these (or pass your own `types`)."""
TRIGGER_WHENS = (
    "true",
    "false",
    "@triggerBody().flag == true",
    "@triggerBody()?.n > 2 && @triggerBody()?.n < 10",
    "@triggerHeaders()['x-mode'] == 'fast'",
)
"""Whens that read only the trigger: usable on any step, the entry marker too."""
STEP_WHENS = (
    "@steps('{dep}').output.ok == true",
    "@steps('{dep}').status == 'Succeeded' || @triggerBody().force == true",
)
"""Whens about the dependency they sit on; `{dep}` is replaced by its key."""
CRONS = ("* * * * *", "0 2 * * *", "*/5 * * * * *", "30 0 12 * * MON-FRI")
SIGNALS = ("approval", "go")
FINAL = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED)

_LOWER = "abcdefghijklmnopqrstuvwxyz"
# A letter first (never numeric, never '__'), then a few more: cheaper than from_regex.
keys = st.builds(
    str.__add__, st.sampled_from(_LOWER), st.text(_LOWER + "0123456789_", max_size=5)
)
"""Valid step and trigger keys: no '.', not numeric, not reserved."""
input_names = st.builds(
    str.__add__,
    st.sampled_from(_LOWER + _LOWER.upper()),
    st.text(_LOWER + _LOWER.upper() + "0123456789", max_size=6),
)
json_values: st.SearchStrategy[Json] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
durations = st.integers(0, 3_600_000).map(lambda ms: timedelta(milliseconds=ms))
retries = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 5),
    backoff=durations,
    factor=st.sampled_from((1.0, 1.5, 2.0, 3.0)),
    cap=durations,
)
triggers = st.dictionaries(
    keys, st.just(manual()) | st.sampled_from(CRONS).map(cron), min_size=1, max_size=3
)


_FLAT_KINDS = st.sampled_from(("plain", "plain", "plain", "wait"))
_KINDS = st.sampled_from(("plain", "plain", "plain", "wait", "loop"))


@st.composite
def flows(
    draw: st.DrawFn,
    *,
    max_steps: int = 5,
    max_depth: int = 2,
    types: Sequence[str] = HANDLER_TYPES,
    whens: bool = True,
) -> Flow:
    """A valid flow of at most `max_steps` per scope, loops nested `max_depth` deep."""
    return Flow(
        id=FlowId(str(draw(st.uuids()))),
        name=draw(keys),
        steps=draw(scopes(max_steps, max_depth, types, whens=whens)),
        triggers=draw(triggers),
        version=draw(st.sampled_from(("1", "2", "2024.06"))),
        run_timeout=draw(st.none() | durations.filter(bool)),
    )


@st.composite
def scopes(
    draw: st.DrawFn,
    max_steps: int,
    depth: int,
    types: Sequence[str],
    *,
    whens: bool,
) -> dict[str, Step]:
    """The steps of one scope: a DAG over `keys`, in a random insertion order."""
    order = draw(st.lists(keys, min_size=1, max_size=max_steps, unique=True))
    steps: dict[str, Step] = {}
    for i, key in enumerate(order):
        # Edges point back in `order` only: acyclic, and order[0] is an entry.
        picks = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        deps = [order[j] for j in sorted(picks)]
        run_after = {dep: draw(conditions(dep, whens=whens)) for dep in deps}
        if not deps and whens and draw(st.booleans()):
            run_after = {
                ENTRY_MARKER: RunAfter(when=draw(st.sampled_from(TRIGGER_WHENS)))
            }
        steps[key] = draw(step_bodies(run_after, depth, max_steps, types, whens=whens))
    shuffled = draw(st.permutations(list(steps)))
    return {key: steps[key] for key in shuffled}


@st.composite
def conditions(draw: st.DrawFn, dep: str, *, whens: bool) -> RunAfter:
    statuses = draw(st.frozensets(st.sampled_from(FINAL)))
    if not whens or draw(st.booleans()):
        return RunAfter(statuses)
    when = draw(st.sampled_from(TRIGGER_WHENS + STEP_WHENS))
    return RunAfter(statuses, when.replace("{dep}", dep))


@st.composite
def step_bodies(
    draw: st.DrawFn,
    run_after: dict[str, RunAfter],
    depth: int,
    max_steps: int,
    types: Sequence[str],
    *,
    whens: bool,
) -> Step:
    kind = draw(_KINDS if depth > 0 else _FLAT_KINDS)
    if kind == "wait":
        inputs: dict[str, Json] = {"signalName": draw(st.sampled_from(SIGNALS))}
        if draw(st.booleans()):
            inputs["timeoutSeconds"] = draw(st.integers(1, 3600))
        return Step(WAIT_FOR_SIGNAL, inputs=inputs, run_after=run_after)
    if kind == "loop":
        return Step(
            FOR_EACH,
            run_after=run_after,
            for_each=draw(
                st.lists(json_values, max_size=4) | st.just("@triggerBody().items")
            ),
            concurrency=draw(st.integers(1, 4)),
            steps=draw(scopes(max_steps, depth - 1, types, whens=whens)),
        )
    inputs = draw(st.dictionaries(input_names, json_values, max_size=3))
    if draw(st.booleans()):
        references = ["@triggerBody().id"]
        references += (f"@steps('{dep}').output" for dep in run_after if dep)
        inputs[draw(input_names)] = draw(st.sampled_from(tuple(references)))
    return Step(
        draw(st.sampled_from(tuple(types))),
        inputs=inputs,
        run_after=run_after,
        retry=draw(st.none() | retries),
    )
