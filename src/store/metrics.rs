//! What a store handle has done, for monitoring: counters since it was
//! opened (verifications by outcome, hashes run, hash-gate waits, quota
//! lease fetches) and gauges read when asked (keys, role, staleness,
//! plugin deliveries). [`Store::metrics`](crate::Store::metrics) gives
//! the snapshot; the CLI serves it to Prometheus, Python's
//! `keyward.prometheus` collects it, C reads it as JSON.
//!
//! The verification counters are striped: each thread adds to a stripe
//! of its own (a cache line apart), so counting costs a verification one
//! uncontended add.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use crate::verdict::{Denial, Verdict};

/// Stripes of the verification counters.
const STRIPES: usize = 16;
/// One slot for admitted, one per denial (by its number).
const OUTCOMES: usize = Denial::ALL.len() + 1;

#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    outcomes: [AtomicU64; OUTCOMES],
}

/// This process's counters of one store handle.
pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
    /// Cold secrets hashed (argon2, or an imported key's hash).
    pub hashes: AtomicU64,
    /// Quota and rate-limit leases fetched from storage.
    pub lease_fetches: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            hashes: AtomicU64::new(0),
            lease_fetches: AtomicU64::new(0),
        }
    }
}

/// The stripe of the calling thread.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    MINE.with(|m| {
        if m.get() == usize::MAX {
            m.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        m.get()
    })
}

impl Counters {
    /// Counts one verification's outcome.
    #[inline]
    pub(crate) fn verdict(&self, v: &Verdict) {
        let slot = match v {
            Verdict::Valid(_) => 0,
            Verdict::Denied(r) => r.denial.code() as usize,
        };
        if let Some(c) = self.stripes[stripe()].outcomes.get(slot) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn outcome(&self, slot: usize) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.outcomes[slot].load(Ordering::Relaxed))
            .sum()
    }
}

/// What a store handle has done and holds: counters since it was opened,
/// gauges as they are now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct Metrics {
    /// Verifications admitted.
    pub verifications_allowed: u64,
    /// Verifications refused, by reason (every reason, zero included).
    pub verifications_denied: BTreeMap<String, u64>,
    /// Cold secrets hashed (argon2, or an imported key's hash): what the
    /// hash gate bounds.
    pub hashes: u64,
    /// Cold verifications that waited for a slot of the hash gate.
    pub hash_gate_waits: u64,
    /// Cold verifications the hash gate turned away (answered `busy`).
    pub hash_gate_refusals: u64,
    /// Keys in this process's verify index.
    pub keys: u64,
    /// owner, attached, shared (PostgreSQL) or memory.
    pub role: String,
    /// Seconds since this process last confirmed it holds every change:
    /// for an attached process, since the owner last answered; for a
    /// shared store, since the database did; 0 for an owner.
    pub staleness_seconds: f64,
    /// Quota and rate-limit leases fetched from storage.
    pub quota_lease_fetches: u64,
    /// Storage errors this process has met (every store it opened).
    pub storage_errors: u64,
    /// Keys with usage held in memory for storage.
    pub pending_usage_keys: u64,
    /// Events in the outbox (kept until every enabled plugin has them
    /// and the retention has passed).
    pub outbox_events: u64,
    /// Each installed plugin's deliveries.
    pub plugins: Vec<PluginMetrics>,
}

/// One plugin's deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct PluginMetrics {
    /// The plugin's name.
    pub name: String,
    /// Events delivered.
    pub delivered: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Events in the outbox it has not been given yet.
    pub pending: u64,
    /// Events on its dead-letter list.
    pub dead_letters: u64,
}

impl super::Store {
    /// A snapshot of this handle's metrics.
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        let e = &self.engine;
        let c = &e.counters;
        let status = self.status();
        let stale_ms = match status.role {
            super::Role::Owner | super::Role::Memory => 0,
            _ => e.monotonic_ms() - e.synced_at.load(Ordering::Acquire),
        };
        #[cfg(feature = "plugins")]
        let plugins = self
            .plugins()
            .unwrap_or_default()
            .into_iter()
            .map(|p| PluginMetrics {
                name: p.name,
                delivered: p.status.delivered,
                failed: p.status.failed,
                pending: p.status.pending,
                dead_letters: p.status.dead_letters,
            })
            .collect();
        #[cfg(not(feature = "plugins"))]
        let plugins = Vec::new();
        #[allow(clippy::cast_precision_loss)]
        Metrics {
            verifications_allowed: c.outcome(0),
            verifications_denied: Denial::ALL
                .iter()
                .map(|d| (d.as_str().to_string(), c.outcome(d.code() as usize)))
                .collect(),
            hashes: c.hashes.load(Ordering::Relaxed),
            hash_gate_waits: e.gate.waits(),
            hash_gate_refusals: e.gate.refusals(),
            keys: status.keys as u64,
            role: status.role.as_str().to_string(),
            staleness_seconds: stale_ms.max(0) as f64 / 1000.0,
            quota_lease_fetches: c.lease_fetches.load(Ordering::Relaxed),
            storage_errors: crate::error::storage_errors(),
            pending_usage_keys: self.backlog().pending_usage_keys as u64,
            // A failure is counted among the storage errors.
            outbox_events: crate::events::outbox_len(e.backend.as_ref()).unwrap_or(0),
            plugins,
        }
    }
}
