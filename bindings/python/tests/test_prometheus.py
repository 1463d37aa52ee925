"""Store.metrics() and keyward.prometheus.KeywardCollector with the real
prometheus_client: verifications by outcome and reason, hashes, keys,
the role, in the registry's text exposition."""

import os

import pytest

if os.environ.get("CI") != "true":
    pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

import keyward  # noqa: E402
from keyward.prometheus import KeywardCollector  # noqa: E402


def test_metrics_count_verifications_by_outcome_and_reason(store):
    c = store.create_key("CRM", whitelist=[("office", "198.51.100.0/24")])
    before = store.metrics()
    assert isinstance(before, keyward.Metrics) and before.role == "owner"
    for _ in range(3):
        assert store.verify(c.key, "198.51.100.7")
    assert store.verify(c.key, "203.0.113.1").denial is keyward.Denial.IP_NOT_ALLOWED
    assert store.verify("kw_nonsense", "203.0.113.1").denial is keyward.Denial.MALFORMED
    m = store.metrics()
    assert m.verifications_allowed == before.verifications_allowed + 3
    assert m.verifications_denied["ip_not_allowed"] == before.verifications_denied["ip_not_allowed"] + 1
    assert m.verifications_denied["malformed"] == before.verifications_denied["malformed"] + 1
    assert set(m.verifications_denied) == {d.name.lower() for d in keyward.Denial}
    assert m.keys == 1 and m.hashes >= 1 and m.staleness_seconds == 0


def test_the_collector_exposes_them_to_a_registry(store):
    c = store.create_key("CRM")
    store.verify(c.key, "203.0.113.1")
    store.verify(c.key + "x", "203.0.113.1")
    registry = CollectorRegistry()
    registry.register(KeywardCollector(store))
    text = generate_latest(registry).decode()
    assert 'keyward_verifications_total{outcome="allowed",reason=""} 1.0' in text
    assert 'keyward_verifications_total{outcome="denied",reason="malformed"} 1.0' in text
    assert "keyward_keys 1.0" in text
    assert f"keyward_outbox_events {float(len(store.events()))}" in text
    assert 'keyward_store_role{role="owner"} 1.0' in text
    assert "# TYPE keyward_hashes_total counter" in text
