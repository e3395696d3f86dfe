"""The When grammar (SPEC §3.6): lexer, recursive-descent parser and AST.

Evaluating a parsed condition is `when_evaluation`'s. Pure and bounded: no eval, no
I/O; hostile input gets an ExpressionError, not a crash.
"""

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias, assert_never

from service.errors import ExpressionError

MAX_LENGTH = 4096
MAX_DEPTH = 64
"""Parentheses and `!` nested deeper than this are refused: recursion stays bounded."""

Value: TypeAlias = Decimal | str | bool | None
"""A normalised operand: numbers are Decimal, objects and arrays their JSON text."""

COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
# Two-character operators first, so `!=` never lexes as `!` then `=`.
_OPERATORS = ("==", "!=", ">=", "<=", "&&", "||", ">", "<", "!", "(", ")")
_DIGITS = frozenset("0123456789")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]*)?")
_KEYWORDS: Mapping[str, Value] = {"true": True, "false": False, "null": None}
_LHS_STOP = frozenset("=!<>&|")
_CLOSERS = frozenset(")]")


@dataclass(frozen=True, slots=True)
class Constant:
    value: Value


@dataclass(frozen=True, slots=True)
class Reference:
    """An LHS such as `@steps('x').output.a`, at `position` in the expression."""

    text: str
    position: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: "WhenNode"


@dataclass(frozen=True, slots=True)
class And:
    # n-ary, so a long `a && b && ...` chain is a loop, not a deep tree
    operands: tuple["WhenNode", ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple["WhenNode", ...]


@dataclass(frozen=True, slots=True)
class Comparison:
    operator: str
    left: "WhenNode"
    right: "WhenNode"


WhenNode: TypeAlias = Constant | Reference | Not | And | Or | Comparison


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    """An operator's own text, or "value", "lhs" or "end"."""
    start: int
    end: int
    value: Value = None
    text: str = ""


def parse(text: str) -> WhenNode:
    """The AST of a When expression; ExpressionError on any syntax error."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"Expression is longer than {MAX_LENGTH} characters.")
    return _Parser(text, _tokenize(text)).parse()


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
            continue
        operator = next((op for op in _OPERATORS if text.startswith(op, i)), None)
        if operator is not None:
            token = _Token(operator, i, i + len(operator), text=operator)
        elif char in "'\"":
            token = _string(text, i)
        elif char == "@":
            end = _lhs_end(text, i)
            token = _Token("lhs", i, end, text=text[i:end])
        elif char in _DIGITS or (char == "-" and text[i + 1 : i + 2] in _DIGITS):
            token = _number(text, i)
        elif char.isalpha():
            token = _word(text, i)
        else:
            raise ExpressionError(
                f"Unexpected character '{char}' at position {i} in '{text}'."
            )
        tokens.append(token)
        i = token.end
    tokens.append(_Token("end", len(text), len(text), text="end of expression"))
    return tokens


def _string(text: str, start: int) -> _Token:
    quote, i = text[start], start + 1
    chars: list[str] = []
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            chars.append(text[i + 1])  # a backslash makes the next character literal
            i += 2
        elif text[i] == quote:
            return _Token("value", start, i + 1, "".join(chars), text[start : i + 1])
        else:
            chars.append(text[i])
            i += 1
    raise ExpressionError(f"Unterminated string at position {start} in '{text}'.")


def _number(text: str, start: int) -> _Token:
    end = start + 1
    while end < len(text) and (text[end] in _DIGITS or text[end] == "."):
        end += 1
    literal = text[start:end]
    # Our decision: `1.2.3` is an ExpressionError (FO raises a non-expression error).
    if not _NUMBER.fullmatch(literal):
        raise ExpressionError(
            f"Malformed number '{literal}' at position {start} in '{text}'."
        )
    return _Token("value", start, end, Decimal(literal), literal)


def _word(text: str, start: int) -> _Token:
    end = start
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    word = text[start:end]
    if word.lower() not in _KEYWORDS:
        raise ExpressionError(
            f"Unexpected identifier '{word}' at position {start}. Only 'true', "
            "'false', 'null' literals are allowed; reference values via "
            "@steps()/@triggerBody()/@triggerHeaders()."
        )
    return _Token("value", start, end, _KEYWORDS[word.lower()], word)


def _lhs_end(text: str, start: int) -> int:
    """Where an LHS ends: top-level space or operator, or an unmatched `)` or `]`."""
    opened: list[str] = []
    i = start
    while i < len(text):
        char = text[i]
        if char in "([":
            opened.append(char)
        elif char in _CLOSERS:
            if not opened:
                break
            opened.pop()
        elif opened and char in "'\"":
            # Beyond FO: a quoted name inside brackets may hold `)` or `]`.
            close = text.find(char, i + 1)
            i = len(text) if close < 0 else close + 1
            continue
        elif not opened and (char.isspace() or char in _LHS_STOP):
            break
        i += 1
    return i


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self._text = text
        self._tokens = tokens
        self._next = 0
        self._depth = 0

    def parse(self) -> WhenNode:
        node = self._or()
        self._expect("end")
        return node

    def _peek(self) -> _Token:
        return self._tokens[self._next]

    def _take(self) -> _Token:
        token = self._tokens[self._next]
        self._next += 1
        return token

    def _expect(self, kind: str) -> None:
        token = self._take()
        if token.kind != kind:
            raise self._unexpected(token)

    def _unexpected(self, token: _Token) -> ExpressionError:
        return ExpressionError(
            f"Unexpected token '{token.text}' at position {token.start} "
            f"in '{self._text}'."
        )

    def _enter(self, levels: int = 1) -> None:
        self._depth += levels
        if self._depth > MAX_DEPTH:
            raise ExpressionError(f"Expression is nested deeper than {MAX_DEPTH}.")

    def _or(self) -> WhenNode:
        operands = [self._and()]
        while self._peek().kind == "||":
            self._take()
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def _and(self) -> WhenNode:
        operands = [self._not()]
        while self._peek().kind == "&&":
            self._take()
            operands.append(self._not())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def _not(self) -> WhenNode:
        bangs = 0
        while self._peek().kind == "!":
            self._take()
            bangs += 1
        self._enter(bangs)
        node = self._comparison()
        self._depth -= bangs
        for _ in range(bangs):
            node = Not(node)
        return node

    def _comparison(self) -> WhenNode:
        # At most one comparison: `a == b == c` fails on the second `==` in parse().
        left = self._primary()
        if self._peek().kind not in COMPARISONS:
            return left
        operator = self._take().kind
        return Comparison(operator, left, self._primary())

    def _primary(self) -> WhenNode:
        token = self._take()
        if token.kind == "value":
            return Constant(token.value)
        if token.kind == "lhs":
            return Reference(token.text, token.start)
        if token.kind != "(":
            raise self._unexpected(token)
        self._enter()
        node = self._or()
        self._expect(")")
        self._depth -= 1
        return node


def references(node: WhenNode) -> Iterator[Reference]:
    """Every LHS of the expression, in textual order."""
    match node:
        case Constant():
            pass
        case Reference():
            yield node
        case Not(operand):
            yield from references(operand)
        case And(operands) | Or(operands):
            for operand in operands:
                yield from references(operand)
        case Comparison(_, left, right):
            yield from references(left)
            yield from references(right)
        case _:
            assert_never(node)
