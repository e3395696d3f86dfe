"""Every contract suite on the in-process stores (`service.adapters.memory`)."""

import pytest

from service.adapters.memory.stores import InMemoryStores
from service.ports.stores import Stores
from tests.contract.event_store_contract import EventStoreContract
from tests.contract.flow_store_contract import FlowStoreContract
from tests.contract.loop_contract import LoopContract
from tests.contract.release_stop_contract import ReleaseStopContract
from tests.contract.retention_contract import RetentionContract
from tests.contract.run_store_contract import RunStoreContract
from tests.contract.schedule_store_contract import ScheduleStoreContract
from tests.contract.signal_store_contract import SignalStoreContract
from tests.contract.slot_store_contract import SlotStoreContract
from tests.contract.step_contract import StepRowContract
from tests.contract.step_state_contract import StepStateContract
from tests.contract.timer_store_contract import TimerStoreContract


@pytest.fixture
def stores() -> Stores:
    return InMemoryStores()


class TestInMemoryStepStore(StepRowContract, StepStateContract, ReleaseStopContract):
    pass


class TestInMemoryLoopStore(LoopContract):
    pass


class TestInMemoryRunStore(RunStoreContract):
    pass


class TestInMemoryEventStore(EventStoreContract):
    pass


class TestInMemoryTimerStore(TimerStoreContract):
    pass


class TestInMemorySignalStore(SignalStoreContract):
    pass


class TestInMemoryFlowStore(FlowStoreContract):
    pass


class TestInMemoryScheduleStore(ScheduleStoreContract):
    pass


class TestInMemoryRetention(RetentionContract):
    pass


class TestInMemorySlotStore(SlotStoreContract):
    pass
