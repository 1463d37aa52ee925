//! The event outbox: every mutation appends its event in the same atomic
//! write as the mutation itself, so an event exists exactly when its
//! change does. Events never carry secret material.
//!
//! [`with_event_kinds!`] lists every kind once; the enum, its names and
//! the plugin manifest's accepted list ([`EVENT_KINDS`](crate::EVENT_KINDS))
//! are built from it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::time::Duration;

use crate::backend::{Backend, Batch, Durability, RowsFrom, StorageError, Table};
use crate::key::KeyId;
use crate::time::Timestamp;

/// Calls `$then!` with every event kind's row: `Variant = "dotted.name";`.
macro_rules! with_event_kinds {
    ($then:ident) => {
        $then! {
            /// A key was created.
            KeyCreated = "key.created";
            /// A key got a new secret; `data.grace_until` says until when the old one works.
            KeyRegenerated = "key.regenerated";
            /// A key was deleted.
            KeyDeleted = "key.deleted";
            /// A key was disabled, enabled, renamed, or its expiry or metadata changed.
            KeyUpdated = "key.updated";
            /// A key's whitelist was switched on or off, or an entry added or removed.
            WhitelistUpdated = "whitelist.updated";
            /// A key was presented from an IP its whitelist refuses (at most once
            /// per key, IP and hour).
            KeyDeniedIp = "key.denied_ip";
            /// A client presented the secret of an older generation (in its grace
            /// period or after it), at most once per key, IP and hour: it must be
            /// updated with the regenerated key.
            KeyStaleSecretUsed = "key.stale_secret_used";
            /// A live key was found where it should not be (`keyward scan`);
            /// `data` says where and what was done (`regenerated`, `disabled`).
            KeyLeaked = "key.leaked";
            /// A key's quota ran out: the first request refused for it, once per
            /// exhaustion across every process of the store (`data.refill_at`
            /// says when it is refilled, if it is).
            KeyQuotaExhausted = "key.quota_exhausted";
        }
    };
}

macro_rules! define_event_kind {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal;)*) => {
        /// What happened.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[non_exhaustive]
        pub enum EventKind {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant,)*
        }

        impl EventKind {
            /// Every kind.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),*];
            /// The dotted names of [`EventKind::ALL`], in the same order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The dotted name: `key.created`, `whitelist.updated`, ...
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }

            /// The kind a dotted name names, if any.
            #[must_use]
            pub fn from_name(name: &str) -> Option<EventKind> {
                match name {
                    $($name => Some(EventKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

with_event_kinds!(define_event_kind);

/// One entry of the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct Event {
    /// Position in the outbox, increasing.
    #[serde(default)]
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: Timestamp,
    /// The key it concerns.
    pub key_id: KeyId,
    /// The key's name at the time.
    pub name: String,
    /// The key's masked form at the time.
    pub masked: String,
    /// Details of the change (never a secret or a hash).
    pub data: Value,
}

impl Event {
    pub(crate) fn from_stored(seq_key: &[u8], bytes: &[u8]) -> Result<Self, StorageError> {
        let mut e: Event = serde_json::from_slice(bytes)
            .map_err(|e| StorageError::with_source("unreadable event", e))?;
        let seq: [u8; 8] = seq_key
            .try_into()
            .map_err(|e| StorageError::with_source("bad event key", e))?;
        e.seq = u64::from_be_bytes(seq);
        Ok(e)
    }
}

/// The key an event tells of, as it stands after the change.
pub(crate) struct Subject<'a> {
    pub id: KeyId,
    pub name: &'a str,
    /// Its masked form (prefix, id, the current secret's last four).
    pub masked: String,
    pub owner: Option<&'a str>,
}

/// Appends the event of `kind` about `key` to the batch that makes the
/// change: the outbox write. Its sequence number is given at commit.
pub(crate) fn append(
    batch: &mut Batch,
    kind: EventKind,
    key: &Subject<'_>,
    at: i64,
    actor: Option<&str>,
    mut data: Value,
) {
    // The owner and actor ride inside `data`, so plugins built before them
    // keep working.
    if let Value::Object(map) = &mut data {
        map.entry("owner").or_insert_with(|| {
            key.owner
                .map_or(Value::Null, |o| Value::String(o.to_owned()))
        });
        if let Some(actor) = actor {
            map.insert("actor".into(), Value::String(actor.to_owned()));
        }
    }
    let event = Event {
        seq: 0,
        kind,
        at: Timestamp::from_unix_millis(at),
        key_id: key.id,
        name: key.name.to_owned(),
        masked: key.masked.clone(),
        data,
    };
    batch.append(
        Table::Events,
        serde_json::to_vec(&event).expect("events serialise"),
    );
}

/// The row of the outbox's index saying through which event it is complete
/// (a sequence number, big-endian).
pub(crate) const INDEXED_THROUGH: &[u8] = b"~";

/// Fields of the index: the rows of one field and value, in event order.
pub(crate) const BY_KEY: u8 = b'k';
pub(crate) const BY_OWNER: u8 = b'o';
pub(crate) const BY_ACTOR: u8 = b'a';
pub(crate) const BY_KIND: u8 = b'n';
/// The time rows: `t`, the time (ms, sign bit flipped, big-endian), the event.
pub(crate) const BY_TIME: u8 = b't';

/// The prefix of the index rows of `field` = `value`.
pub(crate) fn index_prefix(field: u8, value: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(value.len() + 10);
    row.push(field);
    row.extend_from_slice(value);
    row.push(0);
    row
}

/// The first time row at or after `ms`.
pub(crate) fn time_row(ms: i64) -> [u8; 9] {
    let mut row = [BY_TIME; 9];
    row[1..].copy_from_slice(&(ms.cast_unsigned() ^ (1 << 63)).to_be_bytes());
    row
}

/// The last event the index holds, as its `INDEXED_THROUGH` row says
/// (0: none).
pub(crate) fn indexed_through(row: Option<&[u8]>) -> u64 {
    row.and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// The time and event of a time row.
pub(crate) fn time_of(row: &[u8]) -> Option<(i64, u64)> {
    if row.len() != 17 || row[0] != BY_TIME {
        return None;
    }
    let t = u64::from_be_bytes(row[1..9].try_into().ok()?) ^ (1 << 63);
    Some((t.cast_signed(), indexed_seq(row)?))
}

/// The event an index row points at: its last 8 bytes.
pub(crate) fn indexed_seq(row: &[u8]) -> Option<u64> {
    let at = row.len().checked_sub(8)?;
    Some(u64::from_be_bytes(row[at..].try_into().ok()?))
}

/// The index rows of one event: by key, kind and time, and by owner and
/// actor when it has them (`data.owner`, `data.actor`).
pub(crate) fn index_rows(e: &Event) -> Vec<Vec<u8>> {
    let seq = e.seq.to_be_bytes();
    let text = |name: &str| e.data.get(name).and_then(Value::as_str);
    let mut rows = vec![
        index_prefix(BY_KEY, e.key_id.as_bytes()),
        index_prefix(BY_KIND, e.kind.as_str().as_bytes()),
    ];
    if let Some(owner) = text("owner") {
        rows.push(index_prefix(BY_OWNER, owner.as_bytes()));
    }
    if let Some(actor) = text("actor") {
        rows.push(index_prefix(BY_ACTOR, actor.as_bytes()));
    }
    for row in &mut rows {
        row.extend_from_slice(&seq);
    }
    let mut time = time_row(e.at.unix_millis()).to_vec();
    time.extend_from_slice(&seq);
    rows.push(time);
    rows
}

/// Outbox events with sequence number greater than `since`, oldest first,
/// at most `limit`.
pub(crate) fn read(
    backend: &dyn Backend,
    since: u64,
    limit: usize,
) -> Result<Vec<Event>, StorageError> {
    let start = since.saturating_add(1).to_be_bytes();
    backend
        .range_from(Table::Events, &start, limit)?
        .into_iter()
        .map(|(k, v)| Event::from_stored(&k, &v))
        .collect()
}

/// Event `seq`, if the outbox holds it.
pub(crate) fn get(backend: &dyn Backend, seq: u64) -> Result<Option<Event>, StorageError> {
    let key = seq.to_be_bytes();
    backend
        .get(Table::Events, &key)?
        .map(|v| Event::from_stored(&key, &v))
        .transpose()
}

/// How many events the outbox holds: read through a page at a time,
/// nothing copied but each page's last key.
pub(crate) fn outbox_len(backend: &dyn Backend) -> Result<u64, StorageError> {
    const PAGE: usize = 4096;
    let mut count = 0u64;
    let mut from = 0u64;
    loop {
        let mut last = [0u8; 8];
        let rows = RowsFrom {
            table: Table::Events,
            start: &from.to_be_bytes(),
            limit: PAGE,
        };
        let read = backend.visit_from(rows, &mut |k, _| {
            if let Ok(k) = <[u8; 8]>::try_from(k) {
                last = k;
            }
        })?;
        count += read as u64;
        if read < PAGE {
            return Ok(count);
        }
        from = u64::from_be_bytes(last).saturating_add(1);
    }
}

/// The number of the newest event (`from` when none is after it): a
/// galloping, then binary, search over "is there an event after n" — a
/// few dozen one-row reads, nothing copied, whatever the outbox holds.
pub(crate) fn newest_after(backend: &dyn Backend, from: u64) -> Result<u64, StorageError> {
    let after = |n: u64| -> Result<bool, StorageError> {
        let rows = RowsFrom {
            table: Table::Events,
            start: &n.saturating_add(1).to_be_bytes(),
            limit: 1,
        };
        Ok(backend.visit_from(rows, &mut |_, _| {})? > 0)
    };
    let mut lo = from;
    let mut step = 1u64;
    while lo < u64::MAX && after(lo)? {
        lo = lo.saturating_add(step);
        step = step.saturating_mul(2);
    }
    // None is after `lo`; the newest is at least `lo - step / 2`.
    let mut low = lo.saturating_sub(step / 2).max(from);
    let mut high = lo;
    while low < high {
        let mid = low + (high - low) / 2;
        if after(mid)? {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    Ok(low)
}

/// The lowest cursor of the enabled plugins (`None` when there are none):
/// events after it are still to be delivered.
pub(crate) fn lowest_plugin_cursor(backend: &dyn Backend) -> Result<Option<u64>, StorageError> {
    let mut lowest: Option<u64> = None;
    for (name, record) in backend.scan(Table::Plugins, b"")? {
        let record: Value = serde_json::from_slice(&record)
            .map_err(|e| StorageError::with_source("unreadable plugin record", e))?;
        if record.get("enabled") == Some(&Value::Bool(false)) {
            continue;
        }
        let cursor = match backend.get(Table::PluginState, &name)? {
            Some(state) => serde_json::from_slice::<Value>(&state)
                .map_err(|e| StorageError::with_source("unreadable plugin state", e))?
                .get("cursor")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            None => 0,
        };
        lowest = Some(lowest.map_or(cursor, |l| l.min(cursor)));
    }
    Ok(lowest)
}

/// Deletes the oldest events: those older than `retention` that every
/// enabled plugin has delivered or dead-lettered. Returns how many went.
pub(crate) fn prune(
    backend: &dyn Backend,
    now: i64,
    retention: Duration,
) -> Result<u64, StorageError> {
    let cutoff = now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let delivered = lowest_plugin_cursor(backend)?.unwrap_or(u64::MAX);
    let mut pruned = 0;
    loop {
        // The newest event always stays: a sled store numbers its next
        // event after it when it opens, and a copy continues from it (an
        // outbox emptied would start again at 1, below plugins' cursors).
        let page = backend.range_from(Table::Events, &0u64.to_be_bytes(), 513)?;
        let mut batch = Batch::default();
        let mut done = page.len() < 513;
        let mut n = 0;
        for (k, v) in &page[..page.len().saturating_sub(1)] {
            let event = Event::from_stored(k, v)?;
            if event.at.unix_millis() >= cutoff || event.seq > delivered {
                done = true;
                break;
            }
            batch.delete(Table::Events, k.clone());
            n += 1;
            // Its index rows go with it (vetted: an attached process may
            // delete only those of the events it prunes).
            for row in index_rows(&event) {
                batch.delete(Table::EventIndex, row);
            }
        }
        if n > 0 {
            backend.commit(batch, Durability::Lazy)?;
            pruned += n;
        }
        if done || n == 0 {
            return Ok(pruned);
        }
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;
    use crate::backend::MemoryBackend;

    fn event_at(batch: &mut Batch, at: i64) {
        let event = serde_json::json!({
            "kind": "key.updated", "at": Timestamp::from_unix_millis(at),
            "key_id": "AAAAAAAAAAAA", "name": "k", "masked": "kw_…", "data": {}
        });
        batch.append(Table::Events, serde_json::to_vec(&event).unwrap());
    }

    #[test]
    fn the_newest_event_is_found_in_a_few_reads_whatever_the_gaps() {
        let backend = MemoryBackend::new(true);
        assert_eq!(newest_after(&backend, 0).unwrap(), 0, "none yet");
        for n in [1usize, 1, 5, 300, 1000] {
            let mut batch = Batch::default();
            for _ in 0..n {
                event_at(&mut batch, 0);
            }
            backend.commit(batch, Durability::Durable).unwrap();
            let last = read(&backend, 0, usize::MAX).unwrap().last().unwrap().seq;
            assert_eq!(newest_after(&backend, 0).unwrap(), last);
            assert_eq!(newest_after(&backend, last).unwrap(), last);
            assert_eq!(newest_after(&backend, last / 2).unwrap(), last);
        }
        // The oldest pruned: a gap below.
        let mut batch = Batch::default();
        for seq in 1..=900u64 {
            batch.delete(Table::Events, seq.to_be_bytes().to_vec());
        }
        backend.commit(batch, Durability::Durable).unwrap();
        assert_eq!(newest_after(&backend, 0).unwrap(), 1307);
    }

    fn seqs(backend: &MemoryBackend) -> Vec<u64> {
        read(backend, 0, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    }

    #[test]
    fn old_events_go_unless_an_enabled_plugin_still_waits_for_them() {
        let backend = MemoryBackend::new(false);
        let mut batch = Batch::default();
        for at in 1..=10 {
            event_at(&mut batch, at * 1_000);
        }
        batch.put(
            Table::Plugins,
            b"crm".to_vec(),
            br#"{"enabled":true}"#.to_vec(),
        );
        batch.put(
            Table::PluginState,
            b"crm".to_vec(),
            br#"{"cursor":4}"#.to_vec(),
        );
        batch.put(
            Table::Plugins,
            b"off".to_vec(),
            br#"{"enabled":false}"#.to_vec(),
        );
        batch.put(
            Table::PluginState,
            b"off".to_vec(),
            br#"{"cursor":0}"#.to_vec(),
        );
        backend.commit(batch, Durability::Durable).unwrap();
        let hour = Duration::from_hours(1);
        // All older than the retention, but the enabled plugin is at 4.
        assert_eq!(prune(&backend, 10_000_000, hour).unwrap(), 4);
        assert_eq!(seqs(&backend), (5..=10).collect::<Vec<_>>());
        // The plugin catches up: the rest may go, but only what is old.
        let mut batch = Batch::default();
        batch.put(
            Table::PluginState,
            b"crm".to_vec(),
            br#"{"cursor":10}"#.to_vec(),
        );
        backend.commit(batch, Durability::Durable).unwrap();
        assert_eq!(prune(&backend, 3_600_000 + 8_000, hour).unwrap(), 3);
        assert_eq!(seqs(&backend), [8, 9, 10]);
        // Everything is old and delivered: the newest stays, for the
        // numbering to go on from it.
        assert_eq!(prune(&backend, 100_000_000, hour).unwrap(), 2);
        assert_eq!(seqs(&backend), [10]);
        assert_eq!(prune(&backend, 100_000_000, hour).unwrap(), 0);
    }

    #[test]
    fn a_page_boundary_does_not_take_the_newest_event() {
        let backend = MemoryBackend::new(false);
        let mut batch = Batch::default();
        for at in 1..=1026 {
            event_at(&mut batch, at);
        }
        backend.commit(batch, Durability::Durable).unwrap();
        assert_eq!(
            prune(&backend, 100_000_000, Duration::from_hours(1)).unwrap(),
            1025
        );
        assert_eq!(seqs(&backend), [1026]);
    }
}
