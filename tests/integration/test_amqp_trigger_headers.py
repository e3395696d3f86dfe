"""A trigger's AMQP headers on a real broker: they are trigger headers (merged with
the body's `headers`), and an `x-idempotency-key` header of any type is used or
refused, never ignored.
"""

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from service.engine.model import Flow, FlowId, RunId, Step, StepKey
from service.steps.handlers import Handlers, StepContext
from tests.integration.amqp import (
    Client,
    Worker,
    next_message,
    reply_of,
    running_worker,
)

handlers = Handlers()


@handlers.handler("Echo")
async def echo(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "inputs": inputs,
        "ctx_tenant": ctx.trigger_headers.get("X-TENANT"),
        "ctx_names": sorted(ctx.trigger_headers),
    }


flow = Flow(
    id=FlowId(str(uuid4())),
    name="echo",
    steps={
        "echo": Step(
            "Echo",
            inputs={
                "tenant": "@triggerHeaders()['x-tenant']",
                "trace": "@triggerHeaders()['TraceParent']",
                "clash": "@triggerHeaders()['X-Clash']",
                "count": "@triggerHeaders()['x-count']",
                "all": "@triggerHeaders()",
            },
        )
    },
)


@pytest.fixture
async def worker(rabbitmq_url, names) -> AsyncIterator[Worker]:
    async with running_worker(rabbitmq_url, names, [flow], handlers) as worker:
        yield worker


async def trigger(
    client: Client, worker: Worker, headers: dict[str, Any], body_headers=None
) -> dict[str, Any]:
    """Publish an `echo` trigger; the echo step's output once the run is final."""
    run_id = str(uuid4())
    await client.publish(
        "trigger.echo",
        {"flow": "echo", "run_id": run_id, "headers": body_headers or {}},
        kind="trigger",
        headers=headers,
    )
    await worker.until_final(run_id)
    rows = await worker.stores.steps.steps(RunId(run_id), [StepKey("echo")])
    output = rows[StepKey("echo")].output
    assert isinstance(output, dict)
    return output


async def test_amqp_headers_are_trigger_headers_matched_in_any_case(worker, client):
    output = await trigger(
        client,
        worker,
        {
            "X-Tenant": "acme",
            "traceparent": "00-abc-def-01",
            "x-count": 7,
            "X-Clash": "from-amqp",
            "Authorization": "Bearer secret",
            "x-api-key": "k",
            "Connection": "keep-alive",
            "x-death": [{"count": 1}],
        },
        body_headers={"x-clash": "from-body", "X-From-Body": "yes"},
    )

    inputs = output["inputs"]
    assert inputs["tenant"] == "acme"
    assert inputs["trace"] == "00-abc-def-01"
    assert inputs["count"] == "7"
    assert inputs["clash"] == "from-body"  # the body's `headers` win a clash
    assert inputs["all"] == {
        "X-Tenant": "acme",
        "traceparent": "00-abc-def-01",
        "x-count": "7",
        "x-clash": "from-body",
        "X-From-Body": "yes",
    }
    assert output["ctx_tenant"] == "acme"
    assert output["ctx_names"] == sorted(inputs["all"])


async def test_the_stored_run_keeps_the_names_as_written(worker, client):
    run_id = str(uuid4())
    await client.publish(
        "trigger.echo",
        {"flow": "echo", "run_id": run_id},
        kind="trigger",
        headers={"X-Request-Id": "r-1", "Cookie": "session=1"},
    )

    run = await worker.until_final(run_id)

    assert dict(run.headers) == {"X-Request-Id": "r-1"}


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (42, "42"),
        (-7, "-7"),
        (Decimal("12.50"), "12.50"),
        (3.0, "3"),
        (2.5, "2.5"),
        (" Order-9 ", "order-9"),
    ],
    ids=["int", "negative", "decimal", "integral-float", "float", "string"],
)
async def test_an_idempotency_header_that_is_a_number_is_its_text(
    worker, client, value, key
):
    replies = await client.channel.declare_queue(exclusive=True)

    for _ in range(2):  # two message ids, one key
        await client.publish(
            "trigger.echo",
            {"flow": "echo"},
            kind="trigger",
            reply_to=replies.name,
            headers={"x-idempotency-key": value},
        )
    answers = [reply_of(await next_message(replies)) for _ in range(2)]

    assert sorted(a["status"] for a in answers) == ["accepted", "duplicate"]
    assert answers[0]["run_id"] == answers[1]["run_id"]
    run = await worker.until_final(answers[0]["run_id"])
    assert run.idempotency_key == key


@pytest.mark.parametrize(
    "value",
    [True, None, bytearray(b"\xff\xfe"), [1, 2], {"a": 1}, "", "  "],
    ids=["bool", "void", "bytes", "array", "table", "empty", "blank"],
)
async def test_an_idempotency_header_of_another_type_is_dead_lettered(
    worker, client, value
):
    dead = await client.channel.get_queue(worker.names.dead)
    run_id = str(uuid4())

    await client.publish(
        "trigger.echo",
        {"flow": "echo", "run_id": run_id},
        kind="trigger",
        headers={"X-Idempotency-Key": value},
    )

    letter = await next_message(dead)
    assert letter.headers["x-dead-letter-reason"] == "bad_header"
    assert "x-idempotency-key" in str(letter.headers["x-dead-letter-detail"]).lower()
    assert await worker.run(run_id) is None
    assert worker.tally.dead_letters == {"bad_header": 1}
