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

//!
//! One file per object, as rustls-ffi's are: [`store`] (the handle,
//! options, versions), [`verify`], [`keys`], [`whitelist`], [`usage`]
//! (usage and events), [`plugins`]; the machinery in [`error`] (statuses,
//! last error, the panic boundary), [`values`] (arguments in, buffers and
//! strings out) and [`abi`] (how structs grow). [`generated`] holds the
//! `kw_status` and `kw_denial` enums, generated from the Rust tables.

#![allow(non_camel_case_types, clippy::missing_safety_doc)]

mod abi;
mod error;
mod generated;
mod keys;
#[cfg(test)]
mod kinds;
mod owners;
mod plugins;
mod store;
mod usage;
mod values;
mod verify;
mod whitelist;

#[cfg(test)]
mod codegen;
#[cfg(test)]
mod shapes;

use keyward::ENTRY_ID_LEN;

pub use crate::store::kw_store;

/// Size of a buffer that holds any key id with its NUL (`kw_verdict.key_id`, `id_out`).
pub const KW_KEY_ID_BUFFER_LEN: usize = 16;
/// Size of a buffer that holds any plaintext key of any store with its NUL.
pub const KW_KEY_BUFFER_LEN: usize = 96;
/// Size of a buffer that holds any whitelist entry id with its NUL.
pub const KW_ENTRY_ID_BUFFER_LEN: usize = 16;
/// Size of a buffer that holds any owner id with its NUL (`kw_verdict.owner`).
pub const KW_OWNER_BUFFER_LEN: usize = 129;
/// Most keys one page of `kw_key_list_page_json` holds.
pub const KW_MAX_PAGE: usize = 1000;
/// Most verifications `kw_recent_requests_json` lists for one key.
pub const KW_RECENT_PER_KEY: usize = 50;

const _: () = assert!(KW_KEY_BUFFER_LEN > keyward::MAX_KEY_LEN);
const _: () = assert!(KW_OWNER_BUFFER_LEN > keyward::MAX_OWNER_LEN);
const _: () = assert!(KW_MAX_PAGE == keyward::MAX_PAGE);
const _: () = assert!(KW_RECENT_PER_KEY == keyward::RECENT_PER_KEY);
const _: () = assert!(KW_KEY_ID_BUFFER_LEN > keyward::KEY_ID_LEN);
const _: () = assert!(KW_ENTRY_ID_BUFFER_LEN > ENTRY_ID_LEN);

/// The C functions, for the fuzz targets (built with `--cfg fuzzing`).
#[cfg(fuzzing)]
pub mod all {
    pub use super::generated::kw_status;
    pub use super::keys::*;
    pub use super::store::*;
    pub use super::usage::*;
    pub use super::values::kw_string_free;
    pub use super::verify::*;
    pub use super::whitelist::*;

    /// A C handle over a store opened in Rust (an in-memory one, say).
    #[must_use]
    pub fn handle(store: keyward::Store) -> *mut kw_store {
        Box::into_raw(Box::new(kw_store::new(store)))
    }
}
