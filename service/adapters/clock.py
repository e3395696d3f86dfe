"""The clocks behind the `Clock` port: the system's, and a frozen one for tests.

`SystemClock` is the one caller of `datetime.now` in the service; everything else takes
`now` as an argument or asks a `Clock`.
"""

from datetime import UTC, datetime, timedelta


class SystemClock:
    """The real time, timezone-aware UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that moves only when told to: `advance(delta)` or `set(at)`."""

    def __init__(self, start: datetime | None = None) -> None:
        """Stop time at `start` (timezone-aware), or at the current instant if None."""
        self._now = SystemClock().now() if start is None else _utc(start)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        """Move time on by `delta` (a negative delta moves it back)."""
        self._now += delta

    def set(self, at: datetime) -> None:
        """Jump to `at` (timezone-aware)."""
        self._now = _utc(at)


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a clock instant must be timezone-aware")
    return at.astimezone(UTC)
