//! Errors: one enum per kind of operation, all converting into [`Error`],
//! and each telling its [`ErrorKind`] (how every binding reports it).

mod kind;
mod storage;

use std::fmt;
use std::path::PathBuf;

pub use self::kind::ErrorKind;
pub(crate) use self::storage::CommitError;
pub use self::storage::StorageError;
pub(crate) use self::storage::made as storage_errors;
use crate::key::KeyId;

/// Opening a store failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another handle in this one) holds the store.
    StoreLocked {
        /// The store that is held.
        path: PathBuf,
    },
    /// An option is out of range, or conflicts with the existing store.
    InvalidOptions(String),
    /// The store was written by a newer keyward with a format this one cannot read.
    UnsupportedVersion(u32),
    /// The storage layer failed.
    Storage(StorageError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::StoreLocked { path } => write!(
                f,
                "store {} is locked: another process holds it open",
                path.display()
            ),
            OpenError::InvalidOptions(m) => write!(f, "invalid options: {m}"),
            OpenError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "store format version {v} is newer than this keyward supports"
                )
            }
            OpenError::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Storage(e) => Some(e),
            _ => None,
        }
    }
}

impl OpenError {
    /// How the bindings report it.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            OpenError::StoreLocked { .. } => ErrorKind::StoreLocked,
            OpenError::InvalidOptions(_) => ErrorKind::InvalidOptions,
            OpenError::UnsupportedVersion(_) => ErrorKind::UnsupportedVersion,
            OpenError::Storage(_) => ErrorKind::Storage,
        }
    }
}

/// A key operation (create, regenerate, delete, update, usage) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// No key has this id (or it was deleted).
    NotFound(KeyId),
    /// A name, metadata, expiry or grace value was rejected; nothing was changed.
    InvalidInput(String),
    /// The storage layer failed; nothing was changed.
    Storage(StorageError),
    /// An internal failure (hashing); nothing was changed.
    Internal(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NotFound(id) => write!(f, "no key with id {id}"),
            KeyError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            KeyError::Storage(e) => e.fmt(f),
            KeyError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Storage(e) => Some(e),
            _ => None,
        }
    }
}

impl KeyError {
    /// How the bindings report it.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            KeyError::NotFound(_) => ErrorKind::NotFound,
            KeyError::InvalidInput(_) => ErrorKind::InvalidInput,
            KeyError::Storage(_) => ErrorKind::Storage,
            KeyError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<StorageError> for KeyError {
    fn from(e: StorageError) -> Self {
        KeyError::Storage(e)
    }
}

/// A whitelist operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum WhitelistError {
    /// No key has this id.
    KeyNotFound(KeyId),
    /// The key has no whitelist entry with this id.
    EntryNotFound {
        /// The key whose whitelist was searched.
        key_id: KeyId,
        /// The entry id that was not there.
        entry_id: String,
    },
    /// The address or network was rejected (syntax, host bits set in a CIDR).
    InvalidNetwork(String),
    /// A name was rejected, or the whitelist is full; nothing was changed.
    InvalidInput(String),
    /// The storage layer failed; nothing was changed.
    Storage(StorageError),
}

impl fmt::Display for WhitelistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhitelistError::KeyNotFound(id) => write!(f, "no key with id {id}"),
            WhitelistError::EntryNotFound { key_id, entry_id } => {
                write!(f, "key {key_id} has no whitelist entry {entry_id:?}")
            }
            WhitelistError::InvalidNetwork(m) => write!(f, "invalid network: {m}"),
            WhitelistError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            WhitelistError::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for WhitelistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WhitelistError::Storage(e) => Some(e),
            _ => None,
        }
    }
}

impl WhitelistError {
    /// How the bindings report it.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            WhitelistError::KeyNotFound(_) => ErrorKind::NotFound,
            WhitelistError::EntryNotFound { .. } => ErrorKind::EntryNotFound,
            WhitelistError::InvalidNetwork(_) => ErrorKind::InvalidNetwork,
            WhitelistError::InvalidInput(_) => ErrorKind::InvalidInput,
            WhitelistError::Storage(_) => ErrorKind::Storage,
        }
    }
}

impl From<StorageError> for WhitelistError {
    fn from(e: StorageError) -> Self {
        WhitelistError::Storage(e)
    }
}

impl From<KeyError> for WhitelistError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::NotFound(id) => WhitelistError::KeyNotFound(id),
            KeyError::InvalidInput(m) => WhitelistError::InvalidInput(m),
            KeyError::Storage(s) => WhitelistError::Storage(s),
            KeyError::Internal(m) => WhitelistError::Storage(StorageError::new(m)),
        }
    }
}

/// A backup or copy failed. Nothing in the source changed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CopyError {
    /// The destination is not empty (a directory with files in it, a
    /// store with rows): nothing was written to it.
    NotEmpty(String),
    /// The destination could not be opened or created.
    Open(OpenError),
    /// Reading the source or writing the destination failed; the
    /// destination holds a partial copy and should be removed.
    Storage(StorageError),
}

impl CopyError {
    /// How the bindings report it.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            CopyError::NotEmpty(_) => ErrorKind::InvalidInput,
            CopyError::Open(e) => e.kind(),
            CopyError::Storage(_) => ErrorKind::Storage,
        }
    }
}

impl fmt::Display for CopyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyError::NotEmpty(m) => f.write_str(m),
            CopyError::Open(e) => e.fmt(f),
            CopyError::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CopyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CopyError::NotEmpty(_) => None,
            CopyError::Open(e) => Some(e),
            CopyError::Storage(e) => Some(e),
        }
    }
}

impl From<StorageError> for CopyError {
    fn from(e: StorageError) -> Self {
        CopyError::Storage(e)
    }
}

impl From<OpenError> for CopyError {
    fn from(e: OpenError) -> Self {
        CopyError::Open(e)
    }
}

/// Any keyward error.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// From [`Store::open`](crate::Store::open).
    Open(OpenError),
    /// From a key operation.
    Key(KeyError),
    /// From a whitelist operation.
    Whitelist(WhitelistError),
    /// From a backup or a copy.
    Copy(CopyError),
}

impl Error {
    /// How the bindings report it.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Open(e) => e.kind(),
            Error::Key(e) => e.kind(),
            Error::Whitelist(e) => e.kind(),
            Error::Copy(e) => e.kind(),
        }
    }

    /// Whether the error means "no such key or entry".
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Key(KeyError::NotFound(_))
                | Error::Whitelist(
                    WhitelistError::KeyNotFound(_) | WhitelistError::EntryNotFound { .. }
                )
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open(e) => e.fmt(f),
            Error::Key(e) => e.fmt(f),
            Error::Whitelist(e) => e.fmt(f),
            Error::Copy(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Open(e) => Some(e),
            Error::Key(e) => Some(e),
            Error::Whitelist(e) => Some(e),
            Error::Copy(e) => Some(e),
        }
    }
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Self {
        Error::Open(e)
    }
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Self {
        Error::Key(e)
    }
}

impl From<WhitelistError> for Error {
    fn from(e: WhitelistError) -> Self {
        Error::Whitelist(e)
    }
}

impl From<CopyError> for Error {
    fn from(e: CopyError) -> Self {
        Error::Copy(e)
    }
}
