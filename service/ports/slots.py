"""`SlotStore`: the slots of concurrency keys: who holds one, and who waits for one.

One record per (flow, key value). Every write is one guarded single-document update:
joining the queue is idempotent and numbers the ticket; taking a slot succeeds only for
the head of the queue, while fewer than `limit` hold one, and only if nobody took or
joined in between. Every method may raise `UnavailableError`; a lost race is never an
error.
"""

from collections.abc import Collection
from datetime import datetime
from typing import Protocol

from service.engine.concurrency import QUEUE_ROOM, Slots
from service.engine.model import FlowId, RunId


class SlotStore(Protocol):
    async def join(
        self,
        flow_id: FlowId,
        key: str,
        run_id: RunId,
        *,
        now: datetime,
        room: int = QUEUE_ROOM,
    ) -> Slots:
        """Put `run_id` at the end of the key's queue with the next ticket.

        A run that waits or holds a slot already is left where it is (idempotent).
        Returns the key's slots after the call. Raises QueueFullError when `room` runs
        wait already (the trigger is retried until the queue drains).
        """
        ...

    async def slots(self, flow_id: FlowId, key: str) -> Slots | None:
        """The key's slots; None if no run joined (or retention removed them)."""
        ...

    async def take(
        self, seen: Slots, run_id: RunId, *, limit: int, now: datetime
    ) -> Slots | None:
        """Move `run_id`, the queue's head, to the holders, numbering its admission.

        Only if it is still the head, fewer than `limit` hold a slot, and no admission
        happened since `seen` was read. Returns the slots after the move, or None.
        """
        ...

    async def free(
        self, flow_id: FlowId, key: str, run_ids: Collection[RunId], *, now: datetime
    ) -> Slots | None:
        """Remove these runs from the holders and from the queue (idempotent).

        Returns the slots after the call; None when the key has no record.
        """
        ...
