"""What flowctl prints: runs, a run, flows, replies, dead letters; text and JSON."""

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from contracts import Reply
from service.adapters.amqp.answers import ReplayOutcome
from service.adapters.amqp.deadletters import DeadLetter, jsonable
from service.adapters.mongo.queries import RunDetail
from service.engine.manifest import to_manifest
from service.engine.model import (
    Flow,
    FlowId,
    JobId,
    RunId,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    TriggerKey,
    cron,
    manual,
)
from service.engine.records import (
    Attempt,
    Event,
    FlowRecord,
    RunRecord,
    Schedule,
    StepRecord,
)
from service.flow_views import (
    FlowView,
    flow_json,
    flow_text,
    flows_text,
    schedules_text,
)
from service.letter_views import letter_json, letter_text, letters_text, replayed_text
from service.views import (
    dumps,
    reply_text,
    run_json,
    run_text,
    runs_json,
    runs_text,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
T0 = datetime(2026, 5, 17, 10, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
RUN = RunRecord(
    run_id=RunId("3f2a0000-0000-4000-8000-000000000001"),
    flow_id=FlowId("f-flaky"),
    flow_name="flaky",
    trigger_key=TriggerKey("manual"),
    job_id=JobId("order-42"),
    started_at=T0,
    status=RunStatus.SUCCEEDED,
    completed_at=T0 + 20 * SECOND,
    idempotency_key="msg:order-42",
)


def plain(text: str) -> str:
    return ANSI.sub("", text)


def a_step(key: str, *, attempts: int = 1, error: str | None = None) -> StepRecord:
    tries = tuple(
        Attempt(
            number=n,
            job_id=JobId(f"{RUN.run_id}:{key}:{n}"),
            started_at=T0 + n * SECOND,
            status=StepStatus.FAILED if n < attempts else StepStatus.SUCCEEDED,
            completed_at=T0 + n * SECOND + timedelta(milliseconds=250),
            error="card declined" if n < attempts else None,
        )
        for n in range(1, attempts + 1)
    )
    return StepRecord(
        run_id=RUN.run_id,
        key=StepKey(key),
        type="Work",
        status=StepStatus.SUCCEEDED,
        dispatched_at=T0,
        attempt=attempts,
        output={"step": key, "long": "x" * 100},
        error=error,
        started_at=T0 + attempts * SECOND,
        completed_at=T0 + attempts * SECOND + timedelta(milliseconds=250),
        attempts=tries,
    )


def events(count: int) -> list[Event]:
    return [
        Event(RUN.run_id, n, "step.started", T0 + n * SECOND, "charge", f"event {n}")
        for n in range(1, count + 1)
    ]


def test_the_runs_table_has_one_row_per_run_and_says_how_many_match():
    running = RunRecord(
        run_id=RunId("run-2"),
        flow_id=FlowId("f-hello"),
        flow_name="hello",
        trigger_key=TriggerKey("manual"),
        job_id=JobId("job-2"),
        started_at=T0,
    )

    text = plain(runs_text([RUN, running], 12, skip=5, now=T0 + 90 * SECOND))

    lines = text.splitlines()
    assert lines[0].split() == [
        "RUN", "ID", "FLOW", "STATUS", "STARTED", "DURATION", "TRIGGER", "JOB", "ID"
    ]  # fmt: skip
    assert lines[1].split() == [
        RUN.run_id, "flaky", "Succeeded", "2026-05-17", "10:00:00", "20.0s", "manual",
        "order-42",
    ]  # fmt: skip
    assert lines[2].split()[4:6] == ["10:00:00", "1m30s+"]
    assert lines[-1] == "runs 6-7 of 12"
    assert runs_text([], 0, skip=0, now=T0) == "no runs match"


def test_runs_as_json_carry_the_page_and_iso_instants():
    data = json.loads(dumps(runs_json([RUN], 1, skip=0, limit=20)))

    assert data["total"] == 1
    assert (data["skip"], data["limit"]) == (0, 20)
    assert data["items"][0]["run_id"] == RUN.run_id
    assert data["items"][0]["started_at"] == "2026-05-17T10:00:00+00:00"
    assert data["items"][0]["status"] == "Succeeded"


def test_one_run_shows_header_steps_attempts_of_retried_steps_and_events():
    detail = RunDetail(
        replace(RUN, cancel_requested=True, cancel_reason="no"),
        [a_step("charge", attempts=2), a_step("ship", error="boom " * 30)],
        events(3),
    )

    text = plain(run_text(detail, now=T0))

    assert "status       Succeeded" in text
    assert "idempotency  msg:order-42" in text
    assert "cancelled    no" in text
    assert "Attempts of charge" in text
    assert "Attempts of ship" not in text
    assert f"{RUN.run_id}:charge:1  Failed" in text
    ship = next(line for line in text.splitlines() if line.startswith("ship"))
    assert "boom boom" in ship
    assert "…" in ship  # error and output are shortened
    assert "Events" in text
    assert "event 3" in text


def test_only_the_latest_events_are_shown_when_asked():
    text = plain(run_text(RunDetail(RUN, [], events(5)), now=T0, events=2))

    assert "Events (latest 2 of 5)" in text
    assert "event 4" in text
    assert "event 3" not in text
    assert "Steps\n(none)" in text


def test_a_run_as_json_has_everything():
    detail = RunDetail(RUN, [a_step("charge", attempts=2)], events(1))

    data = json.loads(dumps(run_json(detail)))

    assert data["run"]["job_id"] == "order-42"
    assert data["steps"][0]["output"]["step"] == "charge"
    assert [a["status"] for a in data["steps"][0]["attempts"]] == [
        "Failed",
        "Succeeded",
    ]
    assert data["events"][0]["message"] == "event 1"


NIGHTLY = Flow(
    id=FlowId("f-nightly"),
    name="nightly",
    triggers={"nightly": cron("0 2 * * *"), "manual": manual()},
    steps={
        "clean": Step("Cleanup"),
        "report": Step("Report", run_after={"clean": ["Succeeded", "Failed"]}),
    },
)
SCHEDULE = Schedule(
    job_id="flow-f-nightly-nightly",
    flow_id=FlowId("f-nightly"),
    trigger_key=TriggerKey("nightly"),
    cron="0 2 * * *",
    next_fire_at=T0 + timedelta(hours=16),
    cron_override="*/5 * * * *",
)
VIEW = FlowView(
    FlowRecord(
        FlowId("f-nightly"), "nightly", "3", to_manifest(NIGHTLY), enabled=False
    ),
    NIGHTLY,
    [SCHEDULE],
)


def test_flows_list_triggers_and_schedule_state():
    text = plain(flows_text([VIEW], now=T0))

    assert (
        "nightly  f-nightly  3        no       nightly (cron), manual (manual)" in text
    )
    assert "Schedules" in text
    schedule = text.splitlines()[-1].split()
    assert schedule[:6] == ["nightly", "nightly", "0", "2", "*", "*"]
    assert "*/5" in schedule
    assert "(in 16h00m)" in text
    assert flows_text([], now=T0).startswith("no flows stored")


def test_one_flow_shows_its_steps_and_run_after():
    text = plain(flow_text(VIEW, now=T0))

    assert "clean   Cleanup  (entry)" in text
    assert "report  Report   clean: Succeeded/Failed" in text


def test_a_flow_as_json_joins_triggers_with_their_schedule():
    data = json.loads(dumps(flow_json(VIEW)))

    assert data["enabled"] is False
    nightly, hand = data["triggers"]
    assert nightly["schedule"]["cron_override"] == "*/5 * * * *"
    assert hand == {"key": "manual", "type": "Manual", "cron": None, "schedule": None}
    assert data["manifest"]["name"] == "nightly"


def test_a_reply_shows_status_message_run_and_data():
    reply = Reply(
        ok=True,
        kind="set_cron",
        status="accepted",
        message="Schedule updated.",
        run_id="r-1",
        step_key="charge",
        data={"paused": False, "next_fire_at": None},
    )

    assert plain(reply_text(reply)).splitlines() == [
        "status        accepted",
        "message       Schedule updated.",
        "run id        r-1",
        "step          charge",
        "paused        false",
        "next fire at",
    ]


LETTER = DeadLetter(
    letter_id="order-17",
    message_id="order-17",
    type="trigger",
    reason="not_json",
    detail="body is not UTF-8 JSON",
    routing_key="trigger.hello",
    exchange="flow.ingress",
    returns=2,
    headers={"x-dead-letter-reason": "not_json", "x-death": [{"count": 1}]},
    properties={"content_type": "application/json"},
    body=b'{"flow": "hello"}',
)


def test_dead_letters_are_listed_with_their_reason():
    text = plain(letters_text([LETTER], 3, queue="flow.dead"))

    assert text.splitlines()[1].split() == [
        "order-17", "trigger", "not_json", "body", "is", "not", "UTF-8", "JSON",
        "trigger.hello",
    ]  # fmt: skip
    assert text.splitlines()[-1] == "1 of 3 dead letters in flow.dead"
    assert letters_text([], 0, queue="flow.dead") == "no dead letters in flow.dead"


def test_one_dead_letter_shows_headers_properties_and_the_body_pretty():
    text = plain(letter_text(LETTER))

    assert "reason       not_json" in text
    assert 'x-death               [{"count":1}]' in text
    assert 'Body (17 bytes)\n{\n  "flow": "hello"\n}' in text


def test_a_body_that_is_not_utf8_is_base64_in_json_and_hex_in_text():
    letter = replace(LETTER, body=b"\xff\xfe")

    assert letter_json(letter)["body"] == "//4="
    assert letter_json(letter)["body_encoding"] == "base64"
    assert letter_json(LETTER)["body"] == '{"flow": "hello"}'
    assert "(not UTF-8) ff fe" in letter_text(letter)


def test_a_replay_says_what_became_of_each_letter():
    outcomes = [
        ReplayOutcome(LETTER, "replayed", "accepted: Run started. (run r-1)"),
        ReplayOutcome(LETTER, "dead-lettered again", "not_json: body is not JSON"),
        ReplayOutcome(LETTER, "not replayed", "unroutable"),
        ReplayOutcome(LETTER, "replayed", "no answer within 10 s"),
    ]

    text = plain(replayed_text(outcomes))

    assert text.splitlines() == [
        "replayed order-17 (trigger -> trigger.hello): accepted: Run started. "
        "(run r-1)",
        "dead-lettered again order-17 (trigger -> trigger.hello): not_json: body is "
        "not JSON",
        "not replayed order-17 (trigger -> trigger.hello): unroutable",
        "replayed order-17 (trigger -> trigger.hello): no answer within 10 s",
        "2 replayed, 1 dead-lettered again, 1 not replayed",
    ]
    assert replayed_text([]) == "no dead letters match"


def test_amqp_header_values_become_json():
    value = jsonable({"a": b"bytes", "b": [T0, 1, 2.5, None, True], "c": {"d": (1, 2)}})

    assert value == {
        "a": "bytes",
        "b": ["2026-05-17T10:00:00+00:00", 1, 2.5, None, True],
        "c": {"d": [1, 2]},
    }


def test_a_paused_schedule_shows_paused():
    paused = replace(SCHEDULE, paused=True, next_fire_at=None)
    view = replace(VIEW, schedules=[paused])

    table = plain(schedules_text([(view, paused)], now=T0))
    listing = plain(flows_text([view], now=T0))

    assert table.splitlines()[0].split()[4] == "STATE"
    assert table.splitlines()[1].split()[-2:] == ["paused", "paused"]
    assert "nightly (cron, paused), manual (manual)" in listing
    active = plain(schedules_text([(VIEW, SCHEDULE)], now=T0))
    assert "active" in active.splitlines()[1].split()
