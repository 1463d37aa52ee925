//! Storage errors, converted from each storage library's own in exactly
//! one place (its backend) and keeping it as their source.

use std::fmt;
use std::sync::Arc;

type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// The storage layer failed: I/O, corruption, or an unreachable server.
/// [`source`](std::error::Error::source) gives the underlying error when
/// there is one (a sled or PostgreSQL error, an I/O error, a JSON error).
#[derive(Clone)]
pub struct StorageError {
    message: String,
    source: Option<Source>,
}

/// Storage errors made in this process so far (every store's).
static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many storage errors this process has met.
pub(crate) fn made() -> u64 {
    MADE.load(std::sync::atomic::Ordering::Relaxed)
}

impl StorageError {
    /// A failure with no underlying error (for code that stores or
    /// checks keyward's data outside this crate, and its tests).
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        StorageError {
            message: message.into(),
            source: None,
        }
    }

    /// What failed, without the "storage error" heading.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// `context` failed because of `source`; the message says both.
    pub(crate) fn with_source(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let context = context.into();
        MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        StorageError {
            message: format!("{context}: {}", full_text(&source)),
            source: Some(Arc::new(source)),
        }
    }
}

/// An error and its chain of causes on one line ("db error" alone says little).
fn full_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

impl StorageError {
    /// How the bindings report it: always [`ErrorKind::Storage`](crate::ErrorKind::Storage).
    #[must_use]
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::Storage
    }
}

impl fmt::Debug for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageError")
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage error: {}", self.message)
    }
}

impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for StorageError {}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A batch was not committed.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// An `Expect` did not hold: another writer got there first. Nothing was written.
    Conflict,
    /// The storage layer failed; nothing was written.
    Storage(StorageError),
    /// The batch applied (this store's readers see it) but could not be
    /// made durable: the caller must act on it as written, and report the
    /// failure.
    Unflushed(StorageError),
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommitError::Conflict => {
                f.write_str("another writer changed the same record first; nothing was written")
            }
            CommitError::Storage(e) => e.fmt(f),
            CommitError::Unflushed(e) => write!(f, "written but not made durable: {e}"),
        }
    }
}

impl std::error::Error for CommitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CommitError::Conflict => None,
            CommitError::Storage(e) | CommitError::Unflushed(e) => Some(e),
        }
    }
}

impl From<StorageError> for CommitError {
    fn from(e: StorageError) -> Self {
        CommitError::Storage(e)
    }
}

/// Where a conflict cannot be retried, it is a storage failure that says so.
impl From<CommitError> for StorageError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Conflict => StorageError::with_source("commit refused", e),
            CommitError::Storage(s) | CommitError::Unflushed(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_cause_is_kept_and_told() {
        let io = std::io::Error::other("disk on fire");
        let e = StorageError::with_source("writing the outbox", io);
        assert_eq!(
            e.to_string(),
            "storage error: writing the outbox: disk on fire"
        );
        assert_eq!(e.source().unwrap().to_string(), "disk on fire");
    }

    #[test]
    fn a_conflict_reads_as_one() {
        let e = StorageError::from(CommitError::Conflict);
        assert!(e.to_string().contains("another writer"), "{e}");
        assert!(e.source().is_some());
    }
}
