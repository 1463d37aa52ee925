//! The event outbox: every mutation appends its event in the same atomic
//! write as the mutation itself, so an event exists exactly when its
//! change does. Events never carry secret material.

use serde::{Deserialize, Serialize};

use crate::key::KeyId;
use crate::time::Timestamp;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// A key was created.
    #[serde(rename = "key.created")]
    KeyCreated,
    /// A key got a new secret; `data.grace_until` says until when the old one works.
    #[serde(rename = "key.regenerated")]
    KeyRegenerated,
    /// A key was deleted.
    #[serde(rename = "key.deleted")]
    KeyDeleted,
    /// A key was disabled, enabled, renamed, or its expiry or metadata changed.
    #[serde(rename = "key.updated")]
    KeyUpdated,
    /// A key's whitelist was switched on or off, or an entry added or removed.
    #[serde(rename = "whitelist.updated")]
    WhitelistUpdated,
    /// A key was presented from an IP its whitelist refuses (at most once
    /// per key, IP and hour).
    #[serde(rename = "key.denied_ip")]
    KeyDeniedIp,
    /// A client presented the secret of an older generation (in its grace
    /// period or after it), at most once per key, IP and hour: it must be
    /// updated with the regenerated key.
    #[serde(rename = "key.stale_secret_used")]
    KeyStaleSecretUsed,
}

impl EventKind {
    /// The dotted name: `key.created`, `whitelist.updated`, ...
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::KeyCreated => "key.created",
            EventKind::KeyRegenerated => "key.regenerated",
            EventKind::KeyDeleted => "key.deleted",
            EventKind::KeyUpdated => "key.updated",
            EventKind::WhitelistUpdated => "whitelist.updated",
            EventKind::KeyDeniedIp => "key.denied_ip",
            EventKind::KeyStaleSecretUsed => "key.stale_secret_used",
        }
    }
}

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
    pub data: serde_json::Value,
}

impl Event {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events serialise")
    }

    pub(crate) fn from_stored(seq_key: &[u8], bytes: &[u8]) -> Result<Self, String> {
        let mut e: Event =
            serde_json::from_slice(bytes).map_err(|e| format!("unreadable event: {e}"))?;
        let seq: [u8; 8] = seq_key
            .try_into()
            .map_err(|_| "bad event key".to_string())?;
        e.seq = u64::from_be_bytes(seq);
        Ok(e)
    }
}
