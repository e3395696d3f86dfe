"""The contract of `FlowStore`: upserted definitions; `enabled` is the operator's."""

from service.engine.model import FlowId, Json
from service.ports.stores import Stores
from tests.contract.builders import a_flow


class FlowStoreContract:
    async def test_a_saved_flow_can_be_read_back(self, stores: Stores):
        flow = a_flow()

        saved = await stores.flows.save(flow)

        assert saved == flow
        assert await stores.flows.get(flow.flow_id) == flow

    async def test_an_unknown_flow_reads_as_none(self, stores: Stores):
        found = await stores.flows.get(FlowId("nope"))

        assert found is None

    async def test_saving_again_updates_the_definition_and_keeps_enabled(
        self, stores: Stores
    ):
        await stores.flows.save(a_flow())
        await stores.flows.set_enabled(FlowId("orders"), enabled=False)
        newer = a_flow(version="2", manifest={"steps": {}}, enabled=True)

        saved = await stores.flows.save(newer)

        assert saved == a_flow(version="2", manifest={"steps": {}}, enabled=False)
        assert await stores.flows.get(FlowId("orders")) == saved

    async def test_a_flow_is_enabled_again(self, stores: Stores):
        await stores.flows.save(a_flow())
        await stores.flows.set_enabled(FlowId("orders"), enabled=False)

        enabled = await stores.flows.set_enabled(FlowId("orders"), enabled=True)

        found = await stores.flows.get(FlowId("orders"))
        assert enabled
        assert found is not None
        assert found.enabled

    async def test_enabling_an_unknown_flow_returns_false(self, stores: Stores):
        changed = await stores.flows.set_enabled(FlowId("nope"), enabled=True)

        assert not changed

    async def test_all_lists_every_flow(self, stores: Stores):
        flows = [a_flow(flow_id=FlowId(name), name=name) for name in ("b", "a", "c")]
        for flow in flows:
            await stores.flows.save(flow)

        found = await stores.flows.all()

        assert sorted(found, key=lambda f: f.flow_id) == sorted(
            flows, key=lambda f: f.flow_id
        )

    async def test_a_manifest_is_stored_by_value(self, stores: Stores):
        fetch: dict[str, Json] = {"type": "Http"}
        await stores.flows.save(a_flow(manifest={"steps": {"fetch": fetch}}))

        fetch["type"] = "Changed"

        found = await stores.flows.get(FlowId("orders"))
        assert found is not None
        assert found.manifest == {"steps": {"fetch": {"type": "Http"}}}
