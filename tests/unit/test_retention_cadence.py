"""Retention's cadence: a sweep at the first pass, then every RETENTION_INTERVAL.

While sweeps come back full, they follow each other at every pass.
"""

from datetime import timedelta

import pytest

from examples import hello
from service.app import _scheduler_options
from service.scheduler import Scheduler, SchedulerOptions
from service.settings import Settings
from service.testing import FlowTestHost

DAY = timedelta(days=1)


async def _finished_runs(host: FlowTestHost, count: int) -> None:
    for n in range(count):
        result = await host.trigger("hello", body={"name": f"n{n}"})
        assert result.status.is_final


def _scheduler(
    host: FlowTestHost, *, every: timedelta, batch: int, retention: timedelta = DAY
) -> Scheduler:
    options = SchedulerOptions(
        owner="retention-test",
        retention=retention,
        retention_every=every,
        retention_batch=batch,
    )
    return Scheduler(host.orchestrator, options)


async def test_a_sweep_runs_at_the_first_pass():
    host = FlowTestHost(hello.flows, hello.handlers)
    await _finished_runs(host, 2)
    scheduler = _scheduler(host, every=timedelta(hours=6), batch=10)

    host.clock.advance(2 * DAY)

    first = await scheduler.tick()

    assert first.purged == 2


async def test_after_a_short_sweep_the_next_waits_for_the_interval():
    host = FlowTestHost(hello.flows, hello.handlers)
    scheduler = _scheduler(
        host, every=timedelta(hours=6), batch=10, retention=timedelta(hours=1)
    )
    await scheduler.tick()  # the first pass sweeps, finding nothing
    await _finished_runs(host, 3)

    host.clock.advance(timedelta(hours=2))
    early = await scheduler.tick()  # expired, but the interval has not passed
    host.clock.advance(timedelta(hours=4))
    due = await scheduler.tick()

    assert (early.purged, due.purged) == (0, 3)


async def test_full_sweeps_follow_each_other_until_one_comes_back_short():
    host = FlowTestHost(hello.flows, hello.handlers)
    await _finished_runs(host, 5)
    host.clock.advance(2 * DAY)
    scheduler = _scheduler(host, every=timedelta(hours=6), batch=2)

    sweeps = [(await scheduler.tick()).purged for _ in range(5)]

    assert sweeps == [2, 2, 1, 0, 0]


@pytest.mark.parametrize(
    ("written", "every"),
    [("600", timedelta(minutes=10)), ("PT2H", timedelta(hours=2))],
    ids=["seconds", "iso-8601"],
)
def test_the_interval_is_the_retention_interval_setting(monkeypatch, written, every):
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("RETENTION", "86400")
    monkeypatch.setenv("RETENTION_INTERVAL", written)

    options = _scheduler_options(Settings())

    assert options.retention == DAY
    assert options.retention_every == every
    assert f"{options.retention_batch:,} runs a sweep" in (
        Settings.model_fields["retention_interval"].description or ""
    )
