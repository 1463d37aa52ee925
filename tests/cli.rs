//! The `keyward` binary, driven as an operator would: every command, JSON
//! parsed and checked, confirmations through a pseudo terminal, errors.

mod common;
#[path = "common/webhook.rs"]
mod webhook;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

struct Cli {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
}

impl Cli {
    fn new() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("keys.db");
        Cli { _dir: dir, db }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(common::keyward_bin());
        c.arg("--db")
            .arg(&self.db)
            .args(args)
            .stdin(Stdio::null())
            .env("NO_COLOR", "1");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "keyward {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("valid JSON")
    }

    /// Runs and expects failure with `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(code), "keyward {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
        err
    }

    /// Runs under a pseudo terminal (util-linux `script`), typing `input`.
    fn on_terminal(&self, args: &[&str], input: &str) -> (i32, String) {
        let line = std::iter::once(common::keyward_bin().display().to_string())
            .chain(["--db".to_string(), self.db.display().to_string()])
            .chain(args.iter().map(|a| (*a).to_string()))
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = {
            let seen = seen.clone();
            let mut stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stdout.read(&mut buf) {
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        // Type only once the question is on the terminal (or the command is done).
        common::wait_until("the y/N prompt", Duration::from_secs(30), || {
            let asked = common::contains(&seen.lock().unwrap(), b"[y/N]");
            (asked || child.try_wait().unwrap().is_some()).then_some(())
        });
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let out = seen.lock().unwrap().clone();
        (
            status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out).into_owned(),
        )
    }
}

fn create(cli: &Cli, name: &str) -> (String, String) {
    let v = cli.json(&["key", "create", name]);
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

#[test]
fn key_lifecycle_commands() {
    let cli = Cli::new();
    let text = cli.ok(&[
        "key",
        "create",
        "CRM sync",
        "--expires",
        "30d",
        "--metadata",
        r#"{"plan":"pro"}"#,
    ]);
    assert!(text.contains("Store it now"), "{text}");
    let key_line = text
        .lines()
        .find(|l| l.trim().starts_with("kw_"))
        .unwrap()
        .trim()
        .to_string();

    let created = cli.json(&[
        "key",
        "create",
        "Zapier",
        "--expires",
        "2099-01-01T00:00:00Z",
    ]);
    for field in [
        "id",
        "name",
        "masked",
        "created_at",
        "generation",
        "disabled",
        "expires_at",
        "whitelist_enabled",
        "key",
    ] {
        assert!(
            created.get(field).is_some(),
            "create --json has {field}: {created}"
        );
    }
    assert_eq!(created["expires_at"], "2099-01-01T00:00:00.000Z");
    let id = created["id"].as_str().unwrap().to_string();

    let list = cli.json(&["key", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["name"], "CRM sync");
    assert_eq!(list[0]["metadata"]["plan"], "pro");
    assert!(list[0].get("key").is_none(), "list never shows a key");
    let table = cli.ok(&["key", "list"]);
    assert!(table.contains("CRM sync") && table.contains("Zapier") && table.contains("active"));

    let show = cli.json(&["key", "show", &id]);
    assert_eq!(show["name"], "Zapier");
    assert!(
        cli.ok(&["key", "show", &id])
            .contains("last rotated  never")
    );

    assert_eq!(cli.json(&["key", "disable", &id])["disabled"], true);
    let denied = cli.run(&[
        "verify",
        created["key"].as_str().unwrap(),
        "--ip",
        "10.0.0.1",
    ]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stdout).contains("denied: disabled"));
    assert_eq!(cli.json(&["key", "enable", &id])["disabled"], false);
    assert_eq!(
        cli.json(&["key", "rename", &id, "Zapier prod"])["name"],
        "Zapier prod"
    );

    let first = cli.json(&[
        "verify",
        &key_line,
        "--ip",
        "203.0.113.7",
        "--integration",
        "HubSpot",
    ]);
    assert_eq!(
        (first["valid"].as_bool(), first["generation"].as_u64()),
        (Some(true), Some(1))
    );
    assert!(
        cli.ok(&["verify", &key_line, "--ip", "203.0.113.7"])
            .starts_with("valid: key")
    );
}

/// `key set` changes every setting it is given in one write, or (one
/// invalid) none; it refuses to be given nothing, and flags that contradict.
#[test]
fn key_set_changes_several_settings_at_once_or_none() {
    let cli = Cli::new();
    let (id, key) = create(&cli, "before");
    let before = cli.json(&["key", "show", &id]);
    // An invalid owner beside a valid name: exit 4, nothing changed.
    cli.fails(&["key", "set", &id, "--name", "renamed", "--owner", ""], 4);
    cli.fails(&["key", "set", &id, "--disable", "--metadata", "[1, 2]"], 4);
    cli.fails(&["key", "set", &id], 4);
    // Flags that contradict are a usage error (clap's, several lines).
    for contradiction in [["--disable", "--enable"], ["--expires", "1d"]] {
        let mut args = vec!["key", "set", &id];
        args.extend(contradiction);
        if contradiction[0] == "--expires" {
            args.push("--no-expiry");
        }
        assert_eq!(cli.run(&args).status.code(), Some(2), "{args:?}");
    }
    assert_eq!(cli.json(&["key", "show", &id]), before);
    let events = |cli: &Cli| cli.json(&["events"]).as_array().unwrap().len();
    let told = events(&cli);

    let info = cli.json(&[
        "key",
        "set",
        &id,
        "--name",
        "after",
        "--disable",
        "--expires",
        "30d",
        "--metadata",
        r#"{"plan": "pro"}"#,
        "--owner",
        "globex",
    ]);
    assert_eq!(info["name"], "after");
    assert_eq!(info["disabled"], true);
    assert!(info["expires_at"].is_string(), "{info}");
    assert_eq!(info["metadata"], json!({"plan": "pro"}));
    assert_eq!(info["owner"], "globex");
    assert_eq!(events(&cli), told + 5);
    let refused = cli.run(&["verify", &key, "--ip", "203.0.113.7"]);
    assert_eq!(refused.status.code(), Some(1), "a disabled key is refused");
    let text = cli.ok(&[
        "key",
        "set",
        &id,
        "--enable",
        "--no-expiry",
        "--no-metadata",
        "--no-owner",
    ]);
    assert!(text.contains("after"), "{text}");
    let info = cli.json(&["key", "show", &id]);
    assert_eq!(
        (
            &info["disabled"],
            &info["expires_at"],
            &info["metadata"],
            &info["owner"]
        ),
        (&json!(false), &Value::Null, &Value::Null, &Value::Null)
    );
    cli.ok(&["verify", &key, "--ip", "203.0.113.7"]);
}

/// A description: `key create --description`, shown by `key show`,
/// changed and removed by `key set --description`.
#[test]
fn a_description_is_set_shown_and_removed() {
    let cli = Cli::new();
    let made = cli.json(&["key", "create", "crm", "--description", "HubSpot sync (EU)"]);
    let id = made["id"].as_str().unwrap();
    assert_eq!(made["description"], "HubSpot sync (EU)");
    let shown = cli.ok(&["key", "show", id]);
    assert!(shown.contains("description   HubSpot sync (EU)"), "{shown}");
    let info = cli.json(&["key", "set", id, "--description", "EU only"]);
    assert_eq!(info["description"], "EU only");
    let info = cli.json(&["key", "set", id, "--description", ""]);
    assert_eq!(info["description"], Value::Null);
    assert!(cli.ok(&["key", "show", id]).contains("description   none"));
    let too_long = "d".repeat(1025);
    cli.fails(&["key", "set", id, "--description", &too_long], 4);
}

#[test]
fn regenerate_warns_and_lists_clients_to_update() {
    let cli = Cli::new();
    let (id, key) = create(&cli, "CRM sync");
    cli.ok(&[
        "verify",
        &key,
        "--ip",
        "198.51.100.7",
        "--integration",
        "HubSpot/3.1",
    ]);
    let text = cli.ok(&["key", "regenerate", &id, "--yes"]);
    assert!(text.contains("The old key has stopped working."), "{text}");
    assert!(
        text.contains("198.51.100.7") && text.contains("HubSpot/3.1"),
        "{text}"
    );
    let fresh = text
        .lines()
        .find(|l| l.trim().starts_with("kw_"))
        .unwrap()
        .trim()
        .to_string();
    let old = cli.run(&["verify", &key, "--ip", "198.51.100.7"]);
    assert_eq!(old.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&old.stdout).contains("denied: rotated"));
    cli.ok(&["verify", &fresh, "--ip", "198.51.100.7"]);

    let graced = cli.json(&["key", "regenerate", &id, "--grace", "24h", "--yes"]);
    assert_eq!(graced["generation"], 3);
    assert!(graced["grace_until"].is_string() && graced["key"].is_string());
    let v = cli.json(&["verify", &fresh, "--ip", "198.51.100.7"]);
    assert_eq!(
        (v["valid"].as_bool(), v["in_grace"].as_bool()),
        (Some(true), Some(true))
    );
    let text = cli.ok(&["key", "regenerate", &id, "--grace", "1h", "-y"]);
    assert!(text.contains("keeps working until"), "{text}");
}

#[test]
fn confirmation_is_asked_on_a_terminal_and_refused_without_one() {
    let cli = Cli::new();
    let (id, key) = create(&cli, "to delete");
    let err = cli.fails(&["key", "delete", &id], 2);
    assert!(err.contains("--yes"), "{err}");
    cli.fails(&["key", "regenerate", &id], 2);

    let (code, screen) = cli.on_terminal(&["key", "regenerate", &id], "n\n");
    assert_eq!(code, 2, "{screen}");
    assert!(screen.contains("[y/N]"), "{screen}");
    cli.ok(&["verify", &key, "--ip", "10.0.0.1"]); // nothing changed

    let (code, screen) = cli.on_terminal(&["key", "delete", &id], "y\n");
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Deleted key"), "{screen}");
    cli.fails(&["key", "show", &id], 3);
}

#[test]
fn whitelist_commands() {
    let cli = Cli::new();
    let (id, key) = create(&cli, "k");
    let entry = cli.json(&[
        "whitelist",
        "add",
        &id,
        "198.51.100.0/24",
        "--name",
        "office",
    ]);
    assert_eq!(
        (entry["name"].as_str(), entry["network"].as_str()),
        (Some("office"), Some("198.51.100.0/24"))
    );
    let wl = cli.json(&["whitelist", "enable", &id]);
    assert_eq!(wl["enabled"], true);
    assert_eq!(wl["entries"].as_array().unwrap().len(), 1);
    let out = cli.run(&["verify", &key, "--ip", "203.0.113.1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ip_not_allowed"));
    cli.ok(&["verify", &key, "--ip", "198.51.100.3"]);
    let shown = cli.ok(&["whitelist", "show", &id]);
    assert!(shown.contains("office") && shown.contains("on"), "{shown}");
    let removed = cli.json(&["whitelist", "remove", &id, entry["id"].as_str().unwrap()]);
    assert!(removed["entries"].as_array().unwrap().is_empty());
    assert!(
        cli.ok(&["whitelist", "show", &id])
            .contains("No entries: every request is refused.")
    );
    assert_eq!(cli.json(&["whitelist", "disable", &id])["enabled"], false);
    cli.fails(&["whitelist", "add", &id, "10.0.0.1/8", "--name", "bad"], 4);
    cli.fails(&["whitelist", "add", &id, "nope", "--name", "bad"], 4);
    cli.fails(&["whitelist", "remove", &id, "nope"], 3);
}

#[test]
fn usage_shows_ips_integrations_stale_clients_and_a_chart() {
    let cli = Cli::new();
    let (id, key) = create(&cli, "k");
    for _ in 0..3 {
        cli.ok(&[
            "verify",
            &key,
            "--ip",
            "203.0.113.7",
            "--integration",
            "n8n",
        ]);
    }
    let fresh = cli.json(&["key", "regenerate", &id, "--grace", "1h", "--yes"]);
    cli.ok(&[
        "verify",
        &key,
        "--ip",
        "203.0.113.7",
        "--integration",
        "n8n",
    ]);
    cli.ok(&[
        "verify",
        fresh["key"].as_str().unwrap(),
        "--ip",
        "198.51.100.1",
    ]);
    let u = cli.json(&["usage", &id]);
    assert_eq!(u["totals"]["allowed"], 5);
    assert_eq!(u["ips"].as_array().unwrap().len(), 2);
    assert_eq!(u["integrations"][0]["name"], "n8n");
    let table = cli.ok(&["usage", &id, "--days", "2"]);
    assert!(
        table.contains("Still presenting an old secret") && table.contains("203.0.113.7"),
        "{table}"
    );
    assert!(
        table.chars().any(|c| "▁▂▃▄▅▆▇█".contains(c)),
        "a bar chart: {table}"
    );
    let chart_days = table
        .lines()
        .filter(|l| l.trim_start().get(4..5) == Some("-") && l.contains(" allowed "))
        .count();
    assert_eq!(chart_days, 2, "one line per day: {table}");

    // The last verifications, one by one, newest first: each CLI call is a
    // process of its own, so these came through the store's records.
    let recent = cli.json(&["usage", &id, "--recent"]);
    let rows: Vec<(&str, bool, bool)> = recent
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["ip"].as_str().unwrap(),
                r["allowed"].as_bool().unwrap(),
                r["stale_secret"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("198.51.100.1", true, false),
            ("203.0.113.7", true, true),
            ("203.0.113.7", true, false),
            ("203.0.113.7", true, false),
            ("203.0.113.7", true, false),
        ]
    );
    let table = cli.ok(&["usage", &id, "--recent"]);
    assert!(
        table.contains("INTEGRATION") && table.contains("n8n") && table.contains("OLD SECRET"),
        "{table}"
    );
    assert_eq!(
        cli.run(&["usage", "--owner", "o", "--recent"])
            .status
            .code(),
        Some(2),
        "--recent is a key's"
    );
}

#[test]
fn events_and_follow() {
    let cli = Cli::new();
    let (id, _) = create(&cli, "k");
    cli.ok(&["key", "disable", &id]);
    let events = cli.json(&["events"]);
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["key.created", "key.updated"]);
    let after = cli.json(&["events", "--since", &events[0]["seq"].to_string()]);
    assert_eq!(after.as_array().unwrap().len(), 1);

    let mut follower = cli
        .cmd(&["--json", "events", "--follow", "--since", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["seq"].as_u64(), Some(2), "the follower is reading");
    cli.ok(&["key", "enable", &id]); // waits while the follower holds the store
    let line = lines.next().unwrap().unwrap();
    follower.kill().unwrap();
    follower.wait().unwrap();
    let e: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (e["kind"].as_str(), e["seq"].as_u64()),
        (Some("key.updated"), Some(3))
    );
}

#[test]
fn plugin_commands() {
    let cli = Cli::new();
    let hook = webhook::Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let url = hook.url("/h");
    let wat = common::notifier_component(common::POST_KIND, &url);
    let wasm = dir.path().join("p.wat");
    std::fs::write(&wasm, wat).unwrap();
    let manifest = dir.path().join("p.toml");
    std::fs::write(
        &manifest,
        format!("name = \"crm\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\nevents = [\"*\"]\nallowed_hosts = [\"{}\"]\n", hook.origin()),
    )
    .unwrap();
    let (w, m) = (wasm.to_str().unwrap(), manifest.to_str().unwrap());
    // The hook is on loopback: only the operator's flag lets a plugin reach it.
    let local = "--allow-private-network";
    let installed = cli.json(&["plugin", "install", w, "--manifest", m, local]);
    assert_eq!(
        (installed["name"].as_str(), installed["enabled"].as_bool()),
        (Some("crm"), Some(true))
    );
    cli.fails(&["plugin", "install", w, "--manifest", m, local], 7);
    std::fs::write(dir.path().join("bad.toml"), "name = 1").unwrap();
    cli.fails(
        &[
            "plugin",
            "install",
            w,
            "--manifest",
            dir.path().join("bad.toml").to_str().unwrap(),
        ],
        7,
    );

    // Events are delivered while a command holds the store.
    let _ = cli.ok(&["key", "create", "k"]);
    let list = cli.json(&["plugin", "list"]);
    assert_eq!(list[0]["name"], "crm");
    let status = cli.json(&["plugin", "status", "crm"]);
    assert!(
        status["plugin"]["status"].is_object()
            && status["dead_letters"].is_array()
            && status["log"].is_array()
    );
    let text = cli.ok(&["plugin", "status", "crm"]);
    assert!(text.contains("delivered"), "{text}");
    assert!(
        text.lines().any(|l| l.trim() == "signed        no"),
        "{text}"
    );
    assert!(status["plugin"]["signing"].is_null());
    assert_eq!(cli.json(&["plugin", "retry", "crm"])["queued"], 0);
    cli.ok(&["plugin", "remove", "crm"]);
    cli.fails(&["plugin", "status", "crm"], 3);
    assert!(cli.ok(&["plugin", "list"]).contains("No plugins"));
}

#[test]
fn errors_are_one_line_with_documented_exit_codes() {
    let cli = Cli::new();
    let (id, _) = create(&cli, "k");
    cli.fails(&["key", "show", "AAAAAAAAAAAA"], 3);
    cli.fails(&["key", "show", "not-an-id"], 4);
    cli.fails(&["key", "regenerate", &id, "--grace", "soon", "--yes"], 4);
    cli.fails(&["key", "create", "x", "--expires", "whenever"], 4);
    cli.fails(&["key", "create", "x", "--expires", "100000years"], 4);
    cli.fails(
        &["key", "create", "x", "--expires", "2030-01-01T00:00:00"],
        4,
    );
    cli.fails(&["key", "create", "x", "--metadata", "{nope"], 4);
    cli.fails(&["key", "create", ""], 4);
    cli.fails(&["verify", "kw_x", "--ip", "not-an-ip"], 4);
    let usage_error = cli.run(&["key", "frobnicate"]);
    assert_eq!(usage_error.status.code(), Some(2));

    // A store another process owns is attached to, not refused.
    let held = keyward::Store::open(&cli.db).unwrap();
    cli.ok(&["key", "list"]);
    drop(held);
    cli.ok(&["key", "list"]);
}

#[test]
fn the_default_store_is_keyward_db_db_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let run = |envdb: Option<&Path>| {
        let mut c = Command::new(common::keyward_bin());
        c.current_dir(dir.path())
            .args(["key", "create", "k"])
            .stdin(Stdio::null());
        match envdb {
            Some(p) => c.env("KEYWARD_DB", p),
            None => c.env_remove("KEYWARD_DB"),
        };
        assert!(c.output().unwrap().status.success());
    };
    run(None);
    assert!(dir.path().join("keyward.db").is_dir());
    let elsewhere = dir.path().join("from-env");
    run(Some(&elsewhere));
    assert!(elsewhere.is_dir());
}

/// What clients and plugins put in the store reaches the operator's
/// terminal escaped, and a whole key where an id belongs is refused
/// without being repeated.
#[test]
fn stored_text_is_escaped_and_a_pasted_key_is_not_echoed() {
    let cli = Cli::new();
    let (id, key) = create(&cli, "k");
    let hostile = "curl\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\u{202e}";
    cli.ok(&[
        "verify",
        &key,
        "--ip",
        "203.0.113.7",
        "--integration",
        hostile,
    ]);
    // Refused by the whitelist: the integration reaches the event outbox too.
    cli.ok(&[
        "whitelist",
        "add",
        &id,
        "198.51.100.0/24",
        "--name",
        "office",
    ]);
    cli.ok(&["whitelist", "enable", &id]);
    let refused = cli.run(&[
        "verify",
        &key,
        "--ip",
        "203.0.113.8",
        "--integration",
        hostile,
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(cli.ok(&["events"]).contains("key.denied_ip"));
    for args in [
        vec!["usage", id.as_str()],
        vec!["--json", "usage", id.as_str()],
        vec!["events"],
        vec!["--json", "events"],
    ] {
        let text = cli.ok(&args);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{9b}') && !text.contains('\u{202e}'),
            "{args:?}: {text:?}"
        );
        assert!(text.contains("curl"), "{args:?}: {text}");
    }
    let usage = cli.json(&["usage", &id]);
    assert_eq!(
        usage["integrations"][0]["name"], hostile,
        "JSON keeps the value"
    );

    for args in [
        vec!["key", "show", key.as_str()],
        vec!["key", "delete", key.as_str(), "--yes"],
    ] {
        let err = cli.fails(&args, 4);
        assert!(err.contains(&id), "names the id: {err}");
        assert!(!err.contains(&key[16..40]), "repeats the secret: {err}");
    }
    assert!(cli.ok(&["key", "show", &id]).contains("k"));
}

/// Installs a plugin posting every event to `hook` ("crm", allowed to
/// reach the loopback webhook).
fn install_crm(cli: &Cli, hook: &webhook::Webhook, dir: &Path) {
    let wasm = dir.join("p.wat");
    std::fs::write(
        &wasm,
        common::notifier_component(common::POST_KIND, &hook.url("/h")),
    )
    .unwrap();
    let manifest = dir.join("p.toml");
    std::fs::write(
        &manifest,
        format!("name = \"crm\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\nevents = [\"*\"]\nallowed_hosts = [\"{}\"]\n", hook.origin()),
    )
    .unwrap();
    cli.ok(&[
        "plugin",
        "install",
        wasm.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--allow-private-network",
    ]);
}

fn kinds(hook: &webhook::Webhook) -> Vec<String> {
    // The fixture posts the event kind as the body.
    hook.requests()
        .iter()
        .map(webhook::Received::body_text)
        .collect()
}

#[test]
fn the_cli_beside_a_running_owner_attaches_and_the_owner_delivers() {
    let cli = Cli::new();
    let hook = webhook::Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    install_crm(&cli, &hook, dir.path());
    let (id, _) = create(&cli, "k");
    let app = keyward::Store::open(&cli.db).unwrap();
    assert_eq!(app.status().role, keyward::Role::Owner);

    let status = cli.json(&["status"]);
    assert_eq!(status["role"], "attached");
    assert_eq!(status["owner_pid"], std::process::id());
    let before = hook.requests().len();
    cli.ok(&["key", "regenerate", &id, "--yes"]);
    // Delivered by this process (the owner), not by the CLI, which is gone.
    let got = hook.wait_for(before + 1, Duration::from_secs(20));
    assert!(
        got.len() > before,
        "the owner delivered the CLI's regeneration"
    );
    assert!(kinds(&hook).contains(&"key.regenerated".to_string()));
    assert_eq!(app.get(&id.parse().unwrap()).unwrap().generation, 2);
}

#[test]
fn a_cli_owning_the_store_delivers_its_own_events_before_it_exits() {
    let cli = Cli::new();
    let hook = webhook::Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    install_crm(&cli, &hook, dir.path());
    assert_eq!(cli.json(&["status"])["role"], "owner");
    let created = cli.json(&["key", "create", "k"]);
    // No wait here: the CLI waited for the delivery before exiting.
    assert!(
        kinds(&hook).contains(&"key.created".to_string()),
        "delivered before the CLI exited: {:?}",
        kinds(&hook)
    );
    assert!(created["key"].is_string(), "stdout is the JSON alone");

    // An unreachable CRM: the CLI says what is pending, on stderr only.
    hook.status.store(500, std::sync::atomic::Ordering::Release);
    let out = cli.run(&["--json", "key", "create", "k2"]);
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("pending for plugin crm"), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout stays JSON");
    assert_eq!(v["name"], "k2");
}

#[test]
fn serve_owns_the_store_until_sigterm() {
    let cli = Cli::new();
    let mut serve = cli.cmd(&["serve"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(
        first,
        format!("serving {} (pid {})", cli.db.display(), serve.id())
    );
    let status = cli.json(&["status"]);
    assert_eq!(
        (status["role"].as_str(), status["owner_pid"].as_u64()),
        (Some("attached"), Some(u64::from(serve.id())))
    );
    create(&cli, "k");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(i32::try_from(serve.id()).unwrap(), libc::SIGTERM) };
    assert!(serve.wait().unwrap().success());
    assert_eq!(lines.next().unwrap().unwrap(), "stopped on SIGTERM");
    assert!(
        !cli.db.join("keyward.sock").exists(),
        "the socket is removed"
    );
    assert_eq!(cli.json(&["status"])["role"], "owner");
}

/// A change made from the command line names `cli:<user>` as its actor.
#[test]
fn cli_changes_name_their_actor() {
    let cli = Cli::new();
    let (id, _) = create(&cli, "k");
    cli.ok(&["key", "disable", &id]);
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let actor = format!("cli:{}", String::from_utf8_lossy(&me.stdout).trim());
    let events = cli.json(&["events"]);
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 2);
    for e in events {
        assert_eq!(e["data"]["actor"], actor.as_str(), "{e}");
    }
}

/// `events` with filters: by key, account, actor, kinds and time, newest
/// first, a limit; what a library handle did beside what the command line did.
#[test]
fn events_are_queried_by_key_owner_actor_kind_and_time() {
    let cli = Cli::new();
    let acme = cli.json(&["key", "create", "acme crm", "--owner", "acme"]);
    let acme = acme["id"].as_str().unwrap().to_string();
    cli.ok(&["key", "create", "globex crm", "--owner", "globex"]);
    cli.ok(&["key", "disable", &acme]);
    {
        let mut o = common::fast_options();
        o.actor = Some("billing-service".into());
        let store = keyward::Store::open_with(&cli.db, &o).unwrap();
        store
            .regenerate(&acme.parse().unwrap(), Duration::ZERO)
            .unwrap();
        store.close().unwrap();
    }
    let seqs = |args: &[&str]| -> Vec<(String, String)> {
        let mut all = vec!["events"];
        all.extend_from_slice(args);
        cli.json(&all)
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["data"]["actor"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let me = format!("cli:{}", String::from_utf8_lossy(&me.stdout).trim());
    let row = |k: &str, a: &str| (k.to_string(), a.to_string());
    assert_eq!(
        seqs(&["--owner", "acme"]),
        [
            row("key.created", &me),
            row("key.updated", &me),
            row("key.regenerated", "billing-service")
        ]
    );
    assert_eq!(
        seqs(&["--actor", "billing-service"]),
        [row("key.regenerated", "billing-service")]
    );
    assert_eq!(seqs(&["--actor", &me]).len(), 3);
    assert_eq!(
        seqs(&[
            "--key",
            &acme,
            "--kind",
            "key.updated",
            "--kind",
            "key.regenerated"
        ]),
        [
            row("key.updated", &me),
            row("key.regenerated", "billing-service")
        ]
    );
    assert_eq!(
        seqs(&["--newest-first", "--limit", "2"]),
        [
            row("key.regenerated", "billing-service"),
            row("key.updated", &me)
        ]
    );
    assert_eq!(seqs(&["--since", "1h"]).len(), 4);
    assert_eq!(
        seqs(&["--since", "2"]).len(),
        2,
        "a number is an event number"
    );
    assert!(seqs(&["--until", "1h"]).is_empty());
    assert_eq!(
        seqs(&["--since", "2020-01-01T00:00:00Z", "--owner", "globex"]).len(),
        1
    );
    let table = cli.ok(&["events", "--owner", "acme"]);
    assert_eq!(table.lines().count(), 3, "{table}");
    let err = cli.fails(&["events", "--kind", "key.exploded"], 4);
    assert!(
        err.contains("key.regenerated"),
        "the kinds are listed: {err}"
    );
    let err = cli.fails(&["events", "--since", "last tuesday"], 4);
    assert!(err.contains("RFC 3339"), "{err}");
    cli.fails(&["events", "--key", "not-an-id"], 4);
}

/// `serve --metrics`: the store's metrics in the OpenMetrics text format,
/// read at each scrape (keys created meanwhile are counted).
#[test]
fn serve_exposes_prometheus_metrics() {
    let cli = Cli::new();
    create(&cli, "a");
    let mut serve = cli
        .cmd(&["serve", "--metrics", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("serving "));
    let metrics_line = lines.next().unwrap().unwrap();
    let url = metrics_line
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("{metrics_line}"))
        .to_string();
    create(&cli, "b");
    let mut answer = ureq::get(&url).call().unwrap();
    let kind = answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = answer.body_mut().read_to_string().unwrap();
    for wanted in [
        "# TYPE keyward_verifications counter",
        "keyward_verifications_total{outcome=\"allowed\",reason=\"\"} 0",
        "keyward_verifications_total{outcome=\"denied\",reason=\"malformed\"} 0",
        "keyward_keys 2",
        "keyward_outbox_events 2",
        "keyward_store_role{role=\"owner\"} 1",
        "# TYPE keyward_hashes counter",
        "# EOF",
    ] {
        assert!(text.contains(wanted), "{wanted} not in\n{text}");
    }
    assert_eq!(
        ureq::get(url.replace("/metrics", "/other"))
            .call()
            .map_err(|e| e.to_string())
            .unwrap_err(),
        "http status: 404"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(i32::try_from(serve.id()).unwrap(), libc::SIGTERM) };
    assert!(serve.wait().unwrap().success());
    cli.fails(&["serve", "--metrics", "not an address"], 4);
}

#[test]
fn owners_are_set_listed_moved_and_paged() {
    let cli = Cli::new();
    let a = cli.json(&["key", "create", "a", "--owner", "acct_1"]);
    assert_eq!(a["owner"], "acct_1");
    let key = a["key"].as_str().unwrap();
    assert!(
        cli.ok(&["verify", key, "--ip", "10.0.0.1"])
            .contains("account acct_1")
    );
    assert_eq!(
        cli.json(&["verify", key, "--ip", "10.0.0.1"])["owner"],
        "acct_1"
    );
    let b = cli.json(&["key", "create", "b"]);
    assert_eq!(b["owner"], Value::Null);
    let c = cli.json(&["key", "create", "c", "--owner", "acct_2"]);
    let table = cli.ok(&["key", "list"]);
    assert!(table.lines().next().unwrap().contains("OWNER") && table.contains("acct_2"));

    let only = cli.json(&["key", "list", "--owner", "acct_2"]);
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["id"], c["id"]);
    let id = c["id"].as_str().unwrap();
    let moved = cli.json(&["key", "set-owner", id, "acct_1"]);
    assert_eq!(moved["owner"], "acct_1");
    assert_eq!(
        cli.json(&["key", "list", "--owner", "acct_1"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        cli.json(&["key", "set-owner", id, "--none"])["owner"],
        Value::Null
    );
    assert!(
        cli.ok(&["key", "show", a["id"].as_str().unwrap()])
            .contains("owner         acct_1")
    );
    cli.fails(&["key", "set-owner", id, "bad\u{7}owner"], 4);
    cli.fails(&["key", "create", "x", "--owner", ""], 4);
    assert_eq!(cli.run(&["key", "set-owner", id]).status.code(), Some(2));

    // Pages: every key once, in id order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["key", "list", "--limit", "2"];
        if let Some(a) = &after {
            args.extend(["--after", a.as_str()]);
        }
        let page = cli.json(&args);
        for k in page["keys"].as_array().unwrap() {
            seen.push(k["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!((seen.len(), seen.clone()), (3, sorted));
    let _ = b;
}

#[test]
fn an_account_is_listed_summed_and_closed() {
    let cli = Cli::new();
    let keys: Vec<Value> = (0..2)
        .map(|_| cli.json(&["key", "create", "k", "--owner", "acct_closing"]))
        .collect();
    cli.json(&["key", "create", "kept", "--owner", "acct_kept"]);
    for k in &keys {
        assert_eq!(
            cli.run(&["verify", k["key"].as_str().unwrap(), "--ip", "10.0.0.1"])
                .status
                .code(),
            Some(0)
        );
    }
    let owners = cli.json(&["owner", "list"]);
    assert_eq!(
        owners,
        serde_json::json!([{"owner": "acct_closing", "keys": 2}, {"owner": "acct_kept", "keys": 1}])
    );
    assert!(cli.ok(&["owner", "list"]).contains("acct_closing"));
    let usage = cli.json(&["usage", "--owner", "acct_closing"]);
    assert_eq!(
        (usage["keys"].as_u64(), usage["totals"]["allowed"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(
        cli.ok(&["usage", "--owner", "acct_closing"])
            .contains("2 allowed")
    );

    // Confirmed like `key delete`: refused without a terminal unless --yes.
    cli.fails(&["owner", "delete", "acct_closing"], 2);
    assert_eq!(cli.json(&["owner", "list"]).as_array().unwrap().len(), 2);
    let closed = cli.json(&["owner", "delete", "acct_closing", "--yes"]);
    assert_eq!(closed["deleted"], 2);
    assert_eq!(
        cli.run(&[
            "verify",
            keys[0]["key"].as_str().unwrap(),
            "--ip",
            "10.0.0.1"
        ])
        .status
        .code(),
        Some(1)
    );
    assert_eq!(cli.json(&["owner", "list"]).as_array().unwrap().len(), 1);
    assert_eq!(cli.run(&["usage"]).status.code(), Some(2));
}

#[test]
fn scan_finds_this_stores_keys_says_what_each_is_and_revokes_the_live_ones() {
    let cli = Cli::new();
    let (live_id, live_key) = create(&cli, "live");
    let (rotated_id, old_key) = create(&cli, "rotated");
    cli.ok(&["key", "regenerate", &rotated_id, "--yes"]);
    let (off_id, off_key) = create(&cli, "off");
    cli.ok(&["key", "disable", &off_id]);
    let wrong = common::well_formed("kw", &live_id, &"A".repeat(43));
    let unknown = common::well_formed("kw", "AAAAAAAAAAAA", &"B".repeat(43));
    // A typo (bad checksum), another vendor's key, a key inside a longer word.
    let typo = format!(
        "{}{}",
        &live_key[..live_key.len() - 1],
        if live_key.ends_with('x') { 'y' } else { 'x' }
    );
    let foreign = format!("sk_live_{}", "C".repeat(40));
    let tree = tempfile::tempdir().unwrap();
    let dir = tree.path();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(
        dir.join("a.env"),
        format!("# settings\nAPI_KEY={live_key}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("sub/b.log"),
        format!("GET /x Authorization: Bearer {old_key}\nfailed: {wrong}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("sub/c.txt"),
        format!("{unknown}\n{typo}\n{foreign}\nx{live_key}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("d.json"), format!("{{\"key\": \"{off_key}\"}}\n")).unwrap();
    let root = dir.display().to_string();

    let out = cli.run(&["--json", "scan", &root]);
    assert_eq!(out.status.code(), Some(1), "a live key was found");
    let stdout = String::from_utf8(out.stdout).unwrap();
    for whole in [&live_key, &old_key, &wrong, &off_key] {
        assert!(
            !stdout.contains(whole.as_str()),
            "findings are masked: {stdout}"
        );
    }
    let found: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let seen: Vec<(String, u64, String, String)> = found
        .iter()
        .map(|f| {
            let file = f["file"].as_str().unwrap();
            (
                file.strip_prefix(&root).unwrap().to_string(),
                f["line"].as_u64().unwrap(),
                f["key_id"].as_str().unwrap().to_string(),
                f["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let row = |file: &str, line, id: &str, state: &str| {
        (file.to_string(), line, id.to_string(), state.to_string())
    };
    assert_eq!(
        seen,
        vec![
            row("/a.env", 2, &live_id, "live"),
            row("/d.json", 1, &off_id, "inactive"),
            row("/sub/b.log", 1, &rotated_id, "rotated"),
            row("/sub/b.log", 2, &live_id, "wrong_secret"),
            row("/sub/c.txt", 1, "AAAAAAAAAAAA", "unknown_key"),
        ]
    );
    let live = &found[0];
    assert_eq!(live["name"], "live");
    assert!(
        live["key"]
            .as_str()
            .unwrap()
            .ends_with(&live_key[live_key.len() - 4..])
    );

    // Nothing live: exit 0; stdin is scanned as `-`.
    let out = common::output_with_stdin(
        &mut cli.cmd(&["scan", "-"]),
        format!("token={old_key}\n").as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("-:1:") && text.contains(&rotated_id) && text.contains("rotated"),
        "{text}"
    );

    // Bad usage.
    cli.fails(&["scan"], 2);
    cli.fails(&["scan", &format!("{root}/missing")], 2);
    // --revoke needs a confirmation; without a terminal, --yes.
    let out = cli.run(&["scan", "--revoke", &root]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        cli.run(&["verify", &live_key, "--ip", "10.0.0.1"])
            .status
            .code(),
        Some(0)
    );

    let out = cli.run(&["scan", "--revoke", "--yes", &root]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let fresh = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("kw_{live_id}_")))
        .expect("the new key is printed once")
        .to_string();
    assert_eq!(
        cli.run(&["verify", &live_key, "--ip", "10.0.0.1"])
            .status
            .code(),
        Some(1),
        "the leaked key is refused"
    );
    assert_eq!(
        cli.run(&["verify", &fresh, "--ip", "10.0.0.1"])
            .status
            .code(),
        Some(0)
    );
    let events = cli.json(&["events"]);
    let leaked: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "key.leaked")
        .collect();
    assert_eq!(leaked.len(), 1, "{events}");
    assert_eq!(leaked[0]["key_id"], live_id.as_str());
    assert_eq!(leaked[0]["data"]["action"], "regenerated");
    // Scanned again: what was live is now rotated.
    assert_eq!(cli.run(&["scan", &root]).status.code(), Some(0));
}

#[test]
fn key_import_one_from_stdin_or_a_hash_and_ten_thousand_from_csv_all_or_nothing() {
    use sha2::Digest;
    let hex = |k: &str| -> String {
        sha2::Sha256::digest(k.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let cli = Cli::new();
    let out = common::output_with_stdin(
        &mut cli.cmd(&[
            "--json",
            "key",
            "import",
            "from stdin",
            "--plaintext-stdin",
            "--owner",
            "acme",
        ]),
        b"sk_live_cli_legacy_0001\n",
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        !stdout.contains("sk_live_cli_legacy_0001"),
        "the key is never printed"
    );
    let info: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(info["owner"], "acme");
    assert_eq!(
        cli.run(&["verify", "sk_live_cli_legacy_0001", "--ip", "10.0.0.1"])
            .status
            .code(),
        Some(0)
    );
    let v = cli.json(&["verify", "sk_live_cli_legacy_0001", "--ip", "10.0.0.1"]);
    assert_eq!(v["key_id"], info["id"]);
    cli.ok(&[
        "key",
        "import",
        "by hash",
        "--sha256",
        &hex("legacy-by-hash"),
    ]);
    assert_eq!(
        cli.run(&["verify", "legacy-by-hash", "--ip", "10.0.0.1"])
            .status
            .code(),
        Some(0)
    );
    cli.ok(&[
        "key",
        "import",
        "bcrypt",
        "--phc",
        "$2b$04$ZJrW4aSBBZsUQyhTPKel2OarUOSJT.MyEfHkjUq46gFArkG.mAn9i",
        "--prefix",
        "CKEY0001",
    ]);
    assert_eq!(
        cli.run(&[
            "verify",
            "CKEY0001.the-rest-of-the-c-key",
            "--ip",
            "10.0.0.1"
        ])
        .status
        .code(),
        Some(0)
    );
    // Twice, or without material: refused.
    cli.fails(
        &["key", "import", "again", "--sha256", &hex("legacy-by-hash")],
        4,
    );
    cli.fails(&["key", "import", "nothing"], 2);
    assert_eq!(
        cli.run(&["key", "import", "half", "--phc", "$2b$04$x"])
            .status
            .code(),
        Some(2)
    );

    // 10,000 rows of SHA-256 imports in one run, with the mapping written.
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("keys.csv");
    let mut csv = String::from("name,owner,kind,secret,prefix,expires_at\n");
    for i in 0..10_000 {
        csv.push_str(&format!(
            "customer {i},acct_{},sha256,{},,\n",
            i % 100,
            hex(&format!("bulk-key-{i}"))
        ));
    }
    std::fs::write(&csv_path, &csv).unwrap();
    let map_path = dir.path().join("map.csv");
    let text = cli.ok(&[
        "key",
        "import",
        "--from-csv",
        csv_path.to_str().unwrap(),
        "--map",
        map_path.to_str().unwrap(),
    ]);
    assert!(text.contains("Imported 10000 keys"), "{text}");
    let map = std::fs::read_to_string(&map_path).unwrap();
    let rows: Vec<&str> = map.lines().collect();
    assert_eq!(rows.len(), 10_001);
    assert_eq!(rows[0], "row,name,key_id");
    let last: Vec<&str> = rows[10_000].split(',').collect();
    assert_eq!(&last[..2], &["10001", "customer 9999"]);
    let v = cli.json(&["verify", "bulk-key-9999", "--ip", "10.0.0.1"]);
    assert_eq!(
        (v["valid"].as_bool(), v["key_id"].as_str()),
        (Some(true), Some(last[2]))
    );
    assert_eq!(v["owner"], "acct_99");

    // A bad row late in the file: nothing of the file is imported.
    let before = cli.json(&["key", "list"]).as_array().unwrap().len();
    let mut bad = String::from("name,owner,kind,secret,prefix,expires_at\n");
    for i in 0..1200 {
        bad.push_str(&format!(
            "more {i},,sha256,{},,\n",
            hex(&format!("more-key-{i}"))
        ));
    }
    // The same key as row 2: refused when its chunk is written.
    bad.push_str(&format!("dup,,sha256,{},,\n", hex("more-key-0")));
    std::fs::write(&csv_path, &bad).unwrap();
    let err = cli.fails(
        &["key", "import", "--from-csv", csv_path.to_str().unwrap()],
        4,
    );
    assert!(err.contains("nothing was imported"), "{err}");
    assert_eq!(cli.json(&["key", "list"]).as_array().unwrap().len(), before);
    assert_eq!(
        cli.run(&["verify", "more-key-0", "--ip", "10.0.0.1"])
            .status
            .code(),
        Some(1)
    );
    // A malformed row is named without its values.
    std::fs::write(
        &csv_path,
        "name,owner,kind,secret,prefix,expires_at\nx,,plaintext,topsecret-value,,not-a-time\n",
    )
    .unwrap();
    let err = cli.fails(
        &["key", "import", "--from-csv", csv_path.to_str().unwrap()],
        4,
    );
    assert!(err.contains("row 2") && !err.contains("topsecret"), "{err}");
}

#[test]
fn scan_reads_a_line_of_megabytes_a_piece_at_a_time_and_finds_keys_across_the_cuts() {
    let cli = Cli::new();
    let (id, key) = create(&cli, "in a blob");
    let dir = tempfile::tempdir().unwrap();
    let piece = 1 << 20;
    // Three megabytes without a line break; the key across the first cut,
    // after it, ending at the second cut, and at the very end of the line;
    // a key glued to a word is not one.
    let mut blob = vec![b' '; 3 * piece];
    for at in [piece - 20, piece + key.len(), 2 * piece - key.len()] {
        blob[at..at + key.len()].copy_from_slice(key.as_bytes());
    }
    blob[2 * piece + 100] = b'x';
    blob[2 * piece + 101..2 * piece + 101 + key.len()].copy_from_slice(key.as_bytes());
    blob.extend_from_slice(key.as_bytes());
    blob.extend_from_slice(b"\nsecond line ");
    blob.extend_from_slice(key.as_bytes());
    std::fs::write(dir.path().join("blob.bin"), &blob).unwrap();
    let out = cli.run(&["--json", "scan", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let lines: Vec<u64> = found.iter().map(|f| f["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, vec![1, 1, 1, 1, 2], "{found:?}");
    assert!(
        found
            .iter()
            .all(|f| f["key_id"] == id.as_str() && f["state"] == "live")
    );
}

/// Runs `keyward` with `args` to its end, failing the test if it has not
/// ended by `within`; returns its output and how long it took.
fn run_within(cli: &Cli, args: &[&str], within: Duration) -> (Output, Duration) {
    let started = std::time::Instant::now();
    let mut child = cli
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained aside, so a full pipe never stalls it.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let done = common::wait_until_or(within, || child.try_wait().unwrap());
    let Some(status) = done else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("keyward {args:?} did not end within {within:?}");
    };
    let took = started.elapsed();
    (
        Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        },
        took,
    )
}

#[test]
fn scan_hashes_no_forged_secret_that_fails_the_pre_check() {
    let cli = Cli::new();
    let (id, _) = create(&cli, "target");
    // 1 MB of lines, each a key with the real id, a right checksum and a
    // made-up secret: each would cost an argon2 run (tens of ms with the
    // CLI's defaults) if it were hashed without the pre-check.
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    let mut forged = 0;
    while text.len() < 1 << 20 {
        text.push_str(&common::well_formed("kw", &id, &format!("{forged:0>43}")));
        text.push('\n');
        forged += 1;
    }
    let file = dir.path().join("forged.log");
    std::fs::write(&file, &text).unwrap();
    let (out, took) = run_within(
        &cli,
        &["--json", "scan", file.to_str().unwrap()],
        Duration::from_secs(20),
    );
    eprintln!("scan of 1 MB of {forged} forged keys: {took:?}");
    assert_eq!(out.status.code(), Some(0));
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found.len(), forged);
    assert!(found.iter().all(|f| f["state"] == "wrong_secret"));
}

#[test]
fn scan_skips_fifos_sockets_devices_and_links_and_goes_on_past_unreadable_files() {
    use std::os::unix::fs::symlink;
    let cli = Cli::new();
    let (id, key) = create(&cli, "found");
    let tree = tempfile::tempdir().unwrap();
    let dir = tree.path();
    std::fs::write(dir.join("a.env"), format!("KEY={key}\n")).unwrap();
    let fifo = std::ffi::CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let _socket = std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap();
    symlink(dir.join("a.env"), dir.join("link.env")).unwrap();
    symlink("/dev/null", dir.join("null")).unwrap();
    symlink(dir, dir.join("loop")).unwrap();
    // Opens as a file and fails to read (EIO), whoever runs the scan.
    symlink("/proc/self/mem", dir.join("mem")).unwrap();
    let root = dir.to_str().unwrap();

    let (out, _) = run_within(&cli, &["--json", "scan", root], Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "a live key was found: {err}");
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found.len(), 1, "links are not followed: {found:?}");
    assert_eq!(found[0]["key_id"], id.as_str());
    for (name, why) in [
        ("fifo", "a FIFO"),
        ("sock", "a socket"),
        ("link.env", "a symbolic link"),
        ("null", "a symbolic link"),
        ("loop", "a symbolic link"),
        ("mem", "a symbolic link"),
    ] {
        assert!(
            err.contains(&format!("skipped {root}/{name}: {why}")),
            "{name}: {err}"
        );
    }

    let (out, _) = run_within(
        &cli,
        &["--json", "scan", "--follow", root],
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<&str> = found.iter().map(|f| f["file"].as_str().unwrap()).collect();
    assert_eq!(
        files,
        [format!("{root}/a.env"), format!("{root}/link.env")],
        "{err}"
    );
    for (name, why) in [
        ("fifo", "a FIFO"),
        ("sock", "a socket"),
        ("null", "a character device"),
        ("loop", "a directory read already"),
        ("mem", "cannot be read to its end"),
    ] {
        assert!(
            err.contains(&format!("skipped {root}/{name}: {why}")),
            "{name}: {err}"
        );
    }
    // Nothing live and something unreadable: not known clean.
    let clean = tempfile::tempdir().unwrap();
    symlink("/proc/self/mem", clean.path().join("mem")).unwrap();
    let (out, _) = run_within(
        &cli,
        &["scan", "--follow", clean.path().to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn limits_quota_and_scopes_are_set_shown_and_enforced_across_invocations() {
    let cli = Cli::new();
    let v = cli.json(&[
        "key",
        "create",
        "metered",
        "--limit",
        "burst=2/3s",
        "--quota",
        "4",
        "--refill",
        "100/monthly",
        "--scope",
        "orders:read",
    ]);
    let (id, key) = (v["id"].as_str().unwrap(), v["key"].as_str().unwrap());
    assert_eq!(v["limits"][0]["window_seconds"], 3.0);
    assert_eq!(v["quota"]["remaining"], 4);
    assert_eq!(v["quota"]["refill"]["period"], "monthly");
    let shown = cli.ok(&["key", "show", id]);
    assert!(shown.contains("rate limits   burst 2/3s"), "{shown}");
    assert!(
        shown.contains("quota         4 requests left, reset to 100 monthly"),
        "{shown}"
    );
    assert!(shown.contains("scopes        orders:read"), "{shown}");

    // A missing scope: refused, exit 1, nothing spent.
    let verify = |scope: Option<&str>| -> (i32, Value) {
        let mut args = vec!["--json", "verify", key, "--ip", "10.0.0.1"];
        if let Some(s) = scope {
            args.extend(["--scope", s]);
        }
        let out = cli.run(&args);
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON verdict");
        (out.status.code().unwrap(), v)
    };
    let (code, v) = verify(Some("orders:write"));
    assert_eq!((code, v["denial"].as_str()), (1, Some("scope_missing")));
    // Each invocation is a process of its own: the limit holds across them.
    assert_eq!(verify(Some("orders:read")).1["valid"], true);
    assert_eq!(verify(None).1["valid"], true);
    let (code, v) = verify(None);
    assert_eq!((code, v["denial"].as_str()), (1, Some("rate_limited")));
    let wait = v["retry_after"].as_f64().unwrap();
    // 2 per 3 s, counted in parts of 97 ms.
    assert!(wait > 0.0 && wait <= 3.097, "{v}");
    // Admitted again once it has passed (polled, with a deadline).
    common::wait_until(
        "admitted after retry_after",
        Duration::from_secs(20),
        || (verify(None).1["valid"] == true).then_some(()),
    );
    assert_eq!(cli.json(&["key", "show", id])["quota"]["remaining"], 1);

    // Changed: a limit added and one removed; the quota; the scopes.
    let v = cli.json(&[
        "key",
        "limit",
        id,
        "--add",
        "daily=10000/1d",
        "--remove",
        "burst",
    ]);
    assert_eq!(v["limits"].as_array().unwrap().len(), 1);
    assert_eq!(v["limits"][0]["name"], "daily");
    let v = cli.json(&["key", "quota", id, "0"]);
    assert_eq!(v["quota"]["remaining"], 0);
    let (code, v) = verify(None);
    assert_eq!((code, v["denial"].as_str()), (1, Some("quota_exhausted")));
    assert_eq!(
        cli.json(&["key", "quota", id, "--none"])["quota"],
        Value::Null
    );
    let v = cli.json(&[
        "key",
        "scope",
        id,
        "--add",
        "contacts:write",
        "--remove",
        "orders:read",
    ]);
    assert_eq!(v["scopes"], serde_json::json!(["contacts:write"]));
    assert_eq!(verify(Some("contacts:write")).1["valid"], true);
    let chart = cli.ok(&["usage", id, "--days", "1"]);
    assert!(chart.contains("rate limited "), "{chart}");
    assert!(chart.contains("rate-limited or out of quota"), "{chart}");
    let usage = cli.json(&["usage", id]);
    assert!(usage["hourly"][0]["limited"].as_u64().unwrap() >= 2);
    assert_eq!(usage["totals"]["scope_missing"], 1);
    assert!(usage["totals"]["rate_limited"].as_u64().unwrap() >= 1);
    assert_eq!(usage["totals"]["quota_exhausted"], 1);

    // Bad input: one line, exit 4, nothing changed.
    cli.fails(&["key", "limit", id, "--add", "burst=lots/1s"], 4);
    cli.fails(&["key", "limit", id, "--add", "x=0/1s"], 4);
    cli.fails(&["key", "limit", id, "--remove", "nosuch"], 4);
    cli.fails(&["key", "quota", id, "5", "--refill", "5/weekly"], 4);
    cli.fails(&["key", "scope", id, "--add", "has space"], 4);
    let v = cli.json(&["key", "show", id]);
    assert_eq!(v["limits"][0]["name"], "daily");
    assert_eq!(v["scopes"], serde_json::json!(["contacts:write"]));
}

#[test]
fn check_reports_what_does_not_agree_and_repair_rebuilds_it() {
    let cli = Cli::new();
    let v = cli.json(&["key", "create", "owned", "--owner", "acme"]);
    let id = v["id"].as_str().unwrap().to_string();
    assert!(cli.ok(&["check"]).contains("clean"));
    // The owner index loses the key's row (the store closed: nobody holds it).
    {
        let db = sled::open(&cli.db).unwrap();
        let tree = db.open_tree("keyward").unwrap();
        let row = [&b"o"[..], b"acme\0", id.as_bytes()].concat();
        assert!(tree.remove(row).unwrap().is_some());
        db.flush().unwrap();
    }
    let out = cli.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("owners") && text.contains("owner row is missing"),
        "{text}"
    );
    let report: Value = serde_json::from_slice(&cli.run(&["--json", "check"]).stdout).unwrap();
    assert_eq!(report["clean"], false);
    assert_eq!(report["problems"][0]["table"], "owners");
    let out = cli.run(&["check", "--repair"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("(repaired)")
    );
    assert!(cli.ok(&["check"]).contains("clean"));
    let listed = cli.json(&["key", "list", "--owner", "acme"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[test]
fn backup_and_store_copy_write_a_store_that_opens_and_say_where_events_stand() {
    let cli = Cli::new();
    let (id, key) = create(&cli, "kept");
    cli.ok(&["key", "create", "other", "--owner", "acme"]);
    let dir = cli.db.parent().unwrap().to_path_buf();
    let backup = dir.join("backup");
    let out = cli.ok(&["backup", backup.to_str().unwrap()]);
    assert!(out.contains("Backed up 2 keys"), "{out}");
    assert!(
        out.contains("It holds events through #2; its next event is #3."),
        "{out}"
    );
    let restored = Cli {
        _dir: tempfile::tempdir().unwrap(),
        db: backup.clone(),
    };
    assert!(restored.ok(&["key", "show", &id]).contains("kept"));
    restored.ok(&["verify", &key, "--ip", "192.0.2.1"]);
    // Into anything not empty: exit 4, one line, nothing written.
    let err = cli.fails(&["backup", backup.to_str().unwrap()], 4);
    assert!(err.contains("not empty"), "{err}");
    // A copy from one store to another, named on the command line.
    let copy = dir.join("copy");
    let report: Value = serde_json::from_slice(
        &Command::new(common::keyward_bin())
            .args(["--json", "store", "copy"])
            .arg(&backup)
            .arg(&copy)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        (report["keys"].as_u64(), report["last_event"].as_u64()),
        (Some(2), Some(2))
    );
    let missing = Command::new(common::keyward_bin())
        .args(["store", "copy"])
        .arg(dir.join("nowhere"))
        .arg(dir.join("copy2"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(4));
    assert!(
        !dir.join("nowhere").exists(),
        "a copy never creates its source"
    );
    // On a terminal, progress as it goes.
    let (code, screen) = cli.on_terminal(&["backup", dir.join("shown").to_str().unwrap()], "");
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains("copying: ") && screen.contains("Backed up 2 keys"),
        "{screen}"
    );
}
