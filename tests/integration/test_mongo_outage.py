"""A MongoDB outage reaches the caller as UnavailableError, and the stores recover."""

from datetime import timedelta

import pytest

from service.adapters.mongo.client import connect, redacted
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


def test_a_logged_url_hides_its_password():
    url = "mongodb://flow:s3cr3t@db-0:27017,db-1:27017/?replicaSet=rs0"

    assert redacted(url) == "mongodb://flow:***@db-0:27017,db-1:27017/?replicaSet=rs0"
    assert redacted("mongodb+srv://u:p@x.example/") == "mongodb+srv://u:***@x.example/"
    assert redacted("mongodb://127.0.0.1:27017/") == "mongodb://127.0.0.1:27017/"
