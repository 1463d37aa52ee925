//! The Usage tab and the event outbox, as JSON.

use std::ffi::c_char;

use super::error::boundary;
use super::generated::kw_status;
use super::store::{kw_store, store_and_key, store_ref};
use super::values::{not_null, put_json};

/// Key `id`'s Usage tab as a `Usage` JSON object (see "JSON shapes" at the
/// top of this header), to `*json_out` (free with `kw_string_free`).
/// Includes unflushed usage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_usage_json(
    store: *const kw_store,
    id: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        not_null(json_out, "json_out")?;
        unsafe { put_json(json_out, &store.usage(&id)?) }
    })
}

/// Key `id`'s last verifications, newest first (at most
/// `KW_RECENT_PER_KEY`), as a JSON array of `RecentRequest` objects (see
/// "JSON shapes" at the top of this header) to `*json_out` (free with
/// `kw_string_free`). Includes requests not yet flushed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_recent_requests_json(
    store: *const kw_store,
    id: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let (store, id) = unsafe { store_and_key(store, id) }?;
        not_null(json_out, "json_out")?;
        unsafe { put_json(json_out, &store.recent_requests(&id)?) }
    })
}

/// Outbox events with sequence number above `since`, oldest first, at most
/// `limit`, as a JSON array of `Event` objects (see "JSON shapes" at the
/// top of this header) to `*json_out` (free with `kw_string_free`).
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

/// This handle's metrics as a `Metrics` JSON object (see "JSON shapes" at
/// the top of this header): verifications by outcome and reason, hashes
/// run, hash-gate waits and refusals, keys, role, staleness, quota lease
/// fetches, storage errors, each plugin's deliveries. Counters count since
/// the handle was opened. To `*json_out` (free with `kw_string_free`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_metrics_json(
    store: *const kw_store,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        not_null(json_out, "json_out")?;
        unsafe { put_json(json_out, &store.metrics()) }
    })
}
