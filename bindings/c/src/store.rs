//! The store handle: opening (with `kw_options`), flushing, closing, and
//! the library's version.

use std::ffi::c_char;
use std::time::Duration;

use super::abi::read_in;
use super::error::{Fail, boundary, fail};
use super::generated::{KW_ABI_VERSION, kw_status};
use super::values::{key_id, key_len, not_null, optional_text, put_json, text};
use keyward::Argon2Params;
use keyward::{KeyId, Options, Store};

/// How to open a store. Set `size` to `sizeof(kw_options)` and leave every
/// other field zero for its default: `kw_options o = { .size = sizeof o };`.
/// Passing NULL to `kw_store_open` means all defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kw_options {
    /// `sizeof(kw_options)` as the program was compiled (see the ABI policy).
    pub size: usize,
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
    /// true: this process must own a sled store; when another process owns
    /// it, `kw_store_open` returns `KW_STATUS_STORE_LOCKED` instead of
    /// attaching.
    pub require_owner: bool,
    /// A group (name or number) whose members may attach to a sled store
    /// this process owns (directory 0750, socket 0660, of that group);
    /// NULL: only this user.
    pub attach_group: *const c_char,
    /// Who this handle's changes are by: the `data.actor` of their events
    /// (a user, a service); NULL: `<os user>@<host name>`.
    pub actor: *const c_char,
}

/// The size of the first published `kw_options` (with `size`): the least
/// a program may pass.
const KW_OPTIONS_SIZE_1: usize = 32;
const _: () = assert!(std::mem::size_of::<kw_options>() >= KW_OPTIONS_SIZE_1);

/// An open store. Opaque; create with `kw_store_open`, release with
/// `kw_store_free` or `kw_store_close`. Safe to use from many threads at
/// once, including `kw_verify` beside mutations.
pub struct kw_store {
    pub(crate) store: Store,
    /// The process's fork count when the store was opened.
    pub(crate) forks: u64,
}

impl kw_store {
    pub(crate) fn new(store: Store) -> Self {
        kw_store {
            store,
            forks: keyward::fork_generation(),
        }
    }

    /// Whether this process is a child forked since the store was opened.
    pub fn forked(&self) -> bool {
        keyward::fork_generation() != self.forks
    }

    /// The store behind the handle (the Python package's native fast path
    /// verifies through it).
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// The opening of every function on one key: the store and the key id,
/// checked (NULL, non-UTF-8, a malformed id and a forked handle are
/// typed errors).
pub(crate) unsafe fn store_and_key<'a>(
    store: *const kw_store,
    id: *const c_char,
) -> Result<(&'a Store, KeyId), Fail> {
    Ok((unsafe { store_ref(store) }?, unsafe { key_id(id) }?))
}

/// What every call answering in JSON does: checks the handle and
/// `json_out`, then writes what `answer` reads to `*json_out` (free with
/// `kw_string_free`).
pub(crate) unsafe fn answer_json<T: serde::Serialize>(
    store: *const kw_store,
    json_out: *mut *mut c_char,
    answer: impl FnOnce(&Store) -> Result<T, Fail>,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        not_null(json_out, "json_out")?;
        let value = answer(store)?;
        unsafe { put_json(json_out, &value) }
    })
}

/// [`answer_json`] of what `answer` reads of key `id`.
pub(crate) unsafe fn key_answer_json<T: serde::Serialize, E>(
    store: *const kw_store,
    id: *const c_char,
    json_out: *mut *mut c_char,
    answer: impl FnOnce(&Store, &KeyId) -> Result<T, E>,
) -> kw_status
where
    Fail: From<E>,
{
    unsafe {
        answer_json(store, json_out, |store| {
            let id = key_id(id)?;
            Ok(answer(store, &id)?)
        })
    }
}

/// The store a handle holds: `NULL` and a handle from before a `fork()`
/// are refused.
pub(crate) unsafe fn store_ref<'a>(p: *const kw_store) -> Result<&'a Store, Fail> {
    // SAFETY: a non-NULL handle came from kw_store_open and was not freed.
    let handle = unsafe { p.as_ref() }
        .ok_or_else(|| fail(kw_status::KW_STATUS_NULL_ARGUMENT, "store is NULL"))?;
    if handle.forked() {
        return Err(fail(
            kw_status::from(keyward::ErrorKind::Forked),
            keyward::FORKED_MESSAGE,
        ));
    }
    Ok(&handle.store)
}

/// Opens the store at `path`: a sled directory (created, mode 0700, if
/// needed) or a `postgres://` / `postgresql://` URL (`?schema=NAME`) of a
/// store shared through PostgreSQL (schema created and migrated on open;
/// libpq's parameters, TLS with `sslmode`, `sslrootcert`, `sslcert`,
/// `sslkey` included: see the README).
///
/// - `path`: NUL-terminated UTF-8; not NULL.
/// - `options`: NULL for defaults; else its `size` is `sizeof(kw_options)`
///   (`{ .size = sizeof o }`), and zero fields take their defaults.
/// - `store_out`: receives the handle on success; not NULL.
///
/// A handle belongs to the process that opened it: in a child made by
/// `fork()` afterwards, every call returns `KW_STATUS_FORKED` (open the
/// store again in the child, e.g. in gunicorn's `post_fork` hook), and
/// `kw_store_free` leaves the parent's store alone.
///
/// Any number of processes of one user may open the same sled store: the
/// first owns its files and serves them on a Unix socket in the store
/// directory (`keyward.sock`); later openers attach to it, each with its
/// own in-memory verify index (verification never leaves the process),
/// their writes made by the owner and durable before the call returns.
/// When the owner exits or is killed, an attached process takes over. A
/// second open of the same path in one process shares that process's
/// store (each handle is freed on its own; the store stops with the last).
/// `kw_store_status_json` says which process owns the store.
///
/// Returns `KW_STATUS_STORE_LOCKED` only when the store cannot be attached
/// to: its owner runs as another user (and names no group of this one),
/// or `options->require_owner` is set and another process owns it.
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
        if !options.is_null() {
            // SAFETY: a kw_options of `size` bytes, valid for the call.
            let c = unsafe {
                read_in(
                    options,
                    KW_OPTIONS_SIZE_1,
                    "kw_options",
                    kw_status::KW_STATUS_INVALID_OPTIONS,
                )
            }?;
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
            o.require_owner = c.require_owner;
            o.attach_group =
                unsafe { optional_text(c.attach_group, "options.attach_group") }?.map(String::from);
            o.actor = unsafe { optional_text(c.actor, "options.actor") }?.map(String::from);
        }
        let store = Store::open_with(path, &o)?;
        // SAFETY: checked non-NULL above.
        unsafe { *store_out = Box::into_raw(Box::new(kw_store::new(store))) };
        Ok(())
    })
}

/// Flushes pending usage and releases the store. NULL is fine. Errors of the
/// final flush are lost; use `kw_store_close` to see them.
///
/// The handle is freed when this returns: it must not race any other call
/// on the same handle (wait for every thread's calls to return first), and
/// must not be used or freed again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_store_free(store: *mut kw_store) {
    if !store.is_null() {
        let _ = boundary(|| {
            // SAFETY: came from kw_store_open, released exactly once.
            let handle = unsafe { Box::from_raw(store) };
            if handle.forked() {
                // The parent's threads are not here to stop: leave it be.
                std::mem::forget(handle);
            }
            Ok(())
        });
    }
}

/// Flushes pending usage, releases the store (always, even on error) and
/// reports the flush's outcome. NULL is fine (`KW_STATUS_OK`).
///
/// As with `kw_store_free`, the handle is freed: this must not race any
/// other call on the same handle, and the handle must not be used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_store_close(store: *mut kw_store) -> kw_status {
    if store.is_null() {
        return kw_status::KW_STATUS_OK;
    }
    boundary(|| {
        // SAFETY: came from kw_store_open, released exactly once.
        let handle = unsafe { Box::from_raw(store) };
        if handle.forked() {
            std::mem::forget(handle);
            return Err(fail(
                kw_status::from(keyward::ErrorKind::Forked),
                keyward::FORKED_MESSAGE,
            ));
        }
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

/// The library version, a static NUL-terminated string; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn kw_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version of this library: the number in its soname
/// (`libkeyward.so.1`), raised by any change that breaks a program built
/// against an older header. A program checks it against the header's
/// `KW_ABI_VERSION` at start-up.
#[unsafe(no_mangle)]
pub extern "C" fn kw_abi_version() -> u32 {
    KW_ABI_VERSION
}

/// Where this process stands with its store, as a JSON object written to
/// `*json_out` (free with `kw_string_free`):
/// `{"role", "pid", "owner_pid", "socket", "path", "keys"}` — `role` is
/// `"owner"` (this process owns the sled store and serves the others),
/// `"attached"` (it is attached to the process `owner_pid`), `"shared"`
/// (PostgreSQL) or `"memory"`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_store_status_json(
    store: *const kw_store,
    json_out: *mut *mut c_char,
) -> kw_status {
    unsafe { answer_json(store, json_out, |store| Ok(store.status().to_json())) }
}

/// Walks every table of the store and reports what does not agree, as a
/// JSON object written to `*json_out` (free with `kw_string_free`):
/// `{"clean": bool, "rows": {"keys": N, ...}, "problems": [{"table",
/// "row", "problem", "repaired"}]}` — records that do not decode,
/// owner-index rows and import lookups that do not match their records,
/// quota, limit and usage rows of no key, events and plugin state that do
/// not hold together. With `repair`, what is derived from the records
/// (the owner index, the import lookups) is rebuilt and rows of no key are
/// removed, in one durable write made only if nothing involved changed
/// meanwhile (else a storage error: check again); records are never
/// touched. `clean` is true when nothing is wrong that was not repaired.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_store_check_json(
    store: *const kw_store,
    repair: bool,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        not_null(json_out, "json_out")?;
        let report = store.check(repair)?;
        unsafe { put_json(json_out, &report) }
    })
}

/// Writes a consistent snapshot of the store, taken while other processes
/// go on verifying and writing, as a new sled store at `dest_path` (a
/// directory that does not exist yet, or is empty) that `kw_store_open`
/// opens directly. Works from the owning process, an attached one, or on a
/// PostgreSQL store. `KW_STATUS_INVALID_INPUT` when `dest_path` has
/// anything in it (nothing is written there).
///
/// - `dest_path`: NUL-terminated UTF-8; not NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_store_backup(
    store: *const kw_store,
    dest_path: *const c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let dest = unsafe { text(dest_path, "dest_path") }?;
        store.backup(dest)?;
        Ok(())
    })
}

/// `kw_store_backup`, and what it wrote as a JSON object in `*json_out`
/// (free with `kw_string_free`): `{"keys", "rows", "bytes", "last_event",
/// "journaled"}` — `last_event` is the newest event the backup holds (its
/// next is numbered after it), `journaled` the rows written while it was
/// read, applied after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_store_backup_json(
    store: *const kw_store,
    dest_path: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let dest = unsafe { text(dest_path, "dest_path") }?;
        not_null(json_out, "json_out")?;
        let report = store.backup(dest)?;
        unsafe { put_json(json_out, &report) }
    })
}

/// Copies the store, as one consistent snapshot, into the empty store at
/// `dest`: a sled directory (that does not exist yet, or is empty) or a
/// `postgres://` URL whose schema holds nothing. Key ids are kept (every
/// key verifies against the copy as against this store), event numbers
/// continue, plugins do not deliver again. Writes the report to
/// `*json_out` as `kw_store_backup_json` does. `KW_STATUS_INVALID_INPUT`
/// when the destination holds anything (nothing is written to it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_store_copy_json(
    store: *const kw_store,
    dest: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let dest = unsafe { text(dest, "dest") }?;
        not_null(json_out, "json_out")?;
        let report = store.copy_to(dest)?;
        unsafe { put_json(json_out, &report) }
    })
}
