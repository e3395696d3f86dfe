"""`InMemoryStores`: every in-process store, from one backend (the `Stores` port).

The in-process adapters are production code (embedded mode, the flow test host) and
the fakes of the tests at once: there is no second fake.
"""

from datetime import datetime

from service.adapters.memory.events import InMemoryEventStore
from service.adapters.memory.flows import InMemoryFlowStore, InMemoryScheduleStore
from service.adapters.memory.loops import InMemoryLoopStore
from service.adapters.memory.runs import InMemoryRunStore
from service.adapters.memory.signals import InMemorySignalStore
from service.adapters.memory.slots import InMemorySlotStore
from service.adapters.memory.steps import InMemoryStepStore
from service.adapters.memory.timers import InMemoryTimerStore


class InMemoryStores:
    def __init__(self) -> None:
        self._runs = InMemoryRunStore()
        self._steps = InMemoryStepStore()
        self._loops = InMemoryLoopStore(self._steps)
        self._events = InMemoryEventStore()
        self._timers = InMemoryTimerStore()
        self._signals = InMemorySignalStore()
        self._flows = InMemoryFlowStore()
        self._schedules = InMemoryScheduleStore()
        self._slots = InMemorySlotStore()

    @property
    def runs(self) -> InMemoryRunStore:
        return self._runs

    @property
    def steps(self) -> InMemoryStepStore:
        return self._steps

    @property
    def loops(self) -> InMemoryLoopStore:
        return self._loops

    @property
    def events(self) -> InMemoryEventStore:
        return self._events

    @property
    def timers(self) -> InMemoryTimerStore:
        return self._timers

    @property
    def signals(self) -> InMemorySignalStore:
        return self._signals

    @property
    def flows(self) -> InMemoryFlowStore:
        return self._flows

    @property
    def schedules(self) -> InMemoryScheduleStore:
        return self._schedules

    @property
    def slots(self) -> InMemorySlotStore:
        return self._slots

    async def purge(self, *, before: datetime, limit: int) -> int:
        doomed = self._runs.completed_before(before, limit=limit)
        self._runs.forget(doomed)
        self._steps.forget(doomed)
        self._events.forget(doomed)
        self._timers.forget(doomed)
        self._signals.forget(doomed)
        self._slots.forget_idle(before)
        return len(doomed)
