"""`connect()` and `MongoStores`: the client, and every store of one database.

`connect` builds the client from plain settings values; `MongoStores` bundles the stores
as the `Stores` port, plus the operators' queries, the indexes and a health ping.

The client is `AsyncMongoClient(tz_aware=True)` with a write concern (majority by
default, so an acked message's effects survive a failover), retryable writes and reads,
and reads from the primary alone; options in the URL cannot change these. The URL may
hold a password: it is never logged; `redacted()` gives the loggable form.
"""

import re
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo.codec import Document
from service.adapters.mongo.events import MongoEventStore
from service.adapters.mongo.flows import MongoFlowStore, MongoScheduleStore
from service.adapters.mongo.indexes import ensure_indexes
from service.adapters.mongo.loops import MongoLoopStore
from service.adapters.mongo.outage import outages
from service.adapters.mongo.queries import RunQueries
from service.adapters.mongo.retention import purge
from service.adapters.mongo.runs import MongoRunStore
from service.adapters.mongo.signals import MongoSignalStore
from service.adapters.mongo.slots import MongoSlotStore
from service.adapters.mongo.steps import MongoStepStore
from service.adapters.mongo.timers import MongoTimerStore

_PASSWORD = re.compile(r"^(mongodb(?:\+srv)?://[^:/@]*:)[^@]*@")


def redacted(url: str) -> str:
    """`url` with its password replaced by `***`, fit for a log line."""
    return _PASSWORD.sub(r"\1***@", url)


def connect(
    url: str,
    database: str,
    *,
    write_concern: str | int = "majority",
    server_selection_timeout: timedelta = timedelta(seconds=10),
    connect_timeout: timedelta = timedelta(seconds=10),
    socket_timeout: timedelta | None = timedelta(seconds=30),
    tls: bool = False,
    tls_ca_file: str | None = None,
    app_name: str = "flow-orchestrator",
) -> "MongoStores":
    """A client for `url` and the stores on its `database`; no I/O until first use.

    Call it inside the event loop that will use the stores (a client belongs to its
    loop), and `close()` the result (or use it with `async with`) on the way out.
    `tls=False` leaves TLS to the URL (`tls=true`, or implied by `mongodb+srv://`).
    """
    options: dict[str, Any] = {
        "w": write_concern,
        # Each retries an operation once, on the new primary, after a step-down.
        "retryWrites": True,
        "retryReads": True,
        # Every decision is taken on what was read: never on a secondary's older copy.
        "readPreference": "primary",
        "serverSelectionTimeoutMS": _ms(server_selection_timeout),
        "connectTimeoutMS": _ms(connect_timeout),
        "socketTimeoutMS": None if socket_timeout is None else _ms(socket_timeout),
        "appname": app_name,
    }
    if tls:
        options["tls"] = True
    if tls_ca_file is not None:
        options["tlsCAFile"] = tls_ca_file
    client: AsyncMongoClient[Document] = AsyncMongoClient(url, tz_aware=True, **options)
    return MongoStores(client[database], client=client)


def _ms(duration: timedelta) -> int:
    return int(duration.total_seconds() * 1000)


class MongoStores:
    """Every store on one database: the `Stores` port, `queries`, indexes, health."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        client: AsyncMongoClient[Document] | None = None,
    ) -> None:
        """Stores on `db`; `close()` closes `client` if given (as `connect` does)."""
        self._db = db
        self._client = client
        self._runs = MongoRunStore(db)
        self._steps = MongoStepStore(db)
        self._loops = MongoLoopStore(db)
        self._events = MongoEventStore(db)
        self._timers = MongoTimerStore(db)
        self._signals = MongoSignalStore(db)
        self._flows = MongoFlowStore(db)
        self._schedules = MongoScheduleStore(db)
        self._slots = MongoSlotStore(db)
        self._queries = RunQueries(db)

    @property
    def database(self) -> AsyncDatabase[Document]:
        return self._db

    @property
    def runs(self) -> MongoRunStore:
        return self._runs

    @property
    def steps(self) -> MongoStepStore:
        return self._steps

    @property
    def loops(self) -> MongoLoopStore:
        return self._loops

    @property
    def events(self) -> MongoEventStore:
        return self._events

    @property
    def timers(self) -> MongoTimerStore:
        return self._timers

    @property
    def signals(self) -> MongoSignalStore:
        return self._signals

    @property
    def flows(self) -> MongoFlowStore:
        return self._flows

    @property
    def schedules(self) -> MongoScheduleStore:
        return self._schedules

    @property
    def slots(self) -> MongoSlotStore:
        return self._slots

    @property
    def queries(self) -> RunQueries:
        return self._queries

    async def purge(self, *, before: datetime, limit: int) -> int:
        with outages():
            return await purge(self._db, before=before, limit=limit)

    async def ensure_indexes(self) -> None:
        """Create the indexes (idempotent; at every start)."""
        with outages():
            await ensure_indexes(self._db)

    async def ping(self) -> None:
        """Return once the server answers; raises UnavailableError (for /readyz)."""
        with outages():
            await self._db.command("ping")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
