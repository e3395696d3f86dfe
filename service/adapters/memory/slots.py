"""`InMemorySlotStore`: the slots of concurrency keys, in process.

Each method checks and writes without awaiting in between, so each is atomic on the one
event loop; records are frozen and replaced whole.
"""

from collections.abc import Collection
from dataclasses import replace
from datetime import datetime

from service.engine.concurrency import QUEUE_ROOM, Slots, Ticket
from service.engine.model import FlowId, RunId
from service.errors import QueueFullError


class InMemorySlotStore:
    def __init__(self) -> None:
        self._slots: dict[tuple[FlowId, str], Slots] = {}
        self._touched: dict[tuple[FlowId, str], datetime] = {}

    async def join(
        self,
        flow_id: FlowId,
        key: str,
        run_id: RunId,
        *,
        now: datetime,
        room: int = QUEUE_ROOM,
    ) -> Slots:
        slots = self._slots.get((flow_id, key)) or Slots(flow_id, key)
        if slots.holds(run_id) or slots.place(run_id) is not None:
            return slots
        if len(slots.waiting) >= room:
            raise QueueFullError(key, len(slots.waiting))
        number = slots.tickets + 1
        joined = replace(
            slots, waiting=(*slots.waiting, Ticket(run_id, number)), tickets=number
        )
        return self._put(joined, now)

    async def slots(self, flow_id: FlowId, key: str) -> Slots | None:
        return self._slots.get((flow_id, key))

    async def take(
        self, seen: Slots, run_id: RunId, *, limit: int, now: datetime
    ) -> Slots | None:
        slots = self._slots.get((seen.flow_id, seen.key))
        if (
            slots is None
            or not slots.waiting
            or slots.waiting[0].run_id != run_id
            or slots.admitted != seen.admitted
            or len(slots.holders) >= limit
        ):
            return None
        head = replace(slots.waiting[0], admitted=slots.admitted + 1)
        taken = replace(
            slots,
            holders=(*slots.holders, head),
            waiting=slots.waiting[1:],
            admitted=slots.admitted + 1,
        )
        return self._put(taken, now)

    async def free(
        self, flow_id: FlowId, key: str, run_ids: Collection[RunId], *, now: datetime
    ) -> Slots | None:
        slots = self._slots.get((flow_id, key))
        if slots is None:
            return None
        gone = set(run_ids)
        freed = replace(
            slots,
            holders=tuple(t for t in slots.holders if t.run_id not in gone),
            waiting=tuple(t for t in slots.waiting if t.run_id not in gone),
        )
        return self._put(freed, now)

    def forget_idle(self, before: datetime) -> int:
        """Retention: drop the records of keys nobody holds or waits for."""
        idle = [
            ids
            for ids, slots in self._slots.items()
            if not slots.holders and not slots.waiting and self._touched[ids] < before
        ]
        for ids in idle:
            del self._slots[ids]
            del self._touched[ids]
        return len(idle)

    def _put(self, slots: Slots, now: datetime) -> Slots:
        ids = (slots.flow_id, slots.key)
        self._slots[ids] = slots
        self._touched[ids] = now
        return slots
