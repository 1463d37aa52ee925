//! Values across the boundary: checked arguments in (pointers, UTF-8
//! text, key ids), buffers and JSON strings out.

use std::ffi::{CStr, CString, c_char};

use super::error::{Fail, fail};
use super::generated::kw_status;
use keyward::KeyId;
use keyward::Store;

/// A NUL-terminated UTF-8 argument that must not be NULL.
pub(crate) unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, Fail> {
    if p.is_null() {
        return Err(fail(
            kw_status::KW_STATUS_NULL_ARGUMENT,
            format!("{what} is NULL"),
        ));
    }
    // SAFETY: the caller promises a NUL-terminated string that outlives the call.
    let bytes = unsafe { CStr::from_ptr(p) };
    bytes.to_str().map_err(|_| {
        fail(
            kw_status::KW_STATUS_INVALID_UTF8,
            format!("{what} is not valid UTF-8"),
        )
    })
}

/// Like [`text`], but NULL means "absent".
pub(crate) unsafe fn optional_text<'a>(
    p: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, Fail> {
    if p.is_null() {
        Ok(None)
    } else {
        unsafe { text(p, what) }.map(Some)
    }
}

pub(crate) unsafe fn key_id(p: *const c_char) -> Result<KeyId, Fail> {
    let s = unsafe { text(p, "id") }?;
    Ok(s.parse::<KeyId>()?)
}

pub(crate) fn not_null<T>(p: *mut T, what: &str) -> Result<(), Fail> {
    if p.is_null() {
        Err(fail(
            kw_status::KW_STATUS_NULL_ARGUMENT,
            format!("{what} is NULL"),
        ))
    } else {
        Ok(())
    }
}

/// Checks that `buf` can hold `needed` bytes (including the NUL) before any work is done.
pub(crate) fn room(buf: *mut c_char, cap: usize, needed: usize, what: &str) -> Result<(), Fail> {
    not_null(buf, what)?;
    if cap < needed {
        return Err(fail(
            kw_status::KW_STATUS_BUFFER_TOO_SMALL,
            format!("{what} needs {needed} bytes including the NUL; {cap} given"),
        ));
    }
    Ok(())
}

/// Copies `s` and a NUL into `buf`, which [`room`] has checked.
pub(crate) unsafe fn put(buf: *mut c_char, s: &str) {
    // SAFETY: `buf` holds at least s.len() + 1 bytes (checked by `room`).
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr().cast::<c_char>(), buf, s.len());
        *buf.add(s.len()) = 0;
    }
}

/// `json`, an object (not the array serde would also take for a struct),
/// as the `T` it describes; what is wrong is `KW_STATUS_INVALID_INPUT`
/// naming `what`.
pub(crate) fn json_object<T: serde::de::DeserializeOwned>(
    json: &str,
    what: &str,
) -> Result<T, Fail> {
    let invalid =
        |e: serde_json::Error| fail(kw_status::KW_STATUS_INVALID_INPUT, format!("{what}: {e}"));
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).map_err(invalid)?;
    T::deserialize(serde_json::Value::Object(object)).map_err(invalid)
}

pub(crate) unsafe fn put_json(
    out: *mut *mut c_char,
    value: &impl serde::Serialize,
) -> Result<(), Fail> {
    let json = serde_json::to_string(value).map_err(|e| {
        fail(
            kw_status::KW_STATUS_INTERNAL,
            format!("serialising JSON: {e}"),
        )
    })?;
    let c =
        CString::new(json).map_err(|_| fail(kw_status::KW_STATUS_INTERNAL, "JSON held a NUL"))?;
    // SAFETY: checked non-NULL by the caller before any work.
    unsafe { *out = c.into_raw() };
    Ok(())
}

pub(crate) fn key_len(store: &Store) -> usize {
    store.key_len() + 1
}

/// Releases a string returned through a `json_out` argument. NULL is fine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: came from CString::into_raw in this library, freed once.
        drop(unsafe { CString::from_raw(s) });
    }
}
