//! `kw_verify`, the hot path: no allocation, no storage access.

use std::ffi::c_char;
use std::net::IpAddr;

use super::abi::{out_size, write_out};
use super::error::{boundary, fail};
use super::generated::{kw_denial, kw_status};
use super::store::{kw_store, store_ref};
use super::values::{not_null, optional_text, text};
use super::{KW_KEY_ID_BUFFER_LEN, KW_OWNER_BUFFER_LEN};
use keyward::{Denial, Verdict, VerifyRequest};

/// The answer of `kw_verify`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kw_verdict {
    /// `sizeof(kw_verdict)` as the program was compiled, set before the
    /// call (`kw_verdict v = { .size = sizeof v };`); the library writes no
    /// more than this many bytes (see the ABI policy).
    pub size: usize,
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
    /// The account the key belongs to, NUL-terminated; empty when it has
    /// none or when no key has this id. Filled on refusals too whenever
    /// the key was found.
    pub owner: [c_char; KW_OWNER_BUFFER_LEN],
    /// For `KW_DENIAL_RATE_LIMITED`: milliseconds until one more request
    /// fits (the HTTP `Retry-After`, rounded up to seconds); otherwise 0.
    pub retry_after_ms: u64,
}

/// The size of the first published `kw_verdict` (with `size`): the least
/// a program may pass.
const KW_VERDICT_SIZE_1: usize = 48;
const _: () = assert!(std::mem::size_of::<kw_verdict>() >= KW_VERDICT_SIZE_1);

/// Verifies a presented key from `client_ip` (IPv4 or IPv6 text),
/// optionally naming the integration (e.g. the User-Agent) for usage.
///
/// - `key`, `key_len`: the key as received, any bytes; not NULL (a
///   zero-length key may point anywhere non-NULL). Anything that is not a
///   well-formed key is `KW_DENIAL_MALFORMED`, not an error.
/// - `integration`: NULL when unknown.
/// - `verdict_out`: its `size` set to `sizeof(kw_verdict)`; written on
///   `KW_STATUS_OK`.
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
    // SAFETY: the caller's promises, passed on.
    unsafe {
        verify_into(
            store,
            key,
            key_len,
            client_ip,
            integration,
            std::ptr::null(),
            verdict_out,
        )
    }
}

/// `kw_verify`, also requiring that the key carries `scope` (e.g.
/// `"orders:read"`): a key without it is `KW_DENIAL_SCOPE_MISSING`.
/// `scope` NULL requires none (the same as `kw_verify`). The checks run in
/// this order: the key, disabled or expired, the whitelist, the secret,
/// the scope, the rate limits, the quota; only a request that passes
/// everything before spends a rate limit or the quota. A key's scopes are
/// read with `kw_key_get_json` (this call allocates nothing).
///
/// # Safety
/// As `kw_verify`; `scope` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_verify_scoped(
    store: *const kw_store,
    key: *const c_char,
    key_len: usize,
    client_ip: *const c_char,
    integration: *const c_char,
    scope: *const c_char,
    verdict_out: *mut kw_verdict,
) -> kw_status {
    // SAFETY: the caller's promises, passed on.
    unsafe {
        verify_into(
            store,
            key,
            key_len,
            client_ip,
            integration,
            scope,
            verdict_out,
        )
    }
}

/// Both verifications: `scope` NULL requires none.
unsafe fn verify_into(
    store: *const kw_store,
    key: *const c_char,
    key_len: usize,
    client_ip: *const c_char,
    integration: *const c_char,
    scope: *const c_char,
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
        let scope = unsafe { optional_text(scope, "scope") }?;
        not_null(verdict_out, "verdict_out")?;
        // SAFETY: a kw_verdict of `size` bytes, checked non-NULL above.
        let size = unsafe { out_size(verdict_out, KW_VERDICT_SIZE_1, "kw_verdict") }?;
        // SAFETY: the caller promises `key_len` readable bytes at `key`.
        let bytes = unsafe { std::slice::from_raw_parts(key.cast::<u8>(), key_len) };
        let verdict = store.verify_request(
            &VerifyRequest::new(bytes, ip)
                .integration(integration)
                .scope(scope),
        );
        let mut out = kw_verdict {
            size,
            valid: false,
            denial: kw_denial::KW_DENIAL_NONE,
            key_id: [0; KW_KEY_ID_BUFFER_LEN],
            generation: 0,
            in_grace: false,
            rotated_at_unix_ms: 0,
            owner: [0; KW_OWNER_BUFFER_LEN],
            retry_after_ms: 0,
        };
        let (id, owner) = match verdict {
            Verdict::Valid(g) => {
                out.valid = true;
                out.generation = g.generation;
                out.in_grace = g.in_grace;
                (Some(g.key_id), g.owner)
            }
            Verdict::Denied(r) => {
                out.denial = kw_denial::from(&r.denial);
                match r.denial {
                    Denial::Rotated { at } => out.rotated_at_unix_ms = at.unix_millis(),
                    Denial::RateLimited { retry_after_ms } => out.retry_after_ms = retry_after_ms,
                    _ => {}
                }
                (r.key_id, r.owner)
            }
        };
        let id = id.as_ref().map_or(&[][..], |id| id.as_str().as_bytes());
        for (slot, b) in out.key_id.iter_mut().zip(id) {
            #[allow(clippy::cast_possible_wrap)] // ASCII: the same value either way
            {
                *slot = *b as c_char;
            }
        }
        // At most 128 bytes: the NUL always fits.
        for (slot, b) in out
            .owner
            .iter_mut()
            .zip(owner.as_deref().unwrap_or("").as_bytes())
        {
            *slot = c_char::from_ne_bytes([*b]);
        }
        // SAFETY: `size` writable bytes, checked above.
        unsafe { write_out(verdict_out, size, &out) };
        Ok(())
    })
}
