//! Failures across the boundary: each becomes a `kw_status` and the
//! calling thread's last error message; a panic becomes
//! `KW_STATUS_PANIC`, never an abort of the host process.

use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::generated::kw_status;
use crate::error::{KeyError, OpenError, StorageError, WhitelistError};
use crate::key::InvalidKeyId;

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
    InvalidKeyId
);
#[cfg(feature = "plugins")]
fail_from!(crate::plugins::PluginError);

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
