"""Expressions (SPEC §3): step input resolution, and When clauses over a run's facts.

Pure: the caller loads the facts (trigger body, headers, the steps referenced), and this
module decides. `service.engine.when` holds the When grammar itself.
"""

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias, assert_never

from service.engine import headers as trigger_headers
from service.engine import when, when_evaluation
from service.engine.model import Json
from service.engine.when import WhenNode
from service.errors import ExpressionError

__all__ = [
    "Facts",
    "StepFacts",
    "WhenNode",
    "WhenResult",
    "evaluate_when",
    "is_expression",
    "is_trigger_expression",
    "parse_when",
    "resolve",
    "step_references",
    "when_references",
]


@dataclass(frozen=True, slots=True)
class StepFacts:
    """What an expression may see of one step."""

    status: str | None
    """"Succeeded", ... or None when the step has no row yet."""
    output: Json = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    """What expressions resolve against; values are shared with results, not copied."""

    body: Json
    headers: Mapping[str, str]
    """Names as written; `@triggerHeaders()['X-Id']` matches them in any case."""
    steps: Mapping[str, StepFacts]
    """Keyed by the key as written in the expression (the local key)."""
    declared: frozenset[str]
    """Keys in the manifest scope: `@steps('x')` with any other key is an error."""


@dataclass(frozen=True, slots=True)
class WhenResult:
    result: bool
    trace: dict[str, Json]
    """{"expression": text, "resolved": text with values or the error, "result"}"""


@dataclass(frozen=True, slots=True)
class _Body:
    path: tuple[str, ...] | None
    """() for the whole body; None for `@triggerBody()?.`, which is null."""


@dataclass(frozen=True, slots=True)
class _Headers:
    name: str | None
    """None for every header."""


@dataclass(frozen=True, slots=True)
class _Step:
    key: str
    field: str
    path: tuple[str, ...]


_Ref: TypeAlias = _Body | _Headers | _Step

_BODY = "@triggerbody()"
_HEADERS = "@triggerheaders()"
# re.ASCII: without it IGNORECASE lets non-ASCII letters match (U+017F matches `s`).
_FLAGS = re.IGNORECASE | re.ASCII | re.DOTALL
_STEP = re.compile(r"@steps\((['\"])([^'\"]+)\1\)\.(output|status|error)(.*)", _FLAGS)
_HEADER_NAME = re.compile(r"\[(['\"])(.*)\1\]", re.DOTALL)
_INDEX = re.compile(r"[+-]?[0-9]{1,18}")


def is_expression(value: Json) -> bool:
    """A string whose first non-space character is `@`."""
    return isinstance(value, str) and value.lstrip().startswith("@")


def resolve(value: Json, facts: Facts) -> Json:
    """`value` with every expression in it resolved, at any depth.

    Non-expressions and `@` strings of no known form pass through unchanged. Raises
    ExpressionError when `@steps('k')` names a key not in `facts.declared`.
    """
    # FO runs a trigger pass, then a @steps pass that never rescans what the first one
    # produced; one walk that never rescans a result is the same, in one traversal.
    if isinstance(value, dict):
        return {key: resolve(item, facts) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, facts) for item in value]
    if isinstance(value, str) and is_expression(value):
        ref = _parse_ref(value)
        if ref is not None:
            return _lookup(ref, facts, value)
    return value


def is_trigger_expression(value: Json) -> bool:
    """Whether `value` is one `@triggerBody()...` or `@triggerHeaders()...` form."""
    if not (isinstance(value, str) and is_expression(value)):
        return False
    return isinstance(_parse_ref(value), _Body | _Headers)


def step_references(value: Json) -> set[str]:
    """Keys referenced through `@steps('k')` anywhere inside `value`."""
    if isinstance(value, dict):
        return set().union(*map(step_references, value.values()))
    if isinstance(value, list):
        return set().union(*map(step_references, value))
    ref = _parse_ref(value) if isinstance(value, str) and is_expression(value) else None
    return {ref.key} if isinstance(ref, _Step) else set()


def when_references(text: str) -> set[str]:
    """Keys referenced through `@steps('k')` in a When; empty if it doesn't parse."""
    try:
        node = parse_when(text)
    except ExpressionError:
        return set()
    refs = (_parse_ref(lhs.text) for lhs in when.references(node))
    return {ref.key for ref in refs if isinstance(ref, _Step)}


@functools.lru_cache(maxsize=1024)
def parse_when(text: str) -> WhenNode:
    """The AST of a When clause. Raises ExpressionError on a syntax error.

    An LHS of no known form is refused here too (FO fails it only when evaluated), so
    the validation at start catches it.
    """
    node = when.parse(text)
    for lhs in when.references(node):
        _lhs_ref(lhs.text)
    return node


def evaluate_when(text: str, facts: Facts) -> WhenResult:
    """Evaluate a When clause; never raises: an error is False, its message traced."""
    try:
        node = parse_when(text)
        result, seen = when_evaluation.evaluate(
            node, lambda lhs: _lookup(_lhs_ref(lhs), facts, lhs)
        )
    except ExpressionError as exc:
        trace: dict[str, Json] = {"expression": text, "resolved": str(exc)}
        return WhenResult(result=False, trace={**trace, "result": False})
    resolved = when_evaluation.rewrite(text, node, seen)
    trace = {"expression": text, "resolved": resolved, "result": result}
    return WhenResult(result=result, trace=trace)


def _lhs_ref(lhs: str) -> _Ref:
    ref = _parse_ref(lhs)
    if ref is not None:
        return ref
    if lhs.lstrip()[:7].lower() == "@steps(":
        raise ExpressionError(
            f"Invalid step expression '{lhs}'. "
            "Expected @steps('key').output, .status or .error."
        )
    raise ExpressionError(
        f"Unknown LHS expression '{lhs}'. Expected '@steps(...)', "
        "'@triggerBody(...)', or '@triggerHeaders(...)'."
    )


@functools.lru_cache(maxsize=4096)
def _parse_ref(expression: str) -> _Ref | None:
    """The form of an `@` string, or None: not an expression, a literal string."""
    text = expression.strip()
    head = text[: len(_HEADERS)].lower()
    if head.startswith(_BODY):
        rest = text[len(_BODY) :].strip()
        if not rest:
            return _Body(())
        trail = _strip_lead(rest)
        if trail is None:
            return None
        return _Body(_segments(trail) if trail.strip() else None)
    if head == _HEADERS:
        rest = text[len(_HEADERS) :].strip()
        if not rest:
            return _Headers(None)
        named = _HEADER_NAME.fullmatch(rest)
        return _Headers(named.group(2)) if named else None
    step = _STEP.fullmatch(text)
    if step is None:
        return None
    _, key, field, rest = step.groups()
    rest = rest.strip()
    # Beyond FO: `.outputx` is no form (FO read it as `.output` with the path `x`).
    trail = _strip_lead(rest) if rest[:1] != "[" else rest
    if trail is None:
        return None
    return _Step(key, field.lower(), _segments(trail))


def _strip_lead(trail: str) -> str | None:
    """The path after its one leading `?.` or `.`; None when it starts otherwise."""
    if trail.startswith("?."):
        return trail[2:]
    if trail.startswith("."):
        return trail[1:]
    return None if trail else ""


def _segments(path: str) -> tuple[str, ...]:
    # Beyond FO: `?.` (and `?[`) inside a path is null-safe navigation, as it reads;
    # FO keeps the `?` in the segment (`order?`), which never matches.
    path = path.replace("?.", ".").replace("?[", "[")
    path = path.replace("[", ".").replace("]", "")
    return tuple(part for part in (p.strip() for p in path.split(".")) if part)


def _walk(value: Json, path: tuple[str, ...]) -> Json:
    """The value at `path`, or None where any segment misses."""
    for segment in path:
        if isinstance(value, dict) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and _INDEX.fullmatch(segment):
            index = int(segment)
            if not 0 <= index < len(value):
                return None
            value = value[index]
        else:
            return None
    return value


def _lookup(ref: _Ref, facts: Facts, expression: str) -> Json:
    match ref:
        case _Body(path):
            return None if path is None else _walk(facts.body, path)
        case _Headers(name):
            if name is not None:
                return trigger_headers.find(facts.headers, name)
            headers: dict[str, Json] = dict(facts.headers)
            return headers or None
        case _Step(key, field, path):
            if key not in facts.declared:
                raise ExpressionError(
                    f"Step '{key}' is not defined in the flow manifest. "
                    f"Expression: '{expression.strip()}'"
                )
            step = facts.steps.get(key)
            if step is None:
                return None
            if field == "output":
                return _walk(step.output, path)
            return step.status if field == "status" else step.error
        case _:
            assert_never(ref)
