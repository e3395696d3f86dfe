"""What every route of the dashboard reaches: the read models, controls, live hub.

One `Console` per process, built by `server` and kept on `app.state.console`.
"""

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.requests import Request

from service import operations
from service.adapters.mongo.browse import RunBrowser
from service.adapters.mongo.client import MongoStores
from service.dashboard.auth import Throttle, User
from service.dashboard.control import Controls
from service.dashboard.live import ChangeHub
from service.engine.manifest import from_manifest
from service.engine.model import Flow, FlowId
from service.views import FlowView


@dataclass
class Console:
    stores: MongoStores
    browse: RunBrowser
    controls: Controls
    target: operations.Target
    users: Mapping[str, User]
    hub: ChangeHub = field(default_factory=ChangeHub)
    throttle: Throttle = field(default_factory=Throttle)
    letters: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Dead-letter reads take every letter and give them back: one at a time."""

    async def flows(self) -> list[FlowView]:
        """Every stored flow with its schedules, by name."""
        return await operations.flow_views(self.stores)

    async def flow(self, flow_id: str) -> Flow | None:
        """The manifest of a flow as stored now (None if absent or unreadable)."""
        record = await self.stores.flows.get(FlowId(flow_id))
        if record is None:
            return None
        try:
            return from_manifest(record.manifest)
        except ValueError:
            return None


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found
