//! `Store::backup` and `Store::copy_to`: a live store copied, as one
//! consistent snapshot, into an empty store of either engine — a new sled
//! directory (a backup that opens directly), or a PostgreSQL schema (a
//! store outgrowing its host). Key ids, hashes, generations and grace,
//! whitelists, owners, limits, quotas and their budgets, imported keys
//! and their lookups, usage, plugins with their cursors and dead letters,
//! and the outbox with its event numbers: everything but the change feed,
//! which belongs to one store's processes.

use std::path::Path;

use serde::Serialize;

use super::Store;
use crate::backend::copy::{self, CopyFailure};
use crate::backend::{self, Backend, StorageError};
use crate::error::{CopyError, OpenError};

/// What a copy wrote. As JSON: `{"keys", "rows", "bytes", "last_event",
/// "journaled"}`; also what a progress callback hears as it goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CopyReport {
    /// Keys the copy holds.
    pub keys: u64,
    /// Rows written, of every table.
    pub rows: u64,
    /// Bytes of those rows (keys and values, before the engine's own overhead).
    pub bytes: u64,
    /// The newest event the copy holds (0: none): the copy's next event
    /// takes the number after it, and a plugin's cursor goes on from where
    /// it was.
    pub last_event: u64,
    /// Rows of the source written while it was being read, applied (each
    /// with its last value) after its pages, so the copy holds the store
    /// as it stood at the end.
    pub journaled: u64,
}

impl From<copy::Copied> for CopyReport {
    fn from(c: copy::Copied) -> Self {
        CopyReport {
            keys: c.keys,
            rows: c.rows,
            bytes: c.bytes,
            last_event: c.last_event,
            journaled: c.journaled,
        }
    }
}

/// Whether `location` names a PostgreSQL store rather than a directory.
fn is_url(location: &Path) -> bool {
    location
        .to_str()
        .is_some_and(|l| l.starts_with("postgres://") || l.starts_with("postgresql://"))
}

impl Store {
    /// Writes a consistent snapshot of this store, taken while other
    /// processes go on verifying and writing, as a new sled store at
    /// `dest` (a directory that does not exist yet, or is empty) that
    /// opens directly with [`Store::open`]. Works from the owning process,
    /// an attached one, or on a PostgreSQL store.
    ///
    /// # Errors
    /// [`CopyError::NotEmpty`] when `dest` has anything in it (or is a
    /// PostgreSQL URL: see [`Store::copy_to`]); [`CopyError::Open`] when it
    /// cannot be created; [`CopyError::Storage`].
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<CopyReport, CopyError> {
        self.backup_with_progress(dest, &mut |_| {})
    }

    /// [`Store::backup`], telling `progress` where it stands after every page.
    ///
    /// # Errors
    /// As [`Store::backup`].
    pub fn backup_with_progress(
        &self,
        dest: impl AsRef<Path>,
        progress: &mut dyn FnMut(&CopyReport),
    ) -> Result<CopyReport, CopyError> {
        let dest = dest.as_ref();
        if is_url(dest) {
            return Err(CopyError::NotEmpty(format!(
                "{}: a backup is a sled directory; copy to PostgreSQL with copy_to (keyward store copy)",
                backend::describe(dest)
            )));
        }
        self.copy_to_with_progress(dest, progress)
    }

    /// Copies this store, as one consistent snapshot taken while other
    /// processes go on verifying and writing, into the empty store at
    /// `dest`: a sled directory (that does not exist yet, or is empty) or a
    /// PostgreSQL URL whose schema holds nothing. Key ids are kept, so
    /// every key verifies against the copy as against this store; event
    /// numbers continue; plugins do not deliver again what they had.
    ///
    /// # Errors
    /// [`CopyError::NotEmpty`] when the destination holds anything;
    /// [`CopyError::Open`] when it cannot be opened (or is this store);
    /// [`CopyError::Storage`].
    pub fn copy_to(&self, dest: impl AsRef<Path>) -> Result<CopyReport, CopyError> {
        self.copy_to_with_progress(dest, &mut |_| {})
    }

    /// [`Store::copy_to`], telling `progress` where it stands after every page.
    ///
    /// # Errors
    /// As [`Store::copy_to`].
    pub fn copy_to_with_progress(
        &self,
        dest: impl AsRef<Path>,
        progress: &mut dyn FnMut(&CopyReport),
    ) -> Result<CopyReport, CopyError> {
        let dest = dest.as_ref();
        let made_here = !is_url(dest) && {
            refuse_unless_empty_dir(dest)?;
            !dest.exists()
        };
        let copied = self.copy_into(dest, progress);
        if copied.is_err() && made_here {
            // A partial copy in a directory this call made is nobody's.
            let _ = std::fs::remove_dir_all(dest);
        }
        copied
    }

    fn copy_into(
        &self,
        dest: &Path,
        progress: &mut dyn FnMut(&CopyReport),
    ) -> Result<CopyReport, CopyError> {
        // Usage waiting in memory goes with it.
        self.engine.flush_usage()?;
        let options = super::Options::default();
        let timeouts = backend::Timeouts {
            connect: options.connect_timeout,
            statement: options.statement_timeout,
        };
        let rules = backend::HostRules {
            require_owner: true,
            ..options.host_rules()?
        };
        let opened = backend::open(dest, timeouts, rules)?;
        let copied = self.copy_onto(opened.backend.as_ref(), progress);
        let closed = match opened.backend.host() {
            Some(host) => {
                host.close();
                Ok(())
            }
            None => opened.backend.flush(),
        };
        let copied = copied.map_err(|e| match e {
            CopyFailure::NotEmpty(table) => CopyError::NotEmpty(format!(
                "{}: the destination is not empty (its {} table has rows); copy into an empty store",
                backend::describe(dest),
                format!("{table:?}").to_lowercase()
            )),
            CopyFailure::Storage(e) => CopyError::Storage(e),
        })?;
        closed?;
        Ok(copied)
    }

    fn copy_onto(
        &self,
        dest: &dyn Backend,
        progress: &mut dyn FnMut(&CopyReport),
    ) -> Result<CopyReport, CopyFailure> {
        let mut snapshot = copy::begin(self.engine.backend.as_ref(), dest)?;
        let mut done = copy::pages(&mut *snapshot, dest, &mut |c| {
            progress(&CopyReport::from(*c));
        })?;
        {
            // The snapshot ends, and the quota tokens this process holds
            // are counted, with no lease taken or given back in between.
            let _still = self.engine.leases_held_still();
            copy::finish(snapshot, dest, &mut done)?;
            self.engine.hand_over_quota(dest)?;
        }
        copy::seal(dest)?;
        let report = CopyReport::from(done);
        progress(&report);
        Ok(report)
    }
}

/// A sled destination is a directory that does not exist or is empty.
fn refuse_unless_empty_dir(dest: &Path) -> Result<(), CopyError> {
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(CopyError::NotEmpty(format!(
                    "{}: the destination directory is not empty; back up into a new directory",
                    dest.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(CopyError::NotEmpty(format!(
                "{}: the destination is a file, not a directory",
                dest.display()
            )))
        }
        Err(e) => Err(CopyError::Open(OpenError::Storage(
            StorageError::with_source(format!("cannot read {}", dest.display()), e),
        ))),
    }
}
