//! An in-memory backend. Nothing persists; it serves `Store::open_in_memory`
//! (for applications' own tests), and, marked shared, it stands for a
//! database server several engines hold at once: it keeps a change feed,
//! so the engine's index coherence is tested without a server.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::copy::{PAGE_ROWS, Snapshot, seq_of};
use super::{
    Backend, Batch, Changes, CommitError, Durability, KvPairs, Op, RowsFrom, StorageError, Table,
    Visit,
};

/// Longest change feed kept; a reader further behind reloads everything.
const FEED_CAP: usize = 4096;

pub(crate) struct MemoryBackend {
    state: Mutex<State>,
    shared: bool,
}

#[derive(Default)]
struct State {
    tables: BTreeMap<(Table, Vec<u8>), Vec<u8>>,
    next_seq: u64,
    /// (version, key of a followed row changed by that commit)
    feed: Vec<(u64, Vec<u8>)>,
    /// Entries up to this version were trimmed from `feed`.
    trimmed_to: u64,
    version: u64,
}

impl MemoryBackend {
    /// Rows and bytes (keys and values) stored, per table: what a store
    /// holds, measured without a file system's slack.
    #[cfg(test)]
    pub(crate) fn logical_size(&self) -> BTreeMap<Table, (usize, usize)> {
        let mut sizes = BTreeMap::new();
        for ((table, key), value) in &self.state().tables {
            let entry: &mut (usize, usize) = sizes.entry(*table).or_default();
            entry.0 += 1;
            entry.1 += key.len() + value.len();
        }
        sizes
    }

    /// `shared`: whether engines must follow its change feed.
    pub(crate) fn new(shared: bool) -> Self {
        MemoryBackend {
            state: Mutex::default(),
            shared,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Backend for MemoryBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.state().tables.get(&(table, key.to_vec())).cloned())
    }

    fn scan(&self, table: Table, prefix: &[u8]) -> Result<KvPairs, StorageError> {
        Ok(self
            .state()
            .tables
            .range((table, prefix.to_vec())..)
            .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn visit_from(&self, rows: RowsFrom<'_>, each: Visit<'_>) -> Result<usize, StorageError> {
        let state = self.state();
        let found = state
            .tables
            .range((rows.table, rows.start.to_vec())..)
            .take_while(|((t, _), _)| *t == rows.table)
            .take(rows.limit);
        let mut n = 0;
        for ((_, k), v) in found {
            each(k, v);
            n += 1;
        }
        Ok(n)
    }

    fn commit(&self, batch: Batch, _durability: Durability) -> Result<u64, CommitError> {
        let followed: Vec<Vec<u8>> = batch.followed_rows().map(<[u8]>::to_vec).collect();
        let mut st = self.state();
        for op in &batch.ops {
            if let Op::Expect {
                table,
                key,
                expected,
            } = op
                && st.tables.get(&(*table, key.clone())) != expected.as_ref()
            {
                return Err(CommitError::Conflict);
            }
        }
        for op in batch.ops {
            match op {
                Op::Put { table, key, value } => {
                    st.tables.insert((table, key), value);
                }
                Op::Delete { table, key } => {
                    st.tables.remove(&(table, key));
                }
                Op::Expect { .. } => {}
                Op::Append { table, value } => {
                    st.next_seq += 1;
                    let seq = st.next_seq;
                    st.tables.insert((table, seq.to_be_bytes().to_vec()), value);
                }
            }
        }
        st.version += 1;
        let version = st.version;
        st.feed.extend(followed.into_iter().map(|k| (version, k)));
        if st.feed.len() > FEED_CAP {
            let cut = st.feed.len() - FEED_CAP / 2;
            st.trimmed_to = st.feed[cut - 1].0;
            st.feed.drain(..cut);
        }
        Ok(version)
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn changes_since(&self, seen: u64) -> Result<Changes, StorageError> {
        let st = self.state();
        if seen < st.trimmed_to {
            return Ok(Changes::Reload {
                version: st.version,
            });
        }
        let keys = st
            .feed
            .iter()
            .filter(|(v, _)| *v > seen)
            .map(|(_, k)| k.clone())
            .collect();
        Ok(Changes::Rows {
            version: st.version,
            keys,
        })
    }

    fn version(&self) -> Result<u64, StorageError> {
        Ok(self.state().version)
    }

    fn is_shared(&self) -> bool {
        self.shared
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StorageError> {
        Ok(Box::new(Frozen(self.state().tables.clone())))
    }

    fn resume_sequences(&self) -> Result<(), StorageError> {
        let mut st = self.state();
        let last = st
            .tables
            .range((Table::Events, Vec::new())..)
            .take_while(|((t, _), _)| *t == Table::Events)
            .map(|((_, k), _)| seq_of(k))
            .max()
            .unwrap_or(0);
        st.next_seq = st.next_seq.max(last);
        Ok(())
    }
}

/// A snapshot of an in-memory store: a copy of it.
struct Frozen(BTreeMap<(Table, Vec<u8>), Vec<u8>>);

impl Snapshot for Frozen {
    fn page(&mut self, table: Table, start: &[u8]) -> Result<KvPairs, StorageError> {
        Ok(self
            .0
            .range((table, start.to_vec())..)
            .take_while(|((t, _), _)| *t == table)
            .take(PAGE_ROWS)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn finish(self: Box<Self>) -> Result<Vec<Op>, StorageError> {
        Ok(Vec::new())
    }
}
