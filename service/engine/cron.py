"""Cron schedules: the next fire, the catch-up rule and the check at start, in UTC.

The only importer of croniter. Five fields, or six with seconds FIRST (FO's format).
Pure: `after` and `now` are parameters; nothing here reads a clock.
"""

from datetime import UTC, datetime

from croniter import CroniterError, croniter

_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
"""A fixed base for the check: an expression that never fires fails from here too."""


def next_fire(expression: str, *, after: datetime) -> datetime:
    """First instant strictly after `after`, in UTC; six fields put seconds first.

    Raises:
        ValueError: `after` is naive, or the expression is invalid or never fires.
    """
    if after.tzinfo is None:
        raise ValueError("`after` must be timezone-aware")
    fields = _field_count(expression)
    try:
        schedule = croniter(
            expression, after.astimezone(UTC), second_at_beginning=fields == 6
        )
        fire: datetime = schedule.get_next(datetime)
    except (CroniterError, ValueError) as exc:
        raise ValueError(f"invalid cron expression '{expression}': {exc}") from exc
    return fire.astimezone(UTC)


def check_cron(expression: str) -> None:
    """Raise ValueError with a readable message unless `expression` is a usable cron."""
    next_fire(expression, after=_ORIGIN)


def catch_up(expression: str, *, scheduled_for: datetime, now: datetime) -> datetime:
    """The fire after the tick `scheduled_for`, firing at `now` (SPEC §9 bug 10).

    Normally the next fire after `scheduled_for`, so a slow consumer does not drift. If
    that instant has passed too, the schedule continues from `now`: a late tick yields
    one catch-up run, never a burst of them.
    """
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware")
    fire = next_fire(expression, after=scheduled_for)
    if fire <= now:
        return next_fire(expression, after=now)
    return fire


def _field_count(expression: str) -> int:
    # croniter also takes 7 fields (a year) and macros (@daily); FO's format does not.
    fields = len(expression.split())
    if fields not in (5, 6):
        raise ValueError(
            f"invalid cron expression '{expression}': expected 5 fields, or 6 with "
            f"seconds first, got {fields}"
        )
    return fields
