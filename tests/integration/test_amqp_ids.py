"""Run ids in any case, and replies that are messages of their own, on a real broker.

A UUID is case-insensitive: a run triggered with an upper-case `run_id` is answered in
lower case and every control message finds it whatever the case it is written in.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from aio_pika.abc import AbstractQueue

from examples import approval, hello
from service.engine.model import RunId, RunStatus, StepKey, StepStatus
from service.steps.handlers import Handlers
from tests.integration.amqp import (
    DEADLINE,
    Client,
    Worker,
    next_message,
    reply_of,
    running_worker,
)


@pytest.fixture
async def worker(rabbitmq_url, names) -> AsyncIterator[Worker]:
    both = Handlers()
    both.merge(hello.handlers)
    both.merge(approval.handlers)
    async with running_worker(
        rabbitmq_url, names, [*hello.flows, *approval.flows], both
    ) as worker:
        yield worker


async def ask(
    client: Client, replies: AbstractQueue, kind: str, body: dict[str, Any]
) -> dict[str, Any]:
    routing_key = f"trigger.{body['flow']}" if kind == "trigger" else f"control.{kind}"
    await client.publish(routing_key, body, kind=kind, reply_to=replies.name)
    return reply_of(await next_message(replies))


async def test_a_run_triggered_with_an_upper_case_id_is_found_in_any_case(
    worker, client
):
    replies = await client.channel.declare_queue(exclusive=True)
    waiting, cancelled = str(uuid4()), str(uuid4())
    for run_id in (waiting, cancelled):
        started = await ask(
            client,
            replies,
            "trigger",
            {"flow": "approval", "run_id": run_id.upper()},
        )
        assert (started["status"], started["run_id"]) == ("accepted", run_id)
    await _parked(worker, waiting)
    await _parked(worker, cancelled)

    signalled = await ask(
        client,
        replies,
        "signal",
        {"run_id": waiting.upper(), "signal": "approval", "payload": {"by": "ops"}},
    )
    cancel = await ask(client, replies, "cancel_run", {"run_id": cancelled.upper()})
    retry = await ask(
        client,
        replies,
        "retry_step",
        {"run_id": cancelled.upper(), "step_key": "request"},
    )
    rerun = await ask(client, replies, "rerun", {"run_id": waiting.upper()})

    assert (signalled["status"], signalled["run_id"]) == ("delivered", waiting)
    assert (cancel["status"], cancel["run_id"]) == ("accepted", cancelled)
    # Found, and refused for what it is: the run was cancelled.
    assert (retry["status"], retry["run_id"]) == ("refused", cancelled)
    assert rerun["status"] == "accepted"
    assert (await worker.until_final(waiting)).status is RunStatus.SUCCEEDED
    assert (await worker.until_final(cancelled)).status is RunStatus.CANCELLED
    new = await worker.run(rerun["run_id"])
    assert new is not None
    assert new.source_run_id == waiting


async def test_a_request_answered_twice_gets_two_replies_with_their_own_ids(
    worker, client
):
    """A publisher that retries a publish (a lost confirm) sends one message id
    twice; each answer is a message of its own, correlated to the one request."""
    replies = await client.channel.declare_queue(exclusive=True)
    message_id = str(uuid4())

    for _ in range(2):
        await client.publish(
            "trigger.hello",
            {"flow": "hello"},
            kind="trigger",
            message_id=message_id,
            reply_to=replies.name,
            correlation_id=message_id,
        )
    answers = [await next_message(replies) for _ in range(2)]

    assert sorted(reply_of(a)["status"] for a in answers) == ["accepted", "duplicate"]
    assert [a.correlation_id for a in answers] == [message_id, message_id]
    assert answers[0].message_id != answers[1].message_id
    assert message_id not in {a.message_id for a in answers}


async def _parked(worker: Worker, run_id: str) -> None:
    """Wait until the run's `approval` step waits for its signal."""
    async with asyncio.timeout(DEADLINE):
        while True:
            rows = await worker.stores.steps.steps(RunId(run_id), [StepKey("approval")])
            row = rows.get(StepKey("approval"))
            if row is not None and row.status is StepStatus.PENDING:
                return
            await asyncio.sleep(0.02)
