"""The dashboard's pure parts: masking, humane text, the manifest-and-rows join, the DAG
order, the timeline, query strings and the users setting."""

from datetime import UTC, datetime, timedelta

import pytest

from service.adapters.mongo.browse import Cursor, RunFilter
from service.dashboard import filters, formatting
from service.dashboard.auth import Role, Throttle, hash_password, parse_users, safe_next
from service.dashboard.gantt import gantt
from service.dashboard.graph import flow_graph, run_graph
from service.dashboard.masking import MASK, mask_json, mask_mapping
from service.dashboard.stepview import WAITING, dag_order, dominant, step_lines
from service.engine.model import (
    Flow,
    FlowId,
    JobId,
    Json,
    RunId,
    RunStatus,
    Step,
    StepKey,
    StepStatus,
    TriggerKey,
    for_each,
)
from service.engine.records import Attempt, RunRecord, StepRecord, Timer, TimerKind

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
FLOW = Flow(
    id=FlowId("f"),
    name="f",
    steps={
        "c": Step("C", run_after={"b": ["Succeeded"]}),
        "a": Step("A"),
        "b": Step("B", run_after={"a": ["Failed"]}),
        "loop": for_each("@triggerBody()", {"one": Step("One")}),
    },
)


def row(key: str, status: StepStatus, *attempts: Attempt) -> StepRecord:
    return StepRecord(
        run_id=RunId("r"),
        key=StepKey(key),
        type="T",
        status=status,
        dispatched_at=T0,
        attempt=len(attempts),
        attempts=attempts,
    )


def attempt(n: int, status: StepStatus, start: int, end: int | None) -> Attempt:
    return Attempt(
        number=n,
        job_id=JobId(f"r:x:{n}"),
        started_at=T0 + timedelta(seconds=start),
        status=status,
        completed_at=None if end is None else T0 + timedelta(seconds=end),
    )


def run(status: RunStatus = RunStatus.RUNNING, end: int | None = None) -> RunRecord:
    return RunRecord(
        run_id=RunId("r"),
        flow_id=FlowId("f"),
        flow_name="f",
        trigger_key=TriggerKey("manual"),
        job_id=JobId("j"),
        started_at=T0,
        status=status,
        completed_at=None if end is None else T0 + timedelta(seconds=end),
    )


# -- masking ---------------------------------------------------------------------


def test_credential_named_fields_are_masked_at_any_depth_and_others_kept():
    value: Json = {
        "Authorization": "Bearer x",
        "nested": [{"api_key": 1, "client_secret": "s", "author": "ada"}],
        "url": "amqp://user:pw@host:5672/",
        "PIN": "1234",
        "pinned": True,
    }

    masked = mask_json(value)

    assert masked == {
        "Authorization": MASK,
        "nested": [{"api_key": MASK, "client_secret": MASK, "author": "ada"}],
        "url": f"amqp://user:{MASK}@host:5672/",
        "PIN": MASK,
        "pinned": True,
    }
    assert mask_mapping({"X-Auth-Token": "t", "X-Request-Id": "r"}) == {
        "X-Auth-Token": MASK,
        "X-Request-Id": "r",
    }


# -- humane text -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "just now"),
        (75, "1 min ago"),
        (-3 * 3600, "in 3 h"),
        (2 * 86_400, "2 d ago"),
    ],
    ids=["now", "minutes", "future", "days"],
)
def test_instants_read_relative(seconds, text):
    assert formatting.ago(T0 - timedelta(seconds=seconds), T0) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250 ms"), (12.34, "12.3 s"), (245, "4 min 05 s"), (7385, "2 h 03 min")],
    ids=["ms", "s", "min", "h"],
)
def test_durations_read_in_two_units_at_most(seconds, text):
    assert formatting.span(timedelta(seconds=seconds)) == text


def test_an_errors_headline_is_a_tracebacks_last_line():
    traceback = 'Traceback (most recent call last):\n  File "x"\nValueError: nope\n'

    assert formatting.headline(traceback) == "ValueError: nope"
    assert formatting.headline("card declined\nmore") == "card declined"
    assert formatting.headline(None) == ""


def test_long_json_is_cut_with_a_note():
    text = formatting.pretty({"big": "x" * 30_000})

    assert len(text) < 21_000
    assert text.endswith("more characters)")


# -- the steps of a run ----------------------------------------------------------


def test_the_dag_order_puts_each_step_after_its_dependencies():
    assert dag_order(FLOW.steps) == ["a", "b", "c", "loop"]


def test_manifest_steps_without_rows_are_waiting_and_unknown_rows_come_last():
    rows = [row("a", StepStatus.FAILED), row("zombie", StepStatus.SUCCEEDED)]
    templates = {"loop": {"Succeeded": 3, "Failed": 1}, "loop.one": {"Succeeded": 4}}

    lines = step_lines(FLOW, rows, templates)

    assert [(line.key, line.status) for line in lines] == [
        ("a", "Failed"),
        ("b", WAITING),
        ("c", WAITING),
        ("loop", WAITING),
        ("zombie", "Succeeded"),
    ]
    loop = lines[3]
    assert loop.iterations == {"Succeeded": 3, "Failed": 1}
    assert [(b.template, b.status) for b in loop.body] == [("loop.one", "Succeeded")]
    assert lines[1].run_after == "a: Failed"


def test_a_group_shows_its_most_urgent_status():
    assert dominant({"Succeeded": 9, "Running": 1}) == "Running"
    assert dominant({"Succeeded": 9, "Failed": 1, "Running": 1}) == "Failed"
    assert dominant({}) == WAITING


def test_the_run_graph_labels_edges_that_are_not_plain_success():
    lines = step_lines(FLOW, [row("a", StepStatus.FAILED)], {})

    graph = run_graph(lines, FLOW)
    plain = flow_graph(FLOW)

    edges = {(e["from"], e["to"]): e["label"] for e in graph["edges"]}
    assert edges == {("b", "c"): "", ("a", "b"): "Failed"}
    assert [n["id"] for n in plain["nodes"]] == ["c", "a", "b", "loop"]
    assert plain["nodes"][3]["body"]["nodes"][0]["id"] == "loop.one"


# -- the timeline ----------------------------------------------------------------


def test_the_timeline_draws_attempts_parks_and_timers_on_one_scale():
    tried = row(
        "a",
        StepStatus.PENDING,
        attempt(1, StepStatus.FAILED, 0, 2),
        attempt(2, StepStatus.PENDING, 4, 5),
    )
    lines = step_lines(FLOW, [tried], {})
    timer = Timer(
        "t", TimerKind.REQUEUE, T0 + timedelta(seconds=9), RunId("r"), StepKey("a")
    )

    drawn = gantt(run(), lines, [timer], now=T0 + timedelta(seconds=10))

    (first,) = drawn.rows
    assert [bar.kind for bar in first.bars] == ["Failed", "Pending", "park"]
    failed, pending, park = first.bars
    assert failed.x == drawn.left
    assert pending.x > failed.x + failed.width
    assert park.x == pytest.approx(pending.x + pending.width)
    assert "r:x:2" in pending.title  # the attempt's job id
    (mark,) = first.marks
    assert park.x < mark.x <= drawn.width
    assert drawn.now_x == pytest.approx(drawn.width)


# -- query strings and users -----------------------------------------------------


def test_filters_parse_ages_iso_times_and_statuses_and_report_the_rest():
    parsed = filters.parse(
        {"status": "failed", "since": "2h", "until": "2026-11-20T10:00", "q": " ab "},
        now=T0,
    )
    bad = filters.parse({"status": "nope", "since": "<script>"}, now=T0)

    assert parsed.where.status is RunStatus.FAILED
    assert parsed.where.since == T0 - timedelta(hours=2)
    assert parsed.where.until == datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert parsed.where.text == "ab"
    assert bad.where == RunFilter()
    assert len(bad.problems) == 2


def test_a_cursor_survives_its_round_trip_to_the_millisecond():
    at = datetime(2026, 11, 20, 12, 0, 1, 123000, tzinfo=UTC)

    text = filters.cursor_text(Cursor(at, "run-1"))

    assert filters.cursor(text) == Cursor(at, "run-1")
    assert filters.cursor("12:") is None
    assert filters.cursor("abc:run") is None


def test_users_are_read_from_entries_and_a_bad_one_is_named_without_its_hash():
    digest = hash_password("correct horse")

    users = parse_users(f"ada:operator:{digest};\n bob:viewer:{digest}")

    assert users["ada"].role is Role.OPERATOR
    assert users["bob"].may(Role.VIEWER)
    assert not users["bob"].may(Role.OPERATOR)
    with pytest.raises(ValueError, match="entry 2 \\(bob\\): the role"):
        parse_users(f"ada:operator:{digest};bob:admin:{digest}")
    with pytest.raises(ValueError, match="not an argon2 hash") as refused:
        parse_users("ada:operator:plaintext-password")
    assert "plaintext-password" not in str(refused.value)


def test_after_sign_in_only_local_paths_are_followed():
    assert safe_next("/runs/abc?x=1") == "/runs/abc?x=1"
    assert safe_next("//evil.example") == "/runs"
    assert safe_next("https://evil.example") == "/runs"
    assert safe_next("/\\evil") == "/runs"


def test_repeated_failures_of_one_name_are_throttled():
    throttle = Throttle(allowed=2, window=60)

    throttle.failed("ada")
    first = throttle.blocked("ada")
    throttle.failed("ada")

    assert first is False
    assert throttle.blocked("ada") is True
    assert throttle.blocked("bob") is False
