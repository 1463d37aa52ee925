//! Usage waiting for the next flush, and the notices of verification
//! (refused IPs, old secrets) waiting to become outbox events.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use super::{Freshness, HOUR_MS, Outcome, UsageAgg};
use crate::events::EventKind;
use crate::key::KeyId;
use crate::locks::lock;

const SHARDS: usize = 32;

/// Something verification noticed that becomes an outbox event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    pub kind: EventKind,
    pub key_id: KeyId,
    pub ip: IpAddr,
    pub integration: Option<String>,
    pub generation: Option<u32>,
    pub at: i64,
}

/// Notices waiting for the next flush, and which (key, IP, kind) already
/// gave one this hour.
#[derive(Default)]
struct Notices {
    hour: i64,
    given: HashSet<(KeyId, IpAddr, EventKind)>,
    pending: Vec<Notice>,
}

/// Pending notices kept at most; past this a flood of refused IPs is counted
/// in usage but not each given its own event.
const MAX_PENDING_NOTICES: usize = 10_000;

/// Pending usage deltas of every key, sharded so threads verifying
/// different keys rarely meet on a lock.
pub(crate) struct UsageLog {
    shards: Box<[Mutex<HashMap<KeyId, UsageAgg>>]>,
    notices: Mutex<Notices>,
}

fn shard_of(id: &KeyId) -> usize {
    let b = id.as_bytes();
    (usize::from(b[0]) * 31 + usize::from(b[1])) % SHARDS
}

impl UsageLog {
    pub(crate) fn new() -> Self {
        UsageLog {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            notices: Mutex::new(Notices::default()),
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
        lock(&self.shards[shard_of(&id)])
            .entry(id)
            .or_default()
            .record(now, ip, integration, outcome, freshness);
    }

    /// Queues `notice` unless its key, IP and kind gave one this hour.
    pub(crate) fn notice(&self, notice: Notice) {
        let mut n = lock(&self.notices);
        let hour = notice.at.div_euclid(HOUR_MS);
        if n.hour != hour {
            n.hour = hour;
            n.given.clear();
        }
        if n.pending.len() < MAX_PENDING_NOTICES
            && n.given.insert((notice.key_id, notice.ip, notice.kind))
        {
            n.pending.push(notice);
        }
    }

    pub(crate) fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut lock(&self.notices).pending)
    }

    /// Puts notices back after a failed flush.
    pub(crate) fn restore_notices(&self, mut older: Vec<Notice>) {
        let mut n = lock(&self.notices);
        older.append(&mut n.pending);
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
            shard.insert(id, older);
        }
    }
}
