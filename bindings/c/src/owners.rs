//! Accounts: every owner with its key count, one account's usage, and
//! closing an account.

use std::ffi::c_char;

use super::error::boundary;
use super::generated::kw_status;
use super::store::{answer_json, kw_store, store_ref};
use super::values::{not_null, text};

/// Deletes every key of the account `owner` (and their usage) in one
/// durable transaction, one `key.deleted` event each; their secrets stop
/// working when this returns. Writes how many to `*deleted_out` (not NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_owner_delete_keys(
    store: *mut kw_store,
    owner: *const c_char,
    deleted_out: *mut usize,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let owner = unsafe { text(owner, "owner") }?;
        not_null(deleted_out, "deleted_out")?;
        let n = store.delete_owner_keys(owner)?;
        // SAFETY: checked non-NULL above.
        unsafe { *deleted_out = n };
        Ok(())
    })
}

/// The account `owner`'s usage across its keys, as a JSON object written
/// to `*json_out` (free with `kw_string_free`): `{"owner", "keys",
/// "totals": {"allowed", "denied", ...}, "last_used_at"}`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_owner_usage_json(
    store: *const kw_store,
    owner: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    unsafe {
        answer_json(store, json_out, |store| {
            let owner = text(owner, "owner")?;
            Ok(store.owner_usage(owner)?)
        })
    }
}

/// Every account with keys, by owner id, as a JSON array of
/// `{"owner", "keys"}` written to `*json_out` (free with `kw_string_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_owners_json(
    store: *const kw_store,
    json_out: *mut *mut c_char,
) -> kw_status {
    unsafe { answer_json(store, json_out, |store| Ok(store.owners()?)) }
}
