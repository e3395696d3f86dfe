"""Humane text for the dashboard's templates: times, durations, numbers, JSON.

Pure functions, registered as Jinja filters by `server`. Instants are shown relative
("3 min ago") with the UTC time on hover; `app.js` keeps the relative text fresh.
JSON is masked (`masking`) before it is shown, and long values are cut.
"""

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Final

from service.dashboard.masking import mask_json
from service.engine.model import Json

LONGEST: Final = 20_000
"""Characters of one JSON value shown on a page; the rest is cut, with a note."""
_UNITS: Final = (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))


def utc(at: datetime | None) -> str:
    """`2026-11-26 08:25:03 UTC`, or "" for no instant."""
    if at is None:
        return ""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).isoformat()


def ago(at: datetime | None, now: datetime) -> str:
    """`12 s ago`, `in 5 min`, `just now`."""
    if at is None:
        return "—"
    seconds = (now - at).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    text = _coarse(abs(seconds))
    return f"{text} ago" if seconds > 0 else f"in {text}"


def _coarse(seconds: float) -> str:
    for unit, size in _UNITS:
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return "1 s"


def duration(
    start: datetime | None, end: datetime | None, now: datetime | None = None
) -> str:
    """How long from `start` to `end` (or to `now` while running): `4 min 05 s`."""
    if start is None:
        return "—"
    stop = end or now
    if stop is None:
        return "—"
    return span(stop - start)


def span(delta: timedelta) -> str:
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    for (unit, size), (small, small_size) in itertools.pairwise(_UNITS):
        if whole >= size:
            rest = (whole % size) // small_size
            return f"{whole // size} {unit} {rest:02d} {small}"
    return f"{whole} s"


def number(value: int) -> str:
    """`100,000`."""
    return f"{value:,}"


def pretty(value: Json) -> str:
    """Masked, indented JSON, cut past LONGEST characters."""
    text = json.dumps(mask_json(value), indent=2, ensure_ascii=False)
    return _cut(text)


def compact(value: Json, limit: int = 80) -> str:
    """Masked JSON on one line, at most `limit` characters."""
    text = json.dumps(mask_json(value), ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short(text: str | None, limit: int = 80) -> str:
    """The first line of `text`, at most `limit` characters."""
    if not text:
        return ""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def headline(error: str | None, limit: int = 120) -> str:
    """The line of an error that says what happened: a traceback's last line."""
    if not error:
        return ""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    chosen = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return short(chosen.strip(), limit)


def _cut(text: str) -> str:
    if len(text) <= LONGEST:
        return text
    return f"{text[:LONGEST]}\n… ({len(text) - LONGEST:,} more characters)"


def status_class(status: object) -> str:
    """The CSS class of a status: `st-succeeded`, `st-timedout`, `st-waiting`."""
    return "st-" + str(status).lower().replace(" ", "-")
