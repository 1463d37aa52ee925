//! Notifier plugins: install, list, status, dead letters, log, remove,
//! pause and retry. A library built without the plugin host answers
//! `KW_STATUS_PLUGINS_UNSUPPORTED`.

use std::ffi::c_char;

use super::error::{Fail, boundary, fail};
use super::generated::kw_status;
use super::store::{kw_store, store_ref};
#[cfg(feature = "plugins")]
use super::values::put_json;
use super::values::{not_null, optional_text, text};
use keyward::Store;

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

/// The body of a `kw_plugin_*_json` function: the store and `json_out`
/// checked, then the value of `$answer` (an expression of the store
/// `$s`, reading the function's other arguments) written to `*json_out`;
/// `KW_STATUS_PLUGINS_UNSUPPORTED` without the plugin host.
macro_rules! plugin_json {
    ($store:ident, $json_out:ident, |$s:ident| $answer:expr) => {
        boundary(|| {
            let store = unsafe { store_ref($store) }?;
            not_null($json_out, "json_out")?;
            with_plugins(store, |$s| {
                #[cfg(feature = "plugins")]
                {
                    let value = $answer;
                    unsafe { put_json($json_out, &value) }?;
                }
                Ok(())
            })
        })
    };
}

/// The install options of `kw_plugin_install_ex`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "plugins"), allow(dead_code))]
struct InstallJson {
    #[serde(default)]
    allow_private_network: bool,
}

#[cfg_attr(not(feature = "plugins"), allow(unused_variables))]
unsafe fn install(
    store: *mut kw_store,
    component: *const u8,
    component_len: usize,
    manifest_toml: *const c_char,
    options_json: *const c_char,
    json_out: *mut *mut c_char,
) -> Result<(), Fail> {
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
    let options: InstallJson = match unsafe { optional_text(options_json, "options_json") }? {
        None => InstallJson::default(),
        Some(j) => serde_json::from_str(j).map_err(|e| {
            fail(
                kw_status::KW_STATUS_INVALID_INPUT,
                format!("options_json: {e}"),
            )
        })?,
    };
    with_plugins(store, |s| {
        #[cfg(feature = "plugins")]
        {
            let grants =
                keyward::InstallOptions::new().allow_private_network(options.allow_private_network);
            let info = s.install_plugin_with(bytes, manifest, grants)?;
            if !json_out.is_null() {
                unsafe { put_json(json_out, &info) }?;
            }
        }
        Ok(())
    })
}

/// Installs a notifier plugin: `component`, `component_len` are the bytes
/// of a WebAssembly component (or its WAT text); `manifest_toml` its TOML
/// manifest (NUL-terminated). It receives subscribed events from now on.
/// On success, and when `json_out` is not NULL, `*json_out` receives the
/// plugin as in `kw_plugin_list_json` (free with `kw_string_free`). An
/// invalid manifest or component stores nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_plugin_install(
    store: *mut kw_store,
    component: *const u8,
    component_len: usize,
    manifest_toml: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| unsafe {
        install(
            store,
            component,
            component_len,
            manifest_toml,
            std::ptr::null(),
            json_out,
        )
    })
}

/// `kw_plugin_install` with an operator's grants as a JSON object (NULL =
/// none): `{"allow_private_network": true}` lets the plugin's calls reach
/// loopback, link-local and private addresses through the names its
/// manifest allows (a CRM on an internal network).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kw_plugin_install_ex(
    store: *mut kw_store,
    component: *const u8,
    component_len: usize,
    manifest_toml: *const c_char,
    options_json: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    boundary(|| unsafe {
        install(
            store,
            component,
            component_len,
            manifest_toml,
            options_json,
            json_out,
        )
    })
}

/// Every installed plugin with its delivery status, as a JSON array of
/// `PluginInfo` objects (see "JSON shapes" at the top of this header) to
/// `*json_out` (free with `kw_string_free`).
#[unsafe(no_mangle)]
#[cfg_attr(not(feature = "plugins"), allow(unused_variables))]
pub unsafe extern "C" fn kw_plugin_list_json(
    store: *const kw_store,
    json_out: *mut *mut c_char,
) -> kw_status {
    plugin_json!(store, json_out, |s| s.plugins()?)
}

/// One plugin (the object of `kw_plugin_list_json`) to `*json_out`.
#[unsafe(no_mangle)]
#[cfg_attr(not(feature = "plugins"), allow(unused_variables))]
pub unsafe extern "C" fn kw_plugin_status_json(
    store: *const kw_store,
    name: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    plugin_json!(store, json_out, |s| s
        .plugin(unsafe { text(name, "name") }?)?)
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
    plugin_json!(store, json_out, |s| s
        .plugin_dead_letters(unsafe { text(name, "name") }?)?)
}

/// A plugin's recent log lines as a JSON array of strings to `*json_out`.
#[unsafe(no_mangle)]
#[cfg_attr(not(feature = "plugins"), allow(unused_variables))]
pub unsafe extern "C" fn kw_plugin_log_json(
    store: *const kw_store,
    name: *const c_char,
    json_out: *mut *mut c_char,
) -> kw_status {
    plugin_json!(store, json_out, |s| s
        .plugin_log(unsafe { text(name, "name") }?)?)
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
