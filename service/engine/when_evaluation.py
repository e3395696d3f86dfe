"""A parsed When condition evaluated, and rewritten with the values it saw.

Knows nothing of triggers or steps: an LHS (`@...`) is resolved through a callback,
once each. Operands are normalised (numbers as Decimal, objects and arrays as their
JSON text) and compared by the grammar's rules; a type mismatch is an ExpressionError.
"""

import json
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import assert_never

from service.engine.model import Json
from service.engine.when import (
    And,
    Comparison,
    Constant,
    Not,
    Or,
    Reference,
    Value,
    WhenNode,
    references,
)
from service.errors import ExpressionError


def evaluate(
    node: WhenNode, lookup: Callable[[str], Json]
) -> tuple[bool, dict[str, Value]]:
    """The result, and each LHS resolved (once each, in order); ExpressionError."""
    evaluation = _Evaluation(lookup)
    result = evaluation.value(node)
    if not isinstance(result, bool):
        raise ExpressionError("Expression must evaluate to a boolean.")
    return result, evaluation.seen


class _Evaluation:
    def __init__(self, lookup: Callable[[str], Json]) -> None:
        self._lookup = lookup
        self.seen: dict[str, Value] = {}

    def value(self, node: WhenNode) -> Value:
        match node:
            case Constant(value):
                return value
            case Reference(text):
                if text not in self.seen:
                    self.seen[text] = normalise(self._lookup(text))
                return self.seen[text]
            case Not(operand):
                return not self._bool(operand, "!")
            case And(operands):
                # all() and any() stop early: the right side is never resolved
                return all(self._bool(operand, "&&") for operand in operands)
            case Or(operands):
                return any(self._bool(operand, "||") for operand in operands)
            case Comparison(operator, left, right):
                return compare(operator, self.value(left), self.value(right))
            case _:
                assert_never(node)

    def _bool(self, node: WhenNode, operator: str) -> bool:
        value = self.value(node)
        if not isinstance(value, bool):
            raise ExpressionError(
                f"Operator '{operator}' requires boolean operands; got {_type(value)}."
            )
        return value


def normalise(value: Json) -> Value:
    """A JSON value as an operand: numbers as Decimal, objects and arrays as JSON."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if math.isnan(value):
            raise ExpressionError("NaN cannot be compared.")
        return Decimal(repr(value))
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (RecursionError, ValueError) as exc:
        raise ExpressionError(f"Value cannot be compared: {exc}") from None


def compare(operator: str, left: Value, right: Value) -> bool:
    if left is None or right is None:
        both = left is None and right is None
        if operator in ("==", "!="):
            return both == (operator == "==")
        raise ExpressionError(f"Cannot apply operator '{operator}' to null operand.")
    if isinstance(left, bool) and isinstance(right, bool):
        if operator in ("==", "!="):
            return (left == right) == (operator == "==")
        raise ExpressionError(f"Operator '{operator}' is not defined for booleans.")
    if isinstance(left, Decimal) and isinstance(right, Decimal):
        return _holds(operator, (left > right) - (left < right))
    if isinstance(left, str) and isinstance(right, str):
        # code-point order; FO compares UTF-16 code units (differs only above U+FFFF)
        return _holds(operator, (left > right) - (left < right))
    raise ExpressionError(
        f"Cannot compare values of types '{_type(left)}' and '{_type(right)}' "
        f"with operator '{operator}'."
    )


def _holds(operator: str, sign: int) -> bool:
    return {
        "==": sign == 0,
        "!=": sign != 0,
        ">": sign > 0,
        "<": sign < 0,
        ">=": sign >= 0,
        "<=": sign <= 0,
    }[operator]


def _type(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, Decimal) else "string"


def format_value(value: Value) -> str:
    """An operand as the trace shows it: 'text', 500, true, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    return f"'{value}'"


def rewrite(text: str, node: WhenNode, seen: Mapping[str, Value]) -> str:
    """`text` with each resolved LHS replaced, at its first occurrence, by its value."""
    first: dict[str, int] = {}
    for reference in references(node):
        first.setdefault(reference.text, reference.position)
    parts, done = [], 0
    for lhs, position in sorted(first.items(), key=lambda item: item[1]):
        if lhs in seen:
            parts += [text[done:position], format_value(seen[lhs])]
            done = position + len(lhs)
    return "".join([*parts, text[done:]])
