//! How a store is opened.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::OpenError;
use crate::key;
use crate::usage::{NoticeLimits, UsageLimits};
use crate::verifier::Argon2Params;

use super::settings::MAX_OWNER_LEN;

/// Past generations remembered per key, so their secrets answer `Rotated`
/// rather than `WrongSecret`.
pub const PAST_GENERATIONS_KEPT: usize = 8;
/// Longest grace period a regeneration may give the old secret.
pub const MAX_GRACE: Duration = Duration::from_hours(366 * 24);

/// How a store is opened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The key prefix (`[a-z][a-z0-9_]{0,15}`, not ending in `_`). Fixed when
    /// the store is created: `None` means "kw" for a new store and "whatever
    /// it has" for an existing one; a different value is an error.
    pub prefix: Option<String>,
    /// argon2id cost for newly hashed secrets.
    pub argon2: Argon2Params,
    /// How often pending usage is written to storage (also on close).
    pub usage_flush_interval: Duration,
    /// How much usage history each key keeps.
    pub usage_limits: UsageLimits,
    /// How often refused IPs and old secrets are told through the outbox
    /// (`key.denied_ip`, `key.stale_secret_used`).
    pub notice_limits: NoticeLimits,
    /// argon2 verifications allowed at once (default: the number of cores).
    /// One key may have at most half of them (at least one) running, so a
    /// flood against one key leaves room for every other key's first use.
    pub max_concurrent_hashes: usize,
    /// Cold verifications allowed to wait for a slot before `Busy`.
    pub max_queued_hashes: usize,
    /// How often a shared backend's change feed is polled.
    pub sync_interval: Duration,
    /// How long opening a PostgreSQL connection (TCP, TLS, authentication)
    /// waits for the server, unless the URL gives `connect_timeout`.
    pub connect_timeout: Duration,
    /// How long one of keyward's PostgreSQL statements may run: the server
    /// cancels it past this, and the client gives up on a server that does
    /// not answer at all (a black-holed connection) a second later, so a
    /// lost server turns into errors and `Unavailable` instead of a stall.
    pub statement_timeout: Duration,
    /// A shared store that has not confirmed it is current for this long
    /// refuses every key (`Denial::Unavailable`) until it has.
    pub staleness_bound: Duration,
    /// How long the quota tokens this process holds for a key (a lease
    /// taken from the key's shared quota) may go unused before they go
    /// back to storage for other processes, but for a small reserve (a
    /// twentieth of the lease, at least one). Default 10 seconds.
    pub lease_idle: Duration,
    /// How long outbox events are kept (at least until every enabled
    /// plugin has delivered or dead-lettered them). Default 30 days.
    pub event_retention: Duration,
    /// How often the background worker prunes old events and, on a shared
    /// store, reports how far it has read the change feed (so what every
    /// process has read is trimmed). Default one minute.
    pub maintenance_interval: Duration,
    /// A process of a shared store silent this long no longer holds back
    /// the trimming of the change feed; if it comes back, it reloads every
    /// key. Default ten minutes.
    pub reader_expiry: Duration,
    /// A sled store is owned by the first process to open it and shared
    /// with the others of its host, which attach to the owner's socket.
    /// With `require_owner`, this open refuses to attach: it fails with
    /// [`OpenError::StoreLocked`] when another process owns the store.
    pub require_owner: bool,
    /// A group (name or number) whose members may attach to a sled store
    /// this process owns: the store directory becomes 0750 and its socket
    /// 0660, both of that group (the files stay 0600). Its members get
    /// what the owning user's processes get through the socket: reading
    /// and changing every key. `None`: only the user who owns the store
    /// (0700 and 0600).
    pub attach_group: Option<String>,
    /// How long opening a sled store waits for an owner that is starting
    /// or stopping, and how long an attached process waits for one to take
    /// over when the owner goes. Default five seconds.
    pub takeover_timeout: Duration,
    /// Who makes the changes through this store handle (`"admin panel"`,
    /// a service's name): every event of a change it makes carries it as
    /// `data.actor`. 1 to [`MAX_OWNER_LEN`] bytes without control
    /// characters; `None`: `<user>@<host name>` of this process (see
    /// [`os_user`](crate::os_user)). Never a secret.
    pub actor: Option<String>,
    /// How failed plugin deliveries are retried.
    #[cfg(feature = "plugins")]
    pub plugin_retry: crate::plugins::RetryPolicy,
    /// How the plugin host resolves the names plugins call (the system's
    /// resolver unless replaced; the address policy applies either way).
    #[cfg(feature = "plugins")]
    pub plugin_resolver: Arc<dyn crate::plugins::HostResolver>,
    /// Where the store reads the time (expiry, grace periods, usage hours,
    /// staleness, plugin backoff). The system clock unless a test moves
    /// time by hand with a [`ManualClock`](crate::ManualClock).
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Options {
            prefix: None,
            argon2: Argon2Params::default(),
            usage_flush_interval: Duration::from_secs(1),
            usage_limits: UsageLimits::default(),
            notice_limits: NoticeLimits::default(),
            max_concurrent_hashes: cores,
            max_queued_hashes: cores * 4,
            sync_interval: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            staleness_bound: Duration::from_secs(5),
            lease_idle: Duration::from_secs(10),
            event_retention: Duration::from_hours(30 * 24),
            maintenance_interval: Duration::from_mins(1),
            reader_expiry: Duration::from_mins(10),
            require_owner: false,
            attach_group: None,
            takeover_timeout: Duration::from_secs(5),
            actor: None,
            #[cfg(feature = "plugins")]
            plugin_retry: crate::plugins::RetryPolicy::default(),
            #[cfg(feature = "plugins")]
            plugin_resolver: Arc::new(crate::plugins::SystemResolver),
            clock: Arc::new(SystemClock),
        }
    }
}

impl Options {
    pub(crate) fn check(&self) -> Result<(), OpenError> {
        if let Some(p) = &self.prefix {
            key::validate_prefix(p).map_err(OpenError::InvalidOptions)?;
        }
        if self.usage_flush_interval.is_zero()
            || self.sync_interval.is_zero()
            || self.connect_timeout.is_zero()
            || self.statement_timeout.is_zero()
            || self.maintenance_interval.is_zero()
            || self.reader_expiry.is_zero()
            || self.takeover_timeout.is_zero()
            || self.lease_idle.is_zero()
        {
            return Err(OpenError::InvalidOptions(
                "intervals and timeouts must be greater than zero".into(),
            ));
        }
        if self.notice_limits.window.is_zero() || self.notice_limits.max_per_minute == 0 {
            return Err(OpenError::InvalidOptions(
                "notice limits must be greater than zero".into(),
            ));
        }
        if self.usage_limits.max_ips == 0 || self.usage_limits.max_integrations == 0 {
            return Err(OpenError::InvalidOptions(
                "usage limits must be greater than zero".into(),
            ));
        }
        if let Some(actor) = &self.actor
            && (actor.is_empty()
                || actor.len() > MAX_OWNER_LEN
                || actor.chars().any(char::is_control))
        {
            return Err(OpenError::InvalidOptions(format!(
                "actor: 1 to {MAX_OWNER_LEN} bytes without control characters"
            )));
        }
        self.attach_gid()?;
        self.argon2
            .hasher()
            .map(drop)
            .map_err(OpenError::InvalidOptions)
    }

    /// The id of [`Options::attach_group`].
    pub(crate) fn attach_gid(&self) -> Result<Option<u32>, OpenError> {
        let Some(g) = &self.attach_group else {
            return Ok(None);
        };
        crate::backend::group_id(g)
            .map(Some)
            .ok_or_else(|| OpenError::InvalidOptions(format!("attach_group: no group {g:?}")))
    }
}
