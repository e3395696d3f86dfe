"""`InMemoryEventStore`: each run's stored events in one list, in sequence order."""

from collections.abc import Iterable, Sequence

from service.engine.model import RunId
from service.engine.records import Event, NewEvent


class InMemoryEventStore:
    """Each run's events in one list, in sequence order."""

    def __init__(self) -> None:
        self._events: dict[RunId, list[Event]] = {}
        self._keys: dict[RunId, set[str]] = {}

    async def append(self, run_id: RunId, events: Sequence[NewEvent]) -> None:
        if not events:
            return
        log = self._events.setdefault(run_id, [])
        keys = self._keys.setdefault(run_id, set())
        fresh = [new for new in events if new.key is None or new.key not in keys]
        keys.update(new.key for new in fresh if new.key is not None)
        last = log[-1].seq if log else 0
        log.extend(
            Event(run_id, seq, new.type, new.at, new.step_key, new.message)
            for seq, new in enumerate(fresh, start=last + 1)
        )

    async def events(
        self, run_id: RunId, *, skip: int = 0, limit: int = 200
    ) -> list[Event]:
        return self._events.get(run_id, [])[skip : skip + limit]

    def forget(self, run_ids: Iterable[RunId]) -> None:
        for run_id in run_ids:
            self._events.pop(run_id, None)
            self._keys.pop(run_id, None)
