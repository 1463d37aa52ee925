//! The event outbox: every mutation appends its event in the same atomic
//! write as the mutation itself, so an event exists exactly when its
//! change does. Events never carry secret material.
//!
//! [`with_event_kinds!`] lists every kind once; the enum, its names and
//! the plugin manifest's accepted list ([`EVENT_KINDS`](crate::EVENT_KINDS))
//! are built from it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::{Backend, Batch, StorageError, Table};
use crate::key::KeyId;
use crate::store::KeyRecord;
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
        }
    };
}

macro_rules! define_event_kind {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal;)*) => {
        /// What happened.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
        }
    };
}

with_event_kinds!(define_event_kind);

/// One entry of the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Appends the event of `kind` about key `rec` to the batch that makes the
/// change: the outbox write. Its sequence number is given at commit.
pub(crate) fn append(
    batch: &mut Batch,
    kind: EventKind,
    rec: &KeyRecord,
    prefix: &str,
    at: i64,
    data: Value,
) {
    let event = Event {
        seq: 0,
        kind,
        at: Timestamp::from_unix_millis(at),
        key_id: rec.id,
        name: rec.name.clone(),
        masked: rec.masked(prefix),
        data,
    };
    batch.append(
        Table::Events,
        serde_json::to_vec(&event).expect("events serialise"),
    );
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
