"""Which of pymongo's failures mean "the server can't be reached or can't commit now".

`outages()` is the one place they become `UnavailableError`: a connection, server
selection, network timeout, not-primary (of a command or of one of its writes) or
write-concern error, so the consumer retries the message later instead of
dead-lettering it. `Collection` (the driver seam) wraps every call in it. Other driver
errors are bugs, or answers (a duplicate key), and pass unchanged.
"""

import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    PyMongoError,
    WriteConcernError,
    WriteError,
)

from service.errors import UnavailableError

_TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")
# A primary refuses one write of a batch with these while it steps down or shuts down
# ("Not primary while writing to ..."). As a write error, pymongo raises it as a
# WriteError or BulkWriteError, without a label, and retryable writes do not retry it.
_NOT_PRIMARY_CODES = frozenset(
    {
        10107,  # NotWritablePrimary
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
        189,  # PrimarySteppedDown
        11602,  # InterruptedDueToReplStateChange
        11600,  # InterruptedAtShutdown
        91,  # ShutdownInProgress
    }
)


def is_outage(error: PyMongoError) -> bool:
    """Whether `error` means the server can't be reached or can't commit right now.

    ConnectionFailure covers AutoReconnect, NetworkTimeout, NotPrimaryError (also what
    pymongo raises for the shutdown and stepdown codes) and ServerSelectionTimeoutError;
    WriteConcernError covers a majority not reached in time (WTimeoutError), which a
    bulk write reports among its details instead. A write error with a not-primary
    code (a WriteError, or among a bulk write's details) is one too.
    """
    if isinstance(error, ConnectionFailure | WriteConcernError):
        return True
    if isinstance(error, WriteError) and error.code in _NOT_PRIMARY_CODES:
        return True
    if isinstance(error, BulkWriteError) and (
        error.details.get("writeConcernErrors")
        or any(
            e.get("code") in _NOT_PRIMARY_CODES
            for e in error.details.get("writeErrors", [])
        )
    ):
        return True
    return any(error.has_error_label(label) for label in _TRANSIENT_LABELS)


@contextlib.contextmanager
def outages() -> Iterator[None]:
    """Raise `UnavailableError` for an outage inside the block (httpx's pattern)."""
    try:
        yield
    except PyMongoError as error:
        if is_outage(error):
            # The driver's text names the hosts and what failed: worth keeping.
            raise UnavailableError(
                f"MongoDB is unavailable: {type(error).__name__}"
            ) from error
        raise


DUPLICATE_KEY = 11000


def duplicates_only(error: BulkWriteError) -> set[int]:
    """The indexes a bulk write refused as duplicate keys.

    Raises `error` itself when it failed for any other reason (a write concern, a bad
    document).
    """
    errors = error.details.get("writeErrors", [])
    if error.details.get("writeConcernErrors") or any(
        e.get("code") != DUPLICATE_KEY for e in errors
    ):
        raise error
    return {e["index"] for e in errors}


_C = TypeVar("_C", bound=type)


def translates_outages(cls: _C) -> _C:
    """Wrap every public coroutine method of `cls` in `outages()` (read models only).

    The stores go through `Collection`; the operators' read models still use the
    driver directly.
    """
    for name in dir(cls):
        method = getattr(cls, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(method):
            continue
        setattr(cls, name, _translated(method))
    return cls


def _translated(
    method: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        with outages():
            return await method(*args, **kwargs)

    return call
