//! The C ABI from C: the header compiles as C99 and C++ (its freshness is
//! checked with the other generated files: `cargo test -p keyward-ffi generated`),
//! and the C programs in tests/c pass under AddressSanitizer and UBSan,
//! linked against the shared and the static library.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn root() -> &'static Path {
    common::workspace_root()
}

/// `pkg-config ARGS keyward` against the installed prefix, split into words.
fn pkg_config(args: &[&str]) -> Vec<String> {
    let prefix = common::c_prefix();
    let out = run(Command::new("pkg-config")
        .args(args)
        .arg("keyward")
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")));
    out.split_whitespace().map(str::to_string).collect()
}

/// Runs `cmd` to success, without the `LD_LIBRARY_PATH` cargo gives tests:
/// the programs find the installed library through its rpath alone.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn header_compiles_as_c99_and_as_cpp() {
    let header = common::c_prefix().join("include/keyward.h");
    for (compiler, std) in [("cc", "-std=c99"), ("c++", "-std=c++11")] {
        let lang = if compiler == "cc" { "c" } else { "c++" };
        run(Command::new(compiler)
            .args([
                std,
                "-Wall",
                "-Wextra",
                "-Wpedantic",
                "-Werror",
                "-fsyntax-only",
                "-x",
                lang,
            ])
            .arg(&header));
    }
}

/// Compiles `source` under ASan and UBSan against the installed library,
/// as its pkg-config file says: linked with `--libs` (the shared library,
/// found at run time through the rpath it gives), or statically with
/// `libkeyward.a` in place of `-lkeyward` and what `--static --libs` adds.
fn build_c(source: &str, exe: &Path, link_static: bool) {
    let mut cmd = Command::new("cc");
    cmd.args([
        "-std=c11",
        "-g",
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Werror",
    ])
    .args(["-fsanitize=address,undefined", "-fno-omit-frame-pointer"])
    .args(pkg_config(&["--cflags"]))
    .arg(root().join("tests/c").join(source))
    .arg("-o")
    .arg(exe);
    if link_static {
        let archive = common::c_prefix().join("lib/libkeyward.a");
        for word in pkg_config(&["--static", "--libs"]) {
            if word == "-lkeyward" {
                cmd.arg(&archive);
            } else {
                cmd.arg(word);
            }
        }
    } else {
        cmd.args(pkg_config(&["--libs"]));
    }
    run(&mut cmd);
}

/// A notifier component (WAT text) that logs each event kind.
fn logger_component(dir: &Path) -> PathBuf {
    let wat = common::notifier_component(common::LOG_KIND, "x");
    let path = dir.join("logger.wat");
    std::fs::write(&path, wat).unwrap();
    path
}

fn run_c(source: &str, link_static: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join(source.trim_end_matches(".c"));
    build_c(source, &exe, link_static);
    let store = dir.path().join("store");
    let mut cmd = Command::new(&exe);
    cmd.arg(&store);
    if source == "test_api.c" {
        cmd.arg(logger_component(dir.path()));
    }
    cmd.env(
        "ASAN_OPTIONS",
        "detect_leaks=1:abort_on_error=0:halt_on_error=1",
    )
    .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
    run(&mut cmd)
}

#[test]
fn c_api_test_passes_linked_against_the_shared_library() {
    let out = run_c("test_api.c", false);
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn c_api_test_passes_linked_against_the_static_library() {
    let out = run_c("test_api.c", true);
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn c_abi_policy_holds_for_a_program_built_against_a_newer_header() {
    let out = run_c("test_abi.c", false);
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn c_threads_verify_while_a_third_regenerates() {
    let out = run_c("test_threads.c", false);
    assert!(out.contains(" passed, 0 failed"), "{out}");
}
