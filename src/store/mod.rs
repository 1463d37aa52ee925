//! The store: the facade every binding calls.
//!
//! - [`options`]: how a store is opened and a key created;
//! - [`record`]: the stored records and the views built from them;
//! - [`index`]: the in-memory index `verify` reads;
//! - [`engine`]: the state behind a handle, opening and following changes;
//! - [`verify`]: the hot path;
//! - [`write`]: every change to a key, durable before it returns;
//! - [`worker`]: the background usage flush and change-feed sync.
//!
//! Reading and flushing usage lives in `crate::usage`, outbox writes in
//! `crate::events`, whitelist entry rules in `crate::whitelist`.

mod audit;
mod budgets;
mod check;
mod codec;
mod copy;
mod engine;
mod import;
mod imports;
mod index;
mod leaks;
mod leases;
mod list;
mod meter;
mod metrics;
mod options;
mod owners;
mod record;
mod settings;
mod status;
mod usage;
mod verify;
mod vet;
mod worker;
mod write;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use serde_json::Value;

pub use self::audit::{CLOCK_SKEW, EventPage, EventQuery, MAX_EXAMINED};
pub use self::check::{CheckReport, Problem};
pub use self::copy::CopyReport;
pub(crate) use self::engine::Engine;
pub use self::engine::Maintenance;
pub use self::import::{IMPORT_PREFIX_LEN, ImportedSecret};
pub use self::index::LeakState;
pub use self::list::{KeyPage, MAX_PAGE};
pub use self::metrics::{Metrics, PluginMetrics};
pub use self::options::{MAX_GRACE, Options, PAST_GENERATIONS_KEPT};
pub use self::owners::{OwnerInfo, OwnerUsage};
pub use self::record::{CreatedKey, KeyInfo};
pub use self::settings::{
    CreateOptions, KeyUpdate, MAX_DESCRIPTION_LEN, MAX_METADATA_LEN, MAX_NAME_LEN, MAX_OWNER_LEN,
};
pub use self::status::{Role, Status};
use self::worker::Worker;
use crate::backend::{self, Backend, MemoryBackend, Opened, StorageError};
use crate::error::{KeyError, OpenError, WhitelistError};
use crate::events::{self, Event};
use crate::key::KeyId;
use crate::time::Timestamp;
use crate::usage::{RecentRequest, Usage};
use crate::verdict::{Verdict, VerifyRequest};
use crate::whitelist::{Whitelist, WhitelistEntry};

/// An open key store. `Send + Sync`: share it between threads by reference
/// or in an `Arc`.
///
/// A sled store is owned by the first process that opens it; the other
/// processes of the host attach to that owner (see [`Store::open`]).
/// Opening the same sled store again in one process gives a handle on the
/// same open store; it stops when its last handle is closed or dropped.
///
/// Dropping it flushes pending usage; [`Store::close`] does the same and
/// reports errors.
pub struct Store {
    engine: Arc<Engine>,
    life: Option<Arc<Life>>,
}

/// What the handles of one open store in this process share: the worker,
/// and stopping everything when the last handle goes.
struct Life {
    engine: Arc<Engine>,
    worker: std::sync::Mutex<Option<Worker>>,
}

impl Life {
    fn shutdown(&self) -> Result<(), StorageError> {
        let Some(worker) = crate::locks::lock(&self.worker).take() else {
            return Ok(());
        };
        #[cfg(feature = "plugins")]
        self.engine.plugins.stop();
        worker.stop();
        let flushed = self
            .engine
            .flush_usage()
            .and_then(|()| self.engine.backend.flush());
        // Stops serving attached processes (one takes over) and lets the files go.
        if let Some(host) = self.engine.backend.host() {
            host.close();
        }
        flushed
    }
}

impl Drop for Life {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The sled stores open in this process, by canonical path: a second open
/// of one shares it.
fn open_here() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Weak<Life>>> {
    static OPEN: OnceLock<std::sync::Mutex<HashMap<PathBuf, Weak<Life>>>> = OnceLock::new();
    crate::locks::lock(OPEN.get_or_init(Default::default))
}

/// The name a sled store is known by in this process (none for a URL).
fn sled_name(path: &Path) -> Option<PathBuf> {
    let text = path.to_str().unwrap_or("");
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return None;
    }
    std::fs::canonicalize(path).ok()
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.engine.dir)
            .field("prefix", &self.engine.prefix)
            .field("keys", &self.engine.index.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store at `path` with default options: a sled directory
    /// (created 0700 if needed), or, for `postgres://user@host:port/db?schema=NAME`,
    /// a store shared through PostgreSQL (schema created and migrated on open).
    ///
    /// Any number of processes of one user on one host may open the same
    /// sled store. The first owns its files and serves it on a Unix socket
    /// in the store directory; the others attach to it, each with its own
    /// in-memory verify index fed by the owner's change feed, their writes
    /// made by the owner (durable before they return). When the owner
    /// exits or dies, an attached process takes the store over.
    ///
    /// # Errors
    /// [`OpenError::StoreLocked`] when the store cannot be attached to (its
    /// owner runs as another user, or [`Options::require_owner`] is set
    /// and another process owns it); [`OpenError::Storage`] when it cannot
    /// be read or created.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        Self::open_with(path, &Options::default())
    }

    /// Opens the store at `path` (a sled directory or a PostgreSQL URL) with `options`.
    ///
    /// # Errors
    /// As [`Store::open`], and [`OpenError::InvalidOptions`].
    pub fn open_with(path: impl AsRef<Path>, options: &Options) -> Result<Store, OpenError> {
        options.check()?;
        let path = path.as_ref();
        let mut open_here = open_here();
        open_here.retain(|_, life| life.strong_count() > 0);
        if let Some(life) = sled_name(path).and_then(|name| open_here.get(&name)?.upgrade()) {
            if options.require_owner
                && !life
                    .engine
                    .backend
                    .host()
                    .is_some_and(crate::backend::HostBackend::is_owner)
            {
                return Err(OpenError::StoreLocked {
                    path: path.to_path_buf(),
                });
            }
            return Ok(Store {
                engine: Arc::clone(&life.engine),
                life: Some(life),
            });
        }
        let timeouts = backend::Timeouts {
            connect: options.connect_timeout,
            statement: options.statement_timeout,
        };
        let opened = backend::open(path, timeouts, options.host_rules()?)?;
        let store = Self::start(opened, options)?;
        if let (Some(name), Some(life)) = (sled_name(path), &store.life) {
            open_here.insert(name, Arc::downgrade(life));
        }
        Ok(store)
    }

    /// A store in memory only: nothing persists past `close`. For an
    /// application's own tests.
    ///
    /// # Errors
    /// [`OpenError::InvalidOptions`].
    pub fn open_in_memory(options: &Options) -> Result<Store, OpenError> {
        Self::open_backend(Arc::new(MemoryBackend::new(false)), options)
    }

    /// Opens a store over any backend (the engine's own tests share one
    /// in-memory backend between engines, standing for a database server).
    pub(crate) fn open_backend(
        backend: Arc<dyn Backend>,
        options: &Options,
    ) -> Result<Store, OpenError> {
        Self::start(Opened::detached(backend), options)
    }

    fn start(opened: Opened, options: &Options) -> Result<Store, OpenError> {
        let engine = Engine::start(opened, options)?;
        let worker = Worker::spawn(&engine, options);
        let life = Arc::new(Life {
            engine: Arc::clone(&engine),
            worker: std::sync::Mutex::new(Some(worker)),
        });
        Ok(Store {
            engine,
            life: Some(life),
        })
    }

    /// The key prefix of this store (`kw` unless chosen at creation).
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.engine.prefix
    }

    /// How many keys the store holds.
    #[must_use]
    pub fn key_count(&self) -> usize {
        self.engine.index.len()
    }

    /// The directory the store lives in, for a sled store.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.engine.dir.as_deref()
    }

    // ------------------------------------------------------------ verify

    /// Answers one verification (see [`VerifyRequest`]). Checks run in
    /// this order: the key, disabled or expired, the whitelist, the
    /// secret, the scope, the rate limits, the quota; only a request that
    /// passes everything before spends a rate limit or the quota. A
    /// refusal names the key and its account (see [`Refusal`](crate::Refusal)).
    ///
    /// Never touches storage; records usage in memory.
    pub fn verify_request(&self, req: &VerifyRequest<'_>) -> Verdict {
        let verdict = self.engine.verify(req);
        self.engine.counters.verdict(&verdict);
        verdict
    }

    /// Verifies a presented key from `client_ip`, optionally naming the
    /// integration (a User-Agent, a partner name) for the Usage tab: the
    /// short form of [`Store::verify_request`].
    pub fn verify(&self, key: &str, client_ip: IpAddr, integration: Option<&str>) -> Verdict {
        self.verify_request(&VerifyRequest::new(key, client_ip).integration(integration))
    }

    /// [`Store::verify`] for a key given as bytes.
    #[deprecated(note = "use Store::verify_request")]
    pub fn verify_bytes(
        &self,
        key: &[u8],
        client_ip: IpAddr,
        integration: Option<&str>,
    ) -> Verdict {
        self.verify_request(&VerifyRequest::new(key, client_ip).integration(integration))
    }

    /// [`Store::verify`], also requiring `scope`.
    #[deprecated(note = "use Store::verify_request")]
    pub fn verify_scoped(
        &self,
        key: &str,
        client_ip: IpAddr,
        integration: Option<&str>,
        scope: Option<&str>,
    ) -> Verdict {
        #[allow(deprecated)]
        self.verify_scoped_bytes(key.as_bytes(), client_ip, integration, scope)
    }

    /// [`Store::verify_scoped`] for a key given as bytes.
    #[deprecated(note = "use Store::verify_request")]
    pub fn verify_scoped_bytes(
        &self,
        key: &[u8],
        client_ip: IpAddr,
        integration: Option<&str>,
        scope: Option<&str>,
    ) -> Verdict {
        let req = VerifyRequest::new(key, client_ip).integration(integration);
        self.verify_request(&req.scope(scope))
    }

    /// The account of the key a presented key names, from the in-memory
    /// index (no storage, no allocation): what the C verdict reports on a
    /// refusal of a key that exists.
    #[must_use]
    pub fn owner_of_key(&self, key: &[u8]) -> Option<Arc<str>> {
        self.engine.index.owner(&self.key_id_of(key)?)
    }

    /// The id of a presented key: its id part, or the key an imported
    /// key's lookup names; `None` for anything else.
    #[must_use]
    pub fn key_id_of(&self, key: &[u8]) -> Option<KeyId> {
        self.engine.identify(key).map(|(id, _, _)| id)
    }

    // --------------------------------------------------------- lifecycle

    /// Creates a key. The plaintext is in the result and nowhere else.
    ///
    /// # Errors
    /// [`KeyError::InvalidInput`] for an empty or oversized name, metadata
    /// that is not a JSON object, or a bad whitelist entry; storage errors.
    pub fn create(&self, name: &str, options: CreateOptions) -> Result<CreatedKey, KeyError> {
        self.engine.create(name, options)
    }

    /// Imports a key from another system (see [`ImportedSecret`]): the key
    /// string its holder has keeps working, found through an index (never
    /// a scan), with the whitelist, usage, expiry and disable of any key.
    /// Regenerating it issues a key of this store's format.
    ///
    /// # Errors
    /// [`KeyError::InvalidInput`] for a bad name, options or secret
    /// material, or a key (or prefix) imported already; storage errors.
    pub fn import_key(
        &self,
        name: &str,
        secret: ImportedSecret,
        options: CreateOptions,
    ) -> Result<KeyInfo, KeyError> {
        let mut made = self
            .engine
            .import_many(vec![(name.to_string(), secret, options)])?;
        Ok(made.pop().expect("one key imported"))
    }

    /// Imports many keys at once, all or none, in one durable write.
    ///
    /// # Errors
    /// As [`Store::import_key`], for any of them: nothing is imported.
    pub fn import_many(
        &self,
        keys: Vec<(String, ImportedSecret, CreateOptions)>,
    ) -> Result<Vec<KeyInfo>, KeyError> {
        self.engine.import_many(keys)
    }

    /// Creates many keys at once, all or none, in one durable write (the
    /// cost of provisioning is the hashing, not a disk flush per key). At
    /// most 10,000 at once.
    ///
    /// # Errors
    /// As [`Store::create`], for any of them: nothing is created.
    pub fn create_many(
        &self,
        keys: Vec<(String, CreateOptions)>,
    ) -> Result<Vec<CreatedKey>, KeyError> {
        self.engine.create_many(keys)
    }

    /// Walks every table and reports what does not agree (see
    /// [`CheckReport`]): records that do not decode, owner-index rows and
    /// import lookups that do not match their records, quota, limit and
    /// usage rows of no key, events and plugin state that do not hold
    /// together. With `repair`, what is derived from the records (the
    /// owner index, the import lookups) is rebuilt from them and rows of
    /// no key are removed, in one durable write made only if nothing
    /// involved changed meanwhile; records are never touched.
    ///
    /// # Errors
    /// Storage errors; with `repair`, a store that changed during the
    /// check (nothing is repaired: check again).
    pub fn check(&self, repair: bool) -> Result<CheckReport, StorageError> {
        self.engine.check(repair)
    }

    /// Gives the key a new secret. The old secret stops working when this
    /// returns (`grace` zero) or at now + `grace`; durable before return.
    ///
    /// # Errors
    /// [`KeyError::NotFound`], [`KeyError::InvalidInput`] for a grace over a year; storage errors.
    pub fn regenerate(&self, id: &KeyId, grace: Duration) -> Result<CreatedKey, KeyError> {
        self.engine.regenerate(id, grace)
    }

    /// Deletes a key and its usage history; its secrets stop working when
    /// this returns. Durable before return.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; storage errors.
    pub fn delete(&self, id: &KeyId) -> Result<(), KeyError> {
        self.engine.delete(id)
    }

    /// One key's Overview.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; storage errors.
    pub fn get(&self, id: &KeyId) -> Result<KeyInfo, KeyError> {
        self.engine.get(id)
    }

    /// Every key, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        self.engine.list()
    }

    /// Every key of one account, oldest first, through the owner index: as
    /// fast in a store of a million keys as in one of a thousand.
    ///
    /// # Errors
    /// [`KeyError::InvalidInput`] for an owner that is empty, over
    /// [`MAX_OWNER_LEN`] bytes or holds control characters; storage errors.
    pub fn list_owner(&self, owner: &str) -> Result<Vec<KeyInfo>, KeyError> {
        self.engine.list_owner(owner)
    }

    /// A page of keys — of `owner`, or of every account — in id order: up
    /// to `limit` (1 to [`MAX_PAGE`]) keys whose ids come after `after`.
    /// Start with `after` `None`; pass each page's `next` to get the next.
    ///
    /// # Errors
    /// [`KeyError::InvalidInput`] for a bad limit or owner; storage errors.
    pub fn list_page(
        &self,
        owner: Option<&str>,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<KeyPage, KeyError> {
        self.engine.list_page(owner, after, limit)
    }

    /// Every account with keys, by owner id, with its key count.
    ///
    /// # Errors
    /// Storage errors.
    pub fn owners(&self) -> Result<Vec<OwnerInfo>, KeyError> {
        self.engine.owners()
    }

    /// One account's usage: totals and the latest use across its keys.
    ///
    /// # Errors
    /// [`KeyError::InvalidInput`] for a bad owner; storage errors.
    pub fn owner_usage(&self, owner: &str) -> Result<OwnerUsage, KeyError> {
        self.engine.owner_usage(owner)
    }

    /// Closes an account: deletes all of `owner`'s keys (and their usage)
    /// in one durable transaction, one `key.deleted` event each; their
    /// secrets stop working when this returns. Returns how many.
    ///
    /// # Errors
    /// [`KeyError::InvalidInput`] for a bad owner; storage errors.
    pub fn delete_owner_keys(&self, owner: &str) -> Result<usize, KeyError> {
        self.engine.delete_owner_keys(owner)
    }

    /// Changes a key's settings: every field `patch` names, in one atomic,
    /// durable batch — all of them or, when one is invalid or storage
    /// fails, none. Each field changed writes the event its single-field
    /// call writes (`set_owner`, `rename`, ... are this with one field).
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; [`KeyError::InvalidInput`] naming the first
    /// invalid field (nothing is changed); storage errors.
    pub fn update(&self, id: &KeyId, patch: KeyUpdate) -> Result<KeyInfo, KeyError> {
        self.engine.update_key(id, patch)
    }

    /// Moves a key to another account, or to none (an account merge);
    /// emits `key.updated` with `owner_from` and `owner_to`. Durable
    /// before return.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; [`KeyError::InvalidInput`] for a bad owner;
    /// storage errors.
    pub fn set_owner(&self, id: &KeyId, owner: Option<&str>) -> Result<KeyInfo, KeyError> {
        self.update(id, KeyUpdate::new().owner(owner))
    }

    /// Disables (admits nobody) or re-enables a key. Durable before return.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; storage errors.
    pub fn set_disabled(&self, id: &KeyId, disabled: bool) -> Result<KeyInfo, KeyError> {
        self.update(id, KeyUpdate::new().disabled(disabled))
    }

    /// Renames a key.
    ///
    /// # Errors
    /// [`KeyError::NotFound`], [`KeyError::InvalidInput`]; storage errors.
    pub fn rename(&self, id: &KeyId, name: &str) -> Result<KeyInfo, KeyError> {
        self.update(id, KeyUpdate::new().name(name))
    }

    /// Sets or clears the expiry; a time in the past expires the key now.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; storage errors.
    pub fn set_expiry(
        &self,
        id: &KeyId,
        expires_at: Option<Timestamp>,
    ) -> Result<KeyInfo, KeyError> {
        self.update(id, KeyUpdate::new().expires_at(expires_at))
    }

    /// Replaces (or clears) the metadata object.
    ///
    /// # Errors
    /// [`KeyError::NotFound`], [`KeyError::InvalidInput`]; storage errors.
    pub fn set_metadata(&self, id: &KeyId, metadata: Option<Value>) -> Result<KeyInfo, KeyError> {
        self.update(id, KeyUpdate::new().metadata(metadata))
    }

    // ------------------------------------------- limits, quota, scopes

    /// Replaces the key's scopes (see [`CreateOptions::scopes`]).
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; [`KeyError::InvalidInput`] for a bad scope
    /// or more than [`MAX_SCOPES`](crate::MAX_SCOPES); storage errors.
    pub fn set_scopes<S: AsRef<str>>(&self, id: &KeyId, scopes: &[S]) -> Result<KeyInfo, KeyError> {
        self.update(
            id,
            KeyUpdate::new().scopes(scopes.iter().map(AsRef::as_ref)),
        )
    }

    /// Replaces the key's rate limits (see [`Limit`](crate::Limit)); an
    /// empty list removes them. A limit kept by name keeps its count in
    /// other processes; in this one every count starts empty.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; [`KeyError::InvalidInput`] for a bad limit
    /// or two of one name; storage errors.
    pub fn set_limits(&self, id: &KeyId, limits: &[crate::Limit]) -> Result<KeyInfo, KeyError> {
        self.update(id, KeyUpdate::new().limits(limits))
    }

    /// Sets the key's quota (`None` removes it): `remaining` requests
    /// from now, in every process; a refill resets it at each period.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; [`KeyError::InvalidInput`] for an amount
    /// out of range; storage errors.
    pub fn set_quota(&self, id: &KeyId, quota: Option<crate::Quota>) -> Result<KeyInfo, KeyError> {
        self.update(id, KeyUpdate::new().quota(quota))
    }

    // --------------------------------------------------------- whitelist

    /// The key's Whitelist tab.
    ///
    /// # Errors
    /// [`WhitelistError::KeyNotFound`]; storage errors.
    pub fn whitelist(&self, id: &KeyId) -> Result<Whitelist, WhitelistError> {
        Ok(self.engine.record(id)?.whitelist)
    }

    /// Turns "restrict this key to whitelisted IPs" on or off. With no
    /// entries, on means nobody is admitted. Durable before return.
    ///
    /// # Errors
    /// [`WhitelistError::KeyNotFound`]; storage errors.
    pub fn set_whitelist_enabled(
        &self,
        id: &KeyId,
        enabled: bool,
    ) -> Result<Whitelist, WhitelistError> {
        self.update(id, KeyUpdate::new().whitelist_enabled(enabled))?;
        self.whitelist(id)
    }

    /// Adds a named entry (an IP or a CIDR network; host bits set is an error).
    ///
    /// # Errors
    /// [`WhitelistError::InvalidNetwork`], [`WhitelistError::InvalidInput`]
    /// (bad name, duplicate network, full), [`WhitelistError::KeyNotFound`]; storage errors.
    pub fn add_whitelist_entry(
        &self,
        id: &KeyId,
        name: &str,
        ip_or_cidr: &str,
    ) -> Result<WhitelistEntry, WhitelistError> {
        self.engine.add_whitelist_entry(id, name, ip_or_cidr)
    }

    /// Removes an entry by id.
    ///
    /// # Errors
    /// [`WhitelistError::EntryNotFound`], [`WhitelistError::KeyNotFound`]; storage errors.
    pub fn remove_whitelist_entry(&self, id: &KeyId, entry_id: &str) -> Result<(), WhitelistError> {
        self.engine.remove_whitelist_entry(id, entry_id)
    }

    // ------------------------------------------------------------- usage

    /// The key's Usage tab, including requests not yet flushed.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; storage errors.
    pub fn usage(&self, id: &KeyId) -> Result<Usage, KeyError> {
        self.engine.usage(id)
    }

    /// The key's last verifications, newest first: at most
    /// [`RECENT_PER_KEY`](crate::RECENT_PER_KEY) of them, each with its
    /// time, client address, integration, result and reason, whether it
    /// presented an old secret, and the scope it asked for. Includes
    /// requests not yet flushed; those of other processes appear once
    /// they flush (every [`Options::usage_flush_interval`]).
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; storage errors.
    pub fn recent_requests(&self, id: &KeyId) -> Result<Vec<RecentRequest>, KeyError> {
        self.engine.recent_requests(id)
    }

    /// Runs now what the background worker does every
    /// [`Options::maintenance_interval`]: deletes outbox events older than
    /// [`Options::event_retention`] that every enabled plugin has delivered
    /// or dead-lettered, and on a shared store reports how far this process
    /// has read the change feed, trimming what every process has read.
    ///
    /// # Errors
    /// Storage errors; nothing is lost, the next round tries again.
    pub fn maintain(&self) -> Result<Maintenance, StorageError> {
        self.engine.maintain()
    }

    /// What waits in memory for storage (usage, notices) and what was let
    /// go of to keep it bounded while storage was failing.
    #[must_use]
    pub fn backlog(&self) -> crate::usage::Backlog {
        self.engine.usage.backlog()
    }

    /// Writes pending usage to storage now (it is also written on an interval and on close).
    ///
    /// # Errors
    /// Storage errors; the pending usage is kept for the next attempt.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.engine.flush_usage()
    }

    // ------------------------------------------------------------ events

    /// Outbox events with sequence number greater than `since`, oldest
    /// first, at most `limit`.
    ///
    /// # Errors
    /// Storage errors.
    pub fn events(&self, since: u64, limit: usize) -> Result<Vec<Event>, StorageError> {
        events::read(self.engine.backend.as_ref(), since, limit)
    }

    /// The events `query` asks for — a key's, an account's, an actor's,
    /// of some kinds, in a time range — in the order it asks, a page at a
    /// time: [`EventPage::next`] is where the next page starts (the
    /// query's `after`, or `before` newest first). Answered through the
    /// outbox's index: one account's events among a million in
    /// milliseconds. A page examines at most [`MAX_EXAMINED`] events (a
    /// rare kind over a long range may come back short, with `next`).
    /// Time ranges are exact while the clocks of the processes writing the
    /// store agree within [`CLOCK_SKEW`].
    ///
    /// # Errors
    /// [`KeyError::InvalidInput`] for a limit outside 1 to [`MAX_PAGE`] or
    /// a time range that ends before it starts; storage errors.
    pub fn events_query(&self, query: &EventQuery) -> Result<EventPage, KeyError> {
        self.engine.events_query(query)
    }

    // ----------------------------------------------------------- plugins

    /// Installs a notifier plugin: a WebAssembly component and its TOML
    /// manifest. It receives the subscribed events that happen from now on.
    ///
    /// # Errors
    /// [`PluginError::InvalidManifest`], [`PluginError::InvalidComponent`]
    /// (not a component, not a `keyward:notifier`, wrong API version),
    /// [`PluginError::AlreadyInstalled`]; nothing is stored then.
    #[cfg(feature = "plugins")]
    pub fn install_plugin(
        &self,
        component: &[u8],
        manifest_toml: &str,
    ) -> Result<crate::plugins::PluginInfo, crate::plugins::PluginError> {
        self.install_plugin_with(
            component,
            manifest_toml,
            crate::plugins::InstallOptions::new(),
        )
    }

    /// [`Store::install_plugin`] with an operator's grants beyond the
    /// manifest (for example, calls to private addresses).
    ///
    /// # Errors
    /// As [`Store::install_plugin`].
    #[cfg(feature = "plugins")]
    pub fn install_plugin_with(
        &self,
        component: &[u8],
        manifest_toml: &str,
        options: crate::plugins::InstallOptions,
    ) -> Result<crate::plugins::PluginInfo, crate::plugins::PluginError> {
        self.engine
            .plugins
            .install(component, manifest_toml, options)
    }

    /// Every installed plugin with its delivery status.
    ///
    /// # Errors
    /// Storage errors.
    #[cfg(feature = "plugins")]
    pub fn plugins(&self) -> Result<Vec<crate::plugins::PluginInfo>, crate::plugins::PluginError> {
        self.engine.plugins.list()
    }

    /// One plugin with its delivery status.
    ///
    /// # Errors
    /// [`PluginError::NotFound`]; storage errors.
    #[cfg(feature = "plugins")]
    pub fn plugin(
        &self,
        name: &str,
    ) -> Result<crate::plugins::PluginInfo, crate::plugins::PluginError> {
        self.engine.plugins.info(name)
    }

    /// Whether this process delivers to the store's plugins: exactly one
    /// process of a shared store does (it holds the dispatcher lease, which
    /// passes to another process when it exits or dies); a store one
    /// process owns always does. `None` until the dispatcher's first look
    /// at the lease, just after open.
    #[cfg(feature = "plugins")]
    #[must_use]
    pub fn dispatches_plugins(&self) -> Option<bool> {
        self.engine.plugins.dispatching()
    }

    /// Removes a plugin, its state and its dead letters.
    ///
    /// # Errors
    /// [`PluginError::NotFound`]; storage errors.
    #[cfg(feature = "plugins")]
    pub fn remove_plugin(&self, name: &str) -> Result<(), crate::plugins::PluginError> {
        self.engine.plugins.remove(name)
    }

    /// Pauses (events wait at its cursor) or resumes a plugin.
    ///
    /// # Errors
    /// [`PluginError::NotFound`]; storage errors.
    #[cfg(feature = "plugins")]
    pub fn set_plugin_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<crate::plugins::PluginInfo, crate::plugins::PluginError> {
        self.engine.plugins.set_enabled(name, enabled)
    }

    /// The events a plugin gave up on.
    ///
    /// # Errors
    /// [`PluginError::NotFound`]; storage errors.
    #[cfg(feature = "plugins")]
    pub fn plugin_dead_letters(
        &self,
        name: &str,
    ) -> Result<Vec<crate::plugins::DeadLetter>, crate::plugins::PluginError> {
        self.engine.plugins.dead_letters(name)
    }

    /// Tries a plugin's dead letters once more and ends its current backoff.
    /// Returns how many events were queued.
    ///
    /// # Errors
    /// [`PluginError::NotFound`]; storage errors.
    #[cfg(feature = "plugins")]
    pub fn retry_plugin(&self, name: &str) -> Result<usize, crate::plugins::PluginError> {
        self.engine.plugins.retry(name)
    }

    /// The plugin's recent log: its own `host.log` lines and the host's
    /// notes on it (refused HTTP calls, traps, timeouts).
    ///
    /// # Errors
    /// [`PluginError::NotFound`]; storage errors.
    #[cfg(feature = "plugins")]
    pub fn plugin_log(&self, name: &str) -> Result<Vec<String>, crate::plugins::PluginError> {
        self.engine.plugins.log(name)
    }

    /// Writes pending usage and flushes storage; for the last handle on
    /// the store in this process, also stops its background threads and,
    /// for the owner of a sled store, stops serving it (an attached process
    /// takes over) and lets its files go.
    ///
    /// # Errors
    /// Storage errors from the final flush.
    pub fn close(mut self) -> Result<(), StorageError> {
        let Some(life) = self.life.take() else {
            return Ok(());
        };
        match Arc::try_unwrap(life) {
            Ok(life) => life.shutdown(),
            Err(shared) => {
                drop(shared);
                self.engine
                    .flush_usage()
                    .and_then(|()| self.engine.backend.flush())
            }
        }
    }

    /// Whether this process owns the store or is attached to its owner,
    /// and which process owns it.
    #[must_use]
    pub fn status(&self) -> Status {
        Status::of(&self.engine)
    }

    /// Applies changes other processes made (shared backends); the
    /// background worker does this every `sync_interval`.
    #[cfg(test)]
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        self.engine.sync()
    }
}

#[cfg(test)]
mod tests;
