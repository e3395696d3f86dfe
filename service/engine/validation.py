"""Start-time checks of flow definitions (SPEC decision 4, §1.8 with its ➜ fixes).

A flow that fails any check stops the worker with a FlowDefinitionError naming the
flow, the step and the problem. Pure: reads definitions and handler names, nothing else.
"""

import math
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import timedelta

from service.engine.cron import check_cron
from service.engine.expressions import (
    is_expression,
    is_trigger_expression,
    parse_when,
    step_references,
)
from service.engine.model import (
    BUILTIN_TYPES,
    ENTRY_MARKER,
    WAIT_FOR_SIGNAL,
    Concurrency,
    Flow,
    Json,
    RetryPolicy,
    Step,
    Trigger,
    TriggerType,
)
from service.errors import ExpressionError, FlowDefinitionError

RESERVED_PREFIX = "__"
"""Step keys and input names starting with this belong to the engine (`__loopItem`)."""
MAX_CONCURRENCY_LIMIT = 1000
"""A key's slots live in one document: a bound keeps it small."""


def validate(flow: Flow, handler_types: Collection[str]) -> None:
    """Raise FlowDefinitionError for the first problem of `flow`, if it has any."""
    for problem in _flow_problems(flow, _known(handler_types)):
        raise problem


def problems(flow: Flow, handler_types: Collection[str]) -> list[FlowDefinitionError]:
    """Every problem of `flow`, in the order `validate` meets them."""
    return list(_flow_problems(flow, _known(handler_types)))


def validate_all(flows: Sequence[Flow], handler_types: Collection[str]) -> None:
    """Validate each flow, and refuse two flows with the same id or name.

    Ids are compared as UUIDs (so in any case), names case-insensitively, as the
    catalog looks them up.
    """
    known = _known(handler_types)
    ids: dict[str, Flow] = {}
    names: dict[str, Flow] = {}
    for flow in flows:
        for problem in _flow_problems(flow, known):
            raise problem
        if (same := ids.get(_id_key(flow.id))) is not None:
            raise _error(flow, f"id '{flow.id}' is already the id of '{same.name}'")
        if (same := names.get(flow.name.lower())) is not None:
            raise _error(flow, f"name is already used by the flow with id '{same.id}'")
        ids[_id_key(flow.id)] = names[flow.name.lower()] = flow
    for flow in flows:
        for problem in _child_problems(flow, ids, names):
            raise problem


def _child_problems(
    flow: Flow, ids: Mapping[str, Flow], names: Mapping[str, Flow]
) -> Iterator[FlowDefinitionError]:
    """Each ChildFlow step names a flow of this worker (by id or name)."""
    for path, step in flow.walk():
        target = step.inputs.get("flow") if step.is_child else None
        if not isinstance(target, str):
            continue  # refused by the step's own checks
        if _id_key(target) not in ids and target.lower() not in names:
            yield _error(flow, f"ChildFlow names unknown flow '{target}'", path)


def _known(handler_types: Collection[str]) -> frozenset[str]:
    return frozenset(t.lower() for t in (*handler_types, *BUILTIN_TYPES))


def _id_key(flow_id: str) -> str:
    try:
        return str(uuid.UUID(flow_id))
    except ValueError:
        return flow_id


def _error(flow: Flow, problem: str, step: str | None = None) -> FlowDefinitionError:
    return FlowDefinitionError(flow.name.strip() or flow.id, problem, step=step)


def _flow_problems(flow: Flow, known: frozenset[str]) -> Iterator[FlowDefinitionError]:
    if not _is_uuid(flow.id):
        yield _error(flow, f"id '{flow.id}' is not a UUID (8-4-4-4-12 hex digits)")
    if not flow.name.strip():
        yield _error(flow, "name is blank")
    if flow.run_timeout is not None and flow.run_timeout <= timedelta(0):
        yield _error(flow, f"run timeout must be positive, got {flow.run_timeout}")
    if flow.step_timeout is not None and flow.step_timeout <= timedelta(0):
        yield _error(flow, f"step timeout must be positive, got {flow.step_timeout}")
    if flow.concurrency is not None:
        yield from (_error(flow, p) for p in _concurrency_problems(flow.concurrency))
    yield from (_error(flow, p) for p in _output_problems(flow))
    for key, trigger in flow.triggers.items():
        yield from (_error(flow, p) for p in _trigger_problems(key, trigger))
    if not flow.steps:
        yield _error(flow, "has no steps")
        return
    yield from _scope_problems(flow, flow.steps, "", known)


def _concurrency_problems(concurrency: Concurrency) -> Iterator[str]:
    if not is_trigger_expression(concurrency.key):
        yield (
            f"concurrency key '{concurrency.key}' is not an expression over the "
            "trigger (@triggerBody()... or @triggerHeaders()...)"
        )
    if not 1 <= concurrency.limit <= MAX_CONCURRENCY_LIMIT:
        yield (
            f"concurrency limit must be 1 to {MAX_CONCURRENCY_LIMIT}, "
            f"got {concurrency.limit}"
        )


def _output_problems(flow: Flow) -> Iterator[str]:
    for name, value in flow.outputs.items():
        if not _is_json(value):
            yield f"output '{name}' is not a JSON value"
        elif unknown := step_references(value) - flow.steps.keys():
            yield f"output '{name}' reads unknown step '{sorted(unknown)[0]}'"


def _is_uuid(text: str) -> bool:
    # The canonical form only: the id is a routing and database key, written literally.
    try:
        return len(text) == 36 and str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _trigger_problems(key: str, trigger: Trigger) -> Iterator[str]:
    if trigger.type is TriggerType.CRON:
        if not trigger.cron or not trigger.cron.strip():
            yield f"trigger '{key}': a Cron trigger needs a cron expression"
            return
        try:
            check_cron(trigger.cron)
        except ValueError as exc:
            yield f"trigger '{key}': {exc}"
    elif trigger.cron is not None:
        # Trigger(cron=...) defaults to Manual: the schedule would silently never fire.
        yield f"trigger '{key}': a {trigger.type} trigger has a cron expression"


def _scope_problems(
    flow: Flow, steps: Mapping[str, Step], prefix: str, known: frozenset[str]
) -> Iterator[FlowDefinitionError]:
    """One scope: the top level, or the body of the ForEach at `prefix` ("loop.")."""
    if steps and not any(step.is_entry for step in steps.values()):
        where = "ForEach body has" if prefix else "has"
        yield _error(
            flow,
            f"{where} no entry step (one with an empty runAfter, or only the "
            f"'{ENTRY_MARKER}' key)",
            prefix.rstrip(".") or None,
        )
    for key, step in steps.items():
        path = prefix + key
        for problem in _step_problems(key, step, steps, known):
            yield _error(flow, problem, path)
        if step.steps:
            yield from _scope_problems(flow, step.steps, f"{path}.", known)
    cycle = _cycle(steps)
    if cycle:
        yield _error(flow, f"dependency cycle: {' -> '.join(cycle)}", prefix + cycle[0])


def _step_problems(
    key: str, step: Step, siblings: Mapping[str, Step], known: frozenset[str]
) -> Iterator[str]:
    yield from _key_problems(key)
    if not step.type.strip():
        yield "type is blank"
    elif step.type.lower() not in known:
        yield f"no handler is registered for type '{step.type}'"
    yield from _input_problems(step.inputs)
    yield from _run_after_problems(step, siblings)
    if step.retry is not None:
        yield from _retry_problems(step.retry)
    yield from _timeout_problems(step)
    if step.is_loop:
        yield from _loop_problems(step)
    elif step.steps:
        yield f"has body steps but its type is '{step.type}', not ForEach"
    if step.type.lower() == WAIT_FOR_SIGNAL.lower():
        yield from _signal_problems(step.inputs)
    if step.is_child:
        yield from _child_input_problems(step.inputs)


def _key_problems(key: str) -> Iterator[str]:
    if not key:
        yield "step key is empty"
    elif "." in key:
        yield "step key contains '.', the scope separator of loop keys"
    elif key.isdigit():
        yield "step key is purely numeric, which reads as a loop iteration index"
    elif key.startswith(RESERVED_PREFIX):
        yield f"step key starts with '{RESERVED_PREFIX}', which is reserved"


def _input_problems(inputs: Mapping[str, Json]) -> Iterator[str]:
    for name, value in inputs.items():
        if name.startswith(RESERVED_PREFIX):
            yield (
                f"input '{name}' starts with '{RESERVED_PREFIX}', reserved for "
                "__loopItem and __loopIndex"
            )
        if not _is_json(value):
            yield f"input '{name}' is not a JSON value"


def _is_json(value: object) -> bool:
    match value:
        case None | bool() | int() | str():
            return True
        case float():
            return math.isfinite(value)
        case list():
            return all(_is_json(item) for item in value)
        case dict():
            return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
        case _:
            return False


def _run_after_problems(step: Step, siblings: Mapping[str, Step]) -> Iterator[str]:
    for dep, condition in step.conditions.items():
        if "." in dep:
            yield (f"runAfter key '{dep}' contains '.': name a step of the same scope")
        elif dep != ENTRY_MARKER and dep not in siblings:
            yield f"runAfter names unknown step '{dep}'"
        if condition.when:
            try:
                parse_when(condition.when)
            except ExpressionError as exc:
                on = "the entry marker ''" if dep == ENTRY_MARKER else f"'{dep}'"
                yield f"When on runAfter {on} does not parse: {exc}"


def _retry_problems(retry: RetryPolicy) -> Iterator[str]:
    if retry.max_attempts < 1:
        yield f"retry max attempts must be at least 1, got {retry.max_attempts}"
    if retry.backoff < timedelta(0):
        yield f"retry backoff must not be negative, got {retry.backoff}"
    if retry.cap < timedelta(0):
        yield f"retry cap must not be negative, got {retry.cap}"
    if not retry.factor >= 0:  # also refuses NaN
        yield f"retry factor must not be negative, got {retry.factor}"


def _timeout_problems(step: Step) -> Iterator[str]:
    if step.timeout is None:
        return
    if step.timeout <= timedelta(0):
        yield f"timeout must be positive, got {step.timeout}"
    elif not step.runs_a_handler:
        yield f"a {step.type} step runs no handler: a timeout has nothing to stop"


def _child_input_problems(inputs: Mapping[str, Json]) -> Iterator[str]:
    target = inputs.get("flow")
    if not isinstance(target, str) or not target.strip():
        yield "ChildFlow needs the flow to start: a non-blank 'flow' input"
    elif is_expression(target):
        yield "ChildFlow's 'flow' must name the flow, not be an expression"
    if not isinstance(inputs.get("inputs", {}), dict):
        yield "ChildFlow's 'inputs' must be an object (the child's trigger body)"


def _loop_problems(step: Step) -> Iterator[str]:
    if not step.steps:
        yield "ForEach has no body steps"
    if step.concurrency < 1:
        yield f"ForEach concurrency must be at least 1, got {step.concurrency}"
    if not _is_json(step.for_each):
        yield "ForEach source is not a JSON value"


def _signal_problems(inputs: Mapping[str, Json]) -> Iterator[str]:
    # Handlers bind input names case-insensitively; an @-expression is checked at run.
    for name, value in inputs.items():
        if name.lower() == "signalname" and (
            value is None or (isinstance(value, str) and not value.strip())
        ):
            yield "WaitForSignal needs a non-blank 'signalName' input"


def _cycle(steps: Mapping[str, Step]) -> list[str]:
    """One dependency cycle among `steps` (`[a, b, a]`), or [] if there is none."""
    done: set[str] = set()
    for start in steps:
        if start in done:
            continue
        # Iterative DFS: a chain of thousands of steps must not hit the recursion limit.
        path: list[str] = [start]
        on_path = {start}
        pending: list[Iterator[str]] = [_deps(steps, start)]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                pending.pop()
                continue
            if dep in on_path:
                return [*path[path.index(dep) :], dep]
            if dep not in done:
                path.append(dep)
                on_path.add(dep)
                pending.append(_deps(steps, dep))
    return []


def _deps(steps: Mapping[str, Step], key: str) -> Iterator[str]:
    return (dep for dep in steps[key].run_after if dep in steps)
