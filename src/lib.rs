//! keyward: an embedded API-key store.
//!
//! An application that hands API keys to its own customers links keyward
//! in and gets the whole key lifecycle: issue a key and show it once, list
//! and inspect keys, **regenerate** a key (the old secret dies at once or
//! after a grace period), delete, per-key **IP whitelists** with named
//! entries, and per-key **usage** (client IPs, integrations, counts,
//! denials, clients still presenting an old secret). Verification of a warm
//! key runs in about a microsecond, in process, without touching storage.
//!
//! Keys look like `kw_4fK9xQ2mLp7A_<43 random base62><6 check>`; only an
//! argon2id hash of the secret is stored.
//!
//! ```
//! use std::time::Duration;
//! use keyward::{CreateOptions, Denial, Store, Verdict};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("keys"))?;
//!
//! let created = store.create("CRM sync", CreateOptions::new())?;
//! let ip = "203.0.113.7".parse()?;
//! assert!(store.verify(created.key.as_str(), ip, Some("hubspot")).is_valid());
//!
//! // Restrict the key to an office network: other addresses are refused.
//! store.set_whitelist_enabled(&created.info.id, true)?;
//! store.add_whitelist_entry(&created.info.id, "office", "198.51.100.0/24")?;
//! assert_eq!(
//!     store.verify(created.key.as_str(), ip, None),
//!     Denial::IpNotAllowed
//! );
//!
//! // Regenerate: the old secret stops working when the call returns.
//! let office = "198.51.100.20".parse()?;
//! let fresh = store.regenerate(&created.info.id, Duration::ZERO)?;
//! let Verdict::Denied(refused) = store.verify(created.key.as_str(), office, None) else {
//!     panic!("the old secret was admitted");
//! };
//! assert!(matches!(refused.denial, Denial::Rotated { .. }));
//! assert_eq!(refused.key_id, Some(created.info.id));
//! assert!(store.verify(fresh.key.as_str(), office, None).is_valid());
//!
//! let usage = store.usage(&created.info.id)?;
//! assert_eq!(usage.totals.allowed, 2);
//! # Ok(()) }
//! ```

#![deny(clippy::all)]
#![warn(clippy::pedantic, missing_docs)]
#![allow(
    clippy::module_name_repetitions,
    clippy::missing_panics_doc,
    clippy::must_use_candidate,
    clippy::cast_possible_truncation,
    clippy::doc_markdown
)]

mod backend;
mod clock;
mod django;
mod error;
mod events;
mod fork;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod key;
mod locks;
#[cfg(feature = "manifest")]
mod manifest;
#[cfg(feature = "plugins")]
mod plugins;
mod policy;
mod store;
mod time;
mod usage;
mod verdict;
mod verifier;
mod whitelist;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::django::MAX_IMPORTED_PBKDF2_ITERATIONS;
pub use crate::error::{
    CopyError, Error, ErrorKind, KeyError, OpenError, StorageError, WhitelistError,
};
pub use crate::events::{Event, EventKind};
pub use crate::fork::{FORKED as FORKED_MESSAGE, generation as fork_generation};
pub use crate::key::{ID_LEN as KEY_ID_LEN, InvalidKeyId, KeyId, MAX_KEY_LEN, PlaintextKey};
#[cfg(feature = "plugins")]
pub use crate::plugins::{
    DeadLetter, EVENT_KINDS, HostResolver, InstallOptions, Manifest, PluginError, PluginInfo,
    PluginStatus, RetryPolicy, SUPPORTED_API_VERSIONS, SystemResolver,
};
pub use crate::policy::{
    Limit, MAX_LIMIT, MAX_LIMITS, MAX_QUOTA, MAX_SCOPE_LEN, MAX_SCOPES, MAX_WINDOW, Quota, Refill,
    RefillPeriod, Scopes,
};
pub use crate::store::{
    CLOCK_SKEW, CheckReport, CopyReport, CreateOptions, CreatedKey, EventPage, EventQuery,
    IMPORT_PREFIX_LEN, ImportedSecret, KeyInfo, KeyPage, KeyUpdate, LeakState, MAX_DESCRIPTION_LEN,
    MAX_EXAMINED, MAX_GRACE, MAX_METADATA_LEN, MAX_NAME_LEN, MAX_OWNER_LEN, MAX_PAGE, Maintenance,
    Metrics, Options, OwnerInfo, OwnerUsage, PAST_GENERATIONS_KEPT, PluginMetrics, Problem, Role,
    Status, Store,
};
pub use crate::time::Timestamp;

/// The name of the user this process runs as (`"uid N"` when it has
/// none): what the actor of changes made without
/// [`Options::actor`] is built from (`<user>@<host name>`).
#[must_use]
pub fn os_user() -> String {
    // SAFETY: geteuid cannot fail.
    crate::backend::user_name(unsafe { libc::geteuid() })
}

/// A store's location (a sled directory, or a `postgres://` URL) as it
/// may be shown in a message or a log: the directory's path, or the
/// PostgreSQL store's schema and database — never the URL itself, which
/// may carry a password.
#[must_use]
pub fn describe_location(location: &std::path::Path) -> String {
    crate::backend::describe(location)
}
pub use crate::usage::{
    Backlog, HourlyUsage, IntegrationUsage, IpUsage, LastUse, MAX_INTEGRATION_LEN, NoticeLimits,
    RECENT_PER_KEY, RecentRequest, Usage, UsageLimits, UsageTotals,
};
pub use crate::verdict::{Denial, Grant, Refusal, Verdict, VerifyRequest};
pub use crate::verifier::{
    Argon2Params, MAX_IMPORTED_ARGON2_MEMORY_KIB, MAX_IMPORTED_ARGON2_PARALLELISM,
    MAX_IMPORTED_ARGON2_TIME, MAX_IMPORTED_BCRYPT_COST,
};
pub use crate::whitelist::{ENTRY_ID_LEN, Whitelist, WhitelistEntry};
