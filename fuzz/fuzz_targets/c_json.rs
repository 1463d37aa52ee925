//! Every JSON (and other text) input of the C ABI, through the C functions
//! themselves: any bytes give OK or a typed error, never a panic, and the
//! store stays readable.
#![no_main]

use std::ffi::{CStr, CString, c_char};
use std::sync::OnceLock;

use keyward_ffi::all as c;
use keyward::{Argon2Params, Options, Store};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    store: usize,
    id: CString,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut o = Options::default();
        o.argon2 = Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let store = Store::open_in_memory(&o).unwrap();
        let k = store
            .create("fixture", keyward::CreateOptions::new())
            .unwrap();
        Fixture {
            id: CString::new(k.info.id.to_string()).unwrap(),
            store: c::handle(store) as usize,
        }
    })
}

/// The input up to its first NUL, as C would see it.
fn text(bytes: &[u8]) -> CString {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    CString::new(&bytes[..end]).unwrap()
}

fn ok_or_typed(status: c::kw_status) {
    assert!(
        status != c::kw_status::KW_STATUS_PANIC && status != c::kw_status::KW_STATUS_INTERNAL,
        "{status:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let store = f.store as *mut c::kw_store;
    let input = text(rest);
    let mut key = [0 as c_char; 96];
    let mut id = [0 as c_char; 16];
    // SAFETY: a live handle, NUL-terminated strings, buffers of the sizes given.
    unsafe {
        let status = match which % 9 {
            0 => {
                let s = c::kw_key_create_ex(
                    store,
                    c"k".as_ptr(),
                    input.as_ptr(),
                    key.as_mut_ptr(),
                    key.len(),
                    id.as_mut_ptr(),
                    id.len(),
                );
                if s == c::kw_status::KW_STATUS_OK {
                    ok_or_typed(c::kw_key_delete(store, id.as_ptr()));
                }
                s
            }
            1 => c::kw_key_set_metadata(store, f.id.as_ptr(), input.as_ptr()),
            2 => c::kw_key_set_expiry(store, f.id.as_ptr(), input.as_ptr()),
            3 => {
                let mut entry = [0 as c_char; 16];
                let s = c::kw_whitelist_add(
                    store,
                    f.id.as_ptr(),
                    c"e".as_ptr(),
                    input.as_ptr(),
                    entry.as_mut_ptr(),
                    entry.len(),
                );
                if s == c::kw_status::KW_STATUS_OK {
                    ok_or_typed(c::kw_whitelist_remove(store, f.id.as_ptr(), entry.as_ptr()));
                }
                s
            }
            4 => c::kw_key_set_limits(store, f.id.as_ptr(), input.as_ptr()),
            5 => c::kw_key_set_quota(store, f.id.as_ptr(), input.as_ptr()),
            6 => c::kw_key_set_scopes(store, f.id.as_ptr(), input.as_ptr()),
            7 => {
                let mut v: c::kw_verdict = std::mem::zeroed();
                v.size = std::mem::size_of::<c::kw_verdict>();
                c::kw_verify_scoped(
                    store,
                    rest.as_ptr().cast(),
                    rest.len(),
                    c"10.0.0.1".as_ptr(),
                    std::ptr::null(),
                    input.as_ptr(),
                    &raw mut v,
                )
            }
            _ => {
                let mut v: c::kw_verdict = std::mem::zeroed();
                v.size = std::mem::size_of::<c::kw_verdict>();
                c::kw_verify(
                    store,
                    rest.as_ptr().cast(),
                    rest.len(),
                    input.as_ptr(),
                    input.as_ptr(),
                    &raw mut v,
                )
            }
        };
        ok_or_typed(status);
        // Whatever happened, the key reads back as JSON.
        let mut json: *mut c_char = std::ptr::null_mut();
        assert_eq!(
            c::kw_key_get_json(store, f.id.as_ptr(), &raw mut json),
            c::kw_status::KW_STATUS_OK
        );
        let _ = CStr::from_ptr(json).to_str().unwrap();
        c::kw_string_free(json);
    }
});
