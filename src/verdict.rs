//! The answer of `verify`, and the one list of reasons for a refusal.
//!
//! [`with_denials!`] holds every denial once: its variant, its stable
//! number (the C `kw_denial`, Python's `Denial`), its snake_case name, the
//! words the CLI shows, the HTTP status the bundled middleware answers,
//! and the usage counter it adds to. Everything else about denials — the
//! Rust enum, [`UsageTotals`](crate::UsageTotals), the C enum and its
//! conversion (generated into `bindings/c/src/generated.rs`), Python's `Denial`
//! and `UsageTotals` (generated into the package) — is built from it.
//! Adding a denial is one row here, then regenerating
//! (`KEYWARD_BLESS=1 cargo test -p keyward-ffi generated`).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::key::KeyId;
use crate::time::Timestamp;

/// Calls `$then!` with every denial's row: `Variant [{ field: Type =
/// placeholder }] = number, "name", "words", http STATUS [, counted FIELD];`.
/// Rows without `counted` are never recorded against a key (there is none).
macro_rules! with_denials {
    ($then:ident) => {
        $then! {
            /// Wrong length, prefix, characters or checksum: never looked up.
            Malformed = 1, "malformed", "malformed", http 401;
            /// No key has this id (never issued, or deleted).
            UnknownKey = 2, "unknown_key", "unknown key", http 401;
            /// The secret matches no generation of this key.
            WrongSecret = 3, "wrong_secret", "wrong secret", http 401, counted wrong_secret;
            /// The secret of a generation that was regenerated away (grace over).
            Rotated {
                /// When that generation stopped working.
                at: Timestamp = Timestamp::from_unix_millis(0)
            } = 4, "rotated", "old secret", http 401, counted rotated;
            /// The key is past its expiry.
            Expired = 5, "expired", "expired", http 401, counted expired;
            /// The key is disabled.
            Disabled = 6, "disabled", "disabled", http 401, counted disabled;
            /// The key is restricted to whitelisted IPs and this one is not.
            IpNotAllowed = 7, "ip_not_allowed", "refused IP", http 403, counted ip_not_allowed;
            /// Too many cold verifications at once; retry shortly.
            Busy = 8, "busy", "busy", http 503, counted busy;
            /// A shared store could not confirm it is current (its database has
            /// been unreachable longer than the staleness bound): refused rather
            /// than risk admitting a revoked key. Recovers by itself.
            Unavailable = 9, "unavailable", "store unavailable", http 503, counted unavailable;
            /// A rate limit of the key is used up: one more request fits
            /// after `retry_after_ms` (see [`Denial::retry_after`]).
            RateLimited {
                /// Milliseconds until one more request fits.
                retry_after_ms: u64 = 0
            } = 10, "rate_limited", "rate limited", http 429, counted rate_limited;
            /// The key's quota has no requests left.
            QuotaExhausted = 11, "quota_exhausted", "quota exhausted", http 429, counted quota_exhausted;
            /// The verification required a scope the key does not carry.
            ScopeMissing = 12, "scope_missing", "scope missing", http 403, counted scope_missing;
        }
    };
}
pub(crate) use with_denials;

/// One verification: the presented key, where it came from, and what it
/// is asked for. Build it with [`VerifyRequest::new`] and the setters;
/// [`Store::verify_request`](crate::Store::verify_request) answers it.
///
/// ```
/// # use keyward::VerifyRequest;
/// let ip = "203.0.113.9".parse().unwrap();
/// let req = VerifyRequest::new("kw_...", ip).integration("zapier").scope("orders:read");
/// assert!(!format!("{req:?}").contains("kw_"));
/// ```
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct VerifyRequest<'a> {
    /// The key as presented: anything that is not a well-formed key (or
    /// an imported one) is `Malformed`.
    pub key: &'a [u8],
    /// The client's address, for the whitelist and the Usage tab.
    pub client_ip: IpAddr,
    /// The integration (a User-Agent, a partner name), for the Usage tab.
    pub integration: Option<&'a str>,
    /// A scope the key must carry (refused with `ScopeMissing` otherwise).
    pub scope: Option<&'a str>,
}

impl<'a> VerifyRequest<'a> {
    /// `key` presented from `client_ip`, naming no integration and
    /// asking for no scope.
    #[must_use]
    pub fn new(key: &'a (impl AsRef<[u8]> + ?Sized), client_ip: IpAddr) -> Self {
        VerifyRequest {
            key: key.as_ref(),
            client_ip,
            integration: None,
            scope: None,
        }
    }

    /// The integration the request came through (`None`: not known).
    #[must_use]
    pub fn integration(mut self, integration: impl Into<Option<&'a str>>) -> Self {
        self.integration = integration.into();
        self
    }

    /// The scope the key must carry (`None`: none asked).
    #[must_use]
    pub fn scope(mut self, scope: impl Into<Option<&'a str>>) -> Self {
        self.scope = scope.into();
        self
    }
}

/// The key is a secret: shown as its length only.
impl fmt::Debug for VerifyRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("client_ip", &self.client_ip)
            .field("integration", &self.integration)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Whether a presented key is admitted, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted.
    Valid(Grant),
    /// Refused; the host application decides what its client is told.
    Denied(Refusal),
}

/// What the index says to a presented key, before [`Verdict`] names the
/// refused key (only the outermost call knows which key it ended up as).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Valid(Grant),
    Denied(Denial),
}

impl Decision {
    pub(crate) fn is_valid(&self) -> bool {
        matches!(self, Decision::Valid(_))
    }
}

/// A refused key: why, and which key it named.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusal {
    /// The reason.
    pub denial: Denial,
    /// The id the presented key names (even when no key has it);
    /// `None` for a malformed key.
    pub key_id: Option<KeyId>,
    /// The account of the key, when it exists and has one: taken from
    /// the index the verification read, not looked up again.
    pub owner: Option<Arc<str>>,
}

impl Refusal {
    /// A refusal naming no key (what a malformed key gets).
    #[must_use]
    pub fn new(denial: Denial) -> Self {
        Refusal {
            denial,
            key_id: None,
            owner: None,
        }
    }
}

impl From<Denial> for Refusal {
    fn from(denial: Denial) -> Self {
        Refusal::new(denial)
    }
}

/// A verdict equals a denial when it refuses for that reason
/// (`assert_eq!(store.verify(..), Denial::Disabled)`).
impl PartialEq<Denial> for Verdict {
    fn eq(&self, other: &Denial) -> bool {
        self.denial().as_ref() == Some(other)
    }
}

impl PartialEq<Verdict> for Denial {
    fn eq(&self, other: &Verdict) -> bool {
        other == self
    }
}

impl Verdict {
    /// Whether the key was admitted.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid(_))
    }

    /// For a `RateLimited` refusal: seconds until one more request fits.
    #[must_use]
    pub fn retry_after(&self) -> Option<f64> {
        self.denial().and_then(|d| d.retry_after())
    }

    /// The reason for a refusal, `None` when admitted.
    #[must_use]
    pub fn denial(&self) -> Option<Denial> {
        match self {
            Verdict::Valid(_) => None,
            Verdict::Denied(r) => Some(r.denial),
        }
    }

    /// The id the presented key names: the admitted key's, or a refused
    /// one's (`None` when malformed).
    #[must_use]
    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            Verdict::Valid(g) => Some(g.key_id),
            Verdict::Denied(r) => r.key_id,
        }
    }

    /// The account of the key, admitted or refused, when it has one.
    #[must_use]
    pub fn owner(&self) -> Option<&Arc<str>> {
        match self {
            Verdict::Valid(g) => g.owner.as_ref(),
            Verdict::Denied(r) => r.owner.as_ref(),
        }
    }
}

/// What an admitted key is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// The key's id.
    pub key_id: KeyId,
    /// The generation whose secret was presented.
    pub generation: u32,
    /// An older generation, still inside the grace period of a regeneration.
    pub in_grace: bool,
    /// The account the key belongs to ([`CreateOptions::owner`](crate::CreateOptions::owner)):
    /// shared with the store's index, so a verification allocates nothing.
    pub owner: Option<Arc<str>>,
    /// The key's scopes, sorted (shared with the index).
    pub scopes: crate::Scopes,
}

impl Grant {
    /// The key's scopes, sorted.
    #[must_use]
    pub fn scopes(&self) -> &crate::Scopes {
        &self.scopes
    }
}

macro_rules! define_denial {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident $({ $(#[doc = $fdoc:literal])* $field:ident: $fty:ty = $placeholder:expr })?
            = $code:literal, $name:literal, $words:literal, http $http:literal
            $(, counted $counter:ident)?;
    )*) => {
        /// Why a key was refused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        #[serde(tag = "reason")]
        #[non_exhaustive]
        pub enum Denial {
            $(
                $(#[doc = $doc])*
                #[serde(rename = $name)]
                $variant $({ $(#[doc = $fdoc])* $field: $fty })?,
            )*
        }

        impl Denial {
            /// Every denial in the order of its number; data fields hold placeholders.
            pub const ALL: &'static [Denial] = &[$(Denial::$variant $({ $field: $placeholder })?),*];

            /// A stable snake_case name: `wrong_secret`, `ip_not_allowed`, ...
            #[must_use]
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Denial::$variant { .. } => $name,)*
                }
            }

            /// The stable number of this reason: the C `kw_denial` value
            /// (`KW_DENIAL_NONE` is 0) and Python's `Denial` value.
            #[must_use]
            pub const fn code(&self) -> u32 {
                match self {
                    $(Denial::$variant { .. } => $code,)*
                }
            }

            /// A few words for people ("refused IP", "old secret").
            #[must_use]
            pub fn words(&self) -> &'static str {
                match self {
                    $(Denial::$variant { .. } => $words,)*
                }
            }

            /// The HTTP status the bundled middleware answers with: 403 for a
            /// refused IP or a missing scope, 429 when rate-limited or out of
            /// quota, 503 while busy, 401 otherwise.
            #[must_use]
            pub fn http_status(&self) -> u16 {
                match self {
                    $(Denial::$variant { .. } => $http,)*
                }
            }

            /// The variant's name, as in Rust (`"IpNotAllowed"`).
            #[must_use]
            pub fn name(&self) -> &'static str {
                match self {
                    $(Denial::$variant { .. } => stringify!($variant),)*
                }
            }

            /// What the denial means: its documentation, one line per line.
            #[must_use]
            pub fn description(&self) -> &'static str {
                match self {
                    $(Denial::$variant { .. } => concat!($($doc, "\n"),*),)*
                }
            }
        }
    };
}

with_denials!(define_denial);

impl Denial {
    /// For `RateLimited`: seconds until one more request fits.
    #[must_use]
    pub fn retry_after(&self) -> Option<f64> {
        match self {
            #[allow(clippy::cast_precision_loss)]
            Denial::RateLimited { retry_after_ms } => Some(*retry_after_ms as f64 / 1000.0),
            _ => None,
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Rotated { at } => write!(f, "rotated (stopped working at {at})"),
            Denial::RateLimited { retry_after_ms } => {
                write!(f, "rate_limited (retry after {retry_after_ms} ms)")
            }
            other => f.write_str(other.as_str()),
        }
    }
}

// Numbers are 1..=N in row order: `code() - 1` indexes `ALL`.
const _: () = {
    let mut i = 0;
    while i < Denial::ALL.len() {
        assert!(Denial::ALL[i].code() as usize == i + 1);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serde_tag_is_the_stable_name() {
        for d in Denial::ALL {
            let v = serde_json::to_value(d).unwrap();
            assert_eq!(v["reason"], d.as_str(), "{d:?}");
        }
    }
}
