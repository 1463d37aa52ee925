//! Keys: create, regenerate, delete, update, and the Overview as JSON.

use std::ffi::c_char;
use std::time::Duration;

use serde::Deserialize;

use super::error::{Fail, boundary, fail};
use super::generated::kw_status;
use super::store::{answer_json, key_answer_json, kw_store, store_and_key, store_ref};
use super::values::{json_object, key_len, not_null, optional_text, put, put_json, room, text};
use keyward::Timestamp;
use keyward::{CreateOptions, ImportedSecret, KeyUpdate, Store};
use keyward::{Limit, Quota};
use zeroize::Zeroizing;

/// What `kw_key_import` reads: the kind and material of the imported key,
/// beside the options of `kw_key_create_ex` ([`CreateOptions`]' JSON form).
fn import_json(json: &str) -> Result<(ImportedSecret, CreateOptions), Fail> {
    let bad = |m: &str| {
        fail(
            kw_status::KW_STATUS_INVALID_INPUT,
            format!("options_json: {m}"),
        )
    };
    // serde's message may quote the input: say where, not what.
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
        .map_err(|e| {
            bad(&format!(
                "not the expected object (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
    let mut take = |field: &str| match object.remove(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(&format!("\"{field}\" is a string"))),
    };
    let kind = take("kind")?.ok_or_else(|| bad("\"kind\" is required"))?;
    let secret = Zeroizing::new(take("secret")?.ok_or_else(|| bad("\"secret\" is required"))?);
    let prefix = take("prefix")?;
    let imported = ImportedSecret::new(&kind, secret, prefix).map_err(|m| bad(&m))?;
    // What is left holds no secret: serde may quote it.
    let options = CreateOptions::deserialize(serde_json::Value::Object(object))
        .map_err(|e| bad(&e.to_string()))?;
    Ok((imported, options))
}

/// Imports a key from another system under a new id, written with a NUL
/// to `id_out` (`id_len` bytes; 13 suffice). `options_json` (not NULL):
/// `{"kind": "plaintext" | "sha256" | "phc", "secret": "<the key, its
/// SHA-256 in hex, or its bcrypt, argon2, pbkdf2_sha256$ or sha512$$ hash>", "prefix": "<the key's first
/// characters, with phc>"}` and any field of `CreateOptions` (see "JSON
/// shapes" at the top of this header). The key string its
/// holder has then verifies with `kw_verify` like any key. Importing the
/// same key (or prefix) twice is `KW_STATUS_INVALID_INPUT`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_import(
    store: *mut kw_store,
    name: *const c_char,
    options_json: *const c_char,
    id_out: *mut c_char,
    id_len: usize,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let name = unsafe { text(name, "name") }?;
        let json = unsafe { text(options_json, "options_json") }?;
        room(id_out, id_len, keyward::KEY_ID_LEN + 1, "id_out")?;
        let (secret, options) = import_json(json)?;
        let info = store.import_key(name, secret, options)?;
        unsafe { put(id_out, info.id.as_str()) };
        Ok(())
    })
}

/// Creates the key and writes its plaintext to `key_out`; the caller
/// writes what else it returns.
unsafe fn create(
    store: *mut kw_store,
    name: *const c_char,
    options_json: *const c_char,
    key_out: *mut c_char,
    key_cap: usize,
    check_more: impl FnOnce() -> Result<(), Fail>,
) -> Result<keyward::CreatedKey, Fail> {
    let store = unsafe { store_ref(store) }?;
    let name = unsafe { text(name, "name") }?;
    let options = match unsafe { optional_text(options_json, "options_json") }? {
        None => CreateOptions::new(),
        Some(j) => serde_json::from_str(j).map_err(|e| {
            fail(
                kw_status::KW_STATUS_INVALID_INPUT,
                format!("options_json: {e}"),
            )
        })?,
    };
    room(key_out, key_cap, key_len(store), "key_out")?;
    check_more()?;
    let created = store.create(name, options)?;
    unsafe { put(key_out, created.key.as_str()) };
    Ok(created)
}

/// Creates a key named `name` (NUL-terminated UTF-8, 1–200 bytes).
///
/// - `key_out`, `key_cap`: receives the plaintext key and a NUL; needs
///   `kw_key_buffer_len(store)` bytes (`KW_KEY_BUFFER_LEN` always suffices).
///   Shown this once: the store keeps only an argon2id hash.
/// - `id_out`, `id_cap`: receives the key id and a NUL; needs 13 bytes
///   (`KW_KEY_ID_BUFFER_LEN` suffices).
///
/// Buffers are checked before anything is created: `KW_STATUS_BUFFER_TOO_SMALL` changes nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_create(
    store: *mut kw_store,
    name: *const c_char,
    key_out: *mut c_char,
    key_cap: usize,
    id_out: *mut c_char,
    id_cap: usize,
) -> kw_status {
    boundary(|| unsafe {
        let created = create(store, name, std::ptr::null(), key_out, key_cap, || {
            room(id_out, id_cap, keyward::KEY_ID_LEN + 1, "id_out")
        })?;
        put(id_out, created.info.id.as_str());
        Ok(())
    })
}

/// `kw_key_create` with options as a `CreateOptions` JSON object (see
/// "JSON shapes" at the top of this header; NULL = none), such as
/// `{"owner": "acct_42", "expires_at": "2027-01-01T00:00:00Z",
/// "whitelist": [{"name": "office", "network": "198.51.100.0/24"}]}`.
/// Whitelist entries also switch the restriction on.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_create_ex(
    store: *mut kw_store,
    name: *const c_char,
    options_json: *const c_char,
    key_out: *mut c_char,
    key_cap: usize,
    id_out: *mut c_char,
    id_cap: usize,
) -> kw_status {
    boundary(|| unsafe {
        let created = create(store, name, options_json, key_out, key_cap, || {
            room(id_out, id_cap, keyward::KEY_ID_LEN + 1, "id_out")
        })?;
        put(id_out, created.info.id.as_str());
        Ok(())
    })
}

/// `kw_key_create_ex` that also writes the new key's Overview (the object
/// of `kw_key_get_json`) to `*info_json_out` (free with `kw_string_free`),
/// made from the change itself: no second read can fail after the key
/// exists and lose its only copy.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_create_json(
    store: *mut kw_store,
    name: *const c_char,
    options_json: *const c_char,
    key_out: *mut c_char,
    key_cap: usize,
    info_json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| unsafe {
        let created = create(store, name, options_json, key_out, key_cap, || {
            not_null(info_json_out, "info_json_out")
        })?;
        put_json(info_json_out, &created.info)
    })
}

/// Gives key `id` a new secret, written with a NUL to `key_out` (see
/// `kw_key_create` for the size). The old secret stops working when this
/// returns (`grace_seconds` 0) or `grace_seconds` later (at most 366 days).
/// Durable before it returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_regenerate(
    store: *mut kw_store,
    id: *const c_char,
    grace_seconds: u64,
    key_out: *mut c_char,
    key_cap: usize,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        room(key_out, key_cap, key_len(store), "key_out")?;
        let fresh = store.regenerate(&id, Duration::from_secs(grace_seconds))?;
        unsafe { put(key_out, fresh.key.as_str()) };
        Ok(())
    })
}

/// `kw_key_regenerate` that also writes the key's Overview after the change
/// (the object of `kw_key_get_json`) to `*info_json_out` (free with
/// `kw_string_free`), made from the change itself: no second read can fail
/// and lose the only copy of the new key.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_regenerate_json(
    store: *mut kw_store,
    id: *const c_char,
    grace_seconds: u64,
    key_out: *mut c_char,
    key_cap: usize,
    info_json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        room(key_out, key_cap, key_len(store), "key_out")?;
        not_null(info_json_out, "info_json_out")?;
        let fresh = store.regenerate(&id, Duration::from_secs(grace_seconds))?;
        unsafe { put(key_out, fresh.key.as_str()) };
        unsafe { put_json(info_json_out, &fresh.info) }
    })
}

/// Deletes key `id` and its usage history; its secrets stop working when
/// this returns. Durable before it returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_delete(store: *mut kw_store, id: *const c_char) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        Ok(store.delete(&id)?)
    })
}

/// Disables (`true`: admits nobody) or re-enables key `id`. Durable before it returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_set_disabled(
    store: *mut kw_store,
    id: *const c_char,
    disabled: bool,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        store.set_disabled(&id, disabled)?;
        Ok(())
    })
}

/// Renames key `id` (`name`: NUL-terminated UTF-8, 1–200 bytes).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_rename(
    store: *mut kw_store,
    id: *const c_char,
    name: *const c_char,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        store.rename(&id, unsafe { text(name, "name") }?)?;
        Ok(())
    })
}

/// Sets key `id`'s expiry to `expires_at` (RFC 3339, e.g.
/// `2027-01-01T00:00:00Z`), or clears it when `expires_at` is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_set_expiry(
    store: *mut kw_store,
    id: *const c_char,
    expires_at: *const c_char,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        let at = match unsafe { optional_text(expires_at, "expires_at") }? {
            None => None,
            Some(t) => Some(
                Timestamp::parse_rfc3339(t)
                    .map_err(|e| fail(kw_status::KW_STATUS_INVALID_INPUT, e))?,
            ),
        };
        store.set_expiry(&id, at)?;
        Ok(())
    })
}

/// Replaces key `id`'s metadata with the JSON object `metadata_json`, or
/// clears it when NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_set_metadata(
    store: *mut kw_store,
    id: *const c_char,
    metadata_json: *const c_char,
) -> kw_status {
    unsafe {
        set_from_json(
            store,
            id,
            metadata_json,
            "metadata_json",
            |m: Option<serde_json::Value>| KeyUpdate::new().metadata(m),
        )
    }
}

/// Replaces key `id`'s scopes with the JSON array of strings
/// `scopes_json` (`["orders:read", "contacts:write"]`; NULL or `[]`: none).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_set_scopes(
    store: *mut kw_store,
    id: *const c_char,
    scopes_json: *const c_char,
) -> kw_status {
    unsafe {
        set_from_json(store, id, scopes_json, "scopes_json", |s: Vec<String>| {
            KeyUpdate::new().scopes(s)
        })
    }
}

/// Replaces key `id`'s rate limits with the JSON array `limits_json`
/// (`[{"name": "burst", "limit": 100, "window_seconds": 60}]`; NULL or
/// `[]`: none).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_set_limits(
    store: *mut kw_store,
    id: *const c_char,
    limits_json: *const c_char,
) -> kw_status {
    unsafe {
        set_from_json(store, id, limits_json, "limits_json", |l: Vec<Limit>| {
            KeyUpdate::new().limits(l)
        })
    }
}

/// Sets key `id`'s quota from the JSON object `quota_json`
/// (`{"remaining": 1000, "refill": {"amount": 1000, "period": "daily"}}`,
/// `refill` null or absent for none), or removes it when NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_set_quota(
    store: *mut kw_store,
    id: *const c_char,
    quota_json: *const c_char,
) -> kw_status {
    unsafe {
        set_from_json(store, id, quota_json, "quota_json", |q: Option<Quota>| {
            KeyUpdate::new().quota(q)
        })
    }
}

/// A `kw_key_set_*` function whose value is optional JSON (NULL: the
/// value's default, which clears): read, then one patch of key `id`.
unsafe fn set_from_json<T: serde::de::DeserializeOwned + Default>(
    store: *mut kw_store,
    id: *const c_char,
    json: *const c_char,
    what: &str,
    patch: impl FnOnce(T) -> KeyUpdate,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        let value = unsafe { optional_json(json, what) }?;
        store.update(&id, patch(value))?;
        Ok(())
    })
}

/// A JSON value from optional text: its default when NULL; a typed error
/// naming `what` (never the text) when it does not parse.
unsafe fn optional_json<T: serde::de::DeserializeOwned + Default>(
    p: *const c_char,
    what: &str,
) -> Result<T, Fail> {
    match unsafe { optional_text(p, what) }? {
        None => Ok(T::default()),
        Some(j) => serde_json::from_str(j).map_err(|e| {
            fail(
                kw_status::KW_STATUS_INVALID_INPUT,
                format!(
                    "{what}: not valid here (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        }),
    }
}

/// Changes key `id`'s settings by `patch_json`, a `KeyUpdate` JSON object
/// (see "JSON shapes" at the top of this header), in one atomic, durable
/// write: every field it names, or (one invalid, storage failing) none.
/// Each field is left out (unchanged), `null` (cleared, or refused, as
/// the shape says of the field) or a value, as in `kw_key_create_ex`'s
/// options. Each field changed writes the event its `kw_key_set_*`
/// function writes. On success the key's Overview (the object of
/// `kw_key_get_json`) is written to `*json_out` (free with
/// `kw_string_free`); `json_out` may be NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_update_json(
    store: *mut kw_store,
    id: *const c_char,
    patch_json: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        let patch = unsafe { text(patch_json, "patch_json") }?;
        let patch: KeyUpdate = json_object(patch, "patch_json")?;
        let info = store.update(&id, patch)?;
        if json_out.is_null() {
            return Ok(());
        }
        unsafe { put_json(json_out, &info) }
    })
}

/// Key `id`'s Overview as a `KeyInfo` JSON object (see "JSON shapes" at
/// the top of this header), written to `*json_out` (free with
/// `kw_string_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_get_json(
    store: *const kw_store,
    id: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    unsafe { key_answer_json(store, id, json_out, Store::get) }
}

/// Every key, oldest first, as a JSON array of the objects of
/// `kw_key_get_json`, written to `*json_out` (free with `kw_string_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_list_json(
    store: *const kw_store,
    json_out: *mut *mut c_char,
) -> kw_status {
    unsafe { answer_json(store, json_out, |store| Ok(store.list()?)) }
}

/// Moves key `id` to the account `owner` (NUL-terminated UTF-8, 1–128
/// bytes, no control characters), or to none with NULL: an account merge.
/// Emits `key.updated` with `owner_from` and `owner_to`; durable before it
/// returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_set_owner(
    store: *mut kw_store,
    id: *const c_char,
    owner: *const c_char,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        let owner = unsafe { optional_text(owner, "owner") }?;
        store.set_owner(&id, owner)?;
        Ok(())
    })
}

/// Every key of the account `owner`, oldest first, found through the
/// owner index, as a JSON array of the objects of `kw_key_get_json`,
/// written to `*json_out` (free with `kw_string_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_list_owner_json(
    store: *const kw_store,
    owner: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    unsafe {
        answer_json(store, json_out, |store| {
            let owner = text(owner, "owner")?;
            Ok(store.list_owner(owner)?)
        })
    }
}

/// One page of keys in id order, as `{"keys": [...], "next": "ID" | null}`
/// written to `*json_out` (free with `kw_string_free`): up to `limit` (1 to
/// `KW_MAX_PAGE`) keys — of `owner`, or of every account when NULL — whose
/// ids come after `after` (NULL for the first page; then each page's
/// `next`, until it is null).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_list_page_json(
    store: *const kw_store,
    owner: *const c_char,
    after: *const c_char,
    limit: usize,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let owner = unsafe { optional_text(owner, "owner") }?;
        let after = match unsafe { optional_text(after, "after") }? {
            Some(a) => Some(a.parse::<keyward::KeyId>()?),
            None => None,
        };
        not_null(json_out, "json_out")?;
        let page = store.list_page(owner, after.as_ref(), limit)?;
        let value = serde_json::json!({ "keys": page.keys, "next": page.next });
        unsafe { put_json(json_out, &value) }
    })
}
