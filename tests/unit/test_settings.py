"""Settings read from the environment: seconds, lists, secrets, and the README table."""

from datetime import timedelta

import pytest
from pydantic import ValidationError

from service.settings import EXAMPLE_FLOWS, Settings, settings_table


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch):
    """AMQP_URL and friends may be set where the tests run: start from the defaults."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def test_durations_accept_plain_seconds_and_iso_8601(monkeypatch):
    monkeypatch.setenv("SHUTDOWN_GRACE", "7")
    monkeypatch.setenv("STEP_LEASE", "PT1M")
    monkeypatch.setenv("SCHEDULER_INTERVAL", "0.5")

    settings = Settings()

    assert settings.shutdown_grace == timedelta(seconds=7)
    assert settings.step_lease == timedelta(minutes=1)
    assert settings.scheduler_interval == timedelta(seconds=0.5)


@pytest.mark.parametrize("written", ["", "none", "OFF"], ids=["empty", "none", "off"])
def test_an_optional_duration_can_be_switched_off(monkeypatch, written):
    monkeypatch.setenv("RETENTION", written)

    assert Settings().retention is None


def test_flow_modules_are_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("FLOW_MODULES", " a.flows, b.flows ,,")

    assert Settings().flow_modules == ("a.flows", "b.flows")


def test_the_defaults_run_the_examples_against_local_services():
    settings = Settings()

    assert settings.flow_modules == EXAMPLE_FLOWS
    assert settings.amqp_url.get_secret_value().startswith("amqp://guest:guest@")
    assert "guest" not in repr(settings)


def test_settings_are_frozen():
    settings = Settings()

    with pytest.raises(ValidationError):
        settings.amqp_prefix = "other"  # type: ignore[misc]


def test_a_heartbeat_slower_than_the_lease_is_refused():
    with pytest.raises(ValidationError, match="step_heartbeat"):
        Settings(step_heartbeat=timedelta(seconds=30), step_lease=timedelta(seconds=10))


@pytest.mark.parametrize("seconds", [0, -1])
def test_an_early_ack_that_is_not_after_a_positive_time_is_refused(seconds):
    with pytest.raises(ValidationError, match="step_ack_after"):
        Settings(step_ack_after=timedelta(seconds=seconds))


def test_the_settings_table_has_every_variable_and_masks_passwords():
    table = settings_table()

    assert all(f"`{name.upper()}`" in table for name in Settings.model_fields)
    assert "amqp://guest:***@127.0.0.1:5672/" in table
    assert ":guest@" not in table
    assert "| `SHUTDOWN_GRACE` | `20` s |" in table
