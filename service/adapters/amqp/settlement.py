"""`Settlement`: one delivery settled exactly once, at its end or early.

A delivery is settled when its handling ends (ack, requeue, reject), except a long
step's: that one is acknowledged while its handler still runs (`let_go`, called by the
step's heartbeat once its claim is durable), so the broker's consumer_timeout never
closes the channel under it. Its row and lease carry the step from then on, and the
end of the handling settles nothing more.
"""

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from structlog.typing import FilteringBoundLogger

from service.adapters.amqp.outcomes import Outcome

log: FilteringBoundLogger = structlog.get_logger()

_ACKS = frozenset({Outcome.ACKED, Outcome.REFUSED, Outcome.DEAD_LETTERED})


class Settlement:
    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message
        self.released = False
        """Acknowledged before its handling ended (`let_go`)."""

    async def let_go(self) -> None:
        """Acknowledge now; nothing is settled at the end. Safe to call again."""
        if self.released:
            return
        try:
            await self._message.ack()
        except CONNECTION_EXCEPTIONS:
            # The channel closed first: the broker delivers the message again, and
            # the step's lease keeps the new delivery from running it twice.
            log.warning("delivery_lost", detail="channel closed before the early ack")
            return
        self.released = True

    async def settle(self, outcome: Outcome) -> Outcome:
        """Settle as `outcome` says (once); the outcome that took effect."""
        if self.released:
            if outcome not in _ACKS:
                log.info(
                    "delivery_released_before",
                    outcome=outcome.value,
                    detail="acknowledged early: the step's lease and the reconciler "
                    "carry it",
                )
            return Outcome.RELEASED
        try:
            if outcome is Outcome.REQUEUED:
                await self._message.nack(requeue=True)
                log.info("message_requeued")
            elif outcome is Outcome.REJECTED:
                await self._message.reject(requeue=False)
            elif outcome is not Outcome.LOST:
                await self._message.ack()
        except CONNECTION_EXCEPTIONS:
            outcome = Outcome.LOST
        if outcome is Outcome.LOST:
            log.warning("delivery_lost", detail="channel closed; the broker redelivers")
        return outcome
