"""Prometheus metrics of the worker (served on `/metrics`) and what records them.

Names follow SPEC §6.4 (`flow_*`); labels stay low-cardinality: flow ids, step keys,
kinds, statuses and reasons, never a run id. Each `observe_*` function is the one place
its metric is recorded, so a caller (the app today, the orchestrator through a port
later) needs no prometheus_client import.
"""

from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest

TEXT_FORMAT: Final = CONTENT_TYPE_LATEST

_MS_BUCKETS: Final = (
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
)

MESSAGES_CONSUMED: Final = Counter(
    "flow_messages_consumed",
    "Deliveries settled, by message kind and outcome.",
    ["kind", "outcome"],
)
MESSAGES_DEAD_LETTERED: Final = Counter(
    "flow_messages_dead_lettered",
    "Messages sent to the dead-letter queue, by reason.",
    ["reason"],
)
MESSAGES_IN_FLIGHT: Final = Gauge(
    "flow_messages_in_flight", "Deliveries being handled right now."
)
RUNS_STARTED: Final = Counter(
    "flow_runs_started", "Runs started (not duplicates).", ["flow_id", "trigger_key"]
)
RUNS_COMPLETED: Final = Counter(
    "flow_runs_completed", "Runs that reached a final status.", ["flow_id", "status"]
)
STEP_DURATION: Final = Histogram(
    "flow_step_duration_ms",
    "Handler time plus result save of one step attempt, in milliseconds.",
    ["flow_id", "step_key", "status"],
    buckets=_MS_BUCKETS,
)
TIMER_LAG: Final = Histogram(
    "flow_timer_lag_ms",
    "How late a timer or a cron tick fired after it was due, in milliseconds.",
    ["kind"],
    buckets=_MS_BUCKETS,
)
TIMERS_FIRED: Final = Counter(
    "flow_timers_fired", "Timers and cron ticks fired by the scheduler.", ["kind"]
)
RECONCILER_ACTIONS: Final = Counter(
    "flow_reconciler_actions",
    "Repairs made by the reconciler (re-published or re-claimed steps, runs closed).",
    ["action"],
)


def observe_settled(kind: str, outcome: str) -> None:
    """A delivery of `kind` was settled: acked, duplicate, deferred, dead_lettered..."""
    MESSAGES_CONSUMED.labels(kind=kind, outcome=outcome).inc()


def observe_dead_letter(reason: str) -> None:
    MESSAGES_DEAD_LETTERED.labels(reason=reason).inc()


def observe_in_flight(delta: int) -> None:
    MESSAGES_IN_FLIGHT.inc(delta)


def observe_run_started(flow_id: str, trigger_key: str) -> None:
    RUNS_STARTED.labels(flow_id=flow_id, trigger_key=trigger_key).inc()


def observe_run_completed(flow_id: str, status: str) -> None:
    RUNS_COMPLETED.labels(flow_id=flow_id, status=status).inc()


def observe_step(flow_id: str, step_key: str, status: str, *, seconds: float) -> None:
    STEP_DURATION.labels(flow_id=flow_id, step_key=step_key, status=status).observe(
        seconds * 1000
    )


def observe_fired(
    kind: str, count: int = 1, *, lag_seconds: float | None = None
) -> None:
    """`count` timers or cron ticks of `kind` fired (`lag_seconds` late, if known)."""
    if count:
        TIMERS_FIRED.labels(kind=kind).inc(count)
    if lag_seconds is not None:
        TIMER_LAG.labels(kind=kind).observe(lag_seconds * 1000)


def observe_reconciler(action: str, count: int = 1) -> None:
    if count:
        RECONCILER_ACTIONS.labels(action=action).inc(count)


class PrometheusTelemetry:
    """The `Telemetry` port of the orchestrator and scheduler, as Prometheus metrics."""

    def run_started(self, flow_id: str, trigger_key: str) -> None:
        observe_run_started(flow_id, trigger_key)

    def run_completed(self, flow_id: str, status: str) -> None:
        observe_run_completed(flow_id, status)

    def step_finished(
        self, flow_id: str, step_key: str, status: str, *, seconds: float
    ) -> None:
        observe_step(flow_id, step_key, status, seconds=seconds)

    def timer_fired(self, kind: str, *, lag_seconds: float) -> None:
        observe_fired(kind, lag_seconds=max(0.0, lag_seconds))

    def repaired(self, action: str, count: int) -> None:
        observe_reconciler(action, count)


def latest() -> bytes:
    """Every metric of this process in the Prometheus text format (`TEXT_FORMAT`)."""
    return _generate_latest()
