//! Copying a live store: a consistent snapshot of every table, read page
//! by page while other processes go on reading and writing, written into
//! an empty store of any backend.
//!
//! A database server gives a snapshot of its own (PostgreSQL: one
//! repeatable-read transaction). A sled store has none, so its owner keeps
//! a [`Journal`] while a snapshot is open: every write applied after the
//! snapshot began, in commit order. The pages read meanwhile are fuzzy —
//! each row as it stood at some moment of the copy — and the journal,
//! applied after them, brings every row it touches to its last value at
//! the moment the snapshot ended; a row it does not touch did not change
//! while it was read. The copy holds the store as it stood then.

use std::collections::{BTreeMap, HashMap};

use super::{Backend, Batch, Durability, KvPairs, Op, StorageError, Table};

/// Rows of one page of a snapshot.
pub(crate) const PAGE_ROWS: usize = 4096;

/// A page ends once it holds this many bytes (never before its first row).
pub(crate) const PAGE_BYTES: usize = 1 << 20;

/// The most a journal holds before the snapshot is given up: a store that
/// changes this much while it is copied is copied again.
pub(crate) const JOURNAL_MAX_BYTES: usize = 256 << 20;

/// Operations replayed onto the destination in one commit.
const REPLAY_OPS: usize = 1024;

/// Every table a copy carries: all but the change feed, which belongs to
/// one store's processes (the destination's start afresh), and the
/// outbox's index, derived from the events (the destination builds its own).
pub(crate) const COPIED: [Table; 12] = [
    Table::Meta,
    Table::Keys,
    Table::Usage,
    Table::Events,
    Table::Plugins,
    Table::PluginCode,
    Table::PluginState,
    Table::DeadLetters,
    Table::Owners,
    Table::Imports,
    Table::Budgets,
    Table::Gone,
];

/// A consistent view of a store's tables, for copying it.
pub(crate) trait Snapshot {
    /// Rows of `table` from `start` on, in key order: a page of at most
    /// [`PAGE_ROWS`]; empty at the table's end.
    fn page(&mut self, table: Table, start: &[u8]) -> Result<KvPairs, StorageError>;

    /// Ends the snapshot: the rows written since it began, each with its
    /// last value (puts and deletes), for the copy to apply after its pages.
    fn finish(self: Box<Self>) -> Result<Vec<Op>, StorageError>;
}

/// The rows written since one snapshot began: each row's last write only
/// (a row's value after the snapshot is its last write's, whatever came
/// before), so a journal is bounded by the rows that changed, not by how
/// often they did (usage rows are written every second).
#[derive(Default)]
pub(crate) struct Journal {
    rows: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
    bytes: usize,
    overflowed: bool,
}

impl Journal {
    fn record(&mut self, ops: &[Op]) {
        if self.overflowed {
            return;
        }
        for op in ops {
            let (table, key, value) = match op {
                Op::Put { table, key, value } => (*table, key, Some(value)),
                Op::Delete { table, key } => (*table, key, None),
                Op::Expect { .. } | Op::Append { .. } => continue,
            };
            let size = value.map_or(0, Vec::len);
            match self.rows.insert((table, key.clone()), value.cloned()) {
                Some(before) => {
                    self.bytes = self.bytes + size - before.map_or(0, |v| v.len());
                }
                None => self.bytes += key.len() + size,
            }
        }
        if self.bytes > JOURNAL_MAX_BYTES {
            self.overflowed = true;
            self.rows = BTreeMap::new();
        }
    }

    /// What it recorded, as puts and deletes, or why it cannot be used.
    pub(crate) fn into_ops(self) -> Result<Vec<Op>, StorageError> {
        if self.overflowed {
            return Err(StorageError::new(format!(
                "more than {} MiB of the store changed while it was copied; copy it again",
                JOURNAL_MAX_BYTES >> 20
            )));
        }
        Ok(self
            .rows
            .into_iter()
            .map(|((table, key), value)| match value {
                Some(value) => Op::Put { table, key, value },
                None => Op::Delete { table, key },
            })
            .collect())
    }
}

/// Snapshots open on one store at once, at most: each journal may hold up
/// to [`JOURNAL_MAX_BYTES`].
pub(crate) const MAX_SNAPSHOTS: usize = 2;

/// The journals of the snapshots open on one store.
#[derive(Default)]
pub(crate) struct Journals {
    next: u64,
    open: HashMap<u64, Journal>,
}

impl Journals {
    /// Opens a journal; its number, or none when [`MAX_SNAPSHOTS`] are open.
    pub(crate) fn begin(&mut self) -> Result<u64, StorageError> {
        if self.open.len() >= MAX_SNAPSHOTS {
            return Err(StorageError::new(format!(
                "{MAX_SNAPSHOTS} copies of this store are under way already; try again when one is done"
            )));
        }
        self.next += 1;
        self.open.insert(self.next, Journal::default());
        Ok(self.next)
    }

    /// Closes journal `id`; what it recorded.
    pub(crate) fn end(&mut self, id: u64) -> Option<Journal> {
        self.open.remove(&id)
    }

    /// Records an applied batch whose appends took the numbers from
    /// `first_seq` on, in every open journal.
    pub(crate) fn record(&mut self, batch: &Batch, first_seq: u64) {
        if self.open.is_empty() {
            return;
        }
        let ops = as_applied(batch, first_seq);
        for journal in self.open.values_mut() {
            journal.record(&ops);
        }
    }
}

/// A batch as the rows it wrote: checks dropped, appends as puts under the
/// numbers they took, the tables a copy leaves behind (the change feed,
/// the outbox's index) left out.
fn as_applied(batch: &Batch, first_seq: u64) -> Vec<Op> {
    let mut seq = first_seq;
    let mut ops = Vec::new();
    for op in &batch.ops {
        match op {
            Op::Put { table, .. } | Op::Delete { table, .. } if !COPIED.contains(table) => {}
            Op::Put { .. } | Op::Delete { .. } => ops.push(op.clone()),
            Op::Expect { .. } => {}
            Op::Append { table, value } => {
                ops.push(Op::Put {
                    table: *table,
                    key: seq.to_be_bytes().to_vec(),
                    value: value.clone(),
                });
                seq += 1;
            }
        }
    }
    ops
}

/// The bytes an operation carries.
pub(crate) fn op_bytes(op: &Op) -> usize {
    match op {
        Op::Put { key, value, .. } => key.len() + value.len(),
        Op::Delete { key, .. } => key.len(),
        Op::Expect { key, expected, .. } => key.len() + expected.as_ref().map_or(0, Vec::len),
        Op::Append { value, .. } => value.len(),
    }
}

/// Where a copy stands, and at its end what it copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Copied {
    /// Rows written, by every table.
    pub rows: u64,
    /// Bytes of those rows (keys and values).
    pub bytes: u64,
    /// Key records among them.
    pub keys: u64,
    /// The newest event the copy holds (0: none).
    pub last_event: u64,
    /// Rows of the source written while it was read, applied after.
    pub journaled: u64,
}

/// Why a copy did not happen.
#[derive(Debug)]
pub(crate) enum CopyFailure {
    /// The destination holds rows already: nothing was written.
    NotEmpty(Table),
    Storage(StorageError),
}

impl From<StorageError> for CopyFailure {
    fn from(e: StorageError) -> Self {
        CopyFailure::Storage(e)
    }
}

/// Opens a snapshot of `source` once `dest` is found empty.
pub(crate) fn begin<'a>(
    source: &'a dyn Backend,
    dest: &dyn Backend,
) -> Result<Box<dyn Snapshot + 'a>, CopyFailure> {
    for table in COPIED {
        if !dest.range_from(table, &[], 1)?.is_empty() {
            return Err(CopyFailure::NotEmpty(table));
        }
    }
    Ok(source.snapshot()?)
}

/// Writes every page of the snapshot into `dest`.
pub(crate) fn pages(
    snapshot: &mut dyn Snapshot,
    dest: &dyn Backend,
    progress: &mut dyn FnMut(&Copied),
) -> Result<Copied, StorageError> {
    let mut done = Copied::default();
    for table in COPIED {
        let mut start = Vec::new();
        loop {
            let page = snapshot.page(table, &start)?;
            let Some((last, _)) = page.last() else { break };
            start.clone_from(last);
            start.push(0);
            let mut batch = Batch::default();
            for (k, v) in page {
                done.rows += 1;
                done.bytes += (k.len() + v.len()) as u64;
                match table {
                    Table::Keys => done.keys += 1,
                    Table::Events => done.last_event = done.last_event.max(seq_of(&k)),
                    _ => {}
                }
                batch.put(table, k, v);
            }
            commit(dest, batch)?;
            progress(&done);
        }
    }
    Ok(done)
}

/// Ends the snapshot and applies what was written meanwhile: `dest` then
/// holds the store as it stood at this moment.
pub(crate) fn finish(
    snapshot: Box<dyn Snapshot + '_>,
    dest: &dyn Backend,
    done: &mut Copied,
) -> Result<(), StorageError> {
    let journal = snapshot.finish()?;
    done.journaled = journal.len() as u64;
    // Key records the journal writes: counted as they stand after it.
    let mut touched: Vec<&[u8]> = journal
        .iter()
        .filter_map(|op| match op {
            Op::Put {
                table: Table::Keys,
                key,
                ..
            }
            | Op::Delete {
                table: Table::Keys,
                key,
            } => Some(key.as_slice()),
            _ => None,
        })
        .collect();
    touched.sort_unstable();
    touched.dedup();
    let present = |dest: &dyn Backend| -> Result<u64, StorageError> {
        let mut n = 0;
        for key in &touched {
            n += u64::from(dest.get(Table::Keys, key)?.is_some());
        }
        Ok(n)
    };
    let before = present(dest)?;
    for ops in journal.chunks(REPLAY_OPS) {
        for op in ops {
            if let Op::Put {
                table: Table::Events,
                key,
                ..
            } = op
            {
                done.last_event = done.last_event.max(seq_of(key));
            }
        }
        commit(dest, Batch { ops: ops.to_vec() })?;
    }
    done.keys = (done.keys + present(dest)?).saturating_sub(before);
    Ok(())
}

/// Makes the copy's numbering go on from its rows, and the copy durable.
pub(crate) fn seal(dest: &dyn Backend) -> Result<(), StorageError> {
    dest.resume_sequences()?;
    dest.flush()
}

pub(crate) fn commit(dest: &dyn Backend, batch: Batch) -> Result<(), StorageError> {
    dest.commit(batch, Durability::Lazy)
        .map(|_| ())
        .map_err(|e| match e {
            super::CommitError::Storage(e) | super::CommitError::Unflushed(e) => e,
            super::CommitError::Conflict => {
                StorageError::new("the destination changed while it was written")
            }
        })
}

/// An event's sequence number from its row key (big-endian u64).
pub(crate) fn seq_of(key: &[u8]) -> u64 {
    key.try_into().map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::backend::sled::SledBackend;

    fn rows(b: &dyn Backend) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for t in COPIED {
            for (k, v) in b.scan(t, &[]).unwrap() {
                out.push((t, k, v));
            }
        }
        out
    }

    /// Written after the pages were read, and still in the copy: the
    /// journal brings the copy to the source as the snapshot ended.
    #[test]
    fn writes_made_while_pages_are_read_reach_the_copy_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let source = SledBackend::open_with_mode(&dir.path().join("s"), 0o700).unwrap();
        let mut batch = Batch::default();
        for k in [b"a", b"b", b"c"] {
            batch.put(Table::Keys, k.to_vec(), b"v1".to_vec());
        }
        batch.append(Table::Events, b"e1".to_vec());
        source.commit(batch, Durability::Durable).unwrap();

        let dest = MemoryBackend::new(false);
        let mut snapshot = begin(&source, &dest).unwrap();
        let mut done = pages(&mut *snapshot, &dest, &mut |_| {}).unwrap();
        assert_eq!((done.keys, done.last_event), (3, 1));
        let mut batch = Batch::default();
        batch.delete(Table::Keys, b"a".to_vec());
        batch.put(Table::Keys, b"d".to_vec(), b"v1".to_vec());
        batch.put(Table::Keys, b"b".to_vec(), b"v2".to_vec());
        batch.append(Table::Events, b"e2".to_vec());
        batch.put(Table::Feed, b"f".to_vec(), b"not copied".to_vec());
        source.commit(batch, Durability::Durable).unwrap();
        let mut batch = Batch::default();
        batch.put(Table::Keys, b"b".to_vec(), b"v3".to_vec());
        source.commit(batch, Durability::Durable).unwrap();
        finish(snapshot, &dest, &mut done).unwrap();
        seal(&dest).unwrap();

        assert_eq!(rows(&dest), rows(&source));
        assert_eq!(dest.get(Table::Keys, b"b").unwrap().unwrap(), b"v3");
        assert!(dest.get(Table::Feed, b"f").unwrap().is_none());
        // Rows written since: a, b, d and event 2 (b twice: its last write).
        assert_eq!((done.keys, done.last_event, done.journaled), (3, 2, 4));
        // The copy's next event follows the last it holds.
        let mut batch = Batch::default();
        batch.append(Table::Events, b"e3".to_vec());
        dest.commit(batch, Durability::Durable).unwrap();
        let events: Vec<u64> = dest
            .scan(Table::Events, &[])
            .unwrap()
            .iter()
            .map(|(k, _)| seq_of(k))
            .collect();
        assert_eq!(events, [1, 2, 3]);
    }

    #[test]
    fn a_snapshot_given_up_stops_its_journal_and_a_flood_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let source = SledBackend::open_with_mode(&dir.path().join("s"), 0o700).unwrap();
        let dest = MemoryBackend::new(false);
        drop(begin(&source, &dest).unwrap());
        let mut batch = Batch::default();
        batch.put(Table::Keys, b"a".to_vec(), vec![0; 1024]);
        source.commit(batch, Durability::Lazy).unwrap();
        // Nothing is kept for a snapshot nobody holds.
        assert!(source.end_journal(1).is_err());

        // A row written again and again is one row of the journal.
        let mut journal = Journal::default();
        let row = |k: &[u8]| {
            [Op::Put {
                table: Table::Keys,
                key: k.to_vec(),
                value: vec![0; 1 << 20],
            }]
        };
        for _ in 0..1000 {
            journal.record(&row(b"k"));
        }
        assert_eq!((journal.rows.len(), journal.bytes), (1, 1 + (1 << 20)));
        journal.record(&[Op::Delete {
            table: Table::Keys,
            key: b"k".to_vec(),
        }]);
        assert_eq!(journal.bytes, 1);
        // Past the bound, it is let go and the copy refused.
        for i in 0..=(JOURNAL_MAX_BYTES >> 20) {
            journal.record(&row(&i.to_be_bytes()));
        }
        assert!(journal.rows.is_empty(), "what overflowed is let go");
        let e = journal.into_ops().unwrap_err();
        assert!(e.message().contains("copy it again"), "{e}");
        // Two copies at once, not a third.
        let mut journals = Journals::default();
        let _ = (journals.begin().unwrap(), journals.begin().unwrap());
        assert!(journals.begin().is_err());
    }
}
