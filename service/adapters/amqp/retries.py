"""In-place retries of a delivery after a transient failure: backoff, never a requeue.

A MongoDB or broker outage is retried while the delivery stays unacked, so it neither
spins nor counts against the queue's delivery limit; shutdown or a closed channel ends
the retries with the outcome that gives the delivery back. The loop is tenacity's; the
backoff (exponential, capped, jittered down to half of it) and the two ends are ours.
"""

import asyncio
import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, TypeVar

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from structlog.typing import FilteringBoundLogger
from tenacity import AsyncRetrying, RetryCallState, RetryError, retry_if_exception

from service.adapters.amqp.outcomes import Observer, Outcome
from service.errors import FlowError

log: FilteringBoundLogger = structlog.get_logger()

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between in-place retries: `first`, times `factor` each retry, to `cap`."""

    first: timedelta = timedelta(seconds=0.2)
    cap: timedelta = timedelta(seconds=15)
    factor: float = 2.0

    def delay(self, attempt: int, *, jitter: float) -> float:
        """Seconds before retry `attempt` (from 1), scaled by `jitter` in [0.5, 1]."""
        ceiling = self.cap.total_seconds()
        raw = self.first.total_seconds() * self.factor ** min(attempt - 1, 64)
        return min(raw, ceiling) * jitter


DEFAULT_BACKOFF: Final = Backoff()


class Retrier:
    """Repeats an attempt with `backoff` after each retryable error, until `stop`."""

    def __init__(self, backoff: Backoff, observer: Observer) -> None:
        self.backoff = backoff
        self.observer = observer
        self.stop = asyncio.Event()
        """Set when the consumer shuts down; the consumer replaces it at start."""
        self._random = random.Random()  # noqa: S311 - jitter, not cryptography

    async def __call__(
        self,
        message: AbstractIncomingMessage,
        kind: str,
        attempt: Callable[[int], Awaitable[T]],
    ) -> T | Outcome:
        """`attempt(tries so far)`, repeated with backoff after each retryable error.

        Gives up with REQUEUED once `stop` is set, or LOST once the delivery's channel
        closed (the broker delivers it again).

        Raises:
            FlowError: a non-retryable one, and any other exception, at once.
        """
        try:  # the common case, without the retry machinery (~30 µs a delivery)
            return await attempt(0)
        except Exception as error:
            if not _transient(error):
                raise
            failed: list[BaseException] = [error]
        tries = itertools.count(1)

        async def once() -> T:  # a coroutine function: tenacity awaits only those
            if failed:  # tenacity meets the first failure as its own first try
                raise failed.pop()
            return await attempt(next(tries))

        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            stop=lambda _: not alive(message),
            wait=lambda state: self._delay(state.attempt_number),
            sleep=self._sleep,
            before_sleep=lambda state: self._report(kind, state),
        )
        try:
            return await retrying(once)
        except RetryError:
            return Outcome.LOST
        except _ShutdownError:
            return Outcome.REQUEUED

    def deferred(self, kind: str, error: str, tries: int) -> float:
        """Report retry `tries` of a delivery of `kind`; the seconds to wait first."""
        delay = self._delay(tries)
        self._deferred(kind, error, tries, delay)
        return delay

    def _delay(self, tries: int) -> float:
        return self.backoff.delay(tries, jitter=self._random.uniform(0.5, 1))

    def _report(self, kind: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        self._deferred(kind, str(error), state.attempt_number, delay)

    def _deferred(self, kind: str, error: str, tries: int, delay: float) -> None:
        log.warning("message_deferred", error=error, tries=tries, delay_s=delay)
        self.observer.deferred(kind)

    async def _sleep(self, seconds: float) -> None:
        if await self.stopped_within(seconds):
            raise _ShutdownError

    async def stopped_within(self, seconds: float) -> bool:
        """Wait up to `seconds` for `stop`; whether it is set."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stop.wait()
        return self.stop.is_set()


class _ShutdownError(Exception):
    """Shutdown began during a backoff: the delivery is given back."""


def _transient(error: BaseException) -> bool:
    return isinstance(error, FlowError) and error.retryable


def alive(message: AbstractIncomingMessage) -> bool:
    """Whether the delivery can still be settled (its channel is open)."""
    try:
        return not message.channel.is_closed
    except CONNECTION_EXCEPTIONS:  # ChannelInvalidStateError: closed
        return False
