"""Changes to runs and step rows as they happen: one MongoDB change stream.

For live pages (the dashboard). `follow_changes` watches the database for inserts,
updates, replacements and deletes in `runs` and `steps` and hands each on as a
`Change` (which run, which step); only the document keys travel, never the documents.
A failed stream is resumed from its last token, after a pause; change streams need a
replica set, which the service requires anyway.
"""

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError
from structlog.typing import FilteringBoundLogger

from service.adapters.mongo.codec import RUNS, STEPS, Document

log: FilteringBoundLogger = structlog.get_logger()

AWAIT_MS: Final = 1000
"""How long one read of the stream waits for a change before looking at `stop`."""
RETRY_AFTER: Final = 2.0
_PIPELINE: Final[list[Document]] = [
    {
        "$match": {
            "ns.coll": {"$in": [RUNS, STEPS]},
            "operationType": {"$in": ["insert", "update", "replace", "delete"]},
        }
    },
    {"$project": {"ns": 1, "documentKey": 1, "operationType": 1}},
]


@dataclass(frozen=True, slots=True)
class Change:
    """A run (`step_key` None) or one of its step rows was written."""

    run_id: str
    step_key: str | None = None


async def follow_changes(
    db: AsyncDatabase[Document],
    on_change: Callable[[Change], None],
    stop: asyncio.Event,
) -> None:
    """Call `on_change` for each change until `stop` is set; resume after failures."""
    token: Mapping[str, Any] | None = None
    while not stop.is_set():
        try:
            stream = await db.watch(
                _PIPELINE, resume_after=token, max_await_time_ms=AWAIT_MS
            )
            async with stream:
                while not stop.is_set():
                    change = await stream.try_next()
                    token = stream.resume_token
                    if change is not None:
                        on_change(_change(change))
        except PyMongoError as exc:
            if isinstance(exc, OperationFailure):
                token = None  # e.g. history lost: a token too old to resume from
            log.warning("change_stream_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY_AFTER):
                    await stop.wait()


def _change(change: Document) -> Change:
    key = str(change["documentKey"]["_id"])
    if change["ns"]["coll"] == RUNS:
        return Change(key)
    run_id, _, step_key = key.partition("/")  # a step row's _id is "<run>/<key>"
    return Change(run_id, step_key)
