"""What `flowctl` shows of dead letters and replays, as text and as JSON.

Pure functions of the letters read from the dead-letter queue.
"""

import base64
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from service import console
from service.views import SHORT, record_json, section

if TYPE_CHECKING:
    from service.adapters.amqp.answers import ReplayOutcome
    from service.adapters.amqp.deadletters import DeadLetter


def letters_text(letters: Sequence["DeadLetter"], total: int, *, queue: str) -> str:
    if not letters:
        return f"no dead letters in {queue}"
    rows = [
        [
            letter.letter_id,
            letter.type or "",
            letter.reason or "",
            console.shorten(letter.detail, SHORT),
            letter.routing_key or "",
        ]
        for letter in letters
    ]
    body = console.table(
        ["MESSAGE ID", "TYPE", "REASON", "DETAIL", "ROUTING KEY"],
        rows,
        styles={2: _reason},
    )
    return (
        f"{body}\n{console.dim(f'{len(letters)} of {total} dead letters in {queue}')}"
    )


def letter_text(letter: "DeadLetter") -> str:
    pairs = [
        ("message id", console.bold(letter.letter_id)),
        ("type", letter.type or ""),
        ("reason", _reason(letter.reason or "")),
        ("detail", letter.detail or ""),
        ("routing key", letter.routing_key or ""),
        ("exchange", "(default)" if letter.exchange == "" else letter.exchange or ""),
    ]
    return "\n\n".join(
        [
            console.fields(pairs),
            section("Headers", _mapping(letter.headers)),
            section("Properties", _mapping(letter.properties)),
            section(f"Body ({len(letter.body)} bytes)", _body_text(letter.body)),
        ]
    )


def letters_json(
    letters: Sequence["DeadLetter"], total: int, *, queue: str
) -> dict[str, Any]:
    return {
        "queue": queue,
        "total": total,
        "items": [letter_json(one) for one in letters],
    }


def letter_json(letter: "DeadLetter") -> dict[str, Any]:
    data = record_json(letter)
    data.pop("body")
    try:
        data["body"] = letter.body.decode("utf-8")
        data["body_encoding"] = "utf-8"
    except UnicodeDecodeError:
        data["body"] = base64.b64encode(letter.body).decode("ascii")
        data["body_encoding"] = "base64"
    return data


def replayed_text(outcomes: Sequence["ReplayOutcome"]) -> str:
    """One line per replayed letter, saying what became of it; then the counts."""
    if not outcomes:
        return "no dead letters match"
    lines = []
    for one in outcomes:
        letter = one.letter
        route = f"{letter.type or '?'} -> {letter.routing_key or '?'}"
        word = _reason(one.result) if one.went_wrong else one.result
        detail = f": {' '.join(one.detail.split())}" if one.detail else ""
        lines.append(f"{word} {letter.letter_id} ({route}){detail}")
    counts: dict[str, int] = {}
    for one in outcomes:
        counts[one.result] = counts.get(one.result, 0) + 1
    lines.append(console.dim(", ".join(f"{n} {word}" for word, n in counts.items())))
    return "\n".join(lines)


def _reason(text: str) -> str:
    return console.status(text, like="failed")


def _mapping(values: Mapping[str, object]) -> str:
    if not values:
        return "(none)"
    return console.fields(
        (name, value if isinstance(value, str) else console.compact_json(value))
        for name, value in values.items()
    )


def _body_text(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"(not UTF-8) {body[:64].hex(' ')}{' …' if len(body) > 64 else ''}"
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text or "(empty)"
