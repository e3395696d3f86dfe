"""`InMemorySignalStore`: WaitForSignal waiters by run and step."""

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from service.adapters.memory.copies import copied
from service.engine.model import Json, RunId, StepKey
from service.engine.records import Delivery, DeliveryStatus, Waiter


class InMemorySignalStore:
    """Waiters by run and step, each with a lower-case copy of its signal name."""

    def __init__(self) -> None:
        self._waiters: dict[RunId, dict[StepKey, tuple[Waiter, str]]] = {}

    async def register(
        self,
        run_id: RunId,
        key: StepKey,
        signal: str,
        *,
        expires_at: datetime | None,
        now: datetime,
    ) -> Waiter:
        waiters = self._waiters.setdefault(run_id, {})
        if key in waiters:
            waiter = replace(waiters[key][0], signal=signal, expires_at=expires_at)
        else:
            waiter = Waiter(run_id, key, signal, created_at=now, expires_at=expires_at)
        waiters[key] = (waiter, signal.lower())
        return waiter

    async def waiter(self, run_id: RunId, key: StepKey) -> Waiter | None:
        found = self._waiters.get(run_id, {}).get(key)
        return None if found is None else found[0]

    async def deliver(
        self, run_id: RunId, signal: str, payload: Json, *, now: datetime
    ) -> Delivery:
        name = signal.lower()
        waiters = self._waiters.get(run_id, {}).values()
        named = [waiter for waiter, lower in waiters if lower == name]
        if not named:
            return Delivery(DeliveryStatus.NOT_FOUND)
        waiting = [w for w in named if w.delivered_at is None]
        if not waiting:
            latest = max(named, key=lambda w: (w.delivered_at or now, w.step_key))
            return Delivery(
                DeliveryStatus.ALREADY_DELIVERED, latest.step_key, latest.delivered_at
            )
        oldest = min(waiting, key=lambda w: (w.created_at, w.step_key))
        delivered = replace(oldest, delivered_at=now, payload=copied(payload))
        self._waiters[run_id][oldest.step_key] = (delivered, name)
        return Delivery(DeliveryStatus.DELIVERED, oldest.step_key, now)

    def forget(self, run_ids: Iterable[RunId]) -> None:
        for run_id in run_ids:
            self._waiters.pop(run_id, None)
