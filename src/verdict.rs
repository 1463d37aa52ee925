//! The answer of `verify`.

use std::fmt;

use serde::Serialize;

use crate::key::KeyId;
use crate::time::Timestamp;

/// Whether a presented key is admitted, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted.
    Valid(Grant),
    /// Refused; the host application decides what its client is told.
    Denied(Denial),
}

impl Verdict {
    /// Whether the key was admitted.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid(_))
    }

    /// The reason for a refusal, `None` when admitted.
    #[must_use]
    pub fn denial(&self) -> Option<Denial> {
        match self {
            Verdict::Valid(_) => None,
            Verdict::Denied(d) => Some(*d),
        }
    }
}

/// What an admitted key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// The key's id.
    pub key_id: KeyId,
    /// The generation whose secret was presented.
    pub generation: u32,
    /// An older generation, still inside the grace period of a regeneration.
    pub in_grace: bool,
}

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Denial {
    /// Wrong length, prefix, characters or checksum: never looked up.
    Malformed,
    /// No key has this id (never issued, or deleted).
    UnknownKey,
    /// The secret matches no generation of this key.
    WrongSecret,
    /// The secret of a generation that was regenerated away (grace over).
    Rotated {
        /// When that generation stopped working.
        at: Timestamp,
    },
    /// The key is past its expiry.
    Expired,
    /// The key is disabled.
    Disabled,
    /// The key is restricted to whitelisted IPs and this one is not.
    IpNotAllowed,
    /// Too many cold verifications at once; retry shortly.
    Busy,
    /// A shared store could not confirm it is current (its database has
    /// been unreachable longer than the staleness bound): refused rather
    /// than risk admitting a revoked key. Recovers by itself.
    Unavailable,
}

impl Denial {
    /// A stable snake_case name: `wrong_secret`, `ip_not_allowed`, ...
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Denial::Malformed => "malformed",
            Denial::UnknownKey => "unknown_key",
            Denial::WrongSecret => "wrong_secret",
            Denial::Rotated { .. } => "rotated",
            Denial::Expired => "expired",
            Denial::Disabled => "disabled",
            Denial::IpNotAllowed => "ip_not_allowed",
            Denial::Busy => "busy",
            Denial::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Rotated { at } => write!(f, "rotated (stopped working at {at})"),
            other => f.write_str(other.as_str()),
        }
    }
}
