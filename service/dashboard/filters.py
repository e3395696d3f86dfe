"""The runs list's query string: filters and keyset cursors, parsed and written back.

`?flow=<id>&status=Failed&since=2h&until=2026-11-26T08:00&trigger=manual&q=abc`, and
`before=`/`after=` cursors (`<epoch ms>:<run id>`). Every value is hostile input: what
doesn't parse is reported and ignored, never an error page.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import urlencode

from service.adapters.mongo.browse import Cursor, RunFilter
from service.engine.model import RunStatus

_AGE: Final = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
FIELDS: Final = ("flow", "status", "since", "until", "trigger", "q")
LONGEST: Final = 200
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Parsed:
    where: RunFilter
    values: dict[str, str]
    """The fields as given (for the form and the links), empty ones left out."""
    problems: list[str] = field(default_factory=list)
    before: Cursor | None = None
    after: Cursor | None = None

    def query(self, **extra: str) -> str:
        """The filter's query string, plus `extra` (a cursor)."""
        return urlencode({**self.values, **extra})


def parse(params: Mapping[str, str], *, now: datetime) -> Parsed:
    values = {
        name: params[name].strip()[:LONGEST]
        for name in FIELDS
        if params.get(name, "").strip()
    }
    problems: list[str] = []
    status = _status(values.get("status"), problems)
    since = instant(values.get("since"), now=now, problems=problems, what="since")
    until = instant(values.get("until"), now=now, problems=problems, what="until")
    where = RunFilter(
        flow=values.get("flow"),
        status=status,
        since=since,
        until=until,
        trigger=values.get("trigger"),
        text=values.get("q"),
    )
    return Parsed(
        where,
        values,
        problems,
        before=cursor(params.get("before")),
        after=cursor(params.get("after")),
    )


def _status(text: str | None, problems: list[str]) -> RunStatus | None:
    if text is None:
        return None
    for status in RunStatus:
        if status.value.lower() == text.lower():
            return status
    problems.append("status: not a run status")
    return None


def instant(
    text: str | None, *, now: datetime, problems: list[str], what: str
) -> datetime | None:
    """An ISO 8601 instant (UTC unless it says otherwise) or an age (`15m`, `2h`)."""
    if text is None:
        return None
    if found := _AGE.match(text.lower()):
        amount, unit = found.groups()
        return now - timedelta(seconds=float(amount) * _UNIT[unit])
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        problems.append(f"{what}: neither an ISO 8601 time nor an age like 2h")
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def cursor(text: str | None) -> Cursor | None:
    if not text:
        return None
    millis, sep, run_id = text.partition(":")
    if not sep or not millis.isdigit() or not run_id or len(text) > LONGEST:
        return None
    # Exact milliseconds (BSON's precision): a float would be off by a microsecond.
    return Cursor(EPOCH + timedelta(milliseconds=int(millis)), run_id)


def cursor_text(found: Cursor) -> str:
    millis = (found.started_at - EPOCH) // timedelta(milliseconds=1)
    return f"{millis}:{found.run_id}"
