//! The C examples build through pkg-config and the Makefile, and do what
//! their comments say.

use std::path::Path;
use std::process::Command;

mod common;

fn root() -> &'static Path {
    common::workspace_root()
}

/// Runs `cmd` to success, without the `LD_LIBRARY_PATH` cargo gives tests:
/// the programs find the installed library through its rpath alone.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Builds the examples against the test run's library into a temp dir.
fn build(out: &Path) {
    let pkgconfig = common::c_prefix().join("lib/pkgconfig");
    run(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(root().join("examples/c"))
        .arg(format!("PKG_CONFIG_PATH={}", pkgconfig.display()))
        .arg(format!("OUT={}", out.display())));
}

#[test]
fn admin_and_legacy_server_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let store = dir.path().join("store");
    let admin = |args: &[&str]| {
        run(Command::new(dir.path().join("admin"))
            .arg(&store)
            .args(args))
    };

    let created = admin(&["create", "legacy CRM"]);
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .to_string()
    };
    let (id, key) = (field(&created, "id"), field(&created, "key"));
    assert!(admin(&["list"]).contains(&format!("\"id\":\"{id}\"")));
    let wl = admin(&["whitelist", &id, "office", "198.51.100.0/24"]);
    assert!(
        wl.contains("\"enabled\":true") && wl.contains("198.51.100.0/24"),
        "{wl}"
    );

    let serve = |input: String| {
        let out = common::output_with_stdin(
            Command::new(dir.path().join("legacy_server"))
                .arg(&store)
                .env_remove("LD_LIBRARY_PATH"),
            input.as_bytes(),
        );
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let answers = serve(format!(
        "{key} 198.51.100.9 zapier\n{key} 203.0.113.1\nnot-a-key 198.51.100.9\n{key} not-an-ip\n{key}\n"
    ));
    let lines: Vec<&str> = answers.lines().collect();
    assert_eq!(lines[0], format!("200 {id} generation 1"));
    assert_eq!(lines[1], format!("403 ip_not_allowed {id}"));
    assert_eq!(lines[2], "401 malformed -");
    assert!(lines[3].starts_with("400 client_ip"), "{}", lines[3]);
    assert!(lines[4].starts_with("400 expected"), "{}", lines[4]);

    let regenerated = admin(&["regenerate", &id]);
    let fresh = field(&regenerated, "key");
    let answers = serve(format!("{key} 198.51.100.9\n{fresh} 198.51.100.9\n"));
    let lines: Vec<&str> = answers.lines().collect();
    assert_eq!(lines[0], format!("401 rotated {id}"));
    assert_eq!(lines[1], format!("200 {id} generation 2"));

    let usage = admin(&["usage", &id]);
    assert!(
        usage.contains("\"zapier\"") && usage.contains("\"rotated\":1"),
        "{usage}"
    );

    // A key the server issued before keyward, kept as its SHA-256
    // (sha256("legacy-server-key-42")), keeps working.
    let imported = admin(&[
        "import",
        "old customer",
        r#"{"kind": "sha256", "secret": "59f69b10890e75c9407b74ae1ae568d9af50a90391556341ce6c510aa295d95c", "owner": "acct_42"}"#,
    ]);
    let old_id = field(&imported, "id");
    let answers = serve("legacy-server-key-42 198.51.100.9\n".to_string());
    assert_eq!(
        answers.lines().next(),
        Some(format!("200 {old_id} generation 1").as_str())
    );
}

#[test]
fn the_c_benchmark_program_runs() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let out = run(Command::new(dir.path().join("bench_verify")).arg("20000"));
    assert!(
        out.contains("ns/op over 20000 calls (20000 valid)"),
        "{out}"
    );
}

/// `make install` with `DESTDIR` stages exactly the library's files under
/// it, written for the final prefix (the pkg-config file and the links say
/// `PREFIX`, not the staging directory); `make uninstall` removes exactly
/// those and nothing beside them.
#[test]
fn make_install_stages_under_destdir_and_uninstall_removes_exactly_it() {
    let stage = tempfile::tempdir().unwrap();
    let prefix = "/opt/keyward-test";
    let profile = common::profile();
    let make = |target: &str| {
        run(Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(root())
            .arg(target)
            .arg(format!("PROFILE={profile}"))
            .arg(format!("PREFIX={prefix}"))
            .arg(format!("DESTDIR={}", stage.path().display())))
    };
    let staged = stage.path().join(prefix.trim_start_matches('/'));
    std::fs::create_dir_all(staged.join("lib")).unwrap();
    std::fs::write(staged.join("lib/someone-elses.so"), b"kept").unwrap();
    make("install");
    let mut files: Vec<(String, Option<String>)> = Vec::new();
    let mut dirs = vec![staged.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            let link = meta
                .file_type()
                .is_symlink()
                .then(|| std::fs::read_link(&path).unwrap().display().to_string());
            let name = path.strip_prefix(&staged).unwrap().display().to_string();
            files.push((name, link));
        }
    }
    files.sort();
    // The tests crate shares the workspace's version.
    let (minor, patch) = (
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    );
    let real = format!("libkeyward.so.1.{minor}.{patch}");
    let link = |to: &str| Some(to.to_string());
    assert_eq!(
        files,
        [
            ("include/keyward.h".to_string(), None),
            ("lib/libkeyward.a".to_string(), None),
            ("lib/libkeyward.so".to_string(), link("libkeyward.so.1")),
            ("lib/libkeyward.so.1".to_string(), link(&real)),
            (format!("lib/{real}"), None),
            ("lib/pkgconfig/keyward.pc".to_string(), None),
            ("lib/someone-elses.so".to_string(), None),
        ]
    );
    let pc = std::fs::read_to_string(staged.join("lib/pkgconfig/keyward.pc")).unwrap();
    assert!(pc.contains(&format!("libdir={prefix}/lib")), "{pc}");
    assert!(!pc.contains(&stage.path().display().to_string()), "{pc}");
    let soname = run(Command::new("readelf")
        .arg("-d")
        .arg(staged.join("lib").join(&real)));
    assert!(soname.contains("[libkeyward.so.1]"), "{soname}");

    make("uninstall");
    let mut left: Vec<String> = Vec::new();
    let mut dirs = vec![staged.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                dirs.push(path);
            } else {
                left.push(path.strip_prefix(&staged).unwrap().display().to_string());
            }
        }
    }
    assert_eq!(left, ["lib/someone-elses.so"]);
}
