"""The metrics on-call reads: flow names beside ids, attempts, retries, completions."""

from prometheus_client import REGISTRY

from service import metrics

FLOW_ID = "1b0c7c1e-4d1a-4f51-9a53-3c6f0d9a0002"
NAMES = metrics.FlowNames({FLOW_ID: "orders"})


def value(name: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_flows_are_labelled_by_name_as_well_as_id():
    telemetry = metrics.PrometheusTelemetry(NAMES)
    labels = {"flow_id": FLOW_ID, "flow": "orders"}
    before = value("flow_runs_started_total", **labels, trigger_key="manual")

    telemetry.run_started(FLOW_ID, "manual")

    assert (
        value("flow_runs_started_total", **labels, trigger_key="manual") == before + 1
    )


def test_a_flow_the_worker_does_not_load_is_labelled_unknown():
    assert NAMES("0000") == "unknown"


def test_attempts_count_every_claim_and_retries_the_ones_after_the_first():
    telemetry = metrics.PrometheusTelemetry(NAMES)
    labels = {"flow_id": FLOW_ID, "flow": "orders", "step_key": "charge"}
    attempts = value("flow_step_attempts_total", **labels)
    retries = value("flow_step_retries_total", **labels)

    for attempt in (1, 2, 3):
        telemetry.attempt_started(FLOW_ID, "charge", attempt)

    assert value("flow_step_attempts_total", **labels) == attempts + 3
    assert value("flow_step_retries_total", **labels) == retries + 2


def test_a_reopened_run_counts_its_completions_and_says_so():
    telemetry = metrics.PrometheusTelemetry(NAMES)
    labels = {"flow_id": FLOW_ID, "flow": "orders"}
    failed = value("flow_runs_completed_total", **labels, status="Failed")
    succeeded = value("flow_runs_completed_total", **labels, status="Succeeded")
    reopened = value("flow_runs_reopened_total", **labels)

    telemetry.run_completed(FLOW_ID, "Failed")
    telemetry.run_reopened(FLOW_ID)  # a manual retry
    telemetry.run_completed(FLOW_ID, "Succeeded")

    assert value("flow_runs_completed_total", **labels, status="Failed") == failed + 1
    assert (
        value("flow_runs_completed_total", **labels, status="Succeeded")
        == succeeded + 1
    )
    assert value("flow_runs_reopened_total", **labels) == reopened + 1
    assert "Counts completions, not runs" in metrics.RUNS_COMPLETED._documentation


def test_runs_in_progress_are_set_from_a_count_and_zero_for_a_flow_with_none():
    metrics.observe_in_progress({FLOW_ID: 4}, NAMES)
    assert value("flow_runs_in_progress", flow_id=FLOW_ID, flow="orders") == 4

    metrics.observe_in_progress({}, NAMES)
    assert value("flow_runs_in_progress", flow_id=FLOW_ID, flow="orders") == 0


def test_queue_wait_is_recorded_in_milliseconds_and_never_negative():
    labels = {"flow_id": FLOW_ID, "flow": "orders"}
    count = value("flow_queue_wait_ms_count", **labels)
    total = value("flow_queue_wait_ms_sum", **labels)

    metrics.observe_queue_wait(FLOW_ID, "orders", seconds=0.25)
    metrics.observe_queue_wait(FLOW_ID, "orders", seconds=-1.0)  # clocks apart

    assert value("flow_queue_wait_ms_count", **labels) == count + 2
    assert value("flow_queue_wait_ms_sum", **labels) == total + 250


def test_queue_gauges_are_set_per_role():
    metrics.observe_queue("dead", messages=3, consumers=0)

    assert value("flow_queue_messages", queue="dead") == 3
    assert value("flow_queue_consumers", queue="dead") == 0


def test_every_metric_is_listed_once_and_served():
    names = [family._name for family in metrics.METRICS]
    served = metrics.latest().decode()

    assert len(names) == len(set(names))
    assert all(f"# HELP {name}" in served for name in names)
