"""Step timeouts: how long an attempt's handler may run, and what is left of it.

A handler step's budget is its own `timeout`, else its flow's `step_timeout`, else the
service's `STEP_TIMEOUT`. An attempt that takes over from attempts whose worker died
(superseded while still Running) shares their budget, counted from the start of the
first of them, so a worker dying mid-step never makes the step's timeout longer than
lease + timeout: a reclaim past it fails at once. Pure: the shell enforces the time.
"""

from datetime import datetime, timedelta

from service.engine.model import Step, StepStatus
from service.engine.records import StepRecord
from service.engine.rounds import RunContext


def budget(ctx: RunContext, manifest: Step) -> timedelta | None:
    """How long one attempt of `manifest` may run; None: as long as it takes."""
    if not manifest.runs_a_handler:
        return None
    return manifest.timeout or ctx.flow.step_timeout or ctx.limits.step_timeout


def started(row: StepRecord, now: datetime) -> datetime:
    """When the attempt `row` is at began, or the first lost one it takes over from."""
    start = row.started_at or now
    for earlier in reversed(row.attempts[:-1]):
        if earlier.status is not StepStatus.RUNNING:
            break  # a finished or parked attempt: the chain of lost ones ends here
        start = earlier.started_at
    return start


def remaining(ctx: RunContext, row: StepRecord, limit: timedelta) -> timedelta:
    """What is left of `limit` for this attempt (zero or less: nothing)."""
    return started(row, ctx.now) + limit - ctx.now


def reason(limit: timedelta) -> str:
    return f"Step timed out after {limit.total_seconds():g} s."
