//! The state behind a [`Store`](super::Store) handle, shared with its
//! background worker: the backend, the verify index, pending usage, and
//! the plugin host. Opening loads every key record into the index; a
//! shared store then follows the backend's change feed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::index::{Index, Page};
use super::options::Options;
use super::record::{KeyInfo, KeyRecord, MetaRecord, SCHEMA_VERSION};
use crate::backend::{
    Backend, Batch, Changes, CommitError, Durability, Opened, RowsFrom, StorageError, Table,
};
use crate::clock::Clock;
use crate::error::{KeyError, OpenError};
use crate::key::KeyId;
use crate::time::Timestamp;
use crate::usage::{UsageAgg, UsageLimits, UsageLog};
use crate::verifier::{HashGate, TagKey, WarmKey};

/// How often a read-modify-write is retried when another writer got there first.
pub(crate) const COMMIT_RETRIES: usize = 16;

pub(crate) struct Engine {
    pub backend: Arc<dyn Backend>,
    /// The directory of a sled store.
    pub dir: Option<PathBuf>,
    pub prefix: String,
    pub clock: Arc<dyn Clock>,
    pub hasher: argon2::Argon2<'static>,
    pub warm_key: WarmKey,
    /// The key of this store's pre-check tags.
    pub tag_key: TagKey,
    /// argon2 verifications one key may have running at once: a flood
    /// against one key leaves the rest of the gate to the others.
    pub hashes_per_key: usize,
    pub gate: HashGate,
    pub index: Index,
    pub usage: UsageLog,
    /// Keys whose meters want a lease fetched (by the lease thread).
    pub leases: super::leases::LeaseQueue,
    /// What this handle has done, for [`Store::metrics`](crate::Store::metrics).
    pub counters: super::metrics::Counters,
    pub limits: UsageLimits,
    /// Serialises this process's read-modify-write of key records.
    pub write_lock: Mutex<()>,
    /// Held while pending usage moves to storage, so readers never see it in neither place.
    pub flush_lock: Mutex<()>,
    /// The change-feed version the index reflects.
    seen_version: AtomicU64,
    /// Whether other processes write to this store, so the change feed
    /// must be followed and verify fails closed when it cannot be.
    pub shared: bool,
    /// When the change feed was last read successfully (the store clock's
    /// monotonic time, ms): a step of the wall clock cannot move it.
    pub synced_at: AtomicI64,
    /// This engine's name in a shared backend's list of change-feed readers.
    pub reader: String,
    pub event_retention: Duration,
    pub reader_expiry: Duration,
    /// How stale `synced_at` may get before verify refuses every key.
    pub staleness_ms: i64,
    /// Who this handle's changes are by (`data.actor` of their events).
    pub actor: Option<String>,
    #[cfg(feature = "plugins")]
    pub plugins: crate::plugins::Plugins,
}

impl Engine {
    /// Settles the prefix, starts the plugin host and loads every key.
    pub(crate) fn start(opened: Opened, options: &Options) -> Result<Arc<Engine>, OpenError> {
        options.check()?;
        let hasher = options.argon2.hasher().map_err(OpenError::InvalidOptions)?;
        #[cfg(feature = "plugins")]
        let lease = crate::plugins::lease_for_store(&opened);
        let backend = opened.backend;
        let (prefix, tag_key) = settle_meta(backend.as_ref(), options.prefix.as_deref())?;
        let version = backend.version().map_err(OpenError::Storage)?;
        #[cfg(feature = "plugins")]
        let plugins = crate::plugins::Plugins::start(
            Arc::clone(&backend),
            Arc::clone(&options.plugin_resolver),
            lease,
            Arc::clone(&options.clock),
            opened.dir.as_ref().map(|p| p.join("plugin-cache")),
            options.plugin_retry,
            tag_key.delivery_id_key(),
        )
        .map_err(OpenError::InvalidOptions)?;
        let shared = backend.is_shared();
        let engine = Arc::new(Engine {
            shared,
            backend,
            dir: opened.dir,
            prefix,
            clock: Arc::clone(&options.clock),
            hasher,
            warm_key: WarmKey::random(),
            tag_key,
            hashes_per_key: (options.max_concurrent_hashes / 2).max(1),
            gate: HashGate::new(options.max_concurrent_hashes, options.max_queued_hashes),
            index: Index::new(),
            leases: super::leases::LeaseQueue::new(options.lease_idle),
            counters: super::metrics::Counters::default(),
            usage: UsageLog::new(options.usage_limits, options.notice_limits),
            limits: options.usage_limits,
            write_lock: Mutex::new(()),
            flush_lock: Mutex::new(()),
            seen_version: AtomicU64::new(version),
            reader: KeyId::random().to_string(),
            event_retention: options.event_retention,
            reader_expiry: options.reader_expiry,
            synced_at: AtomicI64::new(monotonic_ms(options.clock.as_ref())),
            staleness_ms: i64::try_from(options.staleness_bound.as_millis()).unwrap_or(i64::MAX),
            actor: Some(options.actor.clone().unwrap_or_else(local_actor)),
            #[cfg(feature = "plugins")]
            plugins,
        });
        engine.reload_all().map_err(OpenError::Storage)?;
        if let Some(host) = engine.backend.host() {
            // Events another process of the host appended: deliver them now.
            let weak = Arc::downgrade(&engine);
            host.on_events(Box::new(move || {
                if let Some(e) = weak.upgrade() {
                    e.events_appended();
                }
            }));
        }
        Ok(engine)
    }

    /// For the owner of a store shared on its host, the feed is local:
    /// reading it now settles whether the index is current (a step of the
    /// store clock, a worker held up), without waiting for the worker.
    pub(crate) fn caught_up_locally(&self) -> bool {
        self.backend
            .host()
            .is_some_and(crate::backend::HostBackend::is_owner)
            && self.sync().is_ok()
    }

    /// The writer this engine follows went away: until the change feed has
    /// been read from its successor, verify refuses (`Unavailable`).
    pub(crate) fn mark_unsynced(&self) {
        self.synced_at.store(i64::MIN / 2, Ordering::Release);
    }

    /// Now, by the store's clock, in milliseconds since the epoch.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now().unix_millis()
    }

    /// The store clock's monotonic time, in milliseconds.
    pub(crate) fn monotonic_ms(&self) -> i64 {
        monotonic_ms(self.clock.as_ref())
    }

    /// The outbox grew: plugins should hear of it now, not at the next poll.
    #[cfg_attr(not(feature = "plugins"), allow(clippy::unused_self))]
    pub(crate) fn events_appended(&self) {
        #[cfg(feature = "plugins")]
        self.plugins.wake();
    }

    pub(crate) fn reload_all(&self) -> Result<(), StorageError> {
        // A page at a time (a million records are never in memory at
        // once), read by two threads, each half of the ids (random
        // base62: the halves are about equal), while this one builds the
        // index. Each page travels as one buffer: what one thread
        // allocates, it frees (frees across threads contend on the
        // allocator's locks).
        let (pages, received) = std::sync::mpsc::sync_channel(4);
        let backend = self.backend.as_ref();
        std::thread::scope(|s| {
            let mut recycle = Vec::new();
            for (reader, (from, to)) in [(&b""[..], Some(RELOAD_SPLIT)), (RELOAD_SPLIT, None)]
                .into_iter()
                .enumerate()
            {
                let pages = pages.clone();
                // Read pages come back to their reader to be filled again:
                // a few buffers serve the whole load.
                let (back, returned) = std::sync::mpsc::channel();
                recycle.push(back);
                s.spawn(move || read_pages(backend, reader, from, to, &pages, &returned));
            }
            drop(pages);
            self.index.replace_all(received.into_iter(), |page: Page| {
                let _ = recycle[page.reader].send(page);
            })
        })?;
        release_free_memory();
        Ok(())
    }

    /// Follows the change feed of a shared backend into the index.
    ///
    /// Under the write lock: a record read here must not be installed over
    /// a newer one that a write of this process (or another sync) installed
    /// meanwhile, which would bring a revoked secret back.
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        let _w = crate::locks::lock(&self.write_lock);
        let seen = self.seen_version.load(Ordering::Acquire);
        let asked_at = self.monotonic_ms();
        match self.backend.changes_since(seen)? {
            Changes::Rows { version, keys } => {
                for key in keys {
                    // The feed follows the key records, keyed by id.
                    if let Some(id) = std::str::from_utf8(&key)
                        .ok()
                        .and_then(|s| s.parse::<KeyId>().ok())
                    {
                        self.refresh_key(&id)?;
                    }
                }
                self.seen_version.fetch_max(version, Ordering::AcqRel);
            }
            Changes::Reload { version } => {
                self.reload_all()?;
                // Not `fetch_max`: a new owner's feed may stand lower than
                // what a dead owner told (its last change never reached disk).
                self.seen_version.store(version, Ordering::Release);
            }
        }
        // Everything committed before `asked_at` is now in the index.
        self.synced_at.fetch_max(asked_at, Ordering::AcqRel);
        Ok(())
    }

    /// What the worker does every `maintenance_interval`: prunes events
    /// past their retention, and tells a shared backend how far this engine
    /// has read its change feed.
    pub(crate) fn maintain(&self) -> Result<Maintenance, StorageError> {
        let events_pruned =
            crate::events::prune(self.backend.as_ref(), self.now_ms(), self.event_retention)?;
        let events_indexed = self.keep_index_up()?;
        let changes_trimmed = self.backend.report_seen(
            &self.reader,
            self.seen_version.load(Ordering::Acquire),
            self.reader_expiry,
        )?;
        Ok(Maintenance {
            events_pruned,
            changes_trimmed,
            events_indexed,
        })
    }

    fn refresh_key(&self, id: &KeyId) -> Result<(), StorageError> {
        match self.backend.get(Table::Keys, id.as_bytes())? {
            Some(bytes) => self.index.install(&KeyRecord::decode(&bytes)?),
            None => self.index.remove(id),
        }
        Ok(())
    }

    /// The stored record of key `id`, and its bytes (for a compare-and-set).
    pub(crate) fn record_bytes(&self, id: &KeyId) -> Result<(KeyRecord, Vec<u8>), KeyError> {
        let bytes = self
            .backend
            .get(Table::Keys, id.as_bytes())?
            .ok_or(KeyError::NotFound(*id))?;
        Ok((KeyRecord::decode(&bytes)?, bytes))
    }

    pub(crate) fn record(&self, id: &KeyId) -> Result<KeyRecord, KeyError> {
        self.record_bytes(id).map(|(rec, _)| rec)
    }

    pub(crate) fn get(&self, id: &KeyId) -> Result<KeyInfo, KeyError> {
        let rec = self.record(id)?;
        Ok(self.info_of(&rec, self.last_used(id)?, self.now_ms()))
    }

    pub(crate) fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let now = self.now_ms();
        let mut last_used: std::collections::HashMap<Vec<u8>, Option<Timestamp>> =
            std::collections::HashMap::new();
        {
            let _f = crate::locks::lock(&self.flush_lock);
            for (k, v) in self.backend.scan(Table::Usage, b"")? {
                last_used.insert(k, UsageAgg::from_bytes(&v)?.last_used_at());
            }
        }
        let mut out = Vec::new();
        for (k, bytes) in self.backend.scan(Table::Keys, b"")? {
            let rec = KeyRecord::decode(&bytes)?;
            let stored = last_used.get(&k).copied().flatten();
            let pending = self.usage.pending(&rec.id).and_then(|p| p.last_used_at());
            out.push(self.info_of(&rec, stored.max(pending), now));
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }
}

/// The prefix is fixed when a store is created; later opens must agree.
/// The tag key is made with the store (or given to an older store now),
/// once for every process: written only where none is.
fn settle_meta(backend: &dyn Backend, wanted: Option<&str>) -> Result<(String, TagKey), OpenError> {
    for _ in 0..COMMIT_RETRIES {
        let existing = backend
            .get(Table::Meta, b"store")
            .map_err(OpenError::Storage)?;
        let meta = match &existing {
            Some(bytes) => {
                let meta: MetaRecord = serde_json::from_slice(bytes).map_err(|e| {
                    OpenError::Storage(StorageError::with_source("unreadable store record", e))
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
                if let Some(k) = meta.tag_key {
                    return Ok((meta.prefix, TagKey::new(k)));
                }
                MetaRecord {
                    tag_key: Some(TagKey::random()),
                    ..meta
                }
            }
            None => MetaRecord {
                v: SCHEMA_VERSION,
                prefix: wanted.unwrap_or("kw").to_string(),
                tag_key: Some(TagKey::random()),
            },
        };
        let mut batch = Batch::default();
        batch.expect(Table::Meta, b"store".to_vec(), existing);
        batch.put(
            Table::Meta,
            b"store".to_vec(),
            serde_json::to_vec(&meta).expect("serialises"),
        );
        match backend.commit(batch, Durability::Durable) {
            Ok(_) => {
                let key = meta.tag_key.expect("set above");
                return Ok((meta.prefix, TagKey::new(key)));
            }
            // Another process wrote it first: read what it chose.
            Err(CommitError::Conflict) => {}
            Err(CommitError::Storage(e) | CommitError::Unflushed(e)) => {
                return Err(OpenError::Storage(e));
            }
        }
    }
    Err(OpenError::Storage(StorageError::new(
        "the store record kept changing while it was read",
    )))
}

fn monotonic_ms(clock: &dyn crate::clock::Clock) -> i64 {
    i64::try_from(clock.monotonic().as_millis()).unwrap_or(i64::MAX)
}

/// What one round of maintenance did ([`Store::maintain`](crate::Store::maintain)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Maintenance {
    /// Outbox events deleted (past their retention, delivered by every plugin).
    pub events_pruned: u64,
    /// Change-feed rows trimmed (every process has read them).
    pub changes_trimmed: u64,
    /// Events added to the outbox's index (a bounded step a round; 0 once
    /// it has caught up).
    pub events_indexed: u64,
}

/// Key records read at once while loading the index.
const RELOAD_PAGE: usize = 4096;

/// Stored key records, one after another in one buffer.
/// Where the second reader of a full load starts: the middle of the
/// base62 alphabet that key ids are drawn from.
const RELOAD_SPLIT: &[u8] = b"U";

/// Sends the key records with ids from `from` up to `to` (excluded) in
/// pages, until done, an error, or the receiver hangs up.
fn read_pages(
    backend: &dyn Backend,
    reader: usize,
    from: &[u8],
    to: Option<&[u8]>,
    pages: &std::sync::mpsc::SyncSender<Result<Page, StorageError>>,
    returned: &std::sync::mpsc::Receiver<Page>,
) {
    let mut start = from.to_vec();
    loop {
        let mut page = returned.try_recv().unwrap_or_else(|_| Page {
            reader,
            ..Page::default()
        });
        page.data.clear();
        page.ends.clear();
        let mut last = Vec::new();
        let mut past_end = false;
        let rows = RowsFrom {
            table: Table::Keys,
            start: &start,
            limit: RELOAD_PAGE,
        };
        let read = backend.visit_from(rows, &mut |k, v| {
            if past_end || to.is_some_and(|to| k >= to) {
                past_end = true;
                return;
            }
            page.data.extend_from_slice(v);
            page.ends.push(page.data.len());
            last.clear();
            last.extend_from_slice(k);
        });
        // The smallest key after the last one read, unless that was all.
        let more = matches!(read, Ok(RELOAD_PAGE)) && !past_end;
        // The builder stopped (an unreadable record): so do we.
        if pages.send(read.map(|_| page)).is_err() || !more {
            return;
        }
        last.push(0);
        start = last;
    }
}

/// Gives the memory a full load freed (records read and decoded, the old
/// index) back to the operating system, where the allocator allows it.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's heap to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The actor of a handle opened without [`Options::actor`]: the user and
/// the host, `<user>@<host name>` (at most 128 bytes, as any actor).
fn local_actor() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let host = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_string()
    };
    let mut actor: String = format!("{}@{host}", crate::os_user())
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    while actor.len() > super::settings::MAX_OWNER_LEN {
        actor.pop();
    }
    actor
}
