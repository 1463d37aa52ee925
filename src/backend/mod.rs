//! Storage: a small trait the engine is written against, its
//! implementations, and the choice of one from a path or URL. No storage
//! library's type leaves this module except through [`Opened`].
//!
//! A backend holds named tables of byte keys and values, commits atomic
//! multi-table batches (with optional compare-and-set checks, so engines in
//! several processes can share one store), and tells its readers which rows
//! of the followed table other writers changed since a version they have
//! seen: the change feed a shared backend fills and a single-writer backend
//! leaves empty. It knows nothing of keys, events or plugins.

pub(crate) mod copy;
mod host;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod sled;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use self::copy::Snapshot;
pub(crate) use self::host::{HostBackend, HostRules, Vet, group_id, user_name};
pub(crate) use self::memory::MemoryBackend;
#[cfg(all(feature = "postgres", feature = "plugins"))]
pub(crate) use self::postgres::PostgresConn;
#[cfg(feature = "postgres")]
pub(crate) use self::postgres::PostgresTarget;
pub(crate) use crate::error::CommitError;
use crate::error::OpenError;
pub use crate::error::StorageError;

/// A store's storage, opened from a path or a URL.
pub(crate) struct Opened {
    pub backend: Arc<dyn Backend>,
    /// The directory of a sled store.
    pub dir: Option<PathBuf>,
    /// How to reach a PostgreSQL store again, in a session of one's own
    /// (the plugin host's dispatch lease holds one).
    #[cfg(feature = "postgres")]
    #[cfg_attr(not(feature = "plugins"), allow(dead_code))]
    pub postgres: Option<PostgresTarget>,
}

impl Opened {
    /// A backend without a directory or server of its own (in memory).
    pub(crate) fn detached(backend: Arc<dyn Backend>) -> Self {
        Opened {
            backend,
            dir: None,
            #[cfg(feature = "postgres")]
            postgres: None,
        }
    }
}

/// How long a server store's calls may take.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) struct Timeouts {
    /// Opening a connection (TCP, TLS, authentication).
    pub connect: Duration,
    /// One statement, on the server; the client waits a second longer.
    pub statement: Duration,
}

/// Opens the storage `location` names: a `postgres://` or `postgresql://`
/// URL opens a shared store on PostgreSQL (schema created and migrated);
/// anything else is the directory of a sled store (created 0700), owned by
/// this process or attached to the process that owns it (`rules`).
pub(crate) fn open(
    location: &Path,
    timeouts: Timeouts,
    rules: HostRules,
) -> Result<Opened, OpenError> {
    #[cfg(feature = "postgres")]
    if let Some(url) = location.to_str().filter(|l| postgres::is_url(l)) {
        let (backend, target) = postgres::PostgresBackend::connect(url, timeouts)?;
        return Ok(Opened {
            backend: Arc::new(backend),
            dir: None,
            postgres: Some(target),
        });
    }
    #[cfg(not(feature = "postgres"))]
    if let Some(url) = location
        .to_str()
        .filter(|l| l.starts_with("postgres://") || l.starts_with("postgresql://"))
    {
        let _ = (timeouts, rules);
        return Err(OpenError::InvalidOptions(format!(
            "{url}: this keyward was built without PostgreSQL support"
        )));
    }
    let backend = HostBackend::open(location, rules)?;
    Ok(Opened {
        backend: Arc::new(backend),
        dir: Some(location.to_path_buf()),
        #[cfg(feature = "postgres")]
        postgres: None,
    })
}

/// A store's location as it may be shown in a message: a directory's
/// path, or a PostgreSQL store's schema and database (never the URL,
/// which may carry a password).
pub(crate) fn describe(location: &Path) -> String {
    match location.to_str() {
        #[cfg(feature = "postgres")]
        Some(l) if postgres::is_url(l) => postgres::describe(l),
        Some(l) if l.starts_with("postgres://") || l.starts_with("postgresql://") => {
            "a PostgreSQL URL".to_string()
        }
        _ => location.display().to_string(),
    }
}

/// The tables of a store.
#[cfg_attr(not(feature = "plugins"), allow(dead_code))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub(crate) enum Table {
    /// Store-wide settings: schema version, key prefix.
    Meta,
    /// One record per key (generations, whitelist, settings).
    Keys,
    /// One aggregated usage record per key.
    Usage,
    /// The event outbox, keyed by sequence number (big-endian u64).
    Events,
    /// Installed plugins: manifest and settings, by name.
    Plugins,
    /// Installed plugins' component bytes, by name.
    PluginCode,
    /// Per-plugin delivery state (cursor, attempts, last error), by name.
    PluginState,
    /// Per-plugin dead letters, by name, NUL, sequence number.
    DeadLetters,
    /// A sled store's change feed: the id of each key record changed, by
    /// version (big-endian u64), for the processes attached to its owner.
    Feed,
    /// The owner index: owner, NUL, key id → nothing. Written in the batch
    /// that writes the key record.
    Owners,
    /// Imported keys' lookups (see `Lookup::row`) → key id: one key per
    /// lookup, across every process of a store. Written in the batch that
    /// writes the key record.
    Imports,
    /// What processes take rate limits and quotas from: key id, then `q`
    /// (the quota's remaining) or `l` and a limit's name (its shared
    /// theoretical arrival time).
    Budgets,
    /// Ids of deleted keys → when (ms): an id is never used again, so a
    /// deleted key's record cannot be put back by a process attached to
    /// the owner (see the store's `vet`).
    Gone,
    /// The outbox's index, derived from the events (see
    /// `events::index_rows`): field, value, NUL, sequence number → nothing;
    /// `events::INDEXED_THROUGH` → the last event indexed.
    EventIndex,
}

impl Table {
    /// The table whose changes the change feed reports: key records, the
    /// rows admission depends on.
    pub(crate) const FOLLOWED: Table = Table::Keys;

    pub(crate) fn tag(self) -> u8 {
        match self {
            Table::Meta => b'm',
            Table::Keys => b'k',
            Table::Usage => b'u',
            Table::Events => b'e',
            Table::Plugins => b'p',
            Table::PluginCode => b'c',
            Table::PluginState => b's',
            Table::DeadLetters => b'd',
            Table::Feed => b'f',
            Table::Owners => b'o',
            Table::Imports => b'i',
            Table::Budgets => b'b',
            Table::Gone => b'g',
            Table::EventIndex => b'x',
        }
    }
}

/// One write in a batch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Op {
    Put {
        table: Table,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Abort the batch with [`CommitError::Conflict`] unless the current value is `expected`.
    Expect {
        table: Table,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        expected: Option<Vec<u8>>,
    },
    /// Append `value` under the table's next sequence number (big-endian u64).
    Append {
        table: Table,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
}

/// Writes applied all together or not at all.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    /// Keys of the rows of [`Table::FOLLOWED`] this batch puts or deletes:
    /// what the change feed reports to other processes sharing the store.
    pub(crate) fn followed_rows(&self) -> impl Iterator<Item = &[u8]> {
        self.ops.iter().filter_map(|op| match op {
            Op::Put { table, key, .. } | Op::Delete { table, key } if *table == Table::FOLLOWED => {
                Some(key.as_slice())
            }
            _ => None,
        })
    }

    pub(crate) fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.ops.push(Op::Put {
            table,
            key: key.into(),
            value,
        });
    }

    pub(crate) fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete {
            table,
            key: key.into(),
        });
    }

    pub(crate) fn expect(
        &mut self,
        table: Table,
        key: impl Into<Vec<u8>>,
        expected: Option<Vec<u8>>,
    ) {
        self.ops.push(Op::Expect {
            table,
            key: key.into(),
            expected,
        });
    }

    pub(crate) fn append(&mut self, table: Table, value: Vec<u8>) {
        self.ops.push(Op::Append { table, value });
    }
}

/// Whether a commit must be on stable storage before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Durability {
    /// Flushed before return: changes to who is admitted.
    Durable,
    /// Flushed with the next durable commit or flush: usage counters.
    Lazy,
}

/// What other writers changed since a version a reader has seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Changes {
    /// These rows of [`Table::FOLLOWED`] changed (by key); the backend is now at `version`.
    Rows { version: u64, keys: Vec<Vec<u8>> },
    /// Too much changed to list (the feed was trimmed): reload everything.
    Reload { version: u64 },
}

pub(crate) type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Up to `limit` entries of `table` with keys `>= start`.
#[derive(Clone, Copy)]
pub(crate) struct RowsFrom<'a> {
    pub table: Table,
    pub start: &'a [u8],
    pub limit: usize,
}

/// What is handed each entry a [`Backend::visit_from`] reads.
pub(crate) type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]);

/// The storage a store runs on.
pub(crate) trait Backend: Send + Sync {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Every entry of `table` whose key starts with `prefix`, in key order.
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<KvPairs, StorageError>;

    /// The entries `rows` names, in key order, each handed to `each` as
    /// it is read (a backend that can, copies nothing); returns how many.
    fn visit_from(&self, rows: RowsFrom<'_>, each: Visit<'_>) -> Result<usize, StorageError>;

    /// Up to `limit` entries of `table` with keys `>= start`, in key order.
    fn range_from(
        &self,
        table: Table,
        start: &[u8],
        limit: usize,
    ) -> Result<KvPairs, StorageError> {
        let mut out = Vec::new();
        let rows = RowsFrom {
            table,
            start,
            limit,
        };
        self.visit_from(rows, &mut |k, v| out.push((k.to_vec(), v.to_vec())))?;
        Ok(out)
    }

    /// Applies `batch` atomically; with [`Durability::Durable`] it is on
    /// stable storage before this returns. Returns the backend's version
    /// after the commit.
    fn commit(&self, batch: Batch, durability: Durability) -> Result<u64, CommitError>;

    /// Makes every earlier commit durable.
    fn flush(&self) -> Result<(), StorageError>;

    /// Rows of [`Table::FOLLOWED`] changed by *other* writers after `seen`.
    /// A backend with a single writer (sled) answers `Rows { keys: [] }`
    /// with its own version.
    fn changes_since(&self, seen: u64) -> Result<Changes, StorageError>;

    /// Where the change feed stands now (the engine reads this on open,
    /// when it loads every key anyway).
    fn version(&self) -> Result<u64, StorageError>;

    /// Whether other processes may write to this store, so the engine must
    /// follow the change feed.
    fn is_shared(&self) -> bool;

    /// Tells a shared backend that engine `engine` has read the change feed
    /// up to `seen`, so that what every engine heard from within `expiry`
    /// has read can be trimmed (an engine silent longer is forgotten, and
    /// reloads when it comes back). Returns the rows trimmed.
    fn report_seen(&self, engine: &str, seen: u64, expiry: Duration) -> Result<u64, StorageError> {
        let _ = (engine, seen, expiry);
        Ok(0)
    }

    /// Blocks up to `timeout` for word that another writer committed
    /// (LISTEN/NOTIFY, or the owner of a store shared on one host).
    /// Without such word the engine still polls the change feed.
    fn wait_for_change(&self, timeout: Duration) -> Wake {
        std::thread::sleep(timeout);
        Wake::Quiet
    }

    /// The store shared on this host, when it is one.
    /// Whether other processes draw on this store's rate-limit budgets
    /// now or may have: then each process spends only tokens leased from
    /// the shared rows. A host's owner that has never served an attached
    /// process counts alone, exactly.
    fn budgets_shared(&self) -> bool {
        self.is_shared()
    }

    fn host(&self) -> Option<&HostBackend> {
        None
    }

    /// A consistent view of every table, read while other processes go on
    /// reading and writing (see [`copy`]).
    fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StorageError> {
        Err(StorageError::new("this storage cannot be copied"))
    }

    /// After rows of the appended tables were put directly (by a copy),
    /// makes the next append follow the largest.
    fn resume_sequences(&self) -> Result<(), StorageError> {
        Err(StorageError::new("this storage cannot be copied into"))
    }
}

/// What waiting for a change came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Another writer committed: read the change feed.
    Changed,
    /// Nothing was heard within the time.
    Quiet,
    /// The writer this process follows went away: until the feed has been
    /// read from its successor, the index may miss a revocation.
    Lost,
}

/// Hands each of `rows` to `each`; returns how many.
pub(crate) fn visit_rows(rows: &KvPairs, each: &mut dyn FnMut(&[u8], &[u8])) -> usize {
    for (k, v) in rows {
        each(k, v);
    }
    rows.len()
}
