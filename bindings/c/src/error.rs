//! Failures across the boundary: each becomes a `kw_status` and the
//! calling thread's last error message; a panic becomes
//! `KW_STATUS_PANIC`, never an abort of the host process.

use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::generated::kw_status;
use keyward::InvalidKeyId;
use keyward::{KeyError, OpenError, StorageError, WhitelistError};

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A failed call: its status and message.
pub(crate) struct Fail {
    pub status: kw_status,
    pub message: String,
}

pub(crate) fn fail(status: kw_status, message: impl Into<String>) -> Fail {
    Fail {
        status,
        message: message.into(),
    }
}

/// Every error type of the engine becomes its kind's status and its message.
macro_rules! fail_from {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for Fail {
            fn from(e: $error) -> Self {
                fail(kw_status::from(e.kind()), e.to_string())
            }
        }
    )*};
}

fail_from!(
    KeyError,
    WhitelistError,
    OpenError,
    StorageError,
    InvalidKeyId,
    keyward::CopyError
);
#[cfg(feature = "plugins")]
fail_from!(keyward::PluginError);

/// The panic boundary every exported function runs in: errors become a
/// status plus this thread's last error message; a panic becomes
/// `KW_STATUS_PANIC`.
pub(crate) fn boundary(body: impl FnOnce() -> Result<(), Fail>) -> kw_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => kw_status::KW_STATUS_OK,
        Ok(Err(f)) => {
            set_last_error(f.message);
            f.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(format!("internal panic: {what}"));
            kw_status::KW_STATUS_PANIC
        }
    }
}

fn set_last_error(message: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Copies the calling thread's last error message into `buf` (truncated to
/// `buf_len - 1` bytes and NUL-terminated; nothing is written when `buf`
/// is NULL or `buf_len` is 0) and returns the message's full length in
/// bytes, without the NUL. The message belongs to the last failed call on
/// this thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_last_error_message(buf: *mut c_char, buf_len: usize) -> usize {
    LAST_ERROR.with(|e| {
        let msg = e.borrow();
        if !buf.is_null() && buf_len > 0 {
            let mut n = msg.len().min(buf_len - 1);
            while !msg.is_char_boundary(n) {
                n -= 1;
            }
            // SAFETY: the caller promises `buf_len` writable bytes at `buf`.
            unsafe {
                std::ptr::copy_nonoverlapping(msg.as_ptr().cast::<c_char>(), buf, n);
                *buf.add(n) = 0;
            }
        }
        msg.len()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;
    use keyward::ErrorKind;
    use keyward::KeyId;

    /// One value of every variant of every error enum, with the variant's
    /// index and the enum's count of variants (the enums are
    /// `#[non_exhaustive]`: a new variant fails the test until it is here).
    fn every_error() -> Vec<(&'static str, usize, usize, Fail, ErrorKind)> {
        let id: KeyId = "AAAAAAAAAAAA".parse().unwrap();
        let storage = || StorageError::new("disk");
        let mut out = Vec::new();
        let mut add = |family: &'static str, index: usize, kind: ErrorKind, fail: Fail, count| {
            out.push((family, index, count, fail, kind));
        };
        for e in [
            OpenError::StoreLocked { path: "x".into() },
            OpenError::InvalidOptions("x".into()),
            OpenError::UnsupportedVersion(9),
            OpenError::Storage(storage()),
        ] {
            let i = match &e {
                OpenError::StoreLocked { .. } => 0,
                OpenError::InvalidOptions(_) => 1,
                OpenError::UnsupportedVersion(_) => 2,
                OpenError::Storage(_) => 3,
                _ => unreachable!("a new OpenError: give it a value here"),
            };
            add("OpenError", i, e.kind(), e.into(), 4);
        }
        for e in [
            KeyError::NotFound(id),
            KeyError::InvalidInput("x".into()),
            KeyError::Storage(storage()),
            KeyError::Internal("x".into()),
        ] {
            let i = match &e {
                KeyError::NotFound(_) => 0,
                KeyError::InvalidInput(_) => 1,
                KeyError::Storage(_) => 2,
                KeyError::Internal(_) => 3,
                _ => unreachable!("a new KeyError: give it a value here"),
            };
            add("KeyError", i, e.kind(), e.into(), 4);
        }
        for e in [
            WhitelistError::KeyNotFound(id),
            WhitelistError::EntryNotFound {
                key_id: id,
                entry_id: "x".into(),
            },
            WhitelistError::InvalidNetwork("x".into()),
            WhitelistError::InvalidInput("x".into()),
            WhitelistError::Storage(storage()),
        ] {
            let i = match &e {
                WhitelistError::KeyNotFound(_) => 0,
                WhitelistError::EntryNotFound { .. } => 1,
                WhitelistError::InvalidNetwork(_) => 2,
                WhitelistError::InvalidInput(_) => 3,
                WhitelistError::Storage(_) => 4,
                _ => unreachable!("a new WhitelistError: give it a value here"),
            };
            add("WhitelistError", i, e.kind(), e.into(), 5);
        }
        let e = storage();
        add("StorageError", 0, e.kind(), e.into(), 1);
        let e = "x".parse::<KeyId>().unwrap_err();
        add("InvalidKeyId", 0, e.kind(), e.into(), 1);
        #[cfg(feature = "plugins")]
        {
            use keyward::PluginError as P;
            for e in [
                P::InvalidManifest("x".into()),
                P::InvalidComponent("x".into()),
                P::AlreadyInstalled("x".into()),
                P::NotFound("x".into()),
                P::Unsupported,
                P::Storage(storage()),
            ] {
                let i = match &e {
                    P::InvalidManifest(_) => 0,
                    P::InvalidComponent(_) => 1,
                    P::AlreadyInstalled(_) => 2,
                    P::NotFound(_) => 3,
                    P::Unsupported => 4,
                    P::Storage(_) => 5,
                    _ => unreachable!("a new PluginError: give it a value here"),
                };
                add("PluginError", i, e.kind(), e.into(), 6);
            }
        }
        out
    }

    /// The exception classes the Python package defines.
    fn python_exceptions() -> BTreeSet<String> {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../python/python/keyward/_errors.py");
        let source = std::fs::read_to_string(path).expect("the Python package");
        source
            .lines()
            .filter_map(|l| l.strip_prefix("class "))
            .filter(|l| l.ends_with("(KeywardError):"))
            .map(|l| l[..l.find('(').unwrap()].to_string())
            .collect()
    }

    #[test]
    fn every_error_variant_has_a_c_status_and_a_python_exception() {
        let python = python_exceptions();
        let errors = every_error();
        let mut seen: std::collections::BTreeMap<&str, (BTreeSet<usize>, usize)> =
            std::collections::BTreeMap::new();
        for (family, index, count, fail, kind) in &errors {
            let entry = seen.entry(family).or_default();
            entry.0.insert(*index);
            entry.1 = *count;
            // C: the status the boundary returns is the kind's, with its number.
            assert_eq!(fail.status, kw_status::from(*kind), "{family} #{index}");
            let (code, exception) = crate::kinds::row(*kind).expect("a row for every kind");
            assert_eq!(fail.status as u32, code, "{family} #{index}");
            // Python: an exception class the package defines.
            assert!(
                python.contains(exception),
                "{family} #{index}: no Python class {exception}"
            );
        }
        for (family, (indices, count)) in seen {
            assert_eq!(
                indices,
                (0..count).collect(),
                "{family}: a variant has no value in every_error()"
            );
        }
    }

    #[test]
    fn every_kind_is_a_distinct_c_status() {
        let codes: BTreeSet<u32> = ErrorKind::ALL
            .iter()
            .map(|&k| crate::kinds::row(k).expect("a row for every kind").0)
            .collect();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
        assert!(!codes.contains(&0), "0 is KW_STATUS_OK");
    }
}
