"""Every contract suite on the MongoDB stores (`service.adapters.mongo`), on a real
mongod: a fresh database per test, with the indexes the worker creates at start.
"""

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo.client import MongoStores
from service.adapters.mongo.indexes import ensure_indexes
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
async def stores(mongo_db: AsyncDatabase[dict[str, Any]]) -> Stores:
    await ensure_indexes(mongo_db)
    return MongoStores(mongo_db)


class TestMongoStepStore(StepRowContract, StepStateContract, ReleaseStopContract):
    pass


class TestMongoLoopStore(LoopContract):
    pass


class TestMongoRunStore(RunStoreContract):
    pass


class TestMongoEventStore(EventStoreContract):
    pass


class TestMongoTimerStore(TimerStoreContract):
    pass


class TestMongoSignalStore(SignalStoreContract):
    pass


class TestMongoFlowStore(FlowStoreContract):
    pass


class TestMongoScheduleStore(ScheduleStoreContract):
    pass


class TestMongoRetention(RetentionContract):
    pass


class TestMongoSlotStore(SlotStoreContract):
    pass
