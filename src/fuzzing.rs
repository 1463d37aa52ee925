//! What the fuzz targets under `fuzz/` reach that the public API does not:
//! the parsers themselves (the C functions are the `keyward-ffi` crate's).
//! Built only with `--cfg fuzzing` (cargo fuzz sets it).

use crate::key::KeyId;

/// Parses `key` as a key of a store with `prefix`: its id when well-formed.
#[must_use]
pub fn parse_key(key: &[u8], prefix: &str) -> Option<KeyId> {
    crate::key::parse(key, prefix).ok().map(|p| p.id)
}

/// Parses a whitelist entry (an IP or a CIDR network): its canonical form.
///
/// # Errors
/// What is wrong with it.
pub fn parse_network(input: &str) -> Result<ipnet::IpNet, String> {
    crate::whitelist::parse_network(input)
}

/// Parses and checks a plugin manifest.
///
/// # Errors
/// What is wrong with it.
#[cfg(feature = "manifest")]
pub fn parse_manifest(text: &str) -> Result<crate::manifest::Manifest, String> {
    crate::manifest::Manifest::parse(text)
}
