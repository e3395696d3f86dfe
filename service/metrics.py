"""Prometheus metrics of the worker (served on `/metrics`) and what records them.

Names follow SPEC §6.4 (`flow_*`). Labels stay bounded: flow ids and names (of the
flows this worker loads), template step keys, kinds, statuses, reasons and queue roles,
never a run id. Each `observe_*` function is the one place its metric is recorded, so a
caller needs no prometheus_client import. `METRICS` lists every family: the dashboard
and alert tests check their queries against it.
"""

from collections.abc import Mapping
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.metrics import MetricWrapperBase

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
_FLOW: Final = ("flow_id", "flow")
"""A flow's id and its name: both bounded by the flows a worker loads."""

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
WORKER_CONCURRENCY: Final = Gauge(
    "flow_worker_concurrency",
    "Deliveries one worker handles at once (AMQP_CONCURRENCY): saturation is "
    "flow_messages_in_flight / flow_worker_concurrency.",
)
QUEUE_WAIT: Final = Histogram(
    "flow_queue_wait_ms",
    "Time from the dispatch of a run_step message to its delivery to a worker, in "
    "milliseconds (publisher and consumer clocks: keep them in sync).",
    _FLOW,
    buckets=_MS_BUCKETS,
)
RUNS_STARTED: Final = Counter(
    "flow_runs_started", "Runs started (not duplicates).", [*_FLOW, "trigger_key"]
)
RUNS_COMPLETED: Final = Counter(
    "flow_runs_completed",
    "Run completions by final status. Counts completions, not runs: a run reopened "
    "by a manual retry (flow_runs_reopened) counts again when it completes again.",
    [*_FLOW, "status"],
)
RUNS_REOPENED: Final = Counter(
    "flow_runs_reopened",
    "Finished runs moved back to Running by a manual retry.",
    _FLOW,
)
RUNS_IN_PROGRESS: Final = Gauge(
    "flow_runs_in_progress",
    "Running runs by flow, counted in MongoDB every GAUGE_INTERVAL (the same value "
    "from every replica: aggregate with max, not sum).",
    _FLOW,
)
STEP_ATTEMPTS: Final = Counter(
    "flow_step_attempts",
    "Step attempts started (claims won), by template step key.",
    [*_FLOW, "step_key"],
)
STEP_RETRIES: Final = Counter(
    "flow_step_retries",
    "Attempts after a step's first: automatic and manual retries, polls, and "
    "re-executions after a lost worker.",
    [*_FLOW, "step_key"],
)
STEP_DURATION: Final = Histogram(
    "flow_step_duration_ms",
    "Handler time plus result save of one step attempt, in milliseconds.",
    [*_FLOW, "step_key", "status"],
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
QUEUE_MESSAGES: Final = Gauge(
    "flow_queue_messages",
    "Messages ready in each queue (triggers, steps, control, dead), from a passive "
    "declare every GAUGE_INTERVAL.",
    ["queue"],
)
QUEUE_CONSUMERS: Final = Gauge(
    "flow_queue_consumers",
    "Consumers of each queue (triggers, steps, control, dead), from a passive "
    "declare every GAUGE_INTERVAL.",
    ["queue"],
)

METRICS: Final[tuple[MetricWrapperBase, ...]] = (
    MESSAGES_CONSUMED,
    MESSAGES_DEAD_LETTERED,
    MESSAGES_IN_FLIGHT,
    WORKER_CONCURRENCY,
    QUEUE_WAIT,
    RUNS_STARTED,
    RUNS_COMPLETED,
    RUNS_REOPENED,
    RUNS_IN_PROGRESS,
    STEP_ATTEMPTS,
    STEP_RETRIES,
    STEP_DURATION,
    TIMER_LAG,
    TIMERS_FIRED,
    RECONCILER_ACTIONS,
    QUEUE_MESSAGES,
    QUEUE_CONSUMERS,
)
"""Every metric family this module exports."""


class FlowNames:
    """Flow id -> name, for the `flow` label; an id it does not know is `unknown`."""

    def __init__(self, names: Mapping[str, str] | None = None) -> None:
        self._names = dict(names or {})

    def __call__(self, flow_id: str) -> str:
        return self._names.get(flow_id, "unknown")

    def ids(self) -> list[str]:
        return list(self._names)


def observe_settled(kind: str, outcome: str) -> None:
    """A delivery of `kind` was settled: acked, duplicate, deferred, dead_lettered..."""
    MESSAGES_CONSUMED.labels(kind=kind, outcome=outcome).inc()


def observe_dead_letter(reason: str) -> None:
    MESSAGES_DEAD_LETTERED.labels(reason=reason).inc()


def observe_in_flight(delta: int) -> None:
    MESSAGES_IN_FLIGHT.inc(delta)


def observe_concurrency(slots: int) -> None:
    WORKER_CONCURRENCY.set(slots)


def observe_queue_wait(flow_id: str, flow: str, *, seconds: float) -> None:
    QUEUE_WAIT.labels(flow_id=flow_id, flow=flow).observe(max(0.0, seconds) * 1000)


def observe_run_started(flow_id: str, flow: str, trigger_key: str) -> None:
    RUNS_STARTED.labels(flow_id=flow_id, flow=flow, trigger_key=trigger_key).inc()


def observe_run_completed(flow_id: str, flow: str, status: str) -> None:
    RUNS_COMPLETED.labels(flow_id=flow_id, flow=flow, status=status).inc()


def observe_run_reopened(flow_id: str, flow: str) -> None:
    RUNS_REOPENED.labels(flow_id=flow_id, flow=flow).inc()


def observe_in_progress(counts: Mapping[str, int], names: FlowNames) -> None:
    """Running runs by flow id; a known flow missing from `counts` has none."""
    for flow_id in {*names.ids(), *counts}:
        flow = names(flow_id)
        RUNS_IN_PROGRESS.labels(flow_id=flow_id, flow=flow).set(counts.get(flow_id, 0))


def observe_attempt(flow_id: str, flow: str, step_key: str, attempt: int) -> None:
    STEP_ATTEMPTS.labels(flow_id=flow_id, flow=flow, step_key=step_key).inc()
    if attempt > 1:
        STEP_RETRIES.labels(flow_id=flow_id, flow=flow, step_key=step_key).inc()


def observe_step(
    flow_id: str, flow: str, step_key: str, status: str, *, seconds: float
) -> None:
    STEP_DURATION.labels(
        flow_id=flow_id, flow=flow, step_key=step_key, status=status
    ).observe(seconds * 1000)


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


def observe_queue(queue: str, *, messages: int, consumers: int) -> None:
    """What a passive declare of the queue with role `queue` answered."""
    QUEUE_MESSAGES.labels(queue=queue).set(messages)
    QUEUE_CONSUMERS.labels(queue=queue).set(consumers)


class PrometheusTelemetry:
    """The `Telemetry` port of the orchestrator and scheduler, as Prometheus metrics."""

    def __init__(self, names: FlowNames | None = None) -> None:
        self.names = names or FlowNames()

    def run_started(self, flow_id: str, trigger_key: str) -> None:
        observe_run_started(flow_id, self.names(flow_id), trigger_key)

    def run_completed(self, flow_id: str, status: str) -> None:
        observe_run_completed(flow_id, self.names(flow_id), status)

    def run_reopened(self, flow_id: str) -> None:
        observe_run_reopened(flow_id, self.names(flow_id))

    def attempt_started(self, flow_id: str, step_key: str, attempt: int) -> None:
        observe_attempt(flow_id, self.names(flow_id), step_key, attempt)

    def step_finished(
        self, flow_id: str, step_key: str, status: str, *, seconds: float
    ) -> None:
        observe_step(flow_id, self.names(flow_id), step_key, status, seconds=seconds)

    def timer_fired(self, kind: str, *, lag_seconds: float) -> None:
        observe_fired(kind, lag_seconds=max(0.0, lag_seconds))

    def repaired(self, action: str, count: int) -> None:
        observe_reconciler(action, count)


def latest() -> bytes:
    """Every metric of this process in the Prometheus text format (`TEXT_FORMAT`)."""
    return _generate_latest()
