"""Trigger headers: the names kept and dropped, merging, and lookups in any case."""

import pytest

from service.engine import headers
from service.engine.expressions import Facts, resolve
from service.engine.headers import HeaderMap


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "proxy-authorization",
        "Cookie",
        "Set-Cookie",
        "X-Webhook-Key",
        "X-Api-Key",
        "x_api_key",
        "apikey",
        "X-Auth-Token",
        "X-CSRF-Token",
        "X-Amz-Security-Token",
        "X-Client-Secret",
        "X-Session-Id",
        "X-Hub-Signature",
        "db.password",
        "Connection",
        "Keep-Alive",
        "TE",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
        "x-death",
        "x-delivery-count",
        "x-first-death-reason",
        "x-dead-letter-reason",
        "x-original-routing-key",
        "x-received-from",
        "x-shovelled",
        "x-flow-rerouted",
        " ",
    ],
)
def test_credentials_hop_by_hop_and_transport_headers_are_not_kept(name: str):
    assert headers.excluded(name)


@pytest.mark.parametrize(
    "name",
    [
        "X-Tenant",
        "traceparent",
        "tracestate",
        "X-Request-Id",
        "Idempotency-Key",
        "x-idempotency-key",
        "X-Author",
        "X-Routing-Key",
        "Content-Type",
        "x-keyboard",
    ],
)
def test_ordinary_headers_are_kept(name: str):
    assert not headers.excluded(name)


def test_capture_keeps_the_names_as_written_and_the_first_spelling():
    captured = headers.capture(
        [("X-Tenant", "acme"), ("x-tenant", "other"), ("Cookie", "s=1")]
    )

    assert captured == {"X-Tenant": "acme"}


def test_merge_lets_the_winner_take_a_name_in_any_case():
    merged = headers.merge(
        {"x-clash": "body", "X-Only-Body": "1"},
        {"X-Clash": "amqp", "X-Only-Amqp": "2"},
    )

    assert merged == {"x-clash": "body", "X-Only-Body": "1", "X-Only-Amqp": "2"}


def test_find_and_without_match_in_any_case():
    stored = {"X-Request-Id": "r-1", "Idempotency-Key": "k"}

    assert headers.find(stored, "x-request-id") == "r-1"
    assert headers.find(stored, "X-REQUEST-ID") == "r-1"
    assert headers.find(stored, "x-missing") is None
    assert headers.without(stored, ["idempotency-key"]) == {"X-Request-Id": "r-1"}


def test_a_header_map_iterates_as_written_and_looks_up_in_any_case():
    mapped = HeaderMap({"X-Tenant": "acme"})

    assert list(mapped) == ["X-Tenant"]
    assert mapped["x-tenant"] == mapped.get("X-TENANT") == "acme"
    assert "x-TENANT" in mapped
    assert 1 not in mapped  # type: ignore[comparison-overlap]  # any key may be asked
    assert dict(mapped) == {"X-Tenant": "acme"}
    with pytest.raises(KeyError):
        mapped["x-other"]


def test_expressions_find_a_stored_name_in_any_case_and_show_it_as_written():
    facts = Facts(
        body=None, headers={"X-Tenant": "acme"}, steps={}, declared=frozenset()
    )

    assert resolve("@triggerHeaders()['x-tenant']", facts) == "acme"
    assert resolve('@triggerHeaders()["X-TENANT"]', facts) == "acme"
    assert resolve("@triggerHeaders()", facts) == {"X-Tenant": "acme"}
