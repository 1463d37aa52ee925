//! Per-key usage: where a key is used, by whom, how often, what was denied.
//!
//! The verify path adds to an in-memory aggregate (one small mutex-guarded
//! map per shard, never a storage write: [`pending`]); a flusher merges the
//! aggregates into the stored records on an interval and on close
//! ([`flush`]). The stored record and the pending delta are the same type
//! ([`aggregate`]), so merging is one function.

mod aggregate;
mod pending;
mod recent;

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::key::KeyId;
use crate::time::Timestamp;
use crate::verdict::{Denial, with_denials};

pub(crate) use self::aggregate::UsageAgg;
pub use self::pending::NoticeLimits;
pub(crate) use self::pending::{Notice, Occurrence, UsageLog};
pub use self::recent::{RECENT_PER_KEY, RecentRequest};

const HOUR_MS: i64 = 3_600_000;
/// Longest integration name kept; longer ones are cut at a character boundary.
pub const MAX_INTEGRATION_LEN: usize = 128;

/// What a store holds in memory waiting for storage, and what it let go of
/// to stay bounded while storage was failing ([`Store::backlog`](crate::Store::backlog)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Backlog {
    /// Keys with usage waiting to be written.
    pub pending_usage_keys: usize,
    /// Notices waiting to become outbox events.
    pub pending_notices: usize,
    /// Per-address and per-integration usage rows dropped so far to keep
    /// pending usage bounded (the totals stay exact).
    pub usage_rows_dropped: u64,
    /// Notices that storage could not take in time, folded back into the
    /// counts a later notice carries.
    pub notices_deferred: u64,
    /// Verifications held for the keys' recent-request lists, waiting
    /// to be written (at most 20,000 in all, 50 per key).
    #[serde(default)]
    pub pending_recent_requests: usize,
    /// Verifications not held for those lists because the store held its
    /// most already (their counts are kept; only the entries are not).
    #[serde(default)]
    pub recent_requests_dropped: u64,
}

/// How much usage history a key keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageLimits {
    /// Most client IPs remembered per key (the least recently seen go first).
    pub max_ips: usize,
    /// Most integrations remembered per key (the least recently seen go first).
    pub max_integrations: usize,
    /// How long hourly buckets are kept.
    pub retention: Duration,
}

impl Default for UsageLimits {
    fn default() -> Self {
        UsageLimits {
            max_ips: 1000,
            max_integrations: 100,
            retention: Duration::from_hours(7 * 24),
        }
    }
}

/// Defines [`UsageTotals`] from the denial rows: one counter per reason
/// that is recorded against a key.
macro_rules! define_usage_totals {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident $({ $(#[doc = $fdoc:literal])* $field:ident: $fty:ty = $placeholder:expr })?
            = $code:literal, $name:literal, $words:literal, http $http:literal
            $(, counted $counter:ident)?;
    )*) => {
        /// Verifications of one key by outcome.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[non_exhaustive]
        pub struct UsageTotals {
            /// Admitted (including an old secret inside its grace period).
            pub allowed: u64,
            /// Denied, for any reason below.
            pub denied: u64,
            $($(
                #[doc = concat!("Denied: `", $name, "`.")]
                #[serde(default)]
                pub $counter: u64,
            )?)*
        }

        impl UsageTotals {
            pub(crate) fn add(&mut self, o: &UsageTotals) {
                self.allowed += o.allowed;
                self.denied += o.denied;
                $($(self.$counter += o.$counter;)?)*
            }

            /// The counter a denial adds to; `None` for reasons never
            /// recorded against a key (there is no key to record them on).
            fn counter(&mut self, d: Denial) -> Option<&mut u64> {
                let totals = self;
                match d {
                    $(Denial::$variant { .. } => define_usage_totals!(@counter totals $($counter)?),)*
                }
            }

            /// Denials of each reason recorded against a key, in the
            /// order of their numbers (data fields hold placeholders).
            #[must_use]
            pub fn by_reason(&self) -> Vec<(Denial, u64)> {
                vec![$($((Denial::ALL[$code - 1], self.$counter),)?)*]
            }
        }
    };
    (@counter $totals:ident $counter:ident) => { Some(&mut $totals.$counter) };
    (@counter $totals:ident) => { None };
}

with_denials!(define_usage_totals);

impl UsageTotals {
    fn count(&mut self, outcome: Outcome) {
        let Outcome::Denied(d) = outcome else {
            self.allowed += 1;
            return;
        };
        self.denied += 1;
        if let Some(slot) = self.counter(d) {
            *slot += 1;
        }
    }
}

/// The last admitted use of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct LastUse {
    /// When.
    pub at: Timestamp,
    /// From which client address.
    pub ip: IpAddr,
}

/// One client IP that presented the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct IpUsage {
    /// The client address (IPv4-mapped IPv6 shown as IPv4).
    pub ip: IpAddr,
    /// First request seen.
    pub first_seen: Timestamp,
    /// Latest request seen.
    pub last_seen: Timestamp,
    /// Requests admitted.
    pub allowed: u64,
    /// Requests denied.
    pub denied: u64,
    /// The integration named by its latest request, if any.
    pub last_integration: Option<String>,
    /// Its latest secret was of an older generation: this client must be
    /// updated with the regenerated key.
    pub stale_secret: bool,
}

/// One integration (a CRM, an automation platform) that presented the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct IntegrationUsage {
    /// The name the application passed (often a User-Agent).
    pub name: String,
    /// First request seen.
    pub first_seen: Timestamp,
    /// Latest request seen.
    pub last_seen: Timestamp,
    /// Requests, admitted or not.
    pub count: u64,
    /// Of which denied.
    pub denied: u64,
    /// Client IPs it used, most recent first (at most 16).
    pub ips: Vec<IpAddr>,
    /// Its latest secret was of an older generation.
    pub stale_secret: bool,
}

/// Requests in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct HourlyUsage {
    /// Start of the hour.
    pub hour: Timestamp,
    /// Requests admitted.
    pub allowed: u64,
    /// Requests denied.
    pub denied: u64,
    /// Of those denied, the rate-limited and out-of-quota ones.
    pub limited: u64,
}

impl HourlyUsage {
    /// One hour's counts (for code that charts or sums hours of its own).
    #[must_use]
    pub const fn new(hour: Timestamp, allowed: u64, denied: u64, limited: u64) -> Self {
        HourlyUsage {
            hour,
            allowed,
            denied,
            limited,
        }
    }
}

/// The Usage tab of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct Usage {
    /// Which key.
    pub key_id: KeyId,
    /// Counts by outcome, since the key was created.
    pub totals: UsageTotals,
    /// The last admitted request.
    pub last_used: Option<LastUse>,
    /// Client IPs, most recently seen first.
    pub ips: Vec<IpUsage>,
    /// Integrations, most recently seen first.
    pub integrations: Vec<IntegrationUsage>,
    /// Hourly counts inside the retention window, oldest first.
    pub hourly: Vec<HourlyUsage>,
}

/// What one verification of a known key came to, as usage sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allowed,
    Denied(Denial),
}

/// Whether the presented secret was current, old, or never compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Current,
    Stale,
    /// Denied before the secret was looked at (IP, disabled, expired).
    Unknown,
}
