//! How the C library, and the Python package through it, report each
//! [`ErrorKind`]: its `kw_status` number and the Python exception class.
//! This is the table the generated files come from (`kw_status` in
//! `generated.rs` and `include/keyward.h`, the Python package's
//! `STATUS_EXCEPTIONS`); `KEYWARD_BLESS=1 cargo test -p keyward-ffi
//! generated` writes them. Numbers are grouped by kind and never change:
//! 1xx bad input, 2xx storage, 3xx plugins, 9xx internal.

use keyward::ErrorKind;

/// The kind's C status number and Python exception class (a name in
/// `keyward`); `None` for a kind this table does not know yet, which the
/// generated-files test refuses.
pub(crate) const fn row(kind: ErrorKind) -> Option<(u32, &'static str)> {
    use ErrorKind as K;
    Some(match kind {
        K::NullArgument => (100, "InvalidInput"),
        K::InvalidUtf8 => (101, "InvalidInput"),
        K::InvalidInput => (102, "InvalidInput"),
        K::InvalidKeyId => (103, "InvalidInput"),
        K::InvalidNetwork => (104, "InvalidInput"),
        K::InvalidIp => (105, "InvalidInput"),
        K::BufferTooSmall => (106, "InternalError"),
        K::NotFound => (110, "NotFound"),
        K::EntryNotFound => (111, "NotFound"),
        K::InvalidOptions => (120, "InvalidInput"),
        K::StoreLocked => (200, "StoreLocked"),
        K::Forked => (203, "StoreForked"),
        K::Storage => (201, "StorageError"),
        K::UnsupportedVersion => (202, "StorageError"),
        K::PluginInvalidManifest => (300, "InvalidInput"),
        K::PluginInvalidComponent => (301, "InvalidInput"),
        K::PluginExists => (302, "InvalidInput"),
        K::PluginNotFound => (303, "NotFound"),
        K::PluginsUnsupported => (304, "InternalError"),
        K::Internal => (900, "InternalError"),
        K::Panic => (901, "InternalError"),
        _ => return None,
    })
}
