from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.engine.cron import catch_up, check_cron, next_fire


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NEXT_FIRE = [  # expression, after, expected
    ("* * * * *", "2024-01-01T12:00:00", "2024-01-01T12:01:00"),
    ("* * * * *", "2024-01-01T12:00:59.999999", "2024-01-01T12:01:00"),
    ("*/15 * * * *", "2024-01-01T12:07:00", "2024-01-01T12:15:00"),
    ("0 2 * * *", "2024-01-01T02:00:00", "2024-01-02T02:00:00"),
    ("0 2 * * *", "2024-01-01T01:59:59", "2024-01-01T02:00:00"),
    ("0 0 1 * *", "2024-01-31T23:00:00", "2024-02-01T00:00:00"),
    ("0 9 * * 1", "2024-01-01T09:00:00", "2024-01-08T09:00:00"),
    ("0 0 29 2 *", "2024-03-01T00:00:00", "2028-02-29T00:00:00"),
    ("*/5 * * * * *", "2024-01-01T12:00:00", "2024-01-01T12:00:05"),
    ("*/5 * * * * *", "2024-01-01T12:00:04.5", "2024-01-01T12:00:05"),
    ("*/5 * * * * *", "2024-01-01T12:00:05.5", "2024-01-01T12:00:10"),
    ("30 0 12 * * *", "2024-01-01T12:00:00", "2024-01-01T12:00:30"),
    ("30 0 12 * * *", "2024-01-01T12:00:30", "2024-01-02T12:00:30"),
    ("0 */2 * * * *", "2024-01-01T12:01:00", "2024-01-01T12:02:00"),
    ("  0   2 * *  *  ", "2024-01-01T00:00:00", "2024-01-01T02:00:00"),
]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    NEXT_FIRE,
    ids=[f"{e.strip()}|{a}" for e, a, _ in NEXT_FIRE],
)
def test_next_fire_is_strictly_after_in_utc(expression, after, expected):
    fire = next_fire(expression, after=at(after))

    assert fire == at(expected)
    assert fire.utcoffset() == timedelta(0)


def test_six_fields_put_seconds_first_not_last():
    after = at("2024-01-01T12:00:00")

    fire = next_fire("10 * * * * *", after=after)

    assert fire == at("2024-01-01T12:00:10")


def test_an_instant_in_another_zone_is_read_as_that_instant():
    paris_winter = timezone(timedelta(hours=1))
    after = datetime(2024, 1, 1, 3, 30, tzinfo=paris_winter)  # 02:30 UTC

    fire = next_fire("0 * * * *", after=after)

    assert fire == at("2024-01-01T03:00:00")
    assert fire.tzinfo == UTC


def test_a_naive_after_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire("* * * * *", after=datetime(2024, 1, 1))  # noqa: DTZ001 - the point


CATCH_UP = [  # expression, scheduled_for, now, expected
    ("0 * * * *", "2024-01-01T12:00:00", "2024-01-01T12:00:02", "2024-01-01T13:00:00"),
    ("0 * * * *", "2024-01-01T12:00:00", "2024-01-01T12:59:59", "2024-01-01T13:00:00"),
    ("0 * * * *", "2024-01-01T12:00:00", "2024-01-01T13:00:00", "2024-01-01T14:00:00"),
    ("0 * * * *", "2024-01-01T12:00:00", "2024-01-01T17:20:00", "2024-01-01T18:00:00"),
    (
        "*/5 * * * * *",
        "2024-01-01T12:00:00",
        "2024-01-01T12:00:01",
        "2024-01-01T12:00:05",
    ),
    (
        "*/5 * * * * *",
        "2024-01-01T12:00:00",
        "2024-01-01T12:00:31",
        "2024-01-01T12:00:35",
    ),
    ("0 2 * * *", "2024-01-01T02:00:00", "2024-01-09T08:00:00", "2024-01-10T02:00:00"),
]


@pytest.mark.parametrize(
    ("expression", "scheduled_for", "now", "expected"),
    CATCH_UP,
    ids=[
        "on-time",
        "late-within-period",
        "late-exactly-one-period",
        "hours-late-skips-missed-fires",
        "seconds-on-time",
        "seconds-late",
        "days-late",
    ],
)
def test_catch_up_fires_at_most_once_then_continues_from_now(
    expression, scheduled_for, now, expected
):
    fire = catch_up(expression, scheduled_for=at(scheduled_for), now=at(now))

    assert fire == at(expected)
    assert fire > at(now)


def test_catch_up_refuses_a_naive_now():
    with pytest.raises(ValueError, match="timezone-aware"):
        catch_up(
            "* * * * *",
            scheduled_for=at("2024-01-01T00:00:00"),
            now=datetime(2024, 1, 1),  # noqa: DTZ001 - the point
        )


VALID = ["* * * * *", "0 2 * * *", "*/5 * * * * *", "0 0 L * *", "0 9 * * MON-FRI"]


@pytest.mark.parametrize("expression", VALID, ids=VALID)
def test_check_cron_accepts_five_and_six_fields(expression):
    check_cron(expression)


INVALID = [
    ("", "got 0"),
    ("   ", "got 0"),
    ("* * * *", "got 4"),
    ("0 0 1 1 * 2099", "out of range"),
    ("0 0 0 1 1 * 2099", "got 7"),
    ("@daily", "got 1"),
    ("61 * * * *", "out of range"),
    ("a b c d e", "is not acceptable"),
    ("*/0 * * * *", "step '0'"),
    ("0 0 30 2 *", "failed to find next date"),
    ("H * * * *", "hash_id"),
]


@pytest.mark.parametrize(
    ("expression", "message"), INVALID, ids=[e or "empty" for e, _ in INVALID]
)
def test_check_cron_refuses_with_a_clear_message(expression, message):
    with pytest.raises(ValueError, match="invalid cron expression") as info:
        check_cron(expression)

    assert message in str(info.value)


def test_next_fire_refuses_an_invalid_expression_too():
    with pytest.raises(ValueError, match="got 7"):
        next_fire("* * * * * * *", after=at("2024-01-01T00:00:00"))
