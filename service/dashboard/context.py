"""What every route of the dashboard reaches: the read models, controls, live hub.

One `Console` per process, built by `server` and kept on `app.state.console`.
"""

import asyncio
import json
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
from service.engine.model import Flow
from service.flow_views import FlowView


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
    _manifests: dict[str, tuple[str, Flow | None]] = field(default_factory=dict)

    async def flows(self) -> list[FlowView]:
        """Every stored flow with its schedules, by name."""
        return await operations.flow_views(self.stores)

    async def flow(self, flow_id: str) -> Flow | None:
        """The manifest of a flow as stored now (None if absent or unreadable).

        Read as text every time and parsed only when it changed: a manifest of a
        thousand steps takes longer to parse than to read.
        """
        text = await self.browse.manifest_text(flow_id)
        if text is None:
            return None
        cached = self._manifests.get(flow_id)
        if cached is not None and cached[0] == text:
            return cached[1]
        try:
            flow = from_manifest(json.loads(text))
        except ValueError:
            flow = None
        self._manifests[flow_id] = (text, flow)
        return flow


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found
