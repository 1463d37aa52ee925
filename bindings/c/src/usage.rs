//! The Usage tab and the event outbox, as JSON.

use std::ffi::c_char;

use keyward::EventQuery;
use serde::Deserialize;

use super::error::{boundary, fail};
use super::generated::kw_status;
use super::store::{kw_store, store_and_key, store_ref};
use super::values::{not_null, put_json, text};

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

/// The events `query_json` asks for, as an `EventPage` JSON object (see
/// "JSON shapes" at the top of this header) to `*json_out` (free with
/// `kw_string_free`). `query_json` is an `EventQuery` object: every field
/// optional — `key_id`, `owner`, `actor`, `kinds` (event kind names),
/// `since_time` and `until_time` (RFC 3339), `after` and `before` (event
/// numbers), `newest_first`, `limit` (1 to `KW_MAX_PAGE`, default 100);
/// `{}` is every event, oldest first. Continue from the page's `next`
/// (as `after`, or `before` newest first) while it is not null. Answered
/// through the outbox's index.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_events_query_json(
    store: *const kw_store,
    query_json: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| {
        let store = unsafe { store_ref(store) }?;
        let query = unsafe { text(query_json, "query_json") }?;
        not_null(json_out, "json_out")?;
        let invalid = |e: serde_json::Error| {
            fail(
                kw_status::KW_STATUS_INVALID_INPUT,
                format!("query_json: {e}"),
            )
        };
        // An object, not the array serde would also take for a struct.
        let query: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(query).map_err(invalid)?;
        let query = EventQuery::deserialize(serde_json::Value::Object(query)).map_err(invalid)?;
        unsafe { put_json(json_out, &store.events_query(&query)?) }
    })
}
