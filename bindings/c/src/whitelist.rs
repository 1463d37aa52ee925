//! The Whitelist tab: the restriction toggle and named entries.

use std::ffi::c_char;

use super::error::boundary;
use super::generated::kw_status;
use super::store::{key_answer_json, kw_store, store_and_key};
use super::values::{put, room, text};
use keyward::{ENTRY_ID_LEN, Store};

/// Turns "restrict key `id` to whitelisted IPs" on or off. On with no
/// entries admits nobody. Durable before it returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_whitelist_set_enabled(
    store: *mut kw_store,
    id: *const c_char,
    enabled: bool,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        store.set_whitelist_enabled(&id, enabled)?;
        Ok(())
    })
}

/// Adds entry `name` for `ip_or_cidr` (`203.0.113.7`, `198.51.100.0/24`,
/// `2001:db8::/32`; host bits set is `KW_STATUS_INVALID_NETWORK`) to key
/// `id`'s whitelist. The new entry's id and a NUL go to `entry_id_out`
/// (`KW_ENTRY_ID_BUFFER_LEN` bytes suffice).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_whitelist_add(
    store: *mut kw_store,
    id: *const c_char,
    name: *const c_char,
    ip_or_cidr: *const c_char,
    entry_id_out: *mut c_char,
    entry_id_cap: usize,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        let name = unsafe { text(name, "name") }?;
        let network = unsafe { text(ip_or_cidr, "ip_or_cidr") }?;
        room(entry_id_out, entry_id_cap, ENTRY_ID_LEN + 1, "entry_id_out")?;
        let entry = store.add_whitelist_entry(&id, name, network)?;
        unsafe { put(entry_id_out, &entry.id) };
        Ok(())
    })
}

/// Removes entry `entry_id` from key `id`'s whitelist.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_whitelist_remove(
    store: *mut kw_store,
    id: *const c_char,
    entry_id: *const c_char,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        store.remove_whitelist_entry(&id, unsafe { text(entry_id, "entry_id") }?)?;
        Ok(())
    })
}

/// Key `id`'s Whitelist tab as a `Whitelist` JSON object (see "JSON
/// shapes" at the top of this header), to `*json_out` (free with
/// `kw_string_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_whitelist_json(
    store: *const kw_store,
    id: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    unsafe { key_answer_json(store, id, json_out, Store::whitelist) }
}
