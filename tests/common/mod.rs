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

/// A well-formed key (valid checksum) from its parts: `secret` is 43
/// base62 characters.
pub fn well_formed(prefix: &str, id: &str, secret: &str) -> String {
    let body = format!("{prefix}_{id}_{secret}");
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
    notifier_component_with(body, url.as_bytes(), "")
}

/// [`notifier_component`] with any bytes as the URL (written with WAT
/// escapes) and `extra` declarations in the main module.
pub fn notifier_component_with(body: &str, url: &[u8], extra: &str) -> Vec<u8> {
    let escaped: String = url
        .iter()
        .map(|&b| {
            if (b.is_ascii_graphic() && b != b'"' && b != b'\\') || b == b' ' {
                char::from(b).to_string()
            } else {
                format!("\\{b:02x}")
            }
        })
        .collect();
    NOTIFIER_WAT
        .replace("{BODY}", body)
        .replace("{EXTRA}", extra)
        .replace("{URL_LEN}", &url.len().to_string())
        .replace("{URL}", &escaped)
        .into_bytes()
}

/// The workspace's root directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The profile this test was built with, as cargo names it.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    }
}

/// The `keyward` binary of the CLI crate: `$KEYWARD_BIN` when set (as
/// scripts/test-all.sh sets it, after building the workspace), else built
/// once per test process with this test's profile.
pub fn keyward_bin() -> &'static Path {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        if let Some(given) = std::env::var_os("KEYWARD_BIN") {
            return PathBuf::from(given);
        }
        cargo(&["build", "-p", "keyward-cli", "--bin", "keyward"]);
        target_dir().join("keyward")
    })
}

/// The directory this test's binaries are built into (`target/debug`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn cargo(args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO"))
        .args(args)
        .args(["--profile", profile()])
        .current_dir(workspace_root())
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An installed C library (`lib/libkeyward.so.1.*`, its links,
/// `lib/libkeyward.a`, `include/keyward.h`, `lib/pkgconfig/keyward.pc`):
/// the prefix in `KEYWARD_C_PREFIX` (scripts/test-all.sh installs one with
/// `make install`), else this test process's own, installed once by `make
/// install PROFILE=<this test's> PREFIX=<a temporary directory>`.
pub fn c_prefix() -> &'static Path {
    static INSTALLED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        if let Some(prefix) = std::env::var_os("KEYWARD_C_PREFIX") {
            return PathBuf::from(prefix);
        }
        let prefix = tempfile::Builder::new()
            .prefix("keyward-prefix")
            .tempdir()
            .expect("a temporary prefix")
            .keep();
        let out = std::process::Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(workspace_root())
            .arg("install")
            .arg(format!("PROFILE={}", profile()))
            .arg(format!("PREFIX={}", prefix.display()))
            .output()
            .expect("running make install");
        assert!(
            out.status.success(),
            "make install failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        prefix
    })
}

/// The environment variable `var` that a test needs a service through.
/// Missing, the test is skipped (and says so) — except under `CI=true`,
/// where a missing service fails the test instead of passing it.
pub fn service(var: &str, what: &str) -> Option<String> {
    if let Ok(v) = std::env::var(var) {
        return Some(v);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{var} is not set, so {what} cannot run; under CI=true that is a failure \
         (scripts/test-all.sh sets it up)"
    );
    eprintln!("\n*** skipped: {var} is not set, so {what} did not run ***\n");
    None
}

/// Polls `probe` every few milliseconds until it gives a value, and fails
/// the test, naming `what`, when `within` passes first.
pub fn wait_until<T>(
    what: &str,
    within: std::time::Duration,
    probe: impl FnMut() -> Option<T>,
) -> T {
    wait_until_or(within, probe)
        .unwrap_or_else(|| panic!("timed out after {within:?} waiting for {what}"))
}

/// Polls `probe` every few milliseconds until it gives a value, or `None`
/// when `within` passes first.
pub fn wait_until_or<T>(
    within: std::time::Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A store's options with a clock the test moves by hand.
pub fn options_with_clock(clock: &std::sync::Arc<keyward::ManualClock>) -> Options {
    let mut o = fast_options();
    o.clock = clock.clone();
    o
}

/// Blocks until the parent test closes this child's stdin (or kills it):
/// a child process that must stay alive until then, and no longer.
pub fn wait_for_parent() {
    let mut sink = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
}

/// Runs `cmd` with `input` on its stdin (then closed), capturing stdout.
pub fn output_with_stdin(cmd: &mut std::process::Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}
