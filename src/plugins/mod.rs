//! Notifier plugins: WebAssembly components, installed into the store, that
//! tell outside systems about key events.
//!
//! Delivery is at least once and in order, per plugin: each plugin has a
//! durable cursor into the event outbox; a background dispatcher delivers
//! the events after it, retries with exponential backoff, and after
//! `max_attempts` moves an event to the plugin's dead-letter list. A plugin
//! that fails, traps, loops or runs out of memory costs the key operations
//! nothing: they only wake the dispatcher.

mod dispatch;
mod host;
mod http;
mod lease;
mod signing;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::http::{HostResolver, SystemResolver};
pub use crate::manifest::{EVENT_KINDS, Manifest, SUPPORTED_API_VERSIONS};

use self::host::{Loaded, Runtime};
use self::http::Egress;
pub(crate) use self::lease::{DispatcherLease, for_store as lease_for_store};
use crate::backend::{Backend, Batch, CommitError, Durability, StorageError, Table};
use crate::clock::Clock;
use crate::locks::lock;
use crate::time::Timestamp;

/// A plugin operation failed; nothing was stored or changed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PluginError {
    /// The manifest is not valid TOML or breaks a rule (name, API version, events, hosts, limits).
    InvalidManifest(String),
    /// The bytes are not a WebAssembly component implementing `keyward:notifier`.
    InvalidComponent(String),
    /// A plugin with this name is installed already.
    AlreadyInstalled(String),
    /// No plugin has this name.
    NotFound(String),
    /// This build of keyward has no plugin host.
    Unsupported,
    /// The storage layer failed.
    Storage(StorageError),
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginError::InvalidManifest(m) => write!(f, "invalid plugin manifest: {m}"),
            PluginError::InvalidComponent(m) => write!(f, "invalid plugin component: {m}"),
            PluginError::AlreadyInstalled(n) => {
                write!(f, "a plugin named {n:?} is installed already")
            }
            PluginError::NotFound(n) => write!(f, "no plugin named {n:?}"),
            PluginError::Unsupported => {
                f.write_str("this keyward was built without the plugin host")
            }
            PluginError::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PluginError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PluginError::Storage(e) => Some(e),
            _ => None,
        }
    }
}

impl PluginError {
    /// How the bindings report it.
    #[must_use]
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            PluginError::InvalidManifest(_) => K::PluginInvalidManifest,
            PluginError::InvalidComponent(_) => K::PluginInvalidComponent,
            PluginError::AlreadyInstalled(_) => K::PluginExists,
            PluginError::NotFound(_) => K::PluginNotFound,
            PluginError::Unsupported => K::PluginsUnsupported,
            PluginError::Storage(_) => K::Storage,
        }
    }
}

impl From<StorageError> for PluginError {
    fn from(e: StorageError) -> Self {
        PluginError::Storage(e)
    }
}

/// One installed plugin and how its deliveries are going.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct PluginInfo {
    /// Its unique name.
    pub name: String,
    /// Its own version.
    pub version: String,
    /// The notifier API version it was built against.
    pub api: String,
    /// Event kinds it receives.
    pub events: Vec<String>,
    /// Origins it may call.
    pub allowed_hosts: Vec<String>,
    /// Its calls may reach private addresses (an operator's grant at install).
    pub allow_private_network: bool,
    /// How the host signs its requests (`standard-webhooks`), if it does.
    pub signing: Option<String>,
    /// Disabled plugins receive nothing (their cursor waits).
    pub enabled: bool,
    /// When it was installed.
    pub installed_at: Timestamp,
    /// Delivery state.
    pub status: PluginStatus,
}

/// Delivery state of one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PluginStatus {
    /// Sequence number of the last event it has been given (delivered,
    /// skipped as unsubscribed, or dead-lettered).
    pub cursor: u64,
    /// Events in the outbox after the cursor (subscribed or not).
    #[serde(default)]
    pub pending: u64,
    /// Events delivered.
    pub delivered: u64,
    /// Failed attempts, all told.
    pub failed: u64,
    /// Events on the dead-letter list now.
    #[serde(default)]
    pub dead_letters: u64,
    /// Failed attempts at the event after the cursor.
    pub attempts: u32,
    /// When the next attempt is due, while backing off.
    pub next_attempt_at: Option<Timestamp>,
    /// The latest failure.
    pub last_error: Option<String>,
    /// When the latest failure happened.
    pub last_error_at: Option<Timestamp>,
    /// When an event was last delivered.
    pub last_success_at: Option<Timestamp>,
}

/// An event a plugin could not take after all its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The event's sequence number.
    pub seq: u64,
    /// Its kind.
    pub kind: String,
    /// Why the last attempt failed.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was given up on (or last retried).
    pub at: Timestamp,
    /// Queued for another attempt by a retry.
    #[serde(default)]
    pub requeued: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PluginRecord {
    v: u32,
    manifest: String,
    enabled: bool,
    installed_at: Timestamp,
    /// Granted by an operator at install time: calls may reach private addresses.
    #[serde(default)]
    allow_private_network: bool,
    /// BLAKE3 of the component, the manifest and the grants: which
    /// installation this is (older records have none).
    #[serde(default)]
    digest: Option<String>,
}

impl PluginRecord {
    /// Identifies this installation: a reinstall (by any process) differs.
    fn identity(&self) -> String {
        self.digest.clone().unwrap_or_else(|| {
            let mut h = blake3::Hasher::new();
            h.update(self.manifest.as_bytes());
            h.update(&self.installed_at.unix_millis().to_be_bytes());
            h.finalize().to_hex().to_string()
        })
    }
}

fn digest(wasm: &[u8], manifest: &str, options: InstallOptions) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&(wasm.len() as u64).to_be_bytes());
    h.update(wasm);
    h.update(manifest.as_bytes());
    h.update(&[u8::from(options.allow_private_network)]);
    h.finalize().to_hex().to_string()
}

/// How a plugin is installed: grants an operator gives it, beyond what its
/// own manifest asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstallOptions {
    /// Let its HTTP calls reach loopback, link-local and private addresses
    /// through names in its `allowed_hosts` (a CRM on an internal network).
    pub allow_private_network: bool,
}

impl InstallOptions {
    /// No extra grants.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`InstallOptions::allow_private_network`].
    #[must_use]
    pub fn allow_private_network(mut self, allow: bool) -> Self {
        self.allow_private_network = allow;
        self
    }
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failure; doubles per further failure.
    pub base: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(500),
            max: Duration::from_mins(5),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempts: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

fn dead_key(name: &str, seq: u64) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn dead_prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

const NOT_LOOKED: u8 = 0;
const NOT_HELD: u8 = 1;
const HELD: u8 = 2;

/// A stored plugin record that does not read back.
/// What `Store::check` asks of the plugin tables: every plugin's record
/// decodes and its component is there; every state and dead letter
/// belongs to a plugin installed and decodes; no cursor is past the last
/// event (`last_event`). Each problem goes to `found(table, row, what)`.
pub(crate) fn check(
    backend: &dyn Backend,
    last_event: u64,
    found: &mut dyn FnMut(&str, &[u8], String),
) -> Result<(), StorageError> {
    let mut installed = std::collections::HashSet::new();
    for (name, record) in backend.scan(Table::Plugins, b"")? {
        if let Err(e) = check_row(Table::Plugins, &record) {
            found("plugins", &name, e);
        }
        if backend.get(Table::PluginCode, &name)?.is_none() {
            found("plugins", &name, "its component is missing".into());
        }
        installed.insert(name);
    }
    for (name, state) in backend.scan(Table::PluginState, b"")? {
        if !installed.contains(&name) {
            found(
                "plugin_state",
                &name,
                "the state of no plugin installed".into(),
            );
        }
        match serde_json::from_slice::<PluginStatus>(&state) {
            Ok(s) if s.cursor > last_event => found(
                "plugin_state",
                &name,
                format!(
                    "its cursor {} is past the last event {last_event}",
                    s.cursor
                ),
            ),
            Ok(_) => {}
            Err(e) => found("plugin_state", &name, format!("does not decode: {e}")),
        }
    }
    for (row, letter) in backend.scan(Table::DeadLetters, b"")? {
        let name = row.split(|&b| b == 0).next().unwrap_or_default();
        if !installed.contains(name) {
            found(
                "dead_letters",
                &row,
                "a dead letter of no plugin installed".into(),
            );
        }
        if let Err(e) = check_row(Table::DeadLetters, &letter) {
            found("dead_letters", &row, e);
        }
    }
    Ok(())
}

/// Whether `value` is a row of plugin table `table` as this module writes
/// it (a plugin's record with a manifest that parses, its state, a dead
/// letter; a component's bytes are checked when it is loaded).
pub(crate) fn check_row(table: Table, value: &[u8]) -> Result<(), String> {
    let decodes = match table {
        Table::Plugins => serde_json::from_slice::<PluginRecord>(value)
            .map_err(|e| e.to_string())
            .and_then(|r| Manifest::parse(&r.manifest).map(drop)),
        Table::PluginState => serde_json::from_slice::<PluginStatus>(value)
            .map(drop)
            .map_err(|e| e.to_string()),
        Table::DeadLetters => serde_json::from_slice::<DeadLetter>(value)
            .map(drop)
            .map_err(|e| e.to_string()),
        Table::PluginCode => Ok(()),
        _ => Err("not a plugin table".into()),
    };
    decodes.map_err(|e| format!("a {table:?} row that does not decode: {e}"))
}

fn unreadable(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> PluginError {
    PluginError::Storage(StorageError::with_source(format!("unreadable {what}"), e))
}

fn encode(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("plugin records serialise")
}

/// The plugin side of a store: the runtime, the compiled plugins, and the
/// dispatcher thread.
pub(crate) struct Plugins {
    inner: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    backend: Arc<dyn Backend>,
    resolver: Arc<dyn HostResolver>,
    clock: Arc<dyn Clock>,
    lease: Box<dyn DispatcherLease>,
    /// What the last round found: [`NOT_LOOKED`], or whether this process
    /// holds the lease.
    dispatching: AtomicU8,
    /// Started on first use: a store without plugins runs no engine and no epoch thread.
    runtime: Mutex<Option<Arc<Runtime>>>,
    cache_dir: Option<std::path::PathBuf>,
    retry: RetryPolicy,
    /// The key of delivery ids (`webhook-id`), derived from the store's own.
    id_key: [u8; 32],
    loaded: Mutex<HashMap<String, Arc<Loaded>>>,
    wake: Mutex<bool>,
    woken: Condvar,
    stop: AtomicBool,
}

impl Plugins {
    pub(crate) fn start(
        backend: Arc<dyn Backend>,
        resolver: Arc<dyn HostResolver>,
        lease: Box<dyn DispatcherLease>,
        clock: Arc<dyn Clock>,
        cache_dir: Option<std::path::PathBuf>,
        retry: RetryPolicy,
        id_key: [u8; 32],
    ) -> Result<Plugins, String> {
        let shared = Arc::new(Shared {
            backend,
            resolver,
            clock,
            lease,
            dispatching: AtomicU8::new(NOT_LOOKED),
            runtime: Mutex::new(None),
            cache_dir,
            retry,
            id_key,
            loaded: Mutex::new(HashMap::new()),
            wake: Mutex::new(false),
            woken: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let thread = dispatch::spawn(Arc::clone(&shared))
            .map_err(|e| format!("starting the plugin dispatcher: {e}"))?;
        Ok(Plugins {
            inner: shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Whether this process delivers to the store's plugins (it held the
    /// dispatcher lease at the dispatcher's last round).
    pub(crate) fn dispatching(&self) -> Option<bool> {
        match self.inner.dispatching.load(Ordering::Acquire) {
            NOT_LOOKED => None,
            held => Some(held == HELD),
        }
    }

    /// New events are in the outbox: deliver them now rather than at the next poll.
    pub(crate) fn wake(&self) {
        *lock(&self.inner.wake) = true;
        self.inner.woken.notify_all();
    }

    /// Stops the dispatcher; a delivery in progress finishes (within its time limit).
    pub(crate) fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        self.wake();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }

    pub(crate) fn install(
        &self,
        wasm: &[u8],
        manifest_toml: &str,
        options: InstallOptions,
    ) -> Result<PluginInfo, PluginError> {
        let manifest = Manifest::parse(manifest_toml).map_err(PluginError::InvalidManifest)?;
        let name = manifest.name.clone();
        if self
            .inner
            .backend
            .get(Table::Plugins, name.as_bytes())?
            .is_some()
        {
            return Err(PluginError::AlreadyInstalled(name));
        }
        let record = PluginRecord {
            v: 1,
            manifest: manifest_toml.to_string(),
            enabled: true,
            installed_at: self.inner.clock.now(),
            allow_private_network: options.allow_private_network,
            digest: Some(digest(wasm, manifest_toml, options)),
        };
        let loaded = self
            .inner
            .runtime()?
            .load(
                wasm,
                manifest,
                record.identity(),
                self.inner.egress(&record)?,
            )
            .map_err(PluginError::InvalidComponent)?;
        // Deliver what happens from now on, not the store's history.
        let cursor = self.inner.last_event_seq()?;
        let status = PluginStatus {
            cursor,
            ..PluginStatus::default()
        };
        let mut batch = Batch::default();
        batch.expect(Table::Plugins, name.as_bytes().to_vec(), None);
        batch.put(Table::Plugins, name.as_bytes().to_vec(), encode(&record));
        batch.put(Table::PluginCode, name.as_bytes().to_vec(), wasm.to_vec());
        batch.put(
            Table::PluginState,
            name.as_bytes().to_vec(),
            encode(&status),
        );
        match self.inner.backend.commit(batch, Durability::Durable) {
            Ok(_) => {}
            Err(CommitError::Conflict) => {
                return Err(PluginError::AlreadyInstalled(name));
            }
            Err(CommitError::Storage(e) | CommitError::Unflushed(e)) => return Err(e.into()),
        }
        lock(&self.inner.loaded).insert(name.clone(), Arc::new(loaded));
        self.wake();
        self.info(&name)
    }

    pub(crate) fn list(&self) -> Result<Vec<PluginInfo>, PluginError> {
        let names: Vec<String> = self
            .inner
            .backend
            .scan(Table::Plugins, b"")?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect();
        names.iter().map(|n| self.info(n)).collect()
    }

    pub(crate) fn info(&self, name: &str) -> Result<PluginInfo, PluginError> {
        let record = self.inner.record(name)?;
        let manifest = Manifest::parse(&record.manifest)
            .map_err(|e| PluginError::Storage(StorageError::new(format!("stored {e}"))))?;
        // Dead letters before the state they are written with: the
        // state read after is at least as new, so a dead letter seen
        // comes with the failure that made it (the reads are not one
        // snapshot).
        let dead_letters = self
            .inner
            .backend
            .scan(Table::DeadLetters, &dead_prefix(name))?
            .len() as u64;
        let mut status = self.inner.status(name)?;
        status.dead_letters = dead_letters;
        status.pending = self.inner.last_event_seq()?.saturating_sub(status.cursor);
        Ok(PluginInfo {
            name: manifest.name,
            version: manifest.version,
            api: manifest.api,
            events: manifest.events,
            allowed_hosts: manifest.allowed_hosts,
            allow_private_network: record.allow_private_network,
            signing: manifest.signing,
            enabled: record.enabled,
            installed_at: record.installed_at,
            status,
        })
    }

    pub(crate) fn remove(&self, name: &str) -> Result<(), PluginError> {
        self.inner.record(name)?;
        let mut batch = Batch::default();
        batch.delete(Table::Plugins, name.as_bytes().to_vec());
        batch.delete(Table::PluginCode, name.as_bytes().to_vec());
        batch.delete(Table::PluginState, name.as_bytes().to_vec());
        for (k, _) in self
            .inner
            .backend
            .scan(Table::DeadLetters, &dead_prefix(name))?
        {
            batch.delete(Table::DeadLetters, k);
        }
        self.inner
            .backend
            .commit(batch, Durability::Durable)
            .map_err(StorageError::from)?;
        lock(&self.inner.loaded).remove(name);
        Ok(())
    }

    pub(crate) fn set_enabled(&self, name: &str, enabled: bool) -> Result<PluginInfo, PluginError> {
        let mut record = self.inner.record(name)?;
        record.enabled = enabled;
        let mut batch = Batch::default();
        batch.put(Table::Plugins, name.as_bytes().to_vec(), encode(&record));
        self.inner
            .backend
            .commit(batch, Durability::Durable)
            .map_err(StorageError::from)?;
        self.wake();
        self.info(name)
    }

    pub(crate) fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, PluginError> {
        self.inner.record(name)?;
        self.inner
            .backend
            .scan(Table::DeadLetters, &dead_prefix(name))?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| unreadable("dead letter", e)))
            .collect()
    }

    /// Queues every dead letter of `name` for another attempt, and ends the
    /// current backoff. Returns how many were queued.
    pub(crate) fn retry(&self, name: &str) -> Result<usize, PluginError> {
        let letters = self.dead_letters(name)?;
        let mut batch = Batch::default();
        for mut l in letters.iter().cloned() {
            l.requeued = true;
            batch.put(Table::DeadLetters, dead_key(name, l.seq), encode(&l));
        }
        let mut status = self.inner.status(name)?;
        status.next_attempt_at = None;
        batch.put(
            Table::PluginState,
            name.as_bytes().to_vec(),
            encode(&status),
        );
        self.inner
            .backend
            .commit(batch, Durability::Durable)
            .map_err(StorageError::from)?;
        self.wake();
        Ok(letters.len())
    }

    /// The plugin's recent log lines (its own and the host's about it).
    pub(crate) fn log(&self, name: &str) -> Result<Vec<String>, PluginError> {
        let record = self.inner.record(name)?;
        Ok(self
            .inner
            .loaded(name, &record)?
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lines())
    }
}

impl Drop for Plugins {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn runtime(&self) -> Result<Arc<Runtime>, PluginError> {
        let mut slot = lock(&self.runtime);
        if let Some(r) = slot.as_ref() {
            return Ok(Arc::clone(r));
        }
        let r =
            Arc::new(Runtime::new(self.cache_dir.clone()).map_err(PluginError::InvalidComponent)?);
        *slot = Some(Arc::clone(&r));
        Ok(r)
    }

    fn record(&self, name: &str) -> Result<PluginRecord, PluginError> {
        let bytes = self
            .backend
            .get(Table::Plugins, name.as_bytes())?
            .ok_or_else(|| PluginError::NotFound(name.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| unreadable("plugin record", e))
    }

    fn status(&self, name: &str) -> Result<PluginStatus, PluginError> {
        match self.backend.get(Table::PluginState, name.as_bytes())? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| unreadable("plugin state", e)),
            None => Ok(PluginStatus::default()),
        }
    }

    fn last_event_seq(&self) -> Result<u64, StorageError> {
        crate::events::newest_after(self.backend.as_ref(), 0)
    }

    /// What a plugin's calls may reach: its manifest's origins, the
    /// operator's grant, the store's resolver.
    fn egress(&self, record: &PluginRecord) -> Result<Egress, PluginError> {
        let manifest = Manifest::parse(&record.manifest).map_err(PluginError::InvalidManifest)?;
        Ok(Egress {
            origins: manifest.origins(),
            allow_private_network: record.allow_private_network,
            resolver: Arc::clone(&self.resolver),
        })
    }

    /// The loaded plugin for the installation `record` describes: the one
    /// in memory if it is that installation, else compiled (or taken from
    /// the compiled cache) anew, so a reinstall by another process takes
    /// effect here at the next delivery.
    fn loaded(&self, name: &str, record: &PluginRecord) -> Result<Arc<Loaded>, PluginError> {
        let identity = record.identity();
        if let Some(l) = lock(&self.loaded).get(name)
            && l.identity == identity
        {
            return Ok(Arc::clone(l));
        }
        let manifest = Manifest::parse(&record.manifest).map_err(PluginError::InvalidManifest)?;
        let wasm = self
            .backend
            .get(Table::PluginCode, name.as_bytes())?
            .ok_or_else(|| PluginError::NotFound(name.to_string()))?;
        let loaded = Arc::new(
            self.runtime()?
                .load(&wasm, manifest, identity, self.egress(record)?)
                .map_err(PluginError::InvalidComponent)?,
        );
        lock(&self.loaded).insert(name.to_string(), Arc::clone(&loaded));
        Ok(loaded)
    }
}
