//! Plugin manifests: any text, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(m) = keyward::fuzzing::parse_manifest(text)
    {
        for origin in &m.allowed_hosts {
            assert!(!origin.is_empty());
        }
    }
});
