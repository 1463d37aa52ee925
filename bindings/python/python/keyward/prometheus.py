"""Prometheus: a collector of a store's metrics for ``prometheus_client``.

::

    from prometheus_client import REGISTRY, start_http_server
    from keyward.prometheus import KeywardCollector

    REGISTRY.register(KeywardCollector(store))
    start_http_server(9187)

The metrics, and their names, are those ``keyward serve --metrics``
serves: verifications by outcome and denial reason, hashes run, hash-gate
waits and refusals, keys, the store's role, staleness, quota lease
fetches, storage errors, pending usage, and each plugin's deliveries,
pending events and dead letters. Counters count since the store handle
was opened.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keyward._store import Store


class KeywardCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        m = self.store.metrics()
        verifications = CounterMetricFamily(
            "keyward_verifications", "Verifications, by outcome and denial reason.",
            labels=["outcome", "reason"])
        verifications.add_metric(["allowed", ""], m.verifications_allowed)
        for reason, n in sorted(m.verifications_denied.items()):
            verifications.add_metric(["denied", reason], n)
        yield verifications
        yield CounterMetricFamily("keyward_hashes", "Cold secrets hashed (argon2 or an imported key's hash).",
                                  value=m.hashes)
        yield CounterMetricFamily("keyward_hash_gate_waits", "Cold verifications that waited for the hash gate.",
                                  value=m.hash_gate_waits)
        yield CounterMetricFamily("keyward_hash_gate_refusals",
                                  "Cold verifications the hash gate turned away (busy).",
                                  value=m.hash_gate_refusals)
        yield GaugeMetricFamily("keyward_keys", "Keys in this process's verify index.", value=m.keys)
        role = GaugeMetricFamily("keyward_store_role", "This process's role in its store (1 for the role it has).",
                                 labels=["role"])
        role.add_metric([m.role], 1)
        yield role
        yield GaugeMetricFamily("keyward_staleness_seconds",
                                "Seconds since this process last confirmed it holds every change.",
                                value=m.staleness_seconds)
        yield CounterMetricFamily("keyward_quota_lease_fetches", "Quota and rate-limit leases fetched from storage.",
                                  value=m.quota_lease_fetches)
        yield CounterMetricFamily("keyward_storage_errors", "Storage errors this process has met.",
                                  value=m.storage_errors)
        yield GaugeMetricFamily("keyward_pending_usage_keys", "Keys with usage held in memory for storage.",
                                value=m.pending_usage_keys)
        yield GaugeMetricFamily("keyward_outbox_events", "Events in the outbox.", value=m.outbox_events)
        deliveries = CounterMetricFamily("keyward_plugin_deliveries", "Plugin deliveries, by plugin and result.",
                                         labels=["plugin", "result"])
        pending = GaugeMetricFamily("keyward_plugin_pending_events", "Events a plugin has not been given yet.",
                                    labels=["plugin"])
        dead = GaugeMetricFamily("keyward_plugin_dead_letters", "Events on a plugin's dead-letter list.",
                                 labels=["plugin"])
        for p in m.plugins:
            deliveries.add_metric([p.name, "delivered"], p.delivered)
            deliveries.add_metric([p.name, "failed"], p.failed)
            pending.add_metric([p.name], p.pending)
            dead.add_metric([p.name], p.dead_letters)
        yield deliveries
        yield pending
        yield dead
