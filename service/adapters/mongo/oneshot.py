"""MongoDB for a one-shot client (`flowctl`): the stores, open for one block.

A malformed URL, and a server that can't be reached, raise `UnavailableError` naming
the URL with its password masked.
"""

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Final

from pymongo.errors import ConfigurationError, PyMongoError

from service.adapters.mongo.client import MongoStores, connect, redacted
from service.errors import UnavailableError

_MAX_SUMMARY: Final = 200


@contextlib.asynccontextmanager
async def opened(
    url: str, database: str, *, server_timeout: timedelta = timedelta(seconds=10)
) -> AsyncIterator[MongoStores]:
    """The stores of `database` at `url`, closed on the way out.

    `server_timeout` bounds server selection and connecting: an unreachable server
    fails the first call within it.
    """
    try:
        stores = connect(
            url,
            database,
            server_selection_timeout=server_timeout,
            connect_timeout=server_timeout,
            app_name="flowctl",
        )
    except ConfigurationError as exc:  # InvalidURI included
        raise UnavailableError(f"bad MongoDB URL {redacted(url)}: {exc}") from None
    try:
        async with stores:
            yield stores
    except UnavailableError as exc:
        cause = exc.__cause__
        if not isinstance(cause, PyMongoError):
            raise
        raise UnavailableError(
            f"MongoDB at {redacted(url)} is unreachable: {_summary(cause)}"
        ) from cause


def _summary(error: PyMongoError) -> str:
    # Server selection errors go on to describe the whole topology: keep the cause.
    text = " ".join(str(error).split(", Timeout:")[0].split())
    if len(text) > _MAX_SUMMARY:
        text = text[: _MAX_SUMMARY - 1] + "…"
    return f"{type(error).__name__}: {text}"
