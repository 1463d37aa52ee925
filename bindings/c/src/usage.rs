//! The Usage tab and the event outbox, as JSON.

use std::ffi::c_char;

use keyward::{EventQuery, Store};

use super::generated::kw_status;
use super::store::kw_store;
use super::store::{answer_json, key_answer_json};
use super::values::{json_object, text};

/// Key `id`'s Usage tab as a `Usage` JSON object (see "JSON shapes" at the
/// top of this header), to `*json_out` (free with `kw_string_free`).
/// Includes unflushed usage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_usage_json(
    store: *const kw_store,
    id: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    unsafe { key_answer_json(store, id, json_out, Store::usage) }
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
    unsafe { key_answer_json(store, id, json_out, Store::recent_requests) }
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
    unsafe { answer_json(store, json_out, |store| Ok(store.events(since, limit)?)) }
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
    unsafe { answer_json(store, json_out, |store| Ok(store.metrics())) }
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
    unsafe {
        answer_json(store, json_out, |store| {
            let query = text(query_json, "query_json")?;
            Ok(store.events_query(&json_object::<EventQuery>(query, "query_json")?)?)
        })
    }
}
