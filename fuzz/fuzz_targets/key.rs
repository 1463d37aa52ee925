//! Key and key-id parsing: any bytes, never a panic; what parses has the
//! shape the format says.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for prefix in ["kw", "acme_live", "x"] {
        if let Some(id) = keyward::fuzzing::parse_key(data, prefix) {
            assert!(data.starts_with(prefix.as_bytes()));
            let id = id.to_string();
            assert_eq!(id.len(), 12);
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        match text.parse::<keyward::KeyId>() {
            Ok(id) => assert_eq!(id.to_string(), text),
            // The message never quotes long input (it could be a secret).
            Err(e) if text.chars().count() > 20 => {
                let e = e.to_string();
                let not_shown = format!(
                    "invalid key id (a {}-character text, not shown): expected 12 base62 characters",
                    text.chars().count()
                );
                assert!(
                    e == not_shown || (e.starts_with("that is a whole key") && !e.contains(text)),
                    "{e}"
                );
            }
            Err(_) => {}
        }
    }
});
