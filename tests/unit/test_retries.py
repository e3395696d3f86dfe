"""The in-place retry loop of a delivery: its tries, its reports and its two ends."""

import asyncio
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage

from service.adapters.amqp.outcomes import Outcome, Tally
from service.adapters.amqp.retries import Backoff, Retrier
from service.errors import UnavailableError, UnknownReferenceError

QUICK = Backoff(first=timedelta(milliseconds=1), cap=timedelta(milliseconds=5))


def a_delivery(*, closed: bool = False) -> AbstractIncomingMessage:
    return cast(
        AbstractIncomingMessage,
        SimpleNamespace(channel=SimpleNamespace(is_closed=closed)),
    )


class Script:
    """An attempt that fails as told, try by try, then returns "done"."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.tries: list[int] = []

    async def __call__(self, tries: int) -> str:
        self.tries.append(tries)
        if self.failures:
            raise self.failures.pop(0)
        return "done"


async def test_a_first_try_that_works_is_the_only_one():
    tally = Tally()
    attempt = Script()

    result = await Retrier(QUICK, tally)(a_delivery(), "run_step", attempt)

    assert result == "done"
    assert attempt.tries == [0]
    assert tally.deferrals == {}


async def test_transient_failures_are_retried_and_reported_with_their_tries():
    tally = Tally()
    attempt = Script(UnavailableError("down"), UnavailableError("still down"))

    result = await Retrier(QUICK, tally)(a_delivery(), "run_step", attempt)

    assert result == "done"
    assert attempt.tries == [0, 1, 2]
    assert tally.deferrals == {"run_step": 2}


async def test_an_error_that_is_not_transient_is_raised_at_once():
    attempt = Script(UnknownReferenceError("run", "r1"))

    with pytest.raises(UnknownReferenceError):
        await Retrier(QUICK, Tally())(a_delivery(), "run_step", attempt)

    assert attempt.tries == [0]


async def test_a_shutdown_during_the_backoff_gives_the_delivery_back():
    retrier = Retrier(Backoff(first=timedelta(seconds=30)), Tally())
    attempt = Script(UnavailableError("down"))

    async def stop_soon() -> None:
        await asyncio.sleep(0)
        retrier.stop.set()

    stopping = asyncio.create_task(stop_soon())
    async with asyncio.timeout(5):
        result: Any = await retrier(a_delivery(), "run_step", attempt)
    await stopping

    assert result is Outcome.REQUEUED
    assert attempt.tries == [0]


async def test_a_closed_channel_ends_the_retries_as_lost():
    attempt = Script(UnavailableError("down"))

    result = await Retrier(QUICK, Tally())(a_delivery(closed=True), "run_step", attempt)

    assert result is Outcome.LOST
    assert attempt.tries == [0]
