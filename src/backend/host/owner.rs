//! The owner's side: the sled files, with a change feed written in the
//! same transaction as every change to a key record, so that attached
//! processes (and whoever owns the store next) can ask what changed since
//! a version they have seen.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::super::sled::SledBackend;
use crate::backend::{Backend, Batch, Changes, CommitError, Durability, Op, StorageError, Table};
use crate::error::OpenError;
use crate::locks::lock;

/// Feed rows kept: a process further behind than this reloads every key.
const FEED_KEEP: u64 = 100_000;

/// Feed rows listed in one answer; more than this and the reader reloads.
const FEED_LISTED: usize = 10_000;

/// Feed rows deleted in one trimming batch.
const TRIM_BATCH: usize = 10_000;

pub(super) struct Owner {
    sled: SledBackend,
    /// Serialises commits, so feed versions are handed out in order; and
    /// reads, so none sees a durable commit before its sync (see
    /// [`Owner::settled`]).
    commit_lock: Mutex<()>,
    /// The last feed version on stable storage: what readers are told, and
    /// waiters are woken when it moves. (Told sooner, a version an owner
    /// killed before its sync never wrote would be given again by its
    /// successor, and a process that had heard it would miss that change.)
    version: Mutex<u64>,
    /// The last feed version given to a commit (under `commit_lock`).
    assigned: std::sync::atomic::AtomicU64,
    changed: Condvar,
    stopping: AtomicBool,
}

fn version_key(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

fn version_of(key: &[u8]) -> Option<u64> {
    key.try_into().ok().map(u64::from_be_bytes)
}

impl Owner {
    /// Opens the sled files (the lock says who owns them) and finds where the feed stands.
    pub(super) fn open(dir: &Path, dir_mode: u32) -> Result<Owner, OpenError> {
        let sled = SledBackend::open_with_mode(dir, dir_mode)?;
        let version = last_feed_version(&sled).map_err(OpenError::Storage)?;
        Ok(Owner {
            sled,
            commit_lock: Mutex::new(()),
            version: Mutex::new(version),
            assigned: std::sync::atomic::AtomicU64::new(version),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
        })
    }

    /// The files to read, with no durable commit between being applied
    /// and being synced while the guard is held: no commit is applied
    /// meanwhile, and every one applied before is synced first. sled shows
    /// a commit to readers before it is on disk; a reader that acted on
    /// such a change (another process seeing a plugin's cursor move, or a
    /// key appear) could see it undone by a crash. Never commit while
    /// holding it.
    pub(super) fn settled(&self) -> Result<Settled<'_>, StorageError> {
        // Sync without the lock (writers go on applying, and share the
        // sync), then take it; when nothing was applied meanwhile, which
        // is usual, everything the reader can see is on disk.
        for _ in 0..3 {
            let applied = self.sled.applied();
            self.sled.sync_through(applied)?;
            let serial = lock(&self.commit_lock);
            if self.sled.applied() == applied {
                return Ok(Settled {
                    _serial: serial,
                    sled: &self.sled,
                });
            }
        }
        let serial = lock(&self.commit_lock);
        self.sled.sync_through(self.sled.applied())?;
        Ok(Settled {
            _serial: serial,
            sled: &self.sled,
        })
    }

    /// The sled files themselves, for a snapshot (which reads them as they
    /// stand and journals what is written meanwhile).
    pub(super) fn files(&self) -> &SledBackend {
        &self.sled
    }

    /// Flushes the files: every commit so far is durable after it.
    pub(super) fn flush(&self) -> Result<(), StorageError> {
        self.sled.flush()
    }

    pub(super) fn version(&self) -> u64 {
        *lock(&self.version)
    }

    /// Commits `batch` with a feed row for every key record it changes;
    /// returns the feed version after it.
    pub(super) fn commit(
        &self,
        mut batch: Batch,
        durability: Durability,
    ) -> Result<u64, CommitError> {
        let (before, after, ticket) = {
            let _serial = lock(&self.commit_lock);
            let before = self.assigned.load(Ordering::Acquire);
            let rows: Vec<Vec<u8>> = batch.followed_rows().map(<[u8]>::to_vec).collect();
            let mut after = before;
            for row in rows {
                after += 1;
                batch.put(Table::Feed, version_key(after).to_vec(), row);
            }
            let (_, ticket) = self.sled.apply(&batch)?;
            self.assigned.store(after, Ordering::Release);
            (before, after, ticket)
        };
        // Outside the lock, so concurrent writers share the sync; a change
        // to a key record is told only once it is on disk.
        if durability == Durability::Durable || after > before {
            self.sled
                .sync_through(ticket)
                .map_err(CommitError::Unflushed)?;
        }
        if after > before {
            let mut told = lock(&self.version);
            *told = (*told).max(after);
            drop(told);
            self.changed.notify_all();
        }
        Ok(after)
    }

    /// The key records changed after `seen`, from the feed.
    pub(super) fn changes_since(&self, seen: u64) -> Result<Changes, StorageError> {
        let version = self.version();
        if seen == version {
            return Ok(Changes::Rows {
                version,
                keys: Vec::new(),
            });
        }
        if seen > version {
            // A version this feed never gave (an owner that died before
            // its last change reached the disk): read everything again.
            return Ok(Changes::Reload { version });
        }
        let first = seen + 1;
        let rows = self
            .sled
            .range_from(Table::Feed, &version_key(first), FEED_LISTED + 1)?;
        let starts_at_first = rows
            .first()
            .and_then(|(k, _)| version_of(k))
            .is_some_and(|v| v == first);
        if !starts_at_first || rows.len() > FEED_LISTED {
            // Trimmed past what this reader has seen, or too much to list.
            return Ok(Changes::Reload { version });
        }
        // Rows past the told version are not on disk yet: not told either.
        let rows: Vec<_> = rows
            .into_iter()
            .take_while(|(k, _)| version_of(k).is_some_and(|v| v <= version))
            .collect();
        let last = rows
            .last()
            .and_then(|(k, _)| version_of(k))
            .unwrap_or(version);
        let mut keys: Vec<Vec<u8>> = rows.into_iter().map(|(_, id)| id).collect();
        keys.sort_unstable();
        keys.dedup();
        Ok(Changes::Rows {
            version: last.max(version),
            keys,
        })
    }

    /// Blocks until the feed passes `after` or `timeout` passes (or the
    /// owner stops); returns where the feed stands.
    pub(super) fn wait(&self, after: u64, timeout: Duration) -> u64 {
        let until = Instant::now() + timeout;
        let mut v = lock(&self.version);
        while *v <= after && !self.stopping.load(Ordering::Acquire) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            v = self
                .changed
                .wait_timeout(v, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        *v
    }

    /// Wakes every waiter: the owner is going away.
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _v = lock(&self.version);
        self.changed.notify_all();
    }

    /// Deletes feed rows older than the last [`FEED_KEEP`]; returns how many.
    pub(super) fn trim(&self) -> Result<u64, StorageError> {
        let version = self.version();
        let Some(floor) = version.checked_sub(FEED_KEEP) else {
            return Ok(0);
        };
        let old = self.sled.range_from(Table::Feed, &[], TRIM_BATCH)?;
        let mut batch = Batch::default();
        for (k, _) in old {
            if version_of(&k).is_some_and(|v| v < floor) {
                batch.ops.push(Op::Delete {
                    table: Table::Feed,
                    key: k,
                });
            }
        }
        let n = batch.ops.len() as u64;
        if n > 0 {
            self.sled
                .commit(batch, Durability::Lazy)
                .map_err(|e| match e {
                    CommitError::Storage(e) | CommitError::Unflushed(e) => e,
                    CommitError::Conflict => StorageError::new("feed trim conflicted"),
                })?;
        }
        Ok(n)
    }
}

/// An owner's sled files, held for a snapshot that outlives the call
/// that began it.
pub(super) struct OwnerFiles(pub Arc<Owner>);

impl std::ops::Deref for OwnerFiles {
    type Target = SledBackend;
    fn deref(&self) -> &SledBackend {
        self.0.files()
    }
}

/// The sled files, read while no durable commit is on its way to the disk.
pub(super) struct Settled<'a> {
    _serial: std::sync::MutexGuard<'a, ()>,
    sled: &'a SledBackend,
}

impl std::ops::Deref for Settled<'_> {
    type Target = SledBackend;
    fn deref(&self) -> &SledBackend {
        self.sled
    }
}

fn last_feed_version(sled: &SledBackend) -> Result<u64, StorageError> {
    Ok(sled
        .last(Table::Feed)?
        .and_then(|k| version_of(&k))
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Another process reading through the owner (or the owner's own
    /// dispatcher) must not see a durable commit before it is synced: a
    /// crash in between would take back what it acted on (a plugin's
    /// cursor, and a successor delivering again).
    #[test]
    fn no_read_sees_a_durable_commit_before_its_sync() {
        let dir = tempfile::tempdir().unwrap();
        let owner = Arc::new(Owner::open(&dir.path().join("s"), 0o700).unwrap());
        // Set once the commit's sync is let go.
        let synced = Arc::new(AtomicBool::new(false));
        let (entered_tx, entered) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        *lock(&owner.sled.before_sync) = Some(Box::new(move || {
            let _ = entered_tx.send(());
            let _ = lock(&released).recv();
        }));
        let committer = {
            let owner = Arc::clone(&owner);
            std::thread::spawn(move || {
                let mut batch = Batch::default();
                batch.put(Table::PluginState, b"crm".to_vec(), b"cursor 1".to_vec());
                owner.commit(batch, Durability::Durable).unwrap();
            })
        };
        entered.recv().unwrap();
        // Applied, not yet synced: a reader now.
        let reader = {
            let (owner, synced) = (Arc::clone(&owner), Arc::clone(&synced));
            std::thread::spawn(move || {
                let value = owner
                    .settled()
                    .unwrap()
                    .get(Table::PluginState, b"crm")
                    .unwrap();
                (value, synced.load(Ordering::Acquire))
            })
        };
        // Give a reader that does not wait the time to read (a fixed
        // reader waits here either way).
        let until = std::time::Instant::now() + Duration::from_millis(300);
        while !reader.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        // From here on the sync may run.
        synced.store(true, Ordering::Release);
        release.send(()).unwrap();
        committer.join().unwrap();
        let (value, synced_when_read) = reader.join().unwrap();
        assert!(
            value.is_none() || synced_when_read,
            "a reader saw the commit before its sync"
        );
    }
}
