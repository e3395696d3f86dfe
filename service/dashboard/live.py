"""Live pages: changes in MongoDB pushed to open pages as server-sent events.

One change stream per process (`follow_changes`), fanned out by `ChangeHub` to the
open `/live` streams; each stream says `change` at most once a second, and the page
then fetches its fresh fragment. A runs list listens to runs, a run page to its run
and its step rows.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from starlette.requests import Request
from starlette.responses import StreamingResponse

from service.adapters.mongo.changes import Change

PING_EVERY: Final = 15.0
AT_MOST_EVERY: Final = 1.0
"""Seconds between two `change` events of one stream (pages refetch on each)."""


@dataclass(eq=False)
class Subscription:
    wants: Callable[[Change], bool]
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class ChangeHub:
    """The open live streams, told of the changes they want."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def notify(self, change: Change) -> None:
        for subscription in self._subscriptions:
            if subscription.wants(change):
                subscription.changed.set()

    @contextlib.contextmanager
    def subscribed(self, wants: Callable[[Change], bool]) -> Iterator[Subscription]:
        subscription = Subscription(wants)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    @property
    def listeners(self) -> int:
        return len(self._subscriptions)


def wants_for(run_id: str | None) -> Callable[[Change], bool]:
    """A run page wants its run and its rows; the runs list wants any run."""
    if run_id is None:
        return lambda change: change.step_key is None
    return lambda change: change.run_id == run_id


async def events(hub: ChangeHub, run_id: str | None) -> AsyncIterator[str]:
    with hub.subscribed(wants_for(run_id)) as subscription:
        yield "retry: 3000\n\n"
        while True:
            try:
                async with asyncio.timeout(PING_EVERY):
                    await subscription.changed.wait()
            except TimeoutError:
                yield ": ping\n\n"
                continue
            subscription.changed.clear()
            yield "event: change\ndata: {}\n\n"
            # A rate limit, not a wait for something: changes meanwhile set the
            # event again and make the next `change`.
            await asyncio.sleep(AT_MOST_EVERY)


async def live(request: Request) -> StreamingResponse:
    """`GET /live` (the runs list) or `/live?run=<id>` (one run)."""
    hub: ChangeHub = request.app.state.console.hub
    run_id = request.query_params.get("run") or None
    return StreamingResponse(
        events(hub, run_id),
        media_type="text/event-stream",
        headers={"x-accel-buffering": "no"},
    )
