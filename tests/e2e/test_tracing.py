"""A worker process with OTEL_* set exports a run's spans over OTLP, in one trace.

The test is the collector (`tests.otlp_sink`): what it receives is what Jaeger would.
The span tree itself is asserted in tests/integration/test_tracing.py.
"""

from tests.e2e.harness import Deployment, eventually
from tests.otlp_sink import OtlpSink, attributes

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


async def test_a_worker_exports_each_run_as_one_trace_over_otlp(deployment: Deployment):
    with OtlpSink() as sink:
        worker = deployment.start_worker(
            FLOW_MODULES="examples.hello",
            OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
            OTEL_SERVICE_NAME="orders-worker",
            OTEL_BSP_SCHEDULE_DELAY="100",
            LOG_LEVEL="info",
        )
        await worker.ready()
        job = await deployment.trigger(
            "hello",
            {"name": "Ada"},
            headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
        )
        [run] = await deployment.finished([job], within=30)

        async def exported() -> bool:
            return any(s.name == "run completed" for s in sink.kept)

        await eventually(exported, within=30, what="the run's spans exported")

    spans = [s for s in sink.kept if attributes(s).get("flow.run.id") == run["_id"]]
    assert {s.trace_id.hex() for s in spans} == {TRACE_ID}
    names = {s.name for s in spans}
    assert {"run hello", "step sign", "run completed"} <= names
    [root] = [s for s in spans if s.name == "run hello"]
    assert root.parent_span_id.hex() == CALLER_SPAN
    logged = [e for e in worker.events() if e.get("event") == "step_finished"]
    assert logged
    assert all(e.get("trace_id") == TRACE_ID for e in logged)
