"""The consumer on a real broker, driving the orchestrator on the memory stores.

Messages are published by a plain aio-pika client as an outside service would: raw JSON
bodies, the kind in the AMQP `type` property, the job id in `message_id`.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import aio_pika
import pytest

from examples import hello
from service.adapters.amqp.consumer import Outcome
from service.engine.model import Flow, FlowId, RunId, RunStatus, Step, StepKey
from service.steps.handlers import Handlers, StepContext
from tests.integration.amqp import (
    DEADLINE,
    FAST,
    MAX_BODY_BYTES,
    Client,
    Worker,
    declare_legacy_ingress,
    next_message,
    reply_of,
    running_worker,
    until,
)


async def a_reply_queue(client: Client):
    """A server-named exclusive queue: the broker deletes it with the connection."""
    return await client.channel.declare_queue(exclusive=True)


async def trigger_hello(client: Client, **fields) -> str:
    run_id = str(uuid4())
    body = {"flow": "hello", "body": {"name": "amqp"}, "run_id": run_id, **fields}
    await client.publish("trigger.hello", body, kind="trigger")
    return run_id


async def test_a_raw_json_trigger_runs_the_flow_and_the_message_id_is_the_job_id(
    worker, client
):
    run_id = str(uuid4())

    message_id = await client.publish(
        "trigger.hello",
        {"flow": "hello", "body": {"name": "amqp"}, "run_id": run_id},
        kind="trigger",
    )

    run = await worker.until_final(run_id)
    assert run.status is RunStatus.SUCCEEDED
    assert run.job_id == message_id
    rows = await worker.stores.steps.steps(RunId(run_id), [StepKey("sign")])
    assert rows[StepKey("sign")].output["text"].startswith("HELLO, AMQP! -- ")
    assert rows[StepKey("sign")].job_id == f"{run_id}:sign:1"
    assert worker.tally.outcomes["trigger", Outcome.ACKED] == 1
    # The run is final before the last delivery is settled and counted.
    await until(lambda: worker.tally.outcomes["run_step", Outcome.ACKED] == 3)


@pytest.mark.parametrize(
    ("routing_key", "kind", "body", "reason"),
    [
        ("trigger.hello", "trigger", b"{not json", "not_json"),
        ("trigger.hello", "trigger", {"flow": 5}, "schema_invalid"),
        ("control.launch", "launch_rockets", {"flow": "hello"}, "unknown_kind"),
        ("trigger.nope", "trigger", {"flow": "no-such-flow"}, "unknown_reference"),
        (
            "trigger.hello",
            "trigger",
            {"flow": "hello", "body": {"pad": "x" * MAX_BODY_BYTES}},
            "oversize",
        ),
        (
            "step.f",
            "run_step",
            {"flow_id": "f", "run_id": "r", "step_key": "s", "attempt": 1},
            "unknown_reference",
        ),
    ],
    ids=[
        "not-json",
        "schema-invalid",
        "unknown-kind",
        "unknown-flow",
        "oversize",
        "unknown-step",
    ],
)
async def test_bad_input_is_dead_lettered_with_its_reason_and_consuming_goes_on(
    worker, client, routing_key, kind, body, reason
):
    dead = await client.channel.get_queue(worker.names.dead)

    message_id = await client.publish(routing_key, body, kind=kind)

    letter = await next_message(dead)
    assert letter.headers["x-dead-letter-reason"] == reason
    detail = letter.headers["x-dead-letter-detail"]
    assert isinstance(detail, str)
    assert 0 < len(detail) <= 300
    assert letter.headers["x-original-message-id"] == message_id
    assert letter.headers["x-original-type"] == kind
    assert letter.headers["x-original-routing-key"] == routing_key
    assert letter.message_id == message_id
    assert letter.type == kind
    assert letter.body == (body if isinstance(body, bytes) else letter.body)
    assert worker.tally.dead_letters == {reason: 1}
    run_id = await trigger_hello(client)
    assert (await worker.until_final(run_id)).status is RunStatus.SUCCEEDED


async def test_a_message_without_message_id_is_dead_lettered(worker, client):
    dead = await client.channel.get_queue(worker.names.dead)

    await client.publish_without_message_id(
        "trigger.hello", b'{"flow": "hello"}', kind="trigger"
    )

    letter = await next_message(dead)
    assert letter.headers["x-dead-letter-reason"] == "no_message_id"
    assert "x-original-message-id" not in letter.headers
    assert letter.body == b'{"flow": "hello"}'
    run_id = await trigger_hello(client)
    assert (await worker.until_final(run_id)).status is RunStatus.SUCCEEDED


async def test_a_control_message_with_reply_to_gets_its_reply(worker, client):
    replies = await a_reply_queue(client)
    run_id = await trigger_hello(client)
    await worker.until_final(run_id)

    await client.publish(
        "control.cancel_run",
        {"run_id": run_id, "reason": "changed my mind"},
        kind="cancel_run",
        reply_to=replies.name,
        correlation_id="c-1",
    )

    answer = await next_message(replies)
    assert (answer.type, answer.correlation_id) == ("reply", "c-1")
    assert reply_of(answer) == {
        "ok": False,
        "kind": "cancel_run",
        "status": "refused",
        "message": "Run is not active (status: Succeeded).",
        "run_id": run_id,
        "step_key": None,
        "data": {},
    }


async def test_a_disabled_flow_answers_a_trigger_with_disabled(worker, client):
    replies = await a_reply_queue(client)

    await client.publish(
        "control.disable_flow",
        {"flow": "hello"},
        kind="disable_flow",
        reply_to=replies.name,
    )
    disabled = reply_of(await next_message(replies))
    await client.publish(
        "trigger.hello", {"flow": "hello"}, kind="trigger", reply_to=replies.name
    )
    refused = reply_of(await next_message(replies))

    assert (disabled["ok"], disabled["status"]) == (True, "accepted")
    assert (refused["ok"], refused["status"], refused["run_id"]) == (
        False,
        "disabled",
        None,
    )
    assert worker.tally.outcomes["trigger", Outcome.REFUSED] == 1


async def test_a_control_message_naming_an_unknown_run_is_dead_lettered_and_answered(
    worker, client
):
    replies = await a_reply_queue(client)
    dead = await client.channel.get_queue(worker.names.dead)

    await client.publish(
        "control.rerun", {"run_id": "no-such-run"}, kind="rerun", reply_to=replies.name
    )

    answer = reply_of(await next_message(replies))
    letter = await next_message(dead)
    assert (answer["ok"], answer["kind"], answer["status"]) == (
        False,
        "rerun",
        "not_found",
    )
    assert answer["message"] == "unknown run 'no-such-run'"
    assert letter.headers["x-dead-letter-reason"] == "unknown_reference"


async def test_a_trigger_with_direct_reply_to_is_answered_with_its_run_id(
    worker, client
):
    answers: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
    pseudo = await client.channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
    await pseudo.consume(answers.put, no_ack=True)
    run_id = str(uuid4())

    await client.publish(
        "trigger.hello",
        {"flow": "hello", "run_id": run_id},
        kind="trigger",
        reply_to="amq.rabbitmq.reply-to",
    )

    async with asyncio.timeout(DEADLINE):
        answer = reply_of(await answers.get())
    assert (answer["status"], answer["run_id"]) == ("accepted", run_id)


async def test_the_same_trigger_message_twice_gives_one_run(worker, client):
    replies = await a_reply_queue(client)
    message_id = str(uuid4())

    for _ in range(2):
        await client.publish(
            "trigger.hello",
            {"flow": "hello"},
            kind="trigger",
            message_id=message_id,
            reply_to=replies.name,
        )
    answers = [reply_of(await next_message(replies)) for _ in range(2)]

    assert sorted(a["status"] for a in answers) == ["accepted", "duplicate"]
    run_id = answers[0]["run_id"]
    assert answers[1]["run_id"] == run_id
    run = await worker.until_final(run_id)
    assert (run.status, run.job_id) == (RunStatus.SUCCEEDED, message_id)
    far = datetime.max.replace(tzinfo=UTC)
    assert worker.stores.runs.completed_before(far, limit=10) == [RunId(run_id)]


@pytest.mark.parametrize("header", ["x-idempotency-key", "Idempotency-Key"])
async def test_triggers_with_the_same_amqp_idempotency_header_give_one_run(
    worker, client, header
):
    replies = await a_reply_queue(client)
    key = f"order-{uuid4()}"

    for _ in range(2):  # two message ids, one key
        await client.publish(
            "trigger.hello",
            {"flow": "hello"},
            kind="trigger",
            reply_to=replies.name,
            headers={header: key},
        )
    answers = [reply_of(await next_message(replies)) for _ in range(2)]

    assert sorted(a["status"] for a in answers) == ["accepted", "duplicate"]
    assert answers[0]["run_id"] == answers[1]["run_id"]
    run = await worker.until_final(answers[0]["run_id"])
    assert run.idempotency_key == key.lower()


async def test_an_unroutable_dispatch_is_retried_in_place_not_dead_lettered(
    rabbitmq_url, names, client
):
    """On an ingress exchange without an alternate exchange (declared by an older
    version, no policy), an unroutable publish comes back to the publisher."""
    await declare_legacy_ingress(rabbitmq_url, names)
    async with running_worker(
        rabbitmq_url, names, hello.flows, hello.handlers, backoff=FAST
    ) as worker:
        await _retried_in_place(worker, client)


async def _retried_in_place(worker: Worker, client: Client) -> None:
    steps = await client.channel.get_queue(worker.names.steps)
    await steps.unbind(worker.names.ingress, "step.#")
    run_id = await trigger_hello(client)

    await until(lambda: worker.tally.deferrals["trigger"] >= 3)
    await steps.bind(worker.names.ingress, "step.#")

    # The retry finds the run created, its entry step Queued and unpublished: the
    # orchestrator must publish it again (no reconciler runs in this test).
    run = await worker.until_final(run_id)
    assert run.status is RunStatus.SUCCEEDED
    dead = await client.channel.declare_queue(worker.names.dead, passive=True)
    assert dead.declaration_result.message_count == 0
    assert worker.tally.dead_letters == {}
    assert worker.tally.outcomes["trigger", Outcome.ACKED] == 1


async def test_a_dead_letter_that_cannot_be_routed_is_retried_in_place(worker, client):
    dead = await client.channel.get_queue(worker.names.dead)
    await dead.unbind(worker.names.dlx, "#")
    message_id = await client.publish("trigger.hello", b"{not json", kind="trigger")

    await until(lambda: worker.tally.deferrals["trigger"] >= 3)
    await dead.bind(worker.names.dlx, "#")

    letter = await next_message(dead)
    assert letter.message_id == message_id
    assert letter.headers["x-dead-letter-reason"] == "not_json"
    assert worker.tally.dead_letters == {"not_json": 1}


def gated_flow(entered: asyncio.Event, release: asyncio.Event) -> tuple[Flow, Handlers]:
    handlers = Handlers()

    @handlers.handler("Gate")
    async def gate(ctx: StepContext, inputs: dict[str, object]) -> dict[str, bool]:
        entered.set()
        await release.wait()
        return {"passed": True}

    flow = Flow(id=FlowId(str(uuid4())), name="gated", steps={"gate": Step("Gate")})
    return flow, handlers


async def test_shutdown_requeues_a_delivery_still_in_flight_after_the_grace(
    rabbitmq_url, names, client
):
    entered, release = asyncio.Event(), asyncio.Event()
    flow, handlers = gated_flow(entered, release)
    async with running_worker(
        rabbitmq_url, names, [flow], handlers, grace=timedelta(milliseconds=200)
    ) as worker:
        run_id = str(uuid4())
        await client.publish(
            "trigger.gated", {"flow": "gated", "run_id": run_id}, kind="trigger"
        )
        async with asyncio.timeout(DEADLINE):
            await entered.wait()

        await worker.shut_down()

        assert worker.tally.outcomes["run_step", Outcome.REQUEUED] == 1
    steps = await client.channel.get_queue(names.steps)
    again = await next_message(steps)
    assert (again.type, again.message_id) == ("run_step", f"{run_id}:gate:1")
    assert again.redelivered


async def test_shutdown_lets_an_in_flight_delivery_finish_within_the_grace(
    rabbitmq_url, names, client
):
    entered, release = asyncio.Event(), asyncio.Event()
    flow, handlers = gated_flow(entered, release)
    async with running_worker(
        rabbitmq_url, names, [flow], handlers, grace=timedelta(seconds=DEADLINE)
    ) as worker:
        run_id = str(uuid4())
        await client.publish(
            "trigger.gated", {"flow": "gated", "run_id": run_id}, kind="trigger"
        )
        async with asyncio.timeout(DEADLINE):
            await entered.wait()

        worker.stop.set()
        await until(lambda: not worker.consumer.consuming.is_set())
        release.set()
        await worker.shut_down()

        assert worker.tally.outcomes["run_step", Outcome.ACKED] == 1
        assert (await worker.until_final(run_id)).status is RunStatus.SUCCEEDED


@pytest.mark.parametrize("copy", ["another", "the same"])
async def test_a_redelivered_copy_takes_a_live_claim_over_only_if_it_made_it(
    rabbitmq_url, names, client, copy
):
    # A repair publishes a dispatch again under the same message id (the reconciler,
    # a redelivery's recovery): that copy, redelivered (here: a graceful shutdown
    # gave it back), must not start the step again while its first copy runs it.
    entered, release = asyncio.Event(), asyncio.Event()
    flow, handlers = gated_flow(entered, release)
    async with running_worker(rabbitmq_url, names, [flow], handlers) as worker:
        run_id = str(uuid4())
        await client.publish(
            "trigger.gated", {"flow": "gated", "run_id": run_id}, kind="trigger"
        )
        async with asyncio.timeout(DEADLINE):
            await entered.wait()
        [row] = (
            await worker.stores.steps.steps(RunId(run_id), [StepKey("gate")])
        ).values()
        dispatch_id = worker.stores.steps.dispatch_id(RunId(run_id), StepKey("gate"))
        entered.clear()

        await client.publish(
            f"step.{flow.id}",
            {"flow_id": flow.id, "run_id": run_id, "step_key": "gate", "attempt": 1},
            kind="run_step",
            message_id=row.job_id,
            headers={
                "x-dispatch-id": "another" if copy == "another" else dispatch_id,
                "x-delivery-count": 1,
            },
        )
        if copy == "another":
            await until(lambda: worker.tally.outcomes["run_step", Outcome.ACKED] == 1)
            assert not entered.is_set()
        else:
            async with asyncio.timeout(DEADLINE):
                await entered.wait()  # taken over: its first delivery is gone
        release.set()
        run = await worker.until_final(run_id)

    [row] = (await worker.stores.steps.steps(RunId(run_id), [StepKey("gate")])).values()
    assert run.status is RunStatus.SUCCEEDED
    assert row.attempt == (1 if copy == "another" else 2)


async def test_triggers_take_at_most_a_quarter_of_the_slots_and_the_rest_goes_on(
    worker, client, monkeypatch
):
    # running_worker handles 8 deliveries at once: triggers get 2 of them.
    inside, peak = 0, 0
    release = asyncio.Event()
    original = worker.orchestrator.trigger

    async def held_trigger(*args, **kwargs):
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        try:
            await release.wait()
            return await original(*args, **kwargs)
        finally:
            inside -= 1

    monkeypatch.setattr(worker.orchestrator, "trigger", held_trigger)
    run_ids = [await trigger_hello(client) for _ in range(6)]
    await until(lambda: inside == 2)
    replies = await a_reply_queue(client)

    # Six triggers wait, yet a control message is answered at once.
    await client.publish(
        "control.cancel_run",
        {"run_id": "no-such-run"},
        kind="cancel_run",
        reply_to=replies.name,
    )
    answer = reply_of(await next_message(replies))
    release.set()
    runs = [await worker.until_final(run_id) for run_id in run_ids]

    assert answer["status"] == "not_found"
    assert peak == 2
    assert [run.status for run in runs] == [RunStatus.SUCCEEDED] * 6
