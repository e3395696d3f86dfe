"""A MongoDB outage reaches the caller as UnavailableError, and the stores recover.

An outage is also a write that a primary stepping down refuses: it is retried later.
"""

from datetime import timedelta

import pytest
from pymongo import ReadPreference
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError, WriteError

from service.adapters.mongo.client import connect, redacted
from service.adapters.mongo.outage import is_outage, translates_outages
from service.engine.model import RunId
from service.errors import UnavailableError
from tests.services import MongoServer


async def test_a_stopped_server_raises_unavailable_and_a_restart_recovers(
    mongo_server: MongoServer,
):
    stores = connect(
        mongo_server.url,
        "outage_test",
        server_selection_timeout=timedelta(milliseconds=500),
    )
    async with stores:
        await stores.ensure_indexes()
        await stores.ping()
        mongo_server.stop()
        try:
            with pytest.raises(UnavailableError):
                await stores.runs.get_run(RunId("run-1"))
            with pytest.raises(UnavailableError):
                await stores.ping()
        finally:
            mongo_server.restart()

        found = await stores.runs.get_run(RunId("run-1"))

        assert found is None


async def test_a_url_cannot_turn_off_primary_reads_retries_or_majority():
    url = "mongodb://db-0,db-1/?replicaSet=rs0&readPreference=secondary&w=1"
    stores = connect(f"{url}&retryWrites=false&retryReads=false", "options_test")
    async with stores:
        client = stores.database.client

        assert client.read_preference == ReadPreference.PRIMARY
        assert client.options.retry_writes
        assert client.options.retry_reads
        assert client.write_concern.document == {"w": "majority"}


def test_a_logged_url_hides_its_password():
    url = "mongodb://flow:s3cr3t@db-0:27017,db-1:27017/?replicaSet=rs0"

    assert redacted(url) == "mongodb://flow:***@db-0:27017,db-1:27017/?replicaSet=rs0"
    assert redacted("mongodb+srv://u:p@x.example/") == "mongodb+srv://u:***@x.example/"
    assert redacted("mongodb://127.0.0.1:27017/") == "mongodb://127.0.0.1:27017/"


# What a primary that steps down answers to one write of a command it had already
# accepted, as a replica set chaos run saw it (tests/e2e/test_chaos.py).
NOT_PRIMARY = {
    "index": 0,
    "code": 189,
    "errmsg": "Not primary while writing to db.steps",
}
DUPLICATE = {"index": 1, "code": 11000, "errmsg": "E11000 duplicate key error"}


def bulk(*write_errors: dict[str, object]) -> BulkWriteError:
    return BulkWriteError(
        {"writeErrors": list(write_errors), "writeConcernErrors": [], "nInserted": 1}
    )


@pytest.mark.parametrize(
    "error",
    [
        WriteError(str(NOT_PRIMARY["errmsg"]), 189, NOT_PRIMARY),
        WriteError("not primary", 10107, {"index": 0, "code": 10107}),
        WriteError("interrupted", 11602, {"index": 0, "code": 11602}),
        bulk(NOT_PRIMARY),
        bulk(DUPLICATE, NOT_PRIMARY),
    ],
    ids=["stepped-down", "not-writable", "interrupted", "bulk", "bulk-with-duplicate"],
)
def test_a_write_refused_by_a_primary_stepping_down_is_an_outage(
    error: PyMongoError,
):
    assert is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        DuplicateKeyError("E11000", 11000, DUPLICATE),
        WriteError("bad document", 2, {"index": 0, "code": 2}),
        bulk(DUPLICATE),
    ],
    ids=["duplicate", "bad-value", "bulk-duplicates"],
)
def test_a_write_refused_for_what_it_writes_is_no_outage(error: PyMongoError):
    assert not is_outage(error)


async def test_a_store_turns_a_refused_write_into_unavailable():
    @translates_outages
    class Refusing:
        async def finish(self) -> None:
            raise WriteError(str(NOT_PRIMARY["errmsg"]), 189, NOT_PRIMARY)

    with pytest.raises(UnavailableError) as raised:
        await Refusing().finish()

    assert isinstance(raised.value.__cause__, WriteError)
