//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use keyward::{Argon2Params, CreateOptions, KeyId, Options, Store};

/// Cheap argon2 parameters: the tests hash thousands of times.
pub fn fast_options() -> Options {
    let mut o = Options::default();
    o.argon2 = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    o
}

pub fn open(path: &Path) -> Store {
    Store::open_with(path, &fast_options()).expect("open store")
}

/// A fresh store in a temporary directory (kept alive by the returned guard).
pub fn temp_store() -> (tempfile::TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let store = open(&path);
    (dir, path, store)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

/// Every byte of every file under `dir`.
pub fn all_file_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_file_bytes(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).expect("read")));
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A checksummed key with `id` and a random secret: reaches the secret check.
pub fn forge(store: &Store, id: &KeyId) -> String {
    // Take a real key's shape from a throwaway key and swap in the id.
    let other = store.create("throwaway", CreateOptions::new()).unwrap();
    let k = other.key.as_str();
    let body = format!(
        "{}_{}_{}",
        store.prefix(),
        id,
        &k[k.len() - 49..k.len() - 6]
    );
    let crc = crc32fast::hash(body.as_bytes());
    format!("{body}{}", base62_6(crc))
}

fn base62_6(mut n: u32) -> String {
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = A[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).unwrap()
}

/// The hand-written notifier component template (see tests/fixtures).
pub const NOTIFIER_WAT: &str = include_str!("../fixtures/notifier.wat.in");
/// A fixture body that POSTs the event kind to the fixture's URL.
pub const POST_KIND: &str = "(call $post (local.get $kind) (local.get $kind_len))";
/// A fixture body that logs the event kind through the host.
pub const LOG_KIND: &str =
    "(call $log (i32.const 1) (local.get $kind) (local.get $kind_len)) (call $ok)";

/// A WAT component whose core `on-event` runs `body`; `http` fixtures POST
/// the event kind to `url`.
pub fn notifier_component(body: &str, url: &str) -> Vec<u8> {
    NOTIFIER_WAT
        .replace("{BODY}", body)
        .replace("{URL_LEN}", &url.len().to_string())
        .replace("{URL}", url)
        .into_bytes()
}
