"""Bad input of every kind is dead-lettered with its reason; consuming goes on."""

import json
import uuid

from tests.e2e.harness import Deployment


def _trigger(**fields: object) -> bytes:
    return json.dumps({"flow": "steady", **fields}).encode()


BAD = [
    # (routing key, body, kind, message id, expected reason)
    ("trigger.steady", b"{not json", "trigger", "bad-json", "not_json"),
    (
        "trigger.steady",
        json.dumps({"flow": 5}).encode(),
        "trigger",
        "bad-schema",
        "schema_invalid",
    ),
    ("control.explode", b"{}", "explode", "bad-kind", "unknown_kind"),
    # No type, and a routing key that names no kind either (`control.<kind>` would).
    ("control.explode", _trigger(), None, "bad-no-type", "unknown_kind"),
    ("trigger.steady", _trigger(body="x" * 5000), "trigger", "bad-size", "oversize"),
    (
        "trigger.nope",
        json.dumps({"flow": "nope"}).encode(),
        "trigger",
        "bad-flow",
        "unknown_reference",
    ),
    (
        "trigger.steady",
        _trigger(trigger_key="nope"),
        "trigger",
        "bad-trigger",
        "unknown_reference",
    ),
    (
        "step.x",
        json.dumps(
            {
                "flow_id": "x",
                "run_id": str(uuid.uuid4()),
                "step_key": "one",
                "attempt": 1,
            }
        ).encode(),
        "run_step",
        "bad-run",
        "unknown_reference",
    ),
    ("trigger.steady", _trigger(), "trigger", None, "no_message_id"),
]


async def test_each_kind_of_bad_input_is_dead_lettered_with_its_reason(
    deployment: Deployment,
):
    worker = deployment.start_worker(MAX_MESSAGE_BYTES="4096")
    await worker.ready()

    for routing_key, body, kind, message_id, _ in BAD:
        if message_id is None:
            assert kind is not None
            await deployment.publish_without_message_id(routing_key, body, kind=kind)
        else:
            await deployment.publish(
                routing_key, body, kind=kind, message_id=message_id
            )
    letters = await deployment.dead_letters(len(BAD), within=30)
    good = await deployment.trigger("steady", {"n": 1})
    [run] = await deployment.finished([good], within=30)

    reasons = {
        letter.headers.get("x-original-message-id"): letter.headers[
            "x-dead-letter-reason"
        ]
        for letter in letters
    }
    assert reasons == {message_id: reason for *_, message_id, reason in BAD}
    assert all(letter.headers.get("x-dead-letter-detail") for letter in letters)
    assert run["status"] == "Succeeded"
    assert await deployment.count_runs() == 1
    worker.check_alive()
    logged = [e for e in worker.events() if e.get("event") == "message_dead_lettered"]
    assert sorted(e["reason"] for e in logged) == sorted(reason for *_, reason in BAD)
    assert (
        worker.metric("flow_messages_dead_lettered_total", reason="unknown_reference")
        == 3
    )
