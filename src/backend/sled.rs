//! The default backend: one sled tree, one process.
//!
//! Every table lives in the one tree under a one-byte table tag, so a batch
//! touching several tables is a single-tree transaction, atomic on disk.
//! The directory is 0700 and its files 0600: the store holds hashes and
//! usage that are nobody else's business.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::copy::{Journals, PAGE_BYTES, PAGE_ROWS, Snapshot};
use super::{
    Backend, Batch, Changes, CommitError, Durability, KvPairs, Op, RowsFrom, StorageError, Table,
    Visit,
};
use crate::error::OpenError;

const SLED_CACHE_BYTES: u64 = 16 * 1024 * 1024;

pub(crate) struct SledBackend {
    /// sled's descriptors, kept from forked children (the `db` file's lock
    /// says who owns the store). First, so it is released before they close.
    _parent_only: crate::fork::FilesUnder,
    dir: PathBuf,
    /// The store directory's mode: 0700, or 0750 when a group may attach.
    dir_mode: u32,
    db: sled::Db,
    tree: sled::Tree,
    /// Serialises commits, so appended sequence numbers become visible in order.
    commit_lock: Mutex<()>,
    next_seq: AtomicU64,
    version: AtomicU64,
    /// Group commit: what is applied and what is on stable storage.
    sync: GroupSync,
    /// What every open snapshot has yet to see (written under `commit_lock`).
    journals: Mutex<Journals>,
    /// Tests: run between applying a durable commit and syncing it.
    #[cfg(test)]
    pub(crate) before_sync: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

fn storage(e: sled::Error) -> StorageError {
    StorageError::with_source("sled", e)
}

/// The store directory `top_mode`, the directories in it 0700, files
/// 0600. sled creates files with the process umask, so this runs after
/// open, on every flush and on close.
fn secure_tree(dir: &Path, top_mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(top_mode));
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            secure_tree(&entry.path(), 0o700);
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
            OpenError::Storage(StorageError::with_source(
                format!("cannot create {}", path.display()),
                e,
            ))
        })
}

fn full_key(table: Table, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(table.tag());
    k.extend_from_slice(key);
    k
}

impl SledBackend {
    /// Opens the sled database in `dir`, whose own mode is `dir_mode`.
    pub(crate) fn open_with_mode(dir: &Path, dir_mode: u32) -> Result<Self, OpenError> {
        create_private_dir(dir)?;
        // The engine keeps what verification needs in its own index, so
        // sled's page cache only serves mutations and usage: keep it small.
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES);
        // sled's last background writes of a store this process just
        // closed may still hold its lock for a moment: wait for those
        // (briefly), never for another process.
        let reopen_until = recently_closed(dir).map(|at| at + REOPEN_GRACE);
        let ahead = read_ahead(dir);
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                    if reopen_until.is_some_and(|until| Instant::now() < until) {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    return Err(OpenError::StoreLocked {
                        path: PathBuf::from(dir),
                    });
                }
                Err(e) => return Err(OpenError::Storage(storage(e))),
            }
        };
        let tree = db
            .open_tree("keyward")
            .map_err(|e| OpenError::Storage(storage(e)))?;
        let last_event = tree
            .scan_prefix([Table::Events.tag()])
            .next_back()
            .transpose()
            .map_err(|e| OpenError::Storage(storage(e)))?
            .and_then(|(k, _)| {
                k.get(1..9)
                    .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            });
        secure_tree(dir, dir_mode);
        // What sled created as it opened (its log, its configuration, a
        // snapshot, the blob directory) is named durably.
        let sync = GroupSync::new(SyncFiles::open(dir).map_err(|e| {
            OpenError::Storage(StorageError::with_source(
                format!("cannot sync {}", dir.display()),
                e,
            ))
        })?);
        // The read-ahead's descriptor is not sled's: its number stays taken
        // (by `ahead`) until sled's are found.
        let parent_only = crate::fork::FilesUnder::find(
            dir,
            ahead
                .as_ref()
                .map(|f| std::os::fd::AsRawFd::as_raw_fd(&**f)),
        );
        drop(ahead);
        Ok(SledBackend {
            _parent_only: parent_only,
            dir: dir.to_path_buf(),
            dir_mode,
            db,
            tree,
            commit_lock: Mutex::new(()),
            next_seq: AtomicU64::new(last_event.map_or(1, |s| s + 1)),
            version: AtomicU64::new(0),
            sync,
            journals: Mutex::new(Journals::default()),
            #[cfg(test)]
            before_sync: Mutex::new(None),
        })
    }
}

impl SledBackend {
    /// The key of the last entry of `table`.
    pub(crate) fn last(&self, table: Table) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .tree
            .scan_prefix([table.tag()])
            .next_back()
            .transpose()
            .map_err(storage)?
            .map(|(k, _)| k[1..].to_vec()))
    }
}

impl SledBackend {
    /// Up to `limit` entries of `table` from `start`, in key order, ending
    /// early once they hold `max_bytes` (never before the first): the page
    /// and whether it ended for its size.
    pub(crate) fn range_bounded(
        &self,
        table: Table,
        start: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> Result<(KvPairs, bool), StorageError> {
        let end = [table.tag() + 1];
        let mut rows = Vec::new();
        let mut bytes = 0usize;
        for row in self
            .tree
            .range(full_key(table, start)..end.to_vec())
            .take(limit)
        {
            if bytes >= max_bytes {
                return Ok((rows, true));
            }
            let (k, v) = row.map_err(storage)?;
            bytes += k.len() + v.len();
            rows.push((k[1..].to_vec(), v.to_vec()));
        }
        Ok((rows, false))
    }
}

impl SledBackend {
    /// Applies `batch` atomically, without waiting for the disk: its
    /// version, and its ticket for [`SledBackend::sync_through`]. Commits
    /// are applied one at a time; syncs are shared (group commit).
    pub(crate) fn apply(&self, batch: &Batch) -> Result<(u64, u64), CommitError> {
        let _serial = self
            .commit_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first_seq = self.next_seq.load(Ordering::Acquire);
        let appended = batch
            .ops
            .iter()
            .filter(|op| matches!(op, Op::Append { .. }))
            .count() as u64;
        let result = self.tree.transaction(|tx| {
            let mut seq = first_seq;
            for op in &batch.ops {
                match op {
                    Op::Put { table, key, value } => {
                        tx.insert(full_key(*table, key), value.as_slice())?;
                    }
                    Op::Delete { table, key } => {
                        tx.remove(full_key(*table, key))?;
                    }
                    Op::Expect {
                        table,
                        key,
                        expected,
                    } => {
                        let current = tx.get(full_key(*table, key))?;
                        if current.as_deref() != expected.as_deref() {
                            return Err(ConflictableTransactionError::Abort(()));
                        }
                    }
                    Op::Append { table, value } => {
                        tx.insert(full_key(*table, &seq.to_be_bytes()), value.as_slice())?;
                        seq += 1;
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(())) => return Err(CommitError::Conflict),
            Err(TransactionError::Storage(e)) => return Err(CommitError::Storage(storage(e))),
        }
        self.next_seq.store(first_seq + appended, Ordering::Release);
        crate::locks::lock(&self.journals).record(batch, first_seq);
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        let ticket = {
            let mut st = crate::locks::lock(&self.sync.state);
            st.applied += 1;
            st.applied
        };
        Ok((version, ticket))
    }

    /// The ticket of the last commit applied: syncing through it makes
    /// everything applied so far durable.
    pub(crate) fn applied(&self) -> u64 {
        crate::locks::lock(&self.sync.state).applied
    }

    /// Returns once the commit with `ticket`, and every one applied
    /// before it, is on stable storage. One caller syncs for all who wait
    /// meanwhile: concurrent writers share each sync.
    pub(crate) fn sync_through(&self, ticket: u64) -> Result<(), StorageError> {
        let mut st = crate::locks::lock(&self.sync.state);
        loop {
            if st.synced >= ticket {
                return Ok(());
            }
            if st.running {
                st = self
                    .sync
                    .done
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            st.running = true;
            let through = st.applied;
            drop(st);
            #[cfg(test)]
            if let Some(hook) = crate::locks::lock(&self.before_sync).as_ref() {
                hook();
            }
            let synced = self.to_disk();
            st = crate::locks::lock(&self.sync.state);
            st.running = false;
            if synced.is_ok() {
                st.synced = st.synced.max(through);
            }
            self.sync.done.notify_all();
            // A failure is the syncing caller's to report; the others try again.
            synced?;
        }
    }

    /// Everything sled has been given, on stable storage: sled writes its
    /// buffers and calls `sync_file_range`, which survives the death of
    /// this process but not a power cut (the file's new size and the
    /// drive's cache stay volatile); then `fdatasync` of the log and of
    /// any new blob file (sled writes records over ~128 KiB as files of
    /// their own), and `fsync` of the blob directory that names them.
    fn to_disk(&self) -> Result<(), StorageError> {
        self.db.flush().map_err(storage)?;
        self.sync
            .files
            .sync()
            .map_err(|e| StorageError::with_source("syncing the store's files", e))
    }
}

impl SledBackend {
    /// Begins a journal of every write applied from now on: a snapshot's
    /// (see `backend::copy`). Its number.
    pub(crate) fn begin_journal(&self) -> Result<u64, StorageError> {
        let _serial = crate::locks::lock(&self.commit_lock);
        crate::locks::lock(&self.journals).begin()
    }

    /// Ends journal `id`: the writes applied since it began, in order,
    /// every one of them on stable storage.
    pub(crate) fn end_journal(&self, id: u64) -> Result<Vec<Op>, StorageError> {
        let (journal, through) = {
            let _serial = crate::locks::lock(&self.commit_lock);
            let journal = crate::locks::lock(&self.journals).end(id);
            (journal, self.applied())
        };
        let journal = journal.ok_or_else(|| StorageError::new("no such snapshot"))?;
        self.sync_through(through)?;
        journal.into_ops()
    }

    /// Drops journal `id` (a snapshot given up).
    pub(crate) fn abandon_journal(&self, id: u64) {
        crate::locks::lock(&self.journals).end(id);
    }

    /// One page of a snapshot's read: rows as they stand now.
    pub(crate) fn snapshot_page(
        &self,
        table: Table,
        start: &[u8],
    ) -> Result<KvPairs, StorageError> {
        Ok(self.range_bounded(table, start, PAGE_ROWS, PAGE_BYTES)?.0)
    }

    /// The next append takes the number after the newest event.
    fn resume_seq(&self) -> Result<(), StorageError> {
        let _serial = crate::locks::lock(&self.commit_lock);
        let last = self
            .last(Table::Events)?
            .map_or(0, |k| super::copy::seq_of(&k));
        self.next_seq.fetch_max(last + 1, Ordering::AcqRel);
        Ok(())
    }
}

/// A snapshot of a sled store: its pages read as they stand, and the
/// journal of what was written meanwhile (see `backend::copy`).
pub(crate) struct Journaled<S: std::ops::Deref<Target = SledBackend>> {
    sled: S,
    id: u64,
    ended: bool,
}

impl<S: std::ops::Deref<Target = SledBackend>> Journaled<S> {
    pub(crate) fn begin(sled: S) -> Result<Self, StorageError> {
        let id = sled.begin_journal()?;
        Ok(Journaled {
            sled,
            id,
            ended: false,
        })
    }
}

impl<S: std::ops::Deref<Target = SledBackend>> Snapshot for Journaled<S> {
    fn page(&mut self, table: Table, start: &[u8]) -> Result<KvPairs, StorageError> {
        self.sled.snapshot_page(table, start)
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<Op>, StorageError> {
        self.ended = true;
        self.sled.end_journal(self.id)
    }
}

impl<S: std::ops::Deref<Target = SledBackend>> Drop for Journaled<S> {
    fn drop(&mut self) {
        if !self.ended {
            self.sled.abandon_journal(self.id);
        }
    }
}

impl Backend for SledBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.tree
            .get(full_key(table, key))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(storage)
    }

    fn scan(&self, table: Table, prefix: &[u8]) -> Result<KvPairs, StorageError> {
        self.tree
            .scan_prefix(full_key(table, prefix))
            .map(|r| {
                r.map(|(k, v)| (k[1..].to_vec(), v.to_vec()))
                    .map_err(storage)
            })
            .collect()
    }

    fn visit_from(&self, rows: RowsFrom<'_>, each: Visit<'_>) -> Result<usize, StorageError> {
        let RowsFrom {
            table,
            start,
            limit,
        } = rows;
        let end = [table.tag() + 1];
        let mut n = 0;
        for row in self
            .tree
            .range(full_key(table, start)..end.to_vec())
            .take(limit)
        {
            let (k, v) = row.map_err(storage)?;
            each(&k[1..], &v);
            n += 1;
        }
        Ok(n)
    }

    fn commit(&self, batch: Batch, durability: Durability) -> Result<u64, CommitError> {
        let (version, ticket) = self.apply(&batch)?;
        if durability == Durability::Durable {
            // Applied already: readers of this process see it whether or
            // not it is on disk (the owner keeps other readers from it).
            self.sync_through(ticket).map_err(CommitError::Unflushed)?;
        }
        Ok(version)
    }

    fn flush(&self) -> Result<(), StorageError> {
        let flushed = self.sync_through(self.applied());
        secure_tree(&self.dir, self.dir_mode);
        flushed
    }

    fn changes_since(&self, _seen: u64) -> Result<Changes, StorageError> {
        // One process per sled store: nobody else writes, so nothing to learn.
        Ok(Changes::Rows {
            version: self.version.load(Ordering::Acquire),
            keys: Vec::new(),
        })
    }

    fn version(&self) -> Result<u64, StorageError> {
        Ok(self.version.load(Ordering::Acquire))
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StorageError> {
        Ok(Box::new(Journaled::begin(self)?))
    }

    fn resume_sequences(&self) -> Result<(), StorageError> {
        self.resume_seq()
    }
}

impl Drop for SledBackend {
    fn drop(&mut self) {
        let _ = self.flush();
        closed(&self.dir);
    }
}

/// Group commit: commits are numbered as they are applied; a sync makes
/// every one applied before it started durable.
struct GroupSync {
    state: Mutex<SyncState>,
    done: std::sync::Condvar,
    files: SyncFiles,
}

#[derive(Default)]
struct SyncState {
    /// Commits applied, and how many of them are on stable storage.
    applied: u64,
    synced: u64,
    /// A sync is under way.
    running: bool,
}

impl GroupSync {
    fn new(files: SyncFiles) -> Self {
        GroupSync {
            state: Mutex::new(SyncState::default()),
            done: std::sync::Condvar::new(),
            files,
        }
    }
}

/// The files sled writes, for `fdatasync`: its log (a descriptor of our
/// own; syncing any descriptor of a file syncs the file), the blob
/// directory and the blobs already synced.
struct SyncFiles {
    log: std::fs::File,
    blobs: PathBuf,
    /// The blob directory's modification time at the last sync, and the
    /// blobs synced: a new blob is synced once, with the directory.
    seen: Mutex<(
        Option<std::time::SystemTime>,
        std::collections::HashSet<std::ffi::OsString>,
    )>,
}

impl SyncFiles {
    /// Opens the log and makes the store's directory entries durable.
    fn open(dir: &Path) -> std::io::Result<Self> {
        let log = std::fs::File::open(dir.join("db"))?;
        log.sync_all()?;
        for path in [dir.join("conf")] {
            if let Ok(f) = std::fs::File::open(path) {
                f.sync_all()?;
            }
        }
        sync_dir(dir)?;
        // And the store directory's own name, made when it was created.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let files = SyncFiles {
            log,
            blobs: dir.join("blobs"),
            seen: Mutex::new((None, std::collections::HashSet::new())),
        };
        files.sync_blobs()?;
        Ok(files)
    }

    fn sync(&self) -> std::io::Result<()> {
        self.log.sync_data()?;
        self.sync_blobs()
    }

    /// Blobs written since the last look, and the directory naming them.
    fn sync_blobs(&self) -> std::io::Result<()> {
        let mut seen = crate::locks::lock(&self.seen);
        let modified = match std::fs::metadata(&self.blobs) {
            Ok(m) => m.modified().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if modified.is_some() && modified == seen.0 {
            return Ok(());
        }
        let mut present = std::collections::HashSet::new();
        for entry in std::fs::read_dir(&self.blobs)? {
            let entry = entry?;
            let name = entry.file_name();
            if !seen.1.contains(&name) {
                match std::fs::File::open(entry.path()) {
                    Ok(f) => f.sync_data()?,
                    // Collected by sled meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            present.insert(name);
        }
        sync_dir(&self.blobs)?;
        *seen = (modified, present);
        Ok(())
    }
}

/// `fsync` of a directory: the names in it are durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Asks the kernel to read the store's log into the page cache, in the
/// background. The full load that follows an open reads key records
/// scattered over the whole log; from a cold cache those scattered reads
/// cost far more than one sequential read of the file, which this starts
/// while sled recovers. Only when the file fits easily in memory (what it
/// reads would otherwise push out what it read first). Returns the file,
/// whose descriptor the opener keeps until it has found sled's own.
fn read_ahead(dir: &Path) -> Option<std::sync::Arc<std::fs::File>> {
    use std::os::fd::AsRawFd;
    /// Pages asked for at once.
    const CHUNK: i64 = 32 << 20;
    let file = std::sync::Arc::new(std::fs::File::open(dir.join("db")).ok()?);
    let len = i64::try_from(file.metadata().ok()?.len()).ok()?;
    if len == 0 || u64::try_from(len).ok()? > available_memory()? / 2 {
        return None;
    }
    let reading = std::sync::Arc::clone(&file);
    std::thread::Builder::new()
        .name("keyward-readahead".into())
        .spawn(move || {
            let mut at = 0;
            while at < len {
                // SAFETY: a hint about the pages of an open file.
                unsafe {
                    libc::posix_fadvise(reading.as_raw_fd(), at, CHUNK, libc::POSIX_FADV_WILLNEED);
                }
                at += CHUNK;
            }
        })
        .ok()?;
    Some(file)
}

/// Memory the system can give without swapping (`MemAvailable`), bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// How long after this process closed a store its own reopen may wait for
/// sled's last background writes to let go of the lock.
const REOPEN_GRACE: Duration = Duration::from_secs(2);

fn closed_stores() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Instant>> {
    static CLOSED: OnceLock<Mutex<HashMap<PathBuf, Instant>>> = OnceLock::new();
    crate::locks::lock(CLOSED.get_or_init(Mutex::default))
}

fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn closed(dir: &Path) {
    let mut map = closed_stores();
    map.retain(|_, at| at.elapsed() < REOPEN_GRACE);
    map.insert(canonical(dir), Instant::now());
}

fn recently_closed(dir: &Path) -> Option<Instant> {
    closed_stores()
        .get(&canonical(dir))
        .copied()
        .filter(|at| at.elapsed() < REOPEN_GRACE)
}
