//! `keyward serve --metrics ADDR`: the store's metrics in the OpenMetrics
//! text format (the prometheus-client crate) at `http://ADDR/metrics`,
//! read from [`Store::metrics`] at each scrape. The names are those of
//! Python's `keyward.prometheus` collector.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keyward::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The store, read at each scrape.
#[derive(Debug)]
struct StoreCollector(Arc<Store>);

fn counter<L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(L, u64)],
) -> std::fmt::Result {
    let mut family =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, v) in values {
        ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge<L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(L, f64)],
) -> std::fmt::Result {
    let mut family =
        encoder.encode_descriptor(name, help, None, ConstGauge::new(0.0f64).metric_type())?;
    for (labels, v) in values {
        ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for StoreCollector {
    #[allow(clippy::cast_precision_loss)]
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let m = self.0.metrics();
        let none: [(&str, &str); 0] = [];
        let mut verifications = vec![(
            [("outcome", "allowed"), ("reason", "")],
            m.verifications_allowed,
        )];
        for (reason, n) in &m.verifications_denied {
            verifications.push(([("outcome", "denied"), ("reason", reason.as_str())], *n));
        }
        counter(
            &mut e,
            "keyward_verifications",
            "Verifications, by outcome and denial reason.",
            &verifications,
        )?;
        counter(
            &mut e,
            "keyward_hashes",
            "Cold secrets hashed (argon2 or an imported key's hash).",
            &[(none, m.hashes)],
        )?;
        counter(
            &mut e,
            "keyward_hash_gate_waits",
            "Cold verifications that waited for the hash gate.",
            &[(none, m.hash_gate_waits)],
        )?;
        counter(
            &mut e,
            "keyward_hash_gate_refusals",
            "Cold verifications the hash gate turned away (busy).",
            &[(none, m.hash_gate_refusals)],
        )?;
        gauge(
            &mut e,
            "keyward_keys",
            "Keys in this process's verify index.",
            &[(none, m.keys as f64)],
        )?;
        gauge(
            &mut e,
            "keyward_store_role",
            "This process's role in its store (1 for the role it has).",
            &[([("role", m.role.as_str())], 1.0)],
        )?;
        gauge(
            &mut e,
            "keyward_staleness_seconds",
            "Seconds since this process last confirmed it holds every change.",
            &[(none, m.staleness_seconds)],
        )?;
        counter(
            &mut e,
            "keyward_quota_lease_fetches",
            "Quota and rate-limit leases fetched from storage.",
            &[(none, m.quota_lease_fetches)],
        )?;
        counter(
            &mut e,
            "keyward_storage_errors",
            "Storage errors this process has met.",
            &[(none, m.storage_errors)],
        )?;
        gauge(
            &mut e,
            "keyward_pending_usage_keys",
            "Keys with usage held in memory for storage.",
            &[(none, m.pending_usage_keys as f64)],
        )?;
        gauge(
            &mut e,
            "keyward_outbox_events",
            "Events in the outbox.",
            &[(none, m.outbox_events as f64)],
        )?;
        let mut deliveries = Vec::new();
        let mut pending = Vec::new();
        let mut dead = Vec::new();
        for p in &m.plugins {
            deliveries.push((
                [("plugin", p.name.as_str()), ("result", "delivered")],
                p.delivered,
            ));
            deliveries.push((
                [("plugin", p.name.as_str()), ("result", "failed")],
                p.failed,
            ));
            pending.push(([("plugin", p.name.as_str())], p.pending as f64));
            dead.push(([("plugin", p.name.as_str())], p.dead_letters as f64));
        }
        counter(
            &mut e,
            "keyward_plugin_deliveries",
            "Plugin deliveries, by plugin and result.",
            &deliveries,
        )?;
        gauge(
            &mut e,
            "keyward_plugin_pending_events",
            "Events a plugin has not been given yet.",
            &pending,
        )?;
        gauge(
            &mut e,
            "keyward_plugin_dead_letters",
            "Events on a plugin's dead-letter list.",
            &dead,
        )?;
        Ok(())
    }
}

/// `GET /metrics`.
async fn scrape(State(registry): State<Arc<Registry>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A server of `store`'s metrics on `addr`, running until `stop` is
/// told (or dropped); the address it bound, once bound.
pub(crate) fn spawn(
    store: Arc<Store>,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    let bound = listener.local_addr()?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StoreCollector(store)));
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(registry));
    let handle = std::thread::Builder::new()
        .name("keyward-metrics".into())
        .spawn(move || {
            let _ = runtime.block_on(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.await;
                    })
                    .await
            });
        })?;
    Ok((bound, handle))
}
