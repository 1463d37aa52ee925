//! The store: the facade every binding calls.
//!
//! Mutations go to storage first (durable, in one atomic batch with their
//! outbox event) and then to the in-memory index; `verify` reads only the
//! index, so once a mutation returns no thread can see the old state.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::backend::{
    Backend, Batch, Changes, CommitError, Durability, MemoryBackend, SledBackend, StorageError,
    Table,
};
use crate::error::{KeyError, OpenError, WhitelistError};
use crate::events::{Event, EventKind};
use crate::key::{self, KeyId, PlaintextKey};
use crate::time::Timestamp;
use crate::usage::{Freshness, Notice, Outcome, Usage, UsageAgg, UsageLimits, UsageLog};
use crate::verdict::{Denial, Grant, Verdict};
use crate::verifier::{self, Argon2Params, HashGate, WarmKey};
use crate::whitelist::{self, Rules, Whitelist, WhitelistEntry};

/// Past generations remembered per key, so their secrets answer `Rotated`
/// rather than `WrongSecret`.
pub const PAST_GENERATIONS_KEPT: usize = 8;
/// Longest key name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Largest metadata object accepted, serialised, in bytes.
pub const MAX_METADATA_LEN: usize = 16 * 1024;
/// Longest grace period a regeneration may give the old secret.
pub const MAX_GRACE: Duration = Duration::from_hours(366 * 24);

const SCHEMA_VERSION: u32 = 1;
const INDEX_SHARDS: usize = 64;
const COMMIT_RETRIES: usize = 16;

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
    /// argon2 verifications allowed at once (default: the number of cores).
    pub max_concurrent_hashes: usize,
    /// Cold verifications allowed to wait for a slot before `Busy`.
    pub max_queued_hashes: usize,
    /// How often a shared backend's change feed is polled.
    pub sync_interval: Duration,
    /// How long opening a PostgreSQL store waits for the server.
    pub connect_timeout: Duration,
    /// A shared store that has not confirmed it is current for this long
    /// refuses every key (`Denial::Unavailable`) until it has.
    pub staleness_bound: Duration,
    /// How failed plugin deliveries are retried.
    #[cfg(feature = "plugins")]
    pub plugin_retry: crate::plugins::RetryPolicy,
}

impl Default for Options {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Options {
            prefix: None,
            argon2: Argon2Params::default(),
            usage_flush_interval: Duration::from_secs(1),
            usage_limits: UsageLimits::default(),
            max_concurrent_hashes: cores,
            max_queued_hashes: cores * 4,
            sync_interval: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(5),
            staleness_bound: Duration::from_secs(5),
            #[cfg(feature = "plugins")]
            plugin_retry: crate::plugins::RetryPolicy::default(),
        }
    }
}

/// Settings for a new key.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    expires_at: Option<Timestamp>,
    metadata: Option<Value>,
    whitelist: Vec<(String, String)>,
}

impl CreateOptions {
    /// No expiry, no metadata, no whitelist.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The key stops working at `at`.
    #[must_use]
    pub fn expires_at(mut self, at: Timestamp) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// A JSON object stored with the key (customer id, plan, ...).
    #[must_use]
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Adds a named whitelist entry and restricts the key to its entries.
    #[must_use]
    pub fn restrict_to(mut self, name: impl Into<String>, ip_or_cidr: impl Into<String>) -> Self {
        self.whitelist.push((name.into(), ip_or_cidr.into()));
        self
    }
}

/// The Overview tab of one key. Never holds secret material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// Public, stable id.
    pub id: KeyId,
    /// What the operator called it.
    pub name: String,
    /// `kw_4fK9xQ2mLp7A_…` + the last four characters of the current key.
    pub masked: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last regenerated.
    pub rotated_at: Option<Timestamp>,
    /// When it last admitted a request.
    pub last_used_at: Option<Timestamp>,
    /// Current generation: 1 at creation, +1 per regeneration.
    pub generation: u32,
    /// Disabled keys admit nobody.
    pub disabled: bool,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// Whether requests are restricted to whitelisted IPs.
    pub whitelist_enabled: bool,
    /// Until when an older secret still works (grace of a regeneration).
    pub grace_until: Option<Timestamp>,
    /// The JSON object given at creation or later.
    pub metadata: Option<Value>,
}

/// A key as created or regenerated: its info, and the plaintext, shown once.
#[derive(Debug)]
pub struct CreatedKey {
    /// The key's Overview.
    pub info: KeyInfo,
    /// The plaintext key. Hand it over now: the store keeps only a hash.
    pub key: PlaintextKey,
}

// ---------------------------------------------------------------- records

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetaRecord {
    v: u32,
    prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GenRecord {
    n: u32,
    created_at: i64,
    retired_at: Option<i64>,
    grace_until: Option<i64>,
    /// argon2id PHC string of the secret.
    phc: String,
    /// Pre-check tag of the secret.
    tag: u32,
    last4: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    v: u32,
    id: KeyId,
    name: String,
    created_at: i64,
    updated_at: i64,
    rotated_at: Option<i64>,
    disabled: bool,
    expires_at: Option<i64>,
    metadata: Option<Value>,
    /// Newest first; the first is current.
    generations: Vec<GenRecord>,
    whitelist: Whitelist,
}

impl KeyRecord {
    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let rec: KeyRecord = serde_json::from_slice(bytes)
            .map_err(|e| StorageError::new(format!("unreadable key record: {e}")))?;
        if rec.v > SCHEMA_VERSION || rec.generations.is_empty() {
            return Err(StorageError::new(format!(
                "key record {} has an unknown format",
                rec.id
            )));
        }
        Ok(rec)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("key records serialise")
    }

    fn current(&self) -> &GenRecord {
        &self.generations[0]
    }

    fn info(&self, prefix: &str, last_used_at: Option<Timestamp>, now: i64) -> KeyInfo {
        let ts = Timestamp::from_unix_millis;
        let cur = self.current();
        KeyInfo {
            id: self.id,
            name: self.name.clone(),
            masked: key::mask(prefix, &self.id, &cur.last4),
            created_at: ts(self.created_at),
            rotated_at: self.rotated_at.map(ts),
            last_used_at,
            generation: cur.n,
            disabled: self.disabled,
            expires_at: self.expires_at.map(ts),
            whitelist_enabled: self.whitelist.enabled,
            grace_until: self.generations[1..]
                .iter()
                .filter_map(|g| g.grace_until)
                .filter(|&g| g > now)
                .max()
                .map(ts),
            metadata: self.metadata.clone(),
        }
    }
}

// ------------------------------------------------------------------ index

/// What `verify` needs of one key, built from its record.
struct Live {
    disabled: bool,
    expires_at: Option<i64>,
    /// `Some` when the whitelist restriction is on.
    rules: Option<Rules>,
    /// Newest first.
    gens: Box<[LiveGen]>,
}

struct LiveGen {
    n: u32,
    tag: u32,
    retired_at: i64,
    grace_until: Option<i64>,
    phc: Box<str>,
    /// Keyed digest of this generation's secret, once one verification of it
    /// has succeeded. A generation's secret never changes, so set once.
    warm: OnceLock<[u8; 32]>,
}

impl Live {
    fn from_record(rec: &KeyRecord, previous: Option<&Live>) -> Self {
        let gens = rec
            .generations
            .iter()
            .map(|g| {
                let warm = OnceLock::new();
                if let Some(d) = previous
                    .and_then(|p| p.gens.iter().find(|pg| pg.n == g.n))
                    .and_then(|pg| pg.warm.get())
                {
                    let _ = warm.set(*d);
                }
                LiveGen {
                    n: g.n,
                    tag: g.tag,
                    retired_at: g.retired_at.unwrap_or(i64::MAX),
                    grace_until: g.grace_until,
                    phc: g.phc.clone().into_boxed_str(),
                    warm,
                }
            })
            .collect();
        Live {
            disabled: rec.disabled,
            expires_at: rec.expires_at,
            rules: rec
                .whitelist
                .enabled
                .then(|| Rules::from_entries(&rec.whitelist.entries)),
            gens,
        }
    }

    /// Steps 3 and 4: status, then whitelist. A refused IP never costs a hash.
    fn gatekeep(&self, now: i64, ip: IpAddr) -> Option<Denial> {
        if self.disabled {
            return Some(Denial::Disabled);
        }
        if self.expires_at.is_some_and(|e| e <= now) {
            return Some(Denial::Expired);
        }
        if self.rules.as_ref().is_some_and(|r| !r.admits(ip)) {
            return Some(Denial::IpNotAllowed);
        }
        None
    }

    fn warm_match(&self, digest: &[u8; 32]) -> Option<usize> {
        self.gens
            .iter()
            .position(|g| g.warm.get().is_some_and(|w| bool::from(w.ct_eq(digest))))
    }

    /// Generations the secret may belong to and needs argon2 for: cold ones
    /// whose pre-check tag matches. A warm generation cannot be one (its
    /// digest is compared instead); one that another thread warmed since
    /// [`Live::warm_match`] looked is compared here, and a match is `Err(i)`.
    fn cold_candidates(&self, digest: &[u8; 32], tag: u32) -> Result<Vec<usize>, usize> {
        let mut candidates = Vec::new();
        for (i, g) in self.gens.iter().enumerate() {
            match g.warm.get() {
                Some(w) => {
                    if bool::from(w.ct_eq(digest)) {
                        return Err(i);
                    }
                }
                None => {
                    if g.tag == tag {
                        candidates.push(i);
                    }
                }
            }
        }
        Ok(candidates)
    }

    /// The verdict for a secret that matched generation `gens[i]`.
    fn decide(&self, id: KeyId, i: usize, now: i64) -> (Verdict, Freshness) {
        let g = &self.gens[i];
        if i == 0 {
            let grant = Grant {
                key_id: id,
                generation: g.n,
                in_grace: false,
            };
            return (Verdict::Valid(grant), Freshness::Current);
        }
        if g.grace_until.is_some_and(|until| until > now) {
            let grant = Grant {
                key_id: id,
                generation: g.n,
                in_grace: true,
            };
            return (Verdict::Valid(grant), Freshness::Stale);
        }
        // It stopped working at the end of its grace, or when it was retired.
        let at = g.grace_until.unwrap_or(g.retired_at);
        (
            Verdict::Denied(Denial::Rotated {
                at: Timestamp::from_unix_millis(at),
            }),
            Freshness::Stale,
        )
    }
}

type Shard = RwLock<HashMap<KeyId, Arc<Live>>>;

struct Index {
    shards: Box<[Shard]>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Index {
    fn new() -> Self {
        Index {
            shards: (0..INDEX_SHARDS)
                .map(|_| RwLock::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard_index(id: &KeyId) -> usize {
        let b = id.as_bytes();
        (usize::from(b[2]) * 61 + usize::from(b[3])) % INDEX_SHARDS
    }

    fn shard(&self, id: &KeyId) -> &Shard {
        &self.shards[Self::shard_index(id)]
    }

    fn get(&self, id: &KeyId) -> Option<Arc<Live>> {
        read(self.shard(id)).get(id).cloned()
    }

    fn contains(&self, id: &KeyId) -> bool {
        read(self.shard(id)).contains_key(id)
    }

    fn install(&self, rec: &KeyRecord) {
        let mut shard = write(self.shard(&rec.id));
        let live = Live::from_record(rec, shard.get(&rec.id).map(Arc::as_ref));
        shard.insert(rec.id, Arc::new(live));
    }

    fn remove(&self, id: &KeyId) {
        write(self.shard(id)).remove(id);
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }
}

// ------------------------------------------------------------------ store

struct Inner {
    backend: Arc<dyn Backend>,
    path: Option<PathBuf>,
    prefix: String,
    hasher: argon2::Argon2<'static>,
    warm_key: WarmKey,
    gate: HashGate,
    index: Index,
    usage: UsageLog,
    limits: UsageLimits,
    /// Serialises this process's read-modify-write of key records.
    write_lock: Mutex<()>,
    /// Held while pending usage moves to storage, so readers never see it in neither place.
    flush_lock: Mutex<()>,
    seen_version: AtomicU64,
    /// Shared backends: when the change feed was last read successfully
    /// (ms since the epoch), and how stale that may get before verify fails closed.
    shared: bool,
    synced_at: std::sync::atomic::AtomicI64,
    staleness_ms: i64,
    #[cfg(feature = "plugins")]
    plugins: crate::plugins::Plugins,
}

struct Worker {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

/// An open key store. `Send + Sync`: share it between threads by reference
/// or in an `Arc`.
///
/// Dropping it flushes pending usage; [`Store::close`] does the same and
/// reports errors.
pub struct Store {
    inner: Arc<Inner>,
    worker: Option<Worker>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("prefix", &self.inner.prefix)
            .field("keys", &self.inner.index.len())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    Timestamp::now().unix_millis()
}

fn validate_name(name: &str) -> Result<(), KeyError> {
    if name.trim().is_empty() {
        return Err(KeyError::InvalidInput(
            "a key name must not be empty".into(),
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(KeyError::InvalidInput(format!(
            "a key name is at most {MAX_NAME_LEN} bytes (got {})",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(KeyError::InvalidInput(
            "a key name must not contain control characters".into(),
        ));
    }
    Ok(())
}

fn validate_metadata(metadata: Option<&Value>) -> Result<(), KeyError> {
    let Some(m) = metadata else { return Ok(()) };
    if !m.is_object() {
        return Err(KeyError::InvalidInput(
            "metadata must be a JSON object".into(),
        ));
    }
    let len = serde_json::to_vec(m).map_or(usize::MAX, |v| v.len());
    if len > MAX_METADATA_LEN {
        return Err(KeyError::InvalidInput(format!(
            "metadata is at most {MAX_METADATA_LEN} bytes serialised (got {len})"
        )));
    }
    Ok(())
}

fn validate_entry_name(name: &str) -> Result<(), WhitelistError> {
    if name.trim().is_empty()
        || name.len() > whitelist::MAX_ENTRY_NAME_LEN
        || name.chars().any(char::is_control)
    {
        return Err(WhitelistError::InvalidInput(format!(
            "a whitelist entry name must be 1 to {} bytes without control characters",
            whitelist::MAX_ENTRY_NAME_LEN
        )));
    }
    Ok(())
}

fn new_entry(
    wl: &Whitelist,
    name: &str,
    ip_or_cidr: &str,
    now: i64,
) -> Result<WhitelistEntry, WhitelistError> {
    validate_entry_name(name)?;
    let net = whitelist::parse_network(ip_or_cidr).map_err(WhitelistError::InvalidNetwork)?;
    let network = whitelist::canonical(&net);
    if let Some(dup) = wl.entries.iter().find(|e| e.network == network) {
        return Err(WhitelistError::InvalidInput(format!(
            "{network} is already whitelisted as {:?}",
            dup.name
        )));
    }
    if wl.entries.len() >= whitelist::MAX_ENTRIES {
        return Err(WhitelistError::InvalidInput(format!(
            "a whitelist holds at most {} entries",
            whitelist::MAX_ENTRIES
        )));
    }
    Ok(WhitelistEntry {
        id: key::random_base62(whitelist::ENTRY_ID_LEN),
        name: name.to_string(),
        network,
        created_at: Timestamp::from_unix_millis(now),
    })
}

/// Directories 0700, files 0600: the store holds hashes and usage that are
/// nobody else's business. sled creates files with the process umask, so
/// this runs after open, on every flush and on close.
fn secure_tree(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            secure_tree(&entry.path());
        } else if ft.is_file() {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600));
        }
    }
}

fn create_private_dir(path: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| {
            OpenError::Storage(StorageError::new(format!(
                "cannot create {}: {e}",
                path.display()
            )))
        })
}

impl Store {
    /// Opens the store at `path` with default options: a sled directory
    /// (created 0700 if needed), or, for `postgres://user@host:port/db?schema=NAME`,
    /// a store shared through PostgreSQL (schema created and migrated on open).
    ///
    /// # Errors
    /// [`OpenError::StoreLocked`] when another process holds the store;
    /// [`OpenError::Storage`] when it cannot be read or created.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        Self::open_with(path, &Options::default())
    }

    /// Opens the sled store in directory `path`.
    ///
    /// # Errors
    /// As [`Store::open`], and [`OpenError::InvalidOptions`].
    pub fn open_with(path: impl AsRef<Path>, options: &Options) -> Result<Store, OpenError> {
        let path = path.as_ref();
        check_options(options)?;
        #[cfg(feature = "postgres")]
        if let Some(url) = path
            .to_str()
            .filter(|p| p.starts_with("postgres://") || p.starts_with("postgresql://"))
        {
            let backend = crate::backend::PostgresBackend::connect(url, options.connect_timeout)?;
            return Self::open_backend(Arc::new(backend), None, options);
        }
        create_private_dir(path)?;
        let backend = SledBackend::open(path)?;
        secure_tree(path);
        Self::open_backend(Arc::new(backend), Some(path.to_path_buf()), options)
    }

    /// A store in memory only: nothing persists past `close`. For an
    /// application's own tests.
    ///
    /// # Errors
    /// [`OpenError::InvalidOptions`].
    pub fn open_in_memory(options: &Options) -> Result<Store, OpenError> {
        Self::open_backend(Arc::new(MemoryBackend::new(false)), None, options)
    }

    /// Opens a store over any backend; the sled path and shared backends
    /// (tests, and later servers) all come through here.
    pub(crate) fn open_backend(
        backend: Arc<dyn Backend>,
        path: Option<PathBuf>,
        options: &Options,
    ) -> Result<Store, OpenError> {
        check_options(options)?;
        let hasher = options.argon2.hasher().map_err(OpenError::InvalidOptions)?;
        let prefix = settle_prefix(backend.as_ref(), options.prefix.as_deref())?;
        let version = backend.version().map_err(OpenError::Storage)?;
        let backend_shared = backend.is_shared();
        #[cfg(feature = "plugins")]
        let plugins = crate::plugins::Plugins::start(
            Arc::clone(&backend),
            path.as_ref().map(|p| p.join("plugin-cache")),
            options.plugin_retry,
        )
        .map_err(OpenError::InvalidOptions)?;
        let inner = Arc::new(Inner {
            backend,
            path,
            prefix,
            hasher,
            warm_key: WarmKey::random(),
            gate: HashGate::new(options.max_concurrent_hashes, options.max_queued_hashes),
            index: Index::new(),
            usage: UsageLog::new(),
            limits: options.usage_limits,
            write_lock: Mutex::new(()),
            flush_lock: Mutex::new(()),
            seen_version: AtomicU64::new(version),
            shared: backend_shared,
            synced_at: std::sync::atomic::AtomicI64::new(now_ms()),
            staleness_ms: i64::try_from(options.staleness_bound.as_millis()).unwrap_or(i64::MAX),
            #[cfg(feature = "plugins")]
            plugins,
        });
        inner.reload_all().map_err(OpenError::Storage)?;
        let worker = spawn_worker(&inner, options);
        Ok(Store {
            inner,
            worker: Some(worker),
        })
    }

    /// The key prefix of this store (`kw` unless chosen at creation).
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// How many keys the store holds.
    #[must_use]
    pub fn key_count(&self) -> usize {
        self.inner.index.len()
    }

    /// The directory the store lives in, for a sled store.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    // ------------------------------------------------------------ verify

    /// Verifies a presented key from `client_ip`, optionally naming the
    /// integration (a User-Agent, a partner name) for the Usage tab.
    ///
    /// Never touches storage; records usage in memory.
    pub fn verify(&self, key: &str, client_ip: IpAddr, integration: Option<&str>) -> Verdict {
        self.verify_bytes(key.as_bytes(), client_ip, integration)
    }

    /// [`Store::verify`] for a key given as bytes (from C or the network):
    /// anything that is not a well-formed key is `Malformed`.
    pub fn verify_bytes(
        &self,
        key: &[u8],
        client_ip: IpAddr,
        integration: Option<&str>,
    ) -> Verdict {
        self.inner.verify(key, client_ip, integration)
    }

    // --------------------------------------------------------- lifecycle

    /// Creates a key. The plaintext is in the result and nowhere else.
    ///
    /// # Errors
    /// [`KeyError::InvalidInput`] for an empty or oversized name, metadata
    /// that is not a JSON object, or a bad whitelist entry; storage errors.
    pub fn create(&self, name: &str, options: CreateOptions) -> Result<CreatedKey, KeyError> {
        self.inner.create(name, options)
    }

    /// Gives the key a new secret. The old secret stops working when this
    /// returns (`grace` zero) or at now + `grace`; durable before return.
    ///
    /// # Errors
    /// [`KeyError::NotFound`], [`KeyError::InvalidInput`] for a grace over a year; storage errors.
    pub fn regenerate(&self, id: &KeyId, grace: Duration) -> Result<CreatedKey, KeyError> {
        self.inner.regenerate(id, grace)
    }

    /// Deletes a key and its usage history; its secrets stop working when
    /// this returns. Durable before return.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; storage errors.
    pub fn delete(&self, id: &KeyId) -> Result<(), KeyError> {
        self.inner.delete(id)
    }

    /// One key's Overview.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; storage errors.
    pub fn get(&self, id: &KeyId) -> Result<KeyInfo, KeyError> {
        self.inner.get(id)
    }

    /// Every key, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        self.inner.list()
    }

    /// Disables (admits nobody) or re-enables a key. Durable before return.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; storage errors.
    pub fn set_disabled(&self, id: &KeyId, disabled: bool) -> Result<KeyInfo, KeyError> {
        self.inner.update(id, EventKind::KeyUpdated, |rec, _| {
            rec.disabled = disabled;
            Ok(json!({ "disabled": disabled }))
        })
    }

    /// Renames a key.
    ///
    /// # Errors
    /// [`KeyError::NotFound`], [`KeyError::InvalidInput`]; storage errors.
    pub fn rename(&self, id: &KeyId, name: &str) -> Result<KeyInfo, KeyError> {
        validate_name(name)?;
        self.inner.update(id, EventKind::KeyUpdated, |rec, _| {
            let old = std::mem::replace(&mut rec.name, name.to_string());
            Ok(json!({ "renamed_from": old }))
        })
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
        self.inner.update(id, EventKind::KeyUpdated, |rec, _| {
            rec.expires_at = expires_at.map(Timestamp::unix_millis);
            Ok(json!({ "expires_at": expires_at }))
        })
    }

    /// Replaces (or clears) the metadata object.
    ///
    /// # Errors
    /// [`KeyError::NotFound`], [`KeyError::InvalidInput`]; storage errors.
    #[allow(clippy::needless_pass_by_value)] // the caller hands the object over
    pub fn set_metadata(&self, id: &KeyId, metadata: Option<Value>) -> Result<KeyInfo, KeyError> {
        validate_metadata(metadata.as_ref())?;
        self.inner.update(id, EventKind::KeyUpdated, |rec, _| {
            rec.metadata.clone_from(&metadata);
            Ok(json!({ "metadata": "changed" }))
        })
    }

    // --------------------------------------------------------- whitelist

    /// The key's Whitelist tab.
    ///
    /// # Errors
    /// [`WhitelistError::KeyNotFound`]; storage errors.
    pub fn whitelist(&self, id: &KeyId) -> Result<Whitelist, WhitelistError> {
        Ok(self.inner.record(id)?.whitelist)
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
        self.inner
            .update(id, EventKind::WhitelistUpdated, |rec, _| {
                rec.whitelist.enabled = enabled;
                Ok(json!({ "enabled": enabled }))
            })?;
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
        validate_entry_name(name)?;
        whitelist::parse_network(ip_or_cidr).map_err(WhitelistError::InvalidNetwork)?;
        let mut added = None;
        let mut failure = None;
        let result = self.inner.update(id, EventKind::WhitelistUpdated, |rec, now| {
            match new_entry(&rec.whitelist, name, ip_or_cidr, now) {
                Ok(entry) => {
                    let data = json!({ "added": { "id": entry.id, "name": entry.name, "network": entry.network } });
                    rec.whitelist.entries.push(entry.clone());
                    added = Some(entry);
                    Ok(data)
                }
                Err(e) => {
                    let msg = e.to_string();
                    failure = Some(e);
                    Err(KeyError::InvalidInput(msg))
                }
            }
        });
        match (result, failure) {
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
            (Ok(_), None) => Ok(added.expect("set when the update succeeds")),
        }
    }

    /// Removes an entry by id.
    ///
    /// # Errors
    /// [`WhitelistError::EntryNotFound`], [`WhitelistError::KeyNotFound`]; storage errors.
    pub fn remove_whitelist_entry(&self, id: &KeyId, entry_id: &str) -> Result<(), WhitelistError> {
        let mut missing = false;
        let result = self.inner.update(id, EventKind::WhitelistUpdated, |rec, _| {
            let Some(pos) = rec.whitelist.entries.iter().position(|e| e.id == entry_id) else {
                missing = true;
                return Err(KeyError::InvalidInput(String::new()));
            };
            let gone = rec.whitelist.entries.remove(pos);
            Ok(json!({ "removed": { "id": gone.id, "name": gone.name, "network": gone.network } }))
        });
        if missing {
            return Err(WhitelistError::EntryNotFound {
                key_id: *id,
                entry_id: entry_id.to_string(),
            });
        }
        result.map(drop).map_err(Into::into)
    }

    // ------------------------------------------------------------- usage

    /// The key's Usage tab, including requests not yet flushed.
    ///
    /// # Errors
    /// [`KeyError::NotFound`]; storage errors.
    pub fn usage(&self, id: &KeyId) -> Result<Usage, KeyError> {
        self.inner.usage(id)
    }

    /// Writes pending usage to storage now (it is also written on an interval and on close).
    ///
    /// # Errors
    /// Storage errors; the pending usage is kept for the next attempt.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush_usage()
    }

    // ------------------------------------------------------------ events

    /// Outbox events with sequence number greater than `since`, oldest
    /// first, at most `limit`.
    ///
    /// # Errors
    /// Storage errors.
    pub fn events(&self, since: u64, limit: usize) -> Result<Vec<Event>, StorageError> {
        let start = since.saturating_add(1).to_be_bytes();
        self.inner
            .backend
            .range_from(Table::Events, &start, limit)?
            .into_iter()
            .map(|(k, v)| Event::from_stored(&k, &v).map_err(StorageError::new))
            .collect()
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
        self.inner.plugins.install(component, manifest_toml)
    }

    /// Every installed plugin with its delivery status.
    ///
    /// # Errors
    /// Storage errors.
    #[cfg(feature = "plugins")]
    pub fn plugins(&self) -> Result<Vec<crate::plugins::PluginInfo>, crate::plugins::PluginError> {
        self.inner.plugins.list()
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
        self.inner.plugins.info(name)
    }

    /// Removes a plugin, its state and its dead letters.
    ///
    /// # Errors
    /// [`PluginError::NotFound`]; storage errors.
    #[cfg(feature = "plugins")]
    pub fn remove_plugin(&self, name: &str) -> Result<(), crate::plugins::PluginError> {
        self.inner.plugins.remove(name)
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
        self.inner.plugins.set_enabled(name, enabled)
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
        self.inner.plugins.dead_letters(name)
    }

    /// Tries a plugin's dead letters once more and ends its current backoff.
    /// Returns how many events were queued.
    ///
    /// # Errors
    /// [`PluginError::NotFound`]; storage errors.
    #[cfg(feature = "plugins")]
    pub fn retry_plugin(&self, name: &str) -> Result<usize, crate::plugins::PluginError> {
        self.inner.plugins.retry(name)
    }

    /// The plugin's recent log: its own `host.log` lines and the host's
    /// notes on it (refused HTTP calls, traps, timeouts).
    ///
    /// # Errors
    /// [`PluginError::NotFound`]; storage errors.
    #[cfg(feature = "plugins")]
    pub fn plugin_log(&self, name: &str) -> Result<Vec<String>, crate::plugins::PluginError> {
        self.inner.plugins.log(name)
    }

    /// Stops the background flusher, writes pending usage and flushes storage.
    ///
    /// # Errors
    /// Storage errors from the final flush.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), StorageError> {
        #[cfg(feature = "plugins")]
        self.inner.plugins.stop();
        if let Some(w) = self.worker.take() {
            let _ = w.stop.send(());
            let _ = w.handle.join();
        }
        let result = self
            .inner
            .flush_usage()
            .and_then(|()| self.inner.backend.flush());
        if let Some(p) = &self.inner.path {
            secure_tree(p);
        }
        result
    }

    /// Applies changes other processes made (shared backends); called by
    /// the background worker every `sync_interval`.
    #[cfg(test)]
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        self.inner.sync()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.worker.is_some() {
            let _ = self.shutdown();
        }
    }
}

fn check_options(o: &Options) -> Result<(), OpenError> {
    if let Some(p) = &o.prefix {
        key::validate_prefix(p).map_err(OpenError::InvalidOptions)?;
    }
    if o.usage_flush_interval.is_zero() || o.sync_interval.is_zero() {
        return Err(OpenError::InvalidOptions(
            "intervals must be greater than zero".into(),
        ));
    }
    if o.usage_limits.max_ips == 0 || o.usage_limits.max_integrations == 0 {
        return Err(OpenError::InvalidOptions(
            "usage limits must be greater than zero".into(),
        ));
    }
    o.argon2
        .hasher()
        .map(drop)
        .map_err(OpenError::InvalidOptions)
}

/// The prefix is fixed when a store is created; later opens must agree.
fn settle_prefix(backend: &dyn Backend, wanted: Option<&str>) -> Result<String, OpenError> {
    if let Some(bytes) = backend
        .get(Table::Meta, b"store")
        .map_err(OpenError::Storage)?
    {
        let meta: MetaRecord = serde_json::from_slice(&bytes).map_err(|e| {
            OpenError::Storage(StorageError::new(format!("unreadable store record: {e}")))
        })?;
        if meta.v > SCHEMA_VERSION {
            return Err(OpenError::UnsupportedVersion(meta.v));
        }
        if let Some(w) = wanted
            && w != meta.prefix
        {
            return Err(OpenError::InvalidOptions(format!(
                "this store's key prefix is {:?}, not {w:?}; the prefix is fixed when a store is created",
                meta.prefix
            )));
        }
        return Ok(meta.prefix);
    }
    let meta = MetaRecord {
        v: SCHEMA_VERSION,
        prefix: wanted.unwrap_or("kw").to_string(),
    };
    let mut batch = Batch::default();
    batch.expect(Table::Meta, b"store".to_vec(), None);
    batch.put(
        Table::Meta,
        b"store".to_vec(),
        serde_json::to_vec(&meta).expect("serialises"),
    );
    match backend.commit(batch, Durability::Durable) {
        Ok(_) => Ok(meta.prefix),
        // Another process created it first: read what it chose.
        Err(CommitError::Conflict) => settle_prefix(backend, wanted),
        Err(CommitError::Storage(e)) => Err(OpenError::Storage(e)),
    }
}

fn spawn_worker(inner: &Arc<Inner>, options: &Options) -> Worker {
    let (stop, stopped) = mpsc::channel::<()>();
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let flush_every = options.usage_flush_interval;
    let sync_every = options.sync_interval;
    let shared = inner.backend.is_shared();
    let tick = if shared {
        flush_every.min(sync_every)
    } else {
        flush_every
    };
    let handle = std::thread::Builder::new()
        .name("keyward-flusher".into())
        .spawn(move || {
            let mut last_flush = std::time::Instant::now();
            let mut last_sync = std::time::Instant::now();
            loop {
                let changed = if shared {
                    // Woken by another writer's NOTIFY, or the periodic check.
                    let Some(inner) = weak.upgrade() else { return };
                    let backend = Arc::clone(&inner.backend);
                    drop(inner);
                    let changed = backend.wait_for_change(tick);
                    match stopped.try_recv() {
                        Err(mpsc::TryRecvError::Empty) => {}
                        Ok(()) | Err(mpsc::TryRecvError::Disconnected) => return,
                    }
                    changed
                } else {
                    match stopped.recv_timeout(tick) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    false
                };
                let Some(inner) = weak.upgrade() else { return };
                if shared && (changed || last_sync.elapsed() >= sync_every) {
                    last_sync = std::time::Instant::now();
                    let _ = inner.sync();
                }
                if last_flush.elapsed() >= flush_every {
                    last_flush = std::time::Instant::now();
                    // A failed flush keeps its deltas for the next tick.
                    let _ = inner.flush_usage();
                    if let Some(p) = &inner.path {
                        secure_tree(p);
                    }
                }
            }
        })
        .expect("spawning the usage flusher thread");
    Worker { stop, handle }
}

/// What the warm path found: an answer, or the need for argon2.
enum Step {
    Done(Verdict, Freshness),
    Cold(Arc<Live>, Vec<usize>),
}

impl Inner {
    /// The outbox grew: plugins should hear of it now, not at the next poll.
    fn events_appended(&self) {
        #[cfg(feature = "plugins")]
        self.plugins.wake();
    }

    fn verify(&self, key: &[u8], client_ip: IpAddr, integration: Option<&str>) -> Verdict {
        let Ok(parsed) = key::parse(key, &self.prefix) else {
            return Verdict::Denied(Denial::Malformed);
        };
        let id = parsed.id;
        let ip = whitelist::normalise_ip(client_ip);
        let now = now_ms();
        // Fail closed: a shared store that cannot confirm it is current
        // could be missing a revocation.
        if self.shared && now - self.synced_at.load(Ordering::Acquire) > self.staleness_ms {
            self.usage.record(
                id,
                now,
                ip,
                integration,
                Outcome::Denied(Denial::Unavailable),
                Freshness::Unknown,
            );
            return Verdict::Denied(Denial::Unavailable);
        }
        let step = {
            let shard = read(self.index.shard(&id));
            let Some(live) = shard.get(&id) else {
                return Verdict::Denied(Denial::UnknownKey);
            };
            if let Some(d) = live.gatekeep(now, ip) {
                Step::Done(Verdict::Denied(d), Freshness::Unknown)
            } else {
                let digest = self.warm_key.digest(parsed.secret);
                if let Some(i) = live.warm_match(&digest) {
                    let (v, f) = live.decide(id, i, now);
                    Step::Done(v, f)
                } else {
                    let tag = verifier::precheck_tag(parsed.secret);
                    match live.cold_candidates(&digest, tag) {
                        Err(i) => {
                            let (v, f) = live.decide(id, i, now);
                            Step::Done(v, f)
                        }
                        Ok(c) if c.is_empty() => {
                            Step::Done(Verdict::Denied(Denial::WrongSecret), Freshness::Unknown)
                        }
                        Ok(c) => Step::Cold(Arc::clone(live), c),
                    }
                }
            }
        };
        let (verdict, freshness) = match step {
            Step::Done(v, f) => (v, f),
            Step::Cold(live, candidates) => {
                self.verify_cold(id, parsed.secret, ip, &live, &candidates)
            }
        };
        let outcome = match verdict {
            Verdict::Valid(_) => Outcome::Allowed,
            Verdict::Denied(d) => Outcome::Denied(d),
        };
        // Rare paths only: a refused IP, an old secret.
        let notice_kind = match (verdict, freshness) {
            (Verdict::Denied(Denial::IpNotAllowed), _) => Some(EventKind::KeyDeniedIp),
            (_, Freshness::Stale) => Some(EventKind::KeyStaleSecretUsed),
            _ => None,
        };
        if let Some(kind) = notice_kind {
            self.usage.notice(Notice {
                kind,
                key_id: id,
                ip,
                integration: integration.map(String::from),
                generation: match verdict {
                    Verdict::Valid(g) => Some(g.generation),
                    Verdict::Denied(_) => None,
                },
                at: now,
            });
        }
        self.usage
            .record(id, now, ip, integration, outcome, freshness);
        verdict
    }

    /// Step 5 on a cache miss: one argon2 verify (bounded), then the cache
    /// is filled and the verdict taken from the index *as it is now*, so a
    /// regeneration that finished meanwhile is respected.
    fn verify_cold(
        &self,
        id: KeyId,
        secret: &[u8],
        ip: IpAddr,
        live: &Live,
        candidates: &[usize],
    ) -> (Verdict, Freshness) {
        let Some(_pass) = self.gate.enter() else {
            return (Verdict::Denied(Denial::Busy), Freshness::Unknown);
        };
        let Some(n) = candidates
            .iter()
            .map(|&i| &live.gens[i])
            .find(|g| verifier::verify_secret(&g.phc, secret))
            .map(|g| g.n)
        else {
            return (Verdict::Denied(Denial::WrongSecret), Freshness::Unknown);
        };
        let digest = self.warm_key.digest(secret);
        let now = now_ms();
        let Some(current) = self.index.get(&id) else {
            return (Verdict::Denied(Denial::UnknownKey), Freshness::Unknown);
        };
        let Some(i) = current.gens.iter().position(|g| g.n == n) else {
            return (Verdict::Denied(Denial::WrongSecret), Freshness::Unknown);
        };
        let _ = current.gens[i].warm.set(digest);
        if let Some(d) = current.gatekeep(now, ip) {
            return (Verdict::Denied(d), Freshness::Unknown);
        }
        current.decide(id, i, now)
    }

    fn reload_all(&self) -> Result<(), StorageError> {
        let rows = self.backend.scan(Table::Keys, b"")?;
        let mut fresh: Vec<HashMap<KeyId, Arc<Live>>> =
            (0..INDEX_SHARDS).map(|_| HashMap::new()).collect();
        for (_, bytes) in rows {
            let rec = KeyRecord::decode(&bytes)?;
            let previous = self.index.get(&rec.id);
            fresh[Index::shard_index(&rec.id)].insert(
                rec.id,
                Arc::new(Live::from_record(&rec, previous.as_deref())),
            );
        }
        for (shard, map) in self.index.shards.iter().zip(fresh) {
            *write(shard) = map;
        }
        Ok(())
    }

    /// Follows the change feed of a shared backend into the index.
    fn sync(&self) -> Result<(), StorageError> {
        let seen = self.seen_version.load(Ordering::Acquire);
        let asked_at = now_ms();
        match self.backend.changes_since(seen)? {
            Changes::Keys { version, ids } => {
                for id in ids {
                    self.refresh_key(&id)?;
                }
                self.seen_version.fetch_max(version, Ordering::AcqRel);
            }
            Changes::Reload { version } => {
                self.reload_all()?;
                self.seen_version.fetch_max(version, Ordering::AcqRel);
            }
        }
        // Everything committed before `asked_at` is now in the index.
        self.synced_at.fetch_max(asked_at, Ordering::AcqRel);
        Ok(())
    }

    fn refresh_key(&self, id: &KeyId) -> Result<(), StorageError> {
        match self.backend.get(Table::Keys, id.as_bytes())? {
            Some(bytes) => self.index.install(&KeyRecord::decode(&bytes)?),
            None => self.index.remove(id),
        }
        Ok(())
    }

    fn record_bytes(&self, id: &KeyId) -> Result<(KeyRecord, Vec<u8>), KeyError> {
        let bytes = self
            .backend
            .get(Table::Keys, id.as_bytes())?
            .ok_or(KeyError::NotFound(*id))?;
        Ok((KeyRecord::decode(&bytes)?, bytes))
    }

    fn record(&self, id: &KeyId) -> Result<KeyRecord, KeyError> {
        self.record_bytes(id).map(|(rec, _)| rec)
    }

    fn event(&self, kind: EventKind, rec: &KeyRecord, now: i64, data: Value) -> Vec<u8> {
        Event {
            seq: 0,
            kind,
            at: Timestamp::from_unix_millis(now),
            key_id: rec.id,
            name: rec.name.clone(),
            masked: key::mask(&self.prefix, &rec.id, &rec.current().last4),
            data,
        }
        .to_bytes()
    }

    /// Read-modify-write of one key record with its event, atomic and durable,
    /// then the index. `change` may run more than once if another writer
    /// races (shared backends).
    fn update(
        &self,
        id: &KeyId,
        kind: EventKind,
        mut change: impl FnMut(&mut KeyRecord, i64) -> Result<Value, KeyError>,
    ) -> Result<KeyInfo, KeyError> {
        let _w = lock(&self.write_lock);
        for _ in 0..COMMIT_RETRIES {
            let (mut rec, old) = self.record_bytes(id)?;
            let now = now_ms();
            let data = change(&mut rec, now)?;
            rec.updated_at = now;
            let mut batch = Batch {
                touched: vec![*id],
                ..Batch::default()
            };
            batch.expect(Table::Keys, id.as_bytes().to_vec(), Some(old));
            batch.put(Table::Keys, id.as_bytes().to_vec(), rec.encode());
            batch.append(Table::Events, self.event(kind, &rec, now, data));
            match self.backend.commit(batch, Durability::Durable) {
                Ok(_) => {
                    self.index.install(&rec);
                    self.events_appended();
                    return Ok(rec.info(&self.prefix, self.last_used(id)?, now));
                }
                Err(CommitError::Conflict) => {}
                Err(CommitError::Storage(e)) => return Err(e.into()),
            }
        }
        Err(KeyError::Storage(StorageError::new(
            "too many concurrent writers to one key; try again",
        )))
    }

    fn create(&self, name: &str, options: CreateOptions) -> Result<CreatedKey, KeyError> {
        validate_name(name)?;
        validate_metadata(options.metadata.as_ref())?;
        let now = now_ms();
        let mut wl = Whitelist {
            enabled: !options.whitelist.is_empty(),
            entries: Vec::new(),
        };
        for (entry_name, network) in &options.whitelist {
            let entry = new_entry(&wl, entry_name, network, now)
                .map_err(|e| KeyError::InvalidInput(e.to_string()))?;
            wl.entries.push(entry);
        }
        let id = KeyId::random();
        let generated = key::generate(&self.prefix, &id);
        let phc =
            verifier::hash_secret(&self.hasher, &generated.secret).map_err(KeyError::Internal)?;
        let rec = KeyRecord {
            v: SCHEMA_VERSION,
            id,
            name: name.to_string(),
            created_at: now,
            updated_at: now,
            rotated_at: None,
            disabled: false,
            expires_at: options.expires_at.map(Timestamp::unix_millis),
            metadata: options.metadata,
            generations: vec![GenRecord {
                n: 1,
                created_at: now,
                retired_at: None,
                grace_until: None,
                phc,
                tag: verifier::precheck_tag(&generated.secret),
                last4: generated.last4.clone(),
            }],
            whitelist: wl,
        };
        let data = json!({
            "expires_at": options.expires_at,
            "whitelist_enabled": rec.whitelist.enabled,
        });
        let mut batch = Batch {
            touched: vec![id],
            ..Batch::default()
        };
        // Ids are random; a collision is astronomically unlikely, and refused.
        batch.expect(Table::Keys, id.as_bytes().to_vec(), None);
        batch.put(Table::Keys, id.as_bytes().to_vec(), rec.encode());
        batch.append(
            Table::Events,
            self.event(EventKind::KeyCreated, &rec, now, data),
        );
        let _w = lock(&self.write_lock);
        match self.backend.commit(batch, Durability::Durable) {
            Ok(_) => {}
            Err(CommitError::Conflict) => {
                return Err(KeyError::Internal("key id collision; try again".into()));
            }
            Err(CommitError::Storage(e)) => return Err(e.into()),
        }
        self.index.install(&rec);
        self.events_appended();
        Ok(CreatedKey {
            info: rec.info(&self.prefix, None, now),
            key: generated.key,
        })
    }

    fn regenerate(&self, id: &KeyId, grace: Duration) -> Result<CreatedKey, KeyError> {
        if grace > MAX_GRACE {
            return Err(KeyError::InvalidInput(format!(
                "a grace period is at most {} days",
                MAX_GRACE.as_secs() / 86_400
            )));
        }
        if !self.index.contains(id) {
            return Err(KeyError::NotFound(*id));
        }
        // Hash outside the write lock: argon2 takes tens of milliseconds.
        let generated = key::generate(&self.prefix, id);
        let phc =
            verifier::hash_secret(&self.hasher, &generated.secret).map_err(KeyError::Internal)?;
        let tag = verifier::precheck_tag(&generated.secret);
        let info = self.update(id, EventKind::KeyRegenerated, |rec, now| {
            let grace_until = (!grace.is_zero())
                .then(|| Timestamp::from_unix_millis(now).plus(grace).unix_millis());
            for (i, g) in rec.generations.iter_mut().enumerate() {
                if i == 0 {
                    g.retired_at = Some(now);
                    g.grace_until = grace_until;
                } else {
                    // A new regeneration never extends an older grace; grace 0 ends them all.
                    g.grace_until = match (g.grace_until, grace_until) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        _ => None,
                    };
                }
            }
            let n = rec.current().n + 1;
            rec.generations.insert(
                0,
                GenRecord {
                    n,
                    created_at: now,
                    retired_at: None,
                    grace_until: None,
                    phc: phc.clone(),
                    tag,
                    last4: generated.last4.clone(),
                },
            );
            rec.generations.truncate(1 + PAST_GENERATIONS_KEPT);
            rec.rotated_at = Some(now);
            Ok(json!({
                "generation": n,
                "grace_until": grace_until.map(Timestamp::from_unix_millis),
            }))
        })?;
        Ok(CreatedKey {
            info,
            key: generated.key,
        })
    }

    fn delete(&self, id: &KeyId) -> Result<(), KeyError> {
        let _w = lock(&self.write_lock);
        for _ in 0..COMMIT_RETRIES {
            let (rec, old) = self.record_bytes(id)?;
            let now = now_ms();
            let mut batch = Batch {
                touched: vec![*id],
                ..Batch::default()
            };
            batch.expect(Table::Keys, id.as_bytes().to_vec(), Some(old));
            batch.delete(Table::Keys, id.as_bytes().to_vec());
            batch.delete(Table::Usage, id.as_bytes().to_vec());
            batch.append(
                Table::Events,
                self.event(EventKind::KeyDeleted, &rec, now, json!({})),
            );
            match self.backend.commit(batch, Durability::Durable) {
                Ok(_) => {
                    self.index.remove(id);
                    self.usage.discard(id);
                    self.events_appended();
                    return Ok(());
                }
                Err(CommitError::Conflict) => {}
                Err(CommitError::Storage(e)) => return Err(e.into()),
            }
        }
        Err(KeyError::Storage(StorageError::new(
            "too many concurrent writers to one key; try again",
        )))
    }

    fn get(&self, id: &KeyId) -> Result<KeyInfo, KeyError> {
        let rec = self.record(id)?;
        Ok(rec.info(&self.prefix, self.last_used(id)?, now_ms()))
    }

    fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let now = now_ms();
        let mut last_used: HashMap<Vec<u8>, Option<Timestamp>> = HashMap::new();
        {
            let _f = lock(&self.flush_lock);
            for (k, v) in self.backend.scan(Table::Usage, b"")? {
                let agg = UsageAgg::from_bytes(&v).map_err(StorageError::new)?;
                last_used.insert(k, agg.last_used_at());
            }
        }
        let mut out = Vec::new();
        for (k, bytes) in self.backend.scan(Table::Keys, b"")? {
            let rec = KeyRecord::decode(&bytes)?;
            let stored = last_used.get(&k).copied().flatten();
            let pending = self.usage.pending(&rec.id).and_then(|p| p.last_used_at());
            out.push(rec.info(&self.prefix, stored.max(pending), now));
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Stored usage plus the pending delta, under the flush lock.
    fn usage_agg(&self, id: &KeyId) -> Result<UsageAgg, KeyError> {
        let _f = lock(&self.flush_lock);
        let mut agg = match self.backend.get(Table::Usage, id.as_bytes())? {
            Some(bytes) => UsageAgg::from_bytes(&bytes).map_err(StorageError::new)?,
            None => UsageAgg::default(),
        };
        if let Some(p) = self.usage.pending(id) {
            agg.absorb(&p);
        }
        Ok(agg)
    }

    fn last_used(&self, id: &KeyId) -> Result<Option<Timestamp>, KeyError> {
        Ok(self.usage_agg(id)?.last_used_at())
    }

    fn usage(&self, id: &KeyId) -> Result<Usage, KeyError> {
        if !self.index.contains(id) {
            // Not in this process's index: maybe another writer's new key.
            self.record(id)?;
        }
        let mut agg = self.usage_agg(id)?;
        agg.trim(&self.limits, now_ms());
        Ok(agg.to_usage(*id))
    }

    fn flush_usage(&self) -> Result<(), StorageError> {
        let _f = lock(&self.flush_lock);
        let deltas = self.usage.take_all();
        let notices = self.usage.take_notices();
        if deltas.is_empty() && notices.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut failure = StorageError::new("usage flush kept conflicting with other writers");
        for _ in 0..COMMIT_RETRIES {
            match self.write_usage(&deltas, &notices, now) {
                Ok(()) => {
                    if !notices.is_empty() {
                        self.events_appended();
                    }
                    return Ok(());
                }
                Err(CommitError::Conflict) => {}
                Err(CommitError::Storage(e)) => {
                    failure = e;
                    break;
                }
            }
        }
        self.usage.restore(deltas);
        self.usage.restore_notices(notices);
        Err(failure)
    }

    /// One batch: the usage deltas merged into their records, and the
    /// notices of verification as outbox events.
    fn write_usage(
        &self,
        deltas: &[(KeyId, UsageAgg)],
        notices: &[Notice],
        now: i64,
    ) -> Result<(), CommitError> {
        let mut batch = Batch::default();
        for (id, delta) in deltas {
            // Usage of a key deleted since it was recorded goes with it.
            if !self.index.contains(id) {
                continue;
            }
            let old = self.backend.get(Table::Usage, id.as_bytes())?;
            let mut agg = match &old {
                Some(bytes) => UsageAgg::from_bytes(bytes).map_err(StorageError::new)?,
                None => UsageAgg::default(),
            };
            agg.absorb(delta);
            agg.trim(&self.limits, now);
            batch.expect(Table::Usage, id.as_bytes().to_vec(), old);
            batch.put(Table::Usage, id.as_bytes().to_vec(), agg.to_bytes());
        }
        for n in notices {
            let Some(bytes) = self.backend.get(Table::Keys, n.key_id.as_bytes())? else {
                continue;
            };
            let rec = KeyRecord::decode(&bytes)?;
            let data = json!({
                "ip": n.ip.to_string(),
                "integration": n.integration,
                "generation": n.generation,
            });
            batch.append(Table::Events, self.event(n.kind, &rec, n.at, data));
        }
        if batch.ops.is_empty() {
            return Ok(());
        }
        self.backend.commit(batch, Durability::Lazy)?;
        self.backend.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Options {
        Options {
            argon2: Argon2Params {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            ..Options::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Two engines over one shared backend stand for two processes: the
    /// change feed must carry a regeneration and a deletion to the other's index.
    #[test]
    fn a_shared_backend_change_feed_reaches_the_other_index() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new(true));
        let a = Store::open_backend(Arc::clone(&backend), None, &fast()).unwrap();
        let b = Store::open_backend(Arc::clone(&backend), None, &fast()).unwrap();
        let created = a.create("shared", CreateOptions::new()).unwrap();
        let key = created.key.as_str().to_string();
        b.sync().unwrap();
        assert!(
            b.verify(&key, ip("10.0.0.1"), None).is_valid(),
            "B learned of the new key"
        );

        let new = a.regenerate(&created.info.id, Duration::ZERO).unwrap();
        b.sync().unwrap();
        assert!(matches!(
            b.verify(&key, ip("10.0.0.1"), None),
            Verdict::Denied(Denial::Rotated { .. })
        ));
        assert!(b.verify(new.key.as_str(), ip("10.0.0.1"), None).is_valid());

        a.delete(&created.info.id).unwrap();
        b.sync().unwrap();
        assert_eq!(
            b.verify(new.key.as_str(), ip("10.0.0.1"), None),
            Verdict::Denied(Denial::UnknownKey)
        );
    }

    #[test]
    fn usage_flushes_from_two_engines_add_up() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new(true));
        let a = Store::open_backend(Arc::clone(&backend), None, &fast()).unwrap();
        let b = Store::open_backend(Arc::clone(&backend), None, &fast()).unwrap();
        let created = a.create("shared", CreateOptions::new()).unwrap();
        b.sync().unwrap();
        for _ in 0..3 {
            assert!(
                a.verify(created.key.as_str(), ip("10.0.0.1"), None)
                    .is_valid()
            );
        }
        for _ in 0..4 {
            assert!(
                b.verify(created.key.as_str(), ip("10.0.0.2"), None)
                    .is_valid()
            );
        }
        a.flush().unwrap();
        b.flush().unwrap();
        assert_eq!(a.usage(&created.info.id).unwrap().totals.allowed, 7);
    }
}
