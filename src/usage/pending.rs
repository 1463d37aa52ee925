//! Usage waiting for the next flush, and the notices of verification
//! (refused IPs, old secrets) waiting to become outbox events.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::aggregate::clip;
use super::{Freshness, Outcome, UsageAgg, UsageLimits};
use crate::events::EventKind;
use crate::key::KeyId;
use crate::locks::lock;

const SHARDS: usize = 32;

/// How often verification may tell of what it notices (refused IPs, old
/// secrets) through the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticeLimits {
    /// At most one notice per key and kind in this long (default one minute).
    pub window: Duration,
    /// At most this many notices in the whole store per minute (default 60).
    pub max_per_minute: usize,
}

impl Default for NoticeLimits {
    fn default() -> Self {
        NoticeLimits {
            window: Duration::from_mins(1),
            max_per_minute: 60,
        }
    }
}

/// Addresses and integrations a notice names, at most.
pub(crate) const NOTICE_SAMPLE: usize = 8;

/// One occurrence verification noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Occurrence<'a> {
    pub kind: EventKind,
    pub key_id: KeyId,
    pub ip: IpAddr,
    pub integration: Option<&'a str>,
    pub generation: Option<u32>,
    /// For a refused IP: the secret matched (a warm-cache match).
    pub confirmed: Option<bool>,
    pub at: i64,
}

/// A notice on its way to the outbox: the occurrence that opened a window,
/// and how many there were since the previous notice of its key and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    pub kind: EventKind,
    pub key_id: KeyId,
    pub ip: IpAddr,
    pub integration: Option<Box<str>>,
    pub generation: Option<u32>,
    pub confirmed: Option<bool>,
    pub at: i64,
    pub count: u64,
    pub ips: Vec<IpAddr>,
    pub integrations: Vec<Box<str>>,
    pub window: Duration,
}

/// What one key and kind have had since their last notice.
#[derive(Default)]
struct Tally {
    /// When the last notice was given (`None`: never).
    noticed_at: Option<i64>,
    count: u64,
    ips: Vec<IpAddr>,
    integrations: Vec<Box<str>>,
}

/// Notices waiting for the next flush, the tallies behind them, and how
/// many the store gave this minute.
#[derive(Default)]
struct Notices {
    tallies: HashMap<(KeyId, EventKind), Tally>,
    minute: i64,
    given: usize,
    pending: Vec<Notice>,
    /// Notices that could not be kept while storage was failing; their
    /// counts went back to their tallies.
    overflowed: u64,
}

/// Notices kept at most while storage is failing: past this, occurrences
/// only add to their tallies, told by a later notice.
const MAX_PENDING_NOTICES: usize = 1_000;

fn sample<T: PartialEq>(into: &mut Vec<T>, item: T) {
    if into.len() < NOTICE_SAMPLE && !into.contains(&item) {
        into.push(item);
    }
}

/// Pending usage deltas of every key, sharded so threads verifying
/// different keys rarely meet on a lock.
pub(crate) struct UsageLog {
    shards: Box<[Mutex<HashMap<KeyId, UsageAgg>>]>,
    notices: Mutex<Notices>,
    notice_limits: NoticeLimits,
    limits: UsageLimits,
    /// Per-address and per-integration rows dropped from pending usage to
    /// keep it bounded (totals stay exact).
    rows_dropped: AtomicU64,
}

fn shard_of(id: &KeyId) -> usize {
    let b = id.as_bytes();
    (usize::from(b[0]) * 31 + usize::from(b[1])) % SHARDS
}

impl UsageLog {
    pub(crate) fn new(limits: UsageLimits, notice_limits: NoticeLimits) -> Self {
        UsageLog {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            notices: Mutex::new(Notices::default()),
            notice_limits,
            limits,
            rows_dropped: AtomicU64::new(0),
        }
    }

    /// Keeps a pending delta within bounds, counting what it drops.
    fn bound(&self, agg: &mut UsageAgg, now: i64) {
        if agg.overgrown(&self.limits) {
            let before = agg.rows();
            agg.trim(&self.limits, now);
            self.rows_dropped
                .fetch_add((before - agg.rows()) as u64, Ordering::Relaxed);
        }
    }

    /// What is waiting, and what was let go of.
    pub(crate) fn backlog(&self) -> super::Backlog {
        let n = lock(&self.notices);
        super::Backlog {
            pending_usage_keys: self.shards.iter().map(|s| lock(s).len()).sum(),
            pending_notices: n.pending.len(),
            usage_rows_dropped: self.rows_dropped.load(Ordering::Relaxed),
            notices_deferred: n.overflowed,
        }
    }

    pub(crate) fn record(
        &self,
        id: KeyId,
        now: i64,
        ip: IpAddr,
        integration: Option<&str>,
        outcome: Outcome,
        freshness: Freshness,
    ) {
        let mut shard = lock(&self.shards[shard_of(&id)]);
        let agg = shard.entry(id).or_default();
        agg.record(now, ip, integration, outcome, freshness);
        self.bound(agg, now);
    }

    /// Counts an occurrence; the first in its key and kind's window (within
    /// the store-wide budget) becomes a notice carrying the counts since the
    /// previous one.
    pub(crate) fn notice(&self, o: &Occurrence<'_>) {
        let window = i64::try_from(self.notice_limits.window.as_millis()).unwrap_or(i64::MAX);
        let mut n = lock(&self.notices);
        let minute = o.at.div_euclid(60_000);
        if n.minute != minute {
            n.minute = minute;
            n.given = 0;
            // Tallies with nothing to tell and a window long over go.
            n.tallies
                .retain(|_, t| t.count > 0 || t.noticed_at.is_some_and(|at| o.at - at < window));
        }
        let integration = o.integration.map(clip).filter(|s| !s.is_empty());
        let room =
            n.given < self.notice_limits.max_per_minute && n.pending.len() < MAX_PENDING_NOTICES;
        let tally = n.tallies.entry((o.key_id, o.kind)).or_default();
        tally.count += 1;
        sample(&mut tally.ips, o.ip);
        if let Some(name) = integration {
            sample(&mut tally.integrations, Box::from(name));
        }
        let opens_window = tally
            .noticed_at
            .is_none_or(|at| o.at.saturating_sub(at) >= window);
        if !(opens_window && room) {
            return;
        }
        tally.noticed_at = Some(o.at);
        let notice = Notice {
            kind: o.kind,
            key_id: o.key_id,
            ip: o.ip,
            integration: integration.map(Box::from),
            generation: o.generation,
            confirmed: o.confirmed,
            at: o.at,
            count: std::mem::take(&mut tally.count),
            ips: std::mem::take(&mut tally.ips),
            integrations: std::mem::take(&mut tally.integrations),
            window: self.notice_limits.window,
        };
        n.given += 1;
        n.pending.push(notice);
    }

    pub(crate) fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut lock(&self.notices).pending)
    }

    /// Puts notices back after a failed flush, ahead of newer ones; past
    /// the cap, the oldest go back into their tallies (counted, told later).
    pub(crate) fn restore_notices(&self, mut older: Vec<Notice>) {
        let mut n = lock(&self.notices);
        older.append(&mut n.pending);
        let excess = older.len().saturating_sub(MAX_PENDING_NOTICES);
        for dropped in older.drain(..excess) {
            n.overflowed += 1;
            let tally = n.tallies.entry((dropped.key_id, dropped.kind)).or_default();
            tally.count += dropped.count;
            tally.noticed_at = None;
        }
        n.pending = older;
    }

    /// A copy of the pending delta of one key.
    pub(crate) fn pending(&self, id: &KeyId) -> Option<UsageAgg> {
        lock(&self.shards[shard_of(id)]).get(id).cloned()
    }

    pub(crate) fn discard(&self, id: &KeyId) {
        lock(&self.shards[shard_of(id)]).remove(id);
    }

    /// Takes every pending delta, leaving the log empty.
    pub(crate) fn take_all(&self) -> Vec<(KeyId, UsageAgg)> {
        self.shards
            .iter()
            .flat_map(|s| std::mem::take(&mut *lock(s)))
            .collect()
    }

    /// Puts deltas back after a failed flush, ahead of anything newer.
    pub(crate) fn restore(&self, deltas: Vec<(KeyId, UsageAgg)>) {
        for (id, mut older) in deltas {
            let mut shard = lock(&self.shards[shard_of(&id)]);
            if let Some(newer) = shard.remove(&id) {
                older.absorb(&newer);
            }
            let now = older.latest();
            self.bound(&mut older, now);
            shard.insert(id, older);
        }
    }
}
