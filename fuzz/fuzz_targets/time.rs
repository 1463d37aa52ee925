//! RFC 3339 parsing: any text, never a panic; what parses is in range and
//! reads back as the same instant.
#![no_main]

use keyward::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(t) = Timestamp::parse_rfc3339(text)
    {
        assert!(t.is_in_range());
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Ok(t));
    }
    if data.len() >= 8 {
        // Any instant formats without a panic.
        let ms = i64::from_le_bytes(data[..8].try_into().unwrap());
        let _ = Timestamp::from_unix_millis(ms).to_string();
    }
});
