//! The C ABI: `include/keyward.h` is generated from this module by cbindgen.
//!
//! Conventions, on every function:
//! - the store handle comes first, then inputs, then outputs (`*_out`);
//! - fallible functions return a `kw_status`; on failure the calling
//!   thread's last error message says why (`kw_last_error_message`) and no
//!   output has been written;
//! - every body runs inside [`boundary`]: a panic becomes
//!   `KW_STATUS_PANIC`, never an abort of the host process;
//! - text inputs are NUL-terminated UTF-8 (`KW_STATUS_INVALID_UTF8`
//!   otherwise); the presented key is `(pointer, length)` and may hold any
//!   bytes;
//! - strings returned through `char **json_out` are owned by the caller and
//!   released with `kw_string_free`.

#![allow(non_camel_case_types, clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{KeyError, OpenError, StorageError, WhitelistError};
use crate::key::{self, KeyId};
use crate::store::{CreateOptions, Options, Store};
use crate::time::Timestamp;
use crate::verdict::{Denial, Verdict};
use crate::verifier::Argon2Params;
use crate::whitelist::ENTRY_ID_LEN;

/// Size of a buffer that holds any key id with its NUL (`kw_verdict.key_id`, `id_out`).
pub const KW_KEY_ID_BUFFER_LEN: usize = 16;
/// Size of a buffer that holds any plaintext key of any store with its NUL.
pub const KW_KEY_BUFFER_LEN: usize = 96;
/// Size of a buffer that holds any whitelist entry id with its NUL.
pub const KW_ENTRY_ID_BUFFER_LEN: usize = 16;

const _: () = assert!(KW_KEY_BUFFER_LEN > key::MAX_KEY_LEN);
const _: () = assert!(KW_KEY_ID_BUFFER_LEN > key::ID_LEN);
const _: () = assert!(KW_ENTRY_ID_BUFFER_LEN > ENTRY_ID_LEN);

/// Outcome of a call. Numbers are grouped by kind and never change:
/// 1xx bad input, 2xx storage, 3xx plugins, 9xx internal.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kw_status {
    /// Success.
    KW_STATUS_OK = 0,
    /// A required pointer argument was NULL.
    KW_STATUS_NULL_ARGUMENT = 100,
    /// A text argument was not valid UTF-8.
    KW_STATUS_INVALID_UTF8 = 101,
    /// An argument was rejected (empty or oversized name, bad JSON, bad time, ...).
    KW_STATUS_INVALID_INPUT = 102,
    /// The text given as a key id is not one (12 base62 characters).
    KW_STATUS_INVALID_KEY_ID = 103,
    /// The text given as a whitelist network is not an IP or CIDR, or has host bits set.
    KW_STATUS_INVALID_NETWORK = 104,
    /// The client IP is not an IPv4 or IPv6 address.
    KW_STATUS_INVALID_IP = 105,
    /// An output buffer is too small; the message says the size needed.
    KW_STATUS_BUFFER_TOO_SMALL = 106,
    /// No key has this id.
    KW_STATUS_NOT_FOUND = 110,
    /// The key has no whitelist entry with this id.
    KW_STATUS_ENTRY_NOT_FOUND = 111,
    /// A `kw_options` field is out of range, or conflicts with the existing store.
    KW_STATUS_INVALID_OPTIONS = 120,
    /// Another process holds the store.
    KW_STATUS_STORE_LOCKED = 200,
    /// The storage layer failed; nothing was changed.
    KW_STATUS_STORAGE = 201,
    /// The store was written by a newer keyward.
    KW_STATUS_UNSUPPORTED_VERSION = 202,
    /// The plugin manifest is not valid TOML or breaks a rule.
    KW_STATUS_PLUGIN_INVALID_MANIFEST = 300,
    /// The bytes are not a `keyward:notifier` component of the manifest's API version.
    KW_STATUS_PLUGIN_INVALID_COMPONENT = 301,
    /// A plugin with this name is installed already.
    KW_STATUS_PLUGIN_EXISTS = 302,
    /// No plugin has this name.
    KW_STATUS_PLUGIN_NOT_FOUND = 303,
    /// This library was built without the plugin host.
    KW_STATUS_PLUGINS_UNSUPPORTED = 304,
    /// An internal failure; nothing was changed.
    KW_STATUS_INTERNAL = 900,
    /// keyward panicked; the message says where. The store is still usable.
    KW_STATUS_PANIC = 901,
}

/// Why a key was refused (`KW_DENIAL_NONE` when it was admitted).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kw_denial {
    /// Admitted.
    KW_DENIAL_NONE = 0,
    /// Wrong length, prefix, characters or checksum.
    KW_DENIAL_MALFORMED = 1,
    /// No key has this id (never issued, or deleted).
    KW_DENIAL_UNKNOWN_KEY = 2,
    /// The secret matches no generation of the key.
    KW_DENIAL_WRONG_SECRET = 3,
    /// The secret of a regenerated-away generation (grace over).
    KW_DENIAL_ROTATED = 4,
    /// The key is past its expiry.
    KW_DENIAL_EXPIRED = 5,
    /// The key is disabled.
    KW_DENIAL_DISABLED = 6,
    /// The key is restricted to whitelisted IPs and this one is not.
    KW_DENIAL_IP_NOT_ALLOWED = 7,
    /// Too many cold verifications at once; retry shortly.
    KW_DENIAL_BUSY = 8,
    /// A shared store could not confirm it is current (database unreachable
    /// longer than the staleness bound); refused to fail closed.
    KW_DENIAL_UNAVAILABLE = 9,
}

/// The answer of `kw_verify`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kw_verdict {
    /// Whether the key was admitted.
    pub valid: bool,
    /// Why not, or `KW_DENIAL_NONE`.
    pub denial: kw_denial,
    /// The key's id, NUL-terminated; empty when the key was malformed.
    pub key_id: [c_char; KW_KEY_ID_BUFFER_LEN],
    /// The generation whose secret was presented (0 unless admitted).
    pub generation: u32,
    /// Admitted on an older secret inside a regeneration's grace period.
    pub in_grace: bool,
    /// For `KW_DENIAL_ROTATED`: when that secret stopped working, in
    /// milliseconds since the Unix epoch; otherwise 0.
    pub rotated_at_unix_ms: i64,
}

/// How to open a store. All-zero (`kw_options o = {0};`) means defaults;
/// passing NULL to `kw_store_open` does too.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kw_options {
    /// Key prefix for a new store (`[a-z][a-z0-9_]{0,15}`, not ending in
    /// `_`); NULL keeps the existing store's, or "kw" for a new one.
    pub prefix: *const c_char,
    /// argon2id memory in KiB for new hashes; 0 = 19456.
    pub argon2_memory_kib: u32,
    /// argon2id iterations; 0 = 2.
    pub argon2_iterations: u32,
    /// argon2id lanes; 0 = 1.
    pub argon2_parallelism: u32,
    /// How often usage is written to storage, in milliseconds; 0 = 1000.
    pub usage_flush_interval_ms: u32,
    /// argon2 verifications at once; 0 = the number of cores.
    pub max_concurrent_hashes: u32,
}

/// An open store. Opaque; create with `kw_store_open`, release with
/// `kw_store_free` or `kw_store_close`. Safe to use from many threads at
/// once, including `kw_verify` beside mutations.
pub struct kw_store {
    store: Store,
}

// ------------------------------------------------------------ plumbing

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

struct Fail {
    status: kw_status,
    message: String,
}

fn fail(status: kw_status, message: impl Into<String>) -> Fail {
    Fail {
        status,
        message: message.into(),
    }
}

impl From<KeyError> for Fail {
    fn from(e: KeyError) -> Self {
        let status = match &e {
            KeyError::NotFound(_) => kw_status::KW_STATUS_NOT_FOUND,
            KeyError::InvalidInput(_) => kw_status::KW_STATUS_INVALID_INPUT,
            KeyError::Storage(_) => kw_status::KW_STATUS_STORAGE,
            KeyError::Internal(_) => kw_status::KW_STATUS_INTERNAL,
        };
        fail(status, e.to_string())
    }
}

impl From<WhitelistError> for Fail {
    fn from(e: WhitelistError) -> Self {
        let status = match &e {
            WhitelistError::KeyNotFound(_) => kw_status::KW_STATUS_NOT_FOUND,
            WhitelistError::EntryNotFound { .. } => kw_status::KW_STATUS_ENTRY_NOT_FOUND,
            WhitelistError::InvalidNetwork(_) => kw_status::KW_STATUS_INVALID_NETWORK,
            WhitelistError::InvalidInput(_) => kw_status::KW_STATUS_INVALID_INPUT,
            WhitelistError::Storage(_) => kw_status::KW_STATUS_STORAGE,
        };
        fail(status, e.to_string())
    }
}

impl From<OpenError> for Fail {
    fn from(e: OpenError) -> Self {
        let status = match &e {
            OpenError::StoreLocked { .. } => kw_status::KW_STATUS_STORE_LOCKED,
            OpenError::InvalidOptions(_) => kw_status::KW_STATUS_INVALID_OPTIONS,
            OpenError::UnsupportedVersion(_) => kw_status::KW_STATUS_UNSUPPORTED_VERSION,
            OpenError::Storage(_) => kw_status::KW_STATUS_STORAGE,
        };
        fail(status, e.to_string())
    }
}

impl From<StorageError> for Fail {
    fn from(e: StorageError) -> Self {
        fail(kw_status::KW_STATUS_STORAGE, e.to_string())
    }
}

/// The panic boundary every exported function runs in: errors become a
/// status plus this thread's last error message; a panic becomes
/// `KW_STATUS_PANIC`.
fn boundary(body: impl FnOnce() -> Result<(), Fail>) -> kw_status {
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

/// A NUL-terminated UTF-8 argument that must not be NULL.
unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, Fail> {
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
unsafe fn optional_text<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Fail> {
    if p.is_null() {
        Ok(None)
    } else {
        unsafe { text(p, what) }.map(Some)
    }
}

unsafe fn key_id(p: *const c_char) -> Result<KeyId, Fail> {
    let s = unsafe { text(p, "id") }?;
    s.parse()
        .map_err(|e: key::InvalidKeyId| fail(kw_status::KW_STATUS_INVALID_KEY_ID, e.to_string()))
}

unsafe fn store_ref<'a>(p: *const kw_store) -> Result<&'a Store, Fail> {
    // SAFETY: a non-NULL handle came from kw_store_open and was not freed.
    unsafe { p.as_ref() }
        .map(|h| &h.store)
        .ok_or_else(|| fail(kw_status::KW_STATUS_NULL_ARGUMENT, "store is NULL"))
}

fn not_null<T>(p: *mut T, what: &str) -> Result<(), Fail> {
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
fn room(buf: *mut c_char, cap: usize, needed: usize, what: &str) -> Result<(), Fail> {
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
unsafe fn put(buf: *mut c_char, s: &str) {
    // SAFETY: `buf` holds at least s.len() + 1 bytes (checked by `room`).
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr().cast::<c_char>(), buf, s.len());
        *buf.add(s.len()) = 0;
    }
}

unsafe fn put_json(out: *mut *mut c_char, value: &impl serde::Serialize) -> Result<(), Fail> {
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

fn key_len(store: &Store) -> usize {
    store.prefix().len() + 2 + key::ID_LEN + key::SECRET_LEN + key::CHECK_LEN + 1
}

// ------------------------------------------------------------ the store

/// Opens (creating if needed, mode 0700) the store in directory `path`.
///
/// - `path`: NUL-terminated UTF-8; not NULL.
/// - `options`: NULL for defaults.
/// - `store_out`: receives the handle on success; not NULL.
///
/// Returns `KW_STATUS_STORE_LOCKED` at once when another process holds the store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_store_open(
    path: *const c_char,
    options: *const kw_options,
    store_out: *mut *mut kw_store,
) -> kw_status {
    boundary(|| {
        let path = unsafe { text(path, "path") }?;
        not_null(store_out, "store_out")?;
        let mut o = Options::default();
        // SAFETY: NULL or a valid kw_options for the duration of the call.
        if let Some(c) = unsafe { options.as_ref() } {
            o.prefix = unsafe { optional_text(c.prefix, "options.prefix") }?.map(String::from);
            let d = Argon2Params::default();
            let or = |v: u32, default: u32| if v == 0 { default } else { v };
            o.argon2 = Argon2Params {
                memory_kib: or(c.argon2_memory_kib, d.memory_kib),
                iterations: or(c.argon2_iterations, d.iterations),
                parallelism: or(c.argon2_parallelism, d.parallelism),
            };
            if c.usage_flush_interval_ms != 0 {
                o.usage_flush_interval =
                    Duration::from_millis(u64::from(c.usage_flush_interval_ms));
            }
            if c.max_concurrent_hashes != 0 {
                o.max_concurrent_hashes = c.max_concurrent_hashes as usize;
            }
        }
        let store = Store::open_with(path, &o)?;
        // SAFETY: checked non-NULL above.
        unsafe { *store_out = Box::into_raw(Box::new(kw_store { store })) };
        Ok(())
    })
}

/// Flushes pending usage and releases the store. NULL is fine. Errors of the
/// final flush are lost; use `kw_store_close` to see them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_store_free(store: *mut kw_store) {
    if !store.is_null() {
        let _ = boundary(|| {
            // SAFETY: came from kw_store_open, released exactly once.
            drop(unsafe { Box::from_raw(store) });
            Ok(())
        });
    }
}

/// Flushes pending usage, releases the store (always, even on error) and
/// reports the flush's outcome. NULL is fine (`KW_STATUS_OK`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_store_close(store: *mut kw_store) -> kw_status {
    if store.is_null() {
        return kw_status::KW_STATUS_OK;
    }
    boundary(|| {
        // SAFETY: came from kw_store_open, released exactly once.
        let handle = unsafe { Box::from_raw(store) };
        handle.store.close()?;
        Ok(())
    })
}

/// Writes pending usage to storage now.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_store_flush(store: *const kw_store) -> kw_status {
    boundary(|| Ok(unsafe { store_ref(store) }?.flush()?))
}

/// The size of a buffer (NUL included) that holds this store's keys. At
/// most `KW_KEY_BUFFER_LEN`. Returns 0 for a NULL store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_buffer_len(store: *const kw_store) -> usize {
    // SAFETY: NULL or a live handle.
    unsafe { store.as_ref() }.map_or(0, |h| key_len(&h.store))
}

// ------------------------------------------------------------ verify

/// Verifies a presented key from `client_ip` (IPv4 or IPv6 text),
/// optionally naming the integration (e.g. the User-Agent) for usage.
///
/// - `key`, `key_len`: the key as received, any bytes; not NULL (a
///   zero-length key may point anywhere non-NULL). Anything that is not a
///   well-formed key is `KW_DENIAL_MALFORMED`, not an error.
/// - `integration`: NULL when unknown.
/// - `verdict_out`: written on `KW_STATUS_OK`.
///
/// Allocates nothing and never touches storage; safe from many threads at
/// once. A refusal is `KW_STATUS_OK` with `valid == false`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_verify(
    store: *const kw_store,
    key: *const c_char,
    key_len: usize,
    client_ip: *const c_char,
    integration: *const c_char,
    verdict_out: *mut kw_verdict,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        if key.is_null() {
            return Err(fail(kw_status::KW_STATUS_NULL_ARGUMENT, "key is NULL"));
        }
        let ip_text = unsafe { text(client_ip, "client_ip") }?;
        let ip: IpAddr = ip_text.parse().map_err(|_| {
            fail(
                kw_status::KW_STATUS_INVALID_IP,
                format!("client_ip {ip_text:?} is not an IP address"),
            )
        })?;
        let integration = unsafe { optional_text(integration, "integration") }?;
        not_null(verdict_out, "verdict_out")?;
        // SAFETY: the caller promises `key_len` readable bytes at `key`.
        let bytes = unsafe { std::slice::from_raw_parts(key.cast::<u8>(), key_len) };
        let verdict = store.verify_bytes(bytes, ip, integration);
        let mut out = kw_verdict {
            valid: false,
            denial: kw_denial::KW_DENIAL_NONE,
            key_id: [0; KW_KEY_ID_BUFFER_LEN],
            generation: 0,
            in_grace: false,
            rotated_at_unix_ms: 0,
        };
        let id: &[u8] = match verdict {
            Verdict::Valid(g) => {
                out.valid = true;
                out.generation = g.generation;
                out.in_grace = g.in_grace;
                key::id_part(bytes)
            }
            Verdict::Denied(d) => {
                out.denial = match d {
                    Denial::Malformed => kw_denial::KW_DENIAL_MALFORMED,
                    Denial::UnknownKey => kw_denial::KW_DENIAL_UNKNOWN_KEY,
                    Denial::WrongSecret => kw_denial::KW_DENIAL_WRONG_SECRET,
                    Denial::Rotated { at } => {
                        out.rotated_at_unix_ms = at.unix_millis();
                        kw_denial::KW_DENIAL_ROTATED
                    }
                    Denial::Expired => kw_denial::KW_DENIAL_EXPIRED,
                    Denial::Disabled => kw_denial::KW_DENIAL_DISABLED,
                    Denial::IpNotAllowed => kw_denial::KW_DENIAL_IP_NOT_ALLOWED,
                    Denial::Busy => kw_denial::KW_DENIAL_BUSY,
                    Denial::Unavailable => kw_denial::KW_DENIAL_UNAVAILABLE,
                };
                if d == Denial::Malformed {
                    &[]
                } else {
                    key::id_part(bytes)
                }
            }
        };
        for (slot, b) in out.key_id.iter_mut().zip(id) {
            #[allow(clippy::cast_possible_wrap)] // ASCII: the same value either way
            {
                *slot = *b as c_char;
            }
        }
        // SAFETY: checked non-NULL above.
        unsafe { *verdict_out = out };
        Ok(())
    })
}

// ------------------------------------------------------------ lifecycle

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateJson {
    expires_at: Option<Timestamp>,
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    whitelist: Vec<EntryJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryJson {
    name: String,
    network: String,
}

unsafe fn create(
    store: *mut kw_store,
    name: *const c_char,
    options_json: *const c_char,
    key_out: *mut c_char,
    key_cap: usize,
    id_out: *mut c_char,
    id_cap: usize,
) -> Result<(), Fail> {
    let store = unsafe { store_ref(store) }?;
    let name = unsafe { text(name, "name") }?;
    let options = match unsafe { optional_text(options_json, "options_json") }? {
        None => CreateJson::default(),
        Some(j) => serde_json::from_str(j).map_err(|e| {
            fail(
                kw_status::KW_STATUS_INVALID_INPUT,
                format!("options_json: {e}"),
            )
        })?,
    };
    room(key_out, key_cap, key_len(store), "key_out")?;
    room(id_out, id_cap, key::ID_LEN + 1, "id_out")?;
    let mut o = CreateOptions::new();
    if let Some(t) = options.expires_at {
        o = o.expires_at(t);
    }
    if let Some(m) = options.metadata {
        o = o.metadata(m);
    }
    for e in options.whitelist {
        o = o.restrict_to(e.name, e.network);
    }
    let created = store.create(name, o)?;
    unsafe {
        put(key_out, created.key.as_str());
        put(id_out, created.info.id.as_str());
    }
    Ok(())
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
        create(
            store,
            name,
            std::ptr::null(),
            key_out,
            key_cap,
            id_out,
            id_cap,
        )
    })
}

/// `kw_key_create` with options as a JSON object (NULL = none):
/// `{"expires_at": "2027-01-01T00:00:00Z", "metadata": {...},
///   "whitelist": [{"name": "office", "network": "198.51.100.0/24"}]}`.
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
    boundary(|| unsafe { create(store, name, options_json, key_out, key_cap, id_out, id_cap) })
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
        let store = unsafe { store_ref(store) }?;
        let id = unsafe { key_id(id) }?;
        room(key_out, key_cap, key_len(store), "key_out")?;
        let fresh = store.regenerate(&id, Duration::from_secs(grace_seconds))?;
        unsafe { put(key_out, fresh.key.as_str()) };
        Ok(())
    })
}

/// Deletes key `id` and its usage history; its secrets stop working when
/// this returns. Durable before it returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_delete(store: *mut kw_store, id: *const c_char) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        Ok(store.delete(&unsafe { key_id(id) }?)?)
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
        let store = unsafe { store_ref(store) }?;
        store.set_disabled(&unsafe { key_id(id) }?, disabled)?;
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
        let store = unsafe { store_ref(store) }?;
        let id = unsafe { key_id(id) }?;
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
        let store = unsafe { store_ref(store) }?;
        let id = unsafe { key_id(id) }?;
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
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let id = unsafe { key_id(id) }?;
        let value = match unsafe { optional_text(metadata_json, "metadata_json") }? {
            None => None,
            Some(j) => Some(serde_json::from_str(j).map_err(|e| {
                fail(
                    kw_status::KW_STATUS_INVALID_INPUT,
                    format!("metadata_json: {e}"),
                )
            })?),
        };
        store.set_metadata(&id, value)?;
        Ok(())
    })
}

/// Key `id`'s Overview as a JSON object, written to `*json_out` (free with
/// `kw_string_free`):
/// `{"id", "name", "masked", "created_at", "rotated_at", "last_used_at",
///   "generation", "disabled", "expires_at", "whitelist_enabled",
///   "grace_until", "metadata"}` — times are RFC 3339 strings or null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_get_json(
    store: *const kw_store,
    id: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let id = unsafe { key_id(id) }?;
        not_null(json_out, "json_out")?;
        unsafe { put_json(json_out, &store.get(&id)?) }
    })
}

/// Every key, oldest first, as a JSON array of the objects of
/// `kw_key_get_json`, written to `*json_out` (free with `kw_string_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_key_list_json(
    store: *const kw_store,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        not_null(json_out, "json_out")?;
        unsafe { put_json(json_out, &store.list()?) }
    })
}

// ------------------------------------------------------------ whitelist

/// Turns "restrict key `id` to whitelisted IPs" on or off. On with no
/// entries admits nobody. Durable before it returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_whitelist_set_enabled(
    store: *mut kw_store,
    id: *const c_char,
    enabled: bool,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        store.set_whitelist_enabled(&unsafe { key_id(id) }?, enabled)?;
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
        let store = unsafe { store_ref(store) }?;
        let id = unsafe { key_id(id) }?;
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
        let store = unsafe { store_ref(store) }?;
        let id = unsafe { key_id(id) }?;
        store.remove_whitelist_entry(&id, unsafe { text(entry_id, "entry_id") }?)?;
        Ok(())
    })
}

/// Key `id`'s Whitelist tab as JSON, to `*json_out` (free with
/// `kw_string_free`): `{"enabled": bool, "entries": [{"id", "name",
/// "network", "created_at"}]}`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_whitelist_json(
    store: *const kw_store,
    id: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let id = unsafe { key_id(id) }?;
        not_null(json_out, "json_out")?;
        unsafe { put_json(json_out, &store.whitelist(&id)?) }
    })
}

// ------------------------------------------------------------ usage, events

/// Key `id`'s Usage tab as JSON, to `*json_out` (free with `kw_string_free`):
/// `{"key_id", "totals": {"allowed", "denied", "wrong_secret", "rotated",
/// "expired", "disabled", "ip_not_allowed", "busy"}, "last_used": {"at",
/// "ip"} | null, "ips": [{"ip", "first_seen", "last_seen", "allowed",
/// "denied", "last_integration", "stale_secret"}], "integrations": [{"name",
/// "first_seen", "last_seen", "count", "denied", "ips", "stale_secret"}],
/// "hourly": [{"hour", "allowed", "denied"}]}`. Includes unflushed usage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_usage_json(
    store: *const kw_store,
    id: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let id = unsafe { key_id(id) }?;
        not_null(json_out, "json_out")?;
        unsafe { put_json(json_out, &store.usage(&id)?) }
    })
}

/// Outbox events with sequence number above `since`, oldest first, at most
/// `limit`, as a JSON array to `*json_out` (free with `kw_string_free`):
/// `[{"seq", "kind", "at", "key_id", "name", "masked", "data"}]`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_events_json(
    store: *const kw_store,
    since: u64,
    limit: usize,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        not_null(json_out, "json_out")?;
        unsafe { put_json(json_out, &store.events(since, limit)?) }
    })
}

// ------------------------------------------------------------ plugins

#[cfg(feature = "plugins")]
impl From<crate::plugins::PluginError> for Fail {
    fn from(e: crate::plugins::PluginError) -> Self {
        use crate::plugins::PluginError as P;
        let status = match &e {
            P::InvalidManifest(_) => kw_status::KW_STATUS_PLUGIN_INVALID_MANIFEST,
            P::InvalidComponent(_) => kw_status::KW_STATUS_PLUGIN_INVALID_COMPONENT,
            P::AlreadyInstalled(_) => kw_status::KW_STATUS_PLUGIN_EXISTS,
            P::NotFound(_) => kw_status::KW_STATUS_PLUGIN_NOT_FOUND,
            P::Unsupported => kw_status::KW_STATUS_PLUGINS_UNSUPPORTED,
            P::Storage(_) => kw_status::KW_STATUS_STORAGE,
        };
        fail(status, e.to_string())
    }
}

/// Runs `body` with the plugin host, or fails with `KW_STATUS_PLUGINS_UNSUPPORTED`.
#[cfg(feature = "plugins")]
fn with_plugins(store: &Store, body: impl FnOnce(&Store) -> Result<(), Fail>) -> Result<(), Fail> {
    body(store)
}

#[cfg(not(feature = "plugins"))]
fn with_plugins(
    _store: &Store,
    _body: impl FnOnce(&Store) -> Result<(), Fail>,
) -> Result<(), Fail> {
    Err(fail(
        kw_status::KW_STATUS_PLUGINS_UNSUPPORTED,
        "this keyward was built without the plugin host",
    ))
}

/// Installs a notifier plugin: `component`, `component_len` are the bytes
/// of a WebAssembly component (or its WAT text); `manifest_toml` its TOML
/// manifest (NUL-terminated). It receives subscribed events from now on.
/// On success, and when `json_out` is not NULL, `*json_out` receives the
/// plugin as in `kw_plugin_list_json` (free with `kw_string_free`). An
/// invalid manifest or component stores nothing.
#[unsafe(no_mangle)]
#[cfg_attr(not(feature = "plugins"), allow(unused_variables))]
pub unsafe extern "C" fn kw_plugin_install(
    store: *mut kw_store,
    component: *const u8,
    component_len: usize,
    manifest_toml: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        if component.is_null() {
            return Err(fail(
                kw_status::KW_STATUS_NULL_ARGUMENT,
                "component is NULL",
            ));
        }
        // SAFETY: the caller promises `component_len` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(component, component_len) };
        let manifest = unsafe { text(manifest_toml, "manifest_toml") }?;
        with_plugins(store, |s| {
            #[cfg(feature = "plugins")]
            {
                let info = s.install_plugin(bytes, manifest)?;
                if !json_out.is_null() {
                    unsafe { put_json(json_out, &info) }?;
                }
            }
            Ok(())
        })
    })
}

/// Every installed plugin with its delivery status, as a JSON array to
/// `*json_out` (free with `kw_string_free`): `[{"name", "version", "api",
/// "events", "allowed_hosts", "enabled", "installed_at", "status":
/// {"cursor", "pending", "delivered", "failed", "dead_letters", "attempts",
/// "next_attempt_at", "last_error", "last_error_at", "last_success_at"}}]`.
#[unsafe(no_mangle)]
#[cfg_attr(not(feature = "plugins"), allow(unused_variables))]
pub unsafe extern "C" fn kw_plugin_list_json(
    store: *const kw_store,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        not_null(json_out, "json_out")?;
        with_plugins(store, |s| {
            #[cfg(feature = "plugins")]
            unsafe {
                put_json(json_out, &s.plugins()?)?;
            }
            Ok(())
        })
    })
}

/// One plugin (the object of `kw_plugin_list_json`) to `*json_out`.
#[unsafe(no_mangle)]
#[cfg_attr(not(feature = "plugins"), allow(unused_variables))]
pub unsafe extern "C" fn kw_plugin_status_json(
    store: *const kw_store,
    name: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let name = unsafe { text(name, "name") }?;
        not_null(json_out, "json_out")?;
        with_plugins(store, |s| {
            #[cfg(feature = "plugins")]
            unsafe {
                put_json(json_out, &s.plugin(name)?)?;
            }
            Ok(())
        })
    })
}

/// A plugin's dead letters as a JSON array to `*json_out`: `[{"seq",
/// "kind", "error", "attempts", "at", "requeued"}]`.
#[unsafe(no_mangle)]
#[cfg_attr(not(feature = "plugins"), allow(unused_variables))]
pub unsafe extern "C" fn kw_plugin_dead_letters_json(
    store: *const kw_store,
    name: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let name = unsafe { text(name, "name") }?;
        not_null(json_out, "json_out")?;
        with_plugins(store, |s| {
            #[cfg(feature = "plugins")]
            unsafe {
                put_json(json_out, &s.plugin_dead_letters(name)?)?;
            }
            Ok(())
        })
    })
}

/// A plugin's recent log lines as a JSON array of strings to `*json_out`.
#[unsafe(no_mangle)]
#[cfg_attr(not(feature = "plugins"), allow(unused_variables))]
pub unsafe extern "C" fn kw_plugin_log_json(
    store: *const kw_store,
    name: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let name = unsafe { text(name, "name") }?;
        not_null(json_out, "json_out")?;
        with_plugins(store, |s| {
            #[cfg(feature = "plugins")]
            unsafe {
                put_json(json_out, &s.plugin_log(name)?)?;
            }
            Ok(())
        })
    })
}

/// Removes a plugin, its delivery state and its dead letters.
#[unsafe(no_mangle)]
#[cfg_attr(not(feature = "plugins"), allow(unused_variables))]
pub unsafe extern "C" fn kw_plugin_remove(store: *mut kw_store, name: *const c_char) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let name = unsafe { text(name, "name") }?;
        with_plugins(store, |s| {
            #[cfg(feature = "plugins")]
            s.remove_plugin(name)?;
            Ok(())
        })
    })
}

/// Pauses (`false`: events wait at its cursor) or resumes a plugin.
#[unsafe(no_mangle)]
#[cfg_attr(not(feature = "plugins"), allow(unused_variables))]
pub unsafe extern "C" fn kw_plugin_set_enabled(
    store: *mut kw_store,
    name: *const c_char,
    enabled: bool,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let name = unsafe { text(name, "name") }?;
        with_plugins(store, |s| {
            #[cfg(feature = "plugins")]
            s.set_plugin_enabled(name, enabled)?;
            Ok(())
        })
    })
}

/// Queues a plugin's dead letters for another attempt and ends its current
/// backoff; the number queued goes to `*queued_out` when it is not NULL.
#[unsafe(no_mangle)]
#[cfg_attr(not(feature = "plugins"), allow(unused_variables))]
pub unsafe extern "C" fn kw_plugin_retry(
    store: *mut kw_store,
    name: *const c_char,
    queued_out: *mut usize,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let name = unsafe { text(name, "name") }?;
        with_plugins(store, |s| {
            #[cfg(feature = "plugins")]
            {
                let n = s.retry_plugin(name)?;
                // SAFETY: NULL or a writable size_t.
                if let Some(out) = unsafe { queued_out.as_mut() } {
                    *out = n;
                }
            }
            Ok(())
        })
    })
}

// ------------------------------------------------------------ errors, strings

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

/// Releases a string returned through a `json_out` argument. NULL is fine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: came from CString::into_raw in this library, freed once.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// The library version, a static NUL-terminated string; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn kw_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
