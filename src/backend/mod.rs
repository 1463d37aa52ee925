//! Storage: a small trait the engine is written against, and its
//! implementations. No storage library's type leaves this module.
//!
//! A backend holds named tables of byte keys and values, commits atomic
//! multi-table batches (with optional compare-and-set checks, so engines in
//! several processes can share one store), and tells the engine which keys
//! other writers changed since a version it has seen: the change feed a
//! shared backend fills and a single-writer backend leaves empty.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod sled;

use std::fmt;

use crate::key::KeyId;

pub(crate) use self::memory::MemoryBackend;
#[cfg(feature = "postgres")]
pub(crate) use self::postgres::PostgresBackend;
pub(crate) use self::sled::SledBackend;

/// The tables of a store.
#[cfg_attr(not(feature = "plugins"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
}

impl Table {
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
        }
    }
}

/// One write in a batch.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: Vec<u8>,
    },
    /// Abort the batch with [`CommitError::Conflict`] unless the current value is `expected`.
    Expect {
        table: Table,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
    },
    /// Append `value` under the table's next sequence number (big-endian u64).
    Append {
        table: Table,
        value: Vec<u8>,
    },
}

/// Writes applied all together or not at all.
#[derive(Debug, Clone, Default)]
pub(crate) struct Batch {
    pub ops: Vec<Op>,
    /// The key records this batch changes: what the change feed reports to
    /// other processes sharing the store.
    pub touched: Vec<KeyId>,
}

impl Batch {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Flushed before return: changes to who is admitted.
    Durable,
    /// Flushed with the next durable commit or flush: usage counters.
    Lazy,
}

/// What other writers changed since a version the engine has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Changes {
    /// These keys changed; the backend is now at `version`.
    Keys { version: u64, ids: Vec<KeyId> },
    /// Too much changed to list (the feed was trimmed): reload everything.
    Reload { version: u64 },
}

/// The storage layer failed: I/O, corruption, or an unreachable server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError {
    message: String,
}

impl StorageError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        StorageError {
            message: message.into(),
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage error: {}", self.message)
    }
}

impl std::error::Error for StorageError {}

#[derive(Debug)]
pub(crate) enum CommitError {
    /// An `Expect` did not hold: another writer got there first. Nothing was written.
    Conflict,
    Storage(StorageError),
}

impl From<StorageError> for CommitError {
    fn from(e: StorageError) -> Self {
        CommitError::Storage(e)
    }
}

pub(crate) type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The storage a store runs on.
pub(crate) trait Backend: Send + Sync {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Every entry of `table` whose key starts with `prefix`, in key order.
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<KvPairs, StorageError>;

    /// Up to `limit` entries of `table` with keys `>= start`, in key order.
    fn range_from(&self, table: Table, start: &[u8], limit: usize)
    -> Result<KvPairs, StorageError>;

    /// Applies `batch` atomically; with [`Durability::Durable`] it is on
    /// stable storage before this returns. Returns the backend's version
    /// after the commit.
    fn commit(&self, batch: Batch, durability: Durability) -> Result<u64, CommitError>;

    /// Makes every earlier commit durable.
    fn flush(&self) -> Result<(), StorageError>;

    /// Keys changed by *other* writers after `seen`. A backend with a single
    /// writer (sled) answers `Keys { ids: [] }` with its own version.
    fn changes_since(&self, seen: u64) -> Result<Changes, StorageError>;

    /// Where the change feed stands now (the engine reads this on open,
    /// when it loads every key anyway).
    fn version(&self) -> Result<u64, StorageError>;

    /// Whether other processes may write to this store, so the engine must
    /// follow the change feed.
    fn is_shared(&self) -> bool;

    /// Blocks up to `timeout` for word that another writer committed
    /// (LISTEN/NOTIFY); true when some came. Without such word the engine
    /// still polls the change feed.
    fn wait_for_change(&self, timeout: std::time::Duration) -> bool {
        std::thread::sleep(timeout);
        false
    }

    /// Whether this process may run the plugin dispatcher: exactly one
    /// process of a shared store does (it holds a lease that its death
    /// releases). Always true for a single-writer store.
    fn hold_dispatcher_lease(&self) -> bool {
        true
    }
}
