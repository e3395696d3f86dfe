"""Benchmark flows: `FLOW_MODULES=benchmarks.flows`.

Every step is `BenchNoop`, whose whole work is to return `{"t": time.time()}`: the
moment the handler ran, at microsecond precision (MongoDB dates keep milliseconds), so
hop latencies can be measured from the step outputs. The reference loop stores a small
output per step too (`{"ok": true, "value": s}`).

| flow             | id (b3c4e000-0000-4000-8000-...) | shape                        |
| ---------------- | -------------------------------- | ---------------------------- |
| bench-linear10   | ...000000000010                  | s00 -> s01 -> ... -> s09     |
| bench-three      | ...000000000003                  | a -> b -> c                  |
| bench-linear1000 | ...000000001000                  | s0000 -> ... -> s0999        |
| bench-fanout1000 | ...000000000999                  | p0000..p0999 -> join         |
| bench-foreach    | ...0000000000fe                  | ForEach over the trigger's   |
|                  |                                  | items, concurrency 50, body: |
|                  |                                  | one no-op step               |
"""

import itertools
import time

from service.authoring import (
    Flow,
    FlowId,
    Handlers,
    Step,
    StepContext,
    for_each,
)

NOOP = "BenchNoop"

handlers = Handlers()


@handlers.handler(NOOP)
async def noop(ctx: StepContext, inputs: dict[str, object]) -> dict[str, float]:
    return {"t": time.time()}


def linear(flow_id: str, name: str, keys: list[str]) -> Flow:
    steps = {keys[0]: Step(NOOP)}
    for before, key in itertools.pairwise(keys):
        steps[key] = Step(NOOP, run_after={before: ["Succeeded"]})
    return Flow(id=FlowId(flow_id), name=name, steps=steps)


LINEAR10 = linear(
    "b3c4e000-0000-4000-8000-000000000010",
    "bench-linear10",
    [f"s{n:02d}" for n in range(10)],
)
THREE = linear("b3c4e000-0000-4000-8000-000000000003", "bench-three", ["a", "b", "c"])
LINEAR1000 = linear(
    "b3c4e000-0000-4000-8000-000000001000",
    "bench-linear1000",
    [f"s{n:04d}" for n in range(1000)],
)

FANOUT_WIDTH = 1000
_parallel = {f"p{n:04d}": Step(NOOP) for n in range(FANOUT_WIDTH)}
FANOUT1000 = Flow(
    id=FlowId("b3c4e000-0000-4000-8000-000000000999"),
    name="bench-fanout1000",
    steps={
        **_parallel,
        "join": Step(NOOP, run_after={key: ["Succeeded"] for key in _parallel}),
    },
)

FOREACH_CONCURRENCY = 50
FOREACH = Flow(
    id=FlowId("b3c4e000-0000-4000-8000-0000000000fe"),
    name="bench-foreach",
    steps={
        "items": for_each(
            "@triggerBody().items",
            {"item": Step(NOOP)},
            concurrency=FOREACH_CONCURRENCY,
        )
    },
)

flows = [LINEAR10, THREE, LINEAR1000, FANOUT1000, FOREACH]
