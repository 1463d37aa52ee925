//! Stores written by earlier releases open, verify their keys, and are
//! rewritten in the current format as their records change.
//!
//! `tests/fixtures/store-v1/` is a sled store written by the first release
//! (JSON key records, format 1) by `write_the_v1_fixture` below, run at
//! that release with `cargo test --test migration -- --ignored`;
//! `tests/fixtures/store-v1.json` lists its keys, their plaintexts and what
//! each should answer.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use keyward::{CreateOptions, KeyId, Refusal, Store, Timestamp, Verdict};
use serde_json::{Value, json};

fn fixture_dir() -> PathBuf {
    common::workspace_root().join("tests/fixtures")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Writes the fixture (at the release whose format it records).
#[test]
#[ignore = "writes tests/fixtures/store-v1; run only at the release it records"]
fn write_the_v1_fixture() {
    let dir = fixture_dir().join("store-v1");
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open_with(&dir, &common::fast_options()).unwrap();
    let mut keys = Vec::new();
    let mut add = |name: &str, key: &str, id: KeyId, expect: &str, ip: &str| {
        keys.push(
            json!({"name": name, "key": key, "id": id.to_string(), "expect": expect, "ip": ip}),
        );
    };
    let plain = store.create("plain", CreateOptions::new()).unwrap();
    add(
        "plain",
        plain.key.as_str(),
        plain.info.id,
        "valid",
        "198.51.100.1",
    );
    let rich = store
        .create(
            "rich",
            CreateOptions::new()
                .owner("acme")
                .metadata(json!({"plan": "pro", "seats": 12}))
                .restrict_to("office", "203.0.113.0/24")
                .expires_at(Timestamp::parse_rfc3339("2099-01-01T00:00:00Z").unwrap()),
        )
        .unwrap();
    add(
        "rich",
        rich.key.as_str(),
        rich.info.id,
        "valid",
        "203.0.113.9",
    );
    add(
        "rich",
        rich.key.as_str(),
        rich.info.id,
        "ip_not_allowed",
        "198.51.100.1",
    );
    let rotated = store.create("rotated", CreateOptions::new()).unwrap();
    let fresh = store
        .regenerate(&rotated.info.id, Duration::from_secs(0))
        .unwrap();
    add(
        "rotated",
        rotated.key.as_str(),
        rotated.info.id,
        "rotated",
        "198.51.100.1",
    );
    add(
        "rotated",
        fresh.key.as_str(),
        rotated.info.id,
        "valid",
        "198.51.100.1",
    );
    let graced = store.create("graced", CreateOptions::new()).unwrap();
    let graced_new = store
        .regenerate(&graced.info.id, Duration::from_secs(30 * 86_400))
        .unwrap();
    add(
        "graced",
        graced.key.as_str(),
        graced.info.id,
        "valid",
        "198.51.100.1",
    );
    add(
        "graced",
        graced_new.key.as_str(),
        graced.info.id,
        "valid",
        "198.51.100.1",
    );
    let off = store.create("off", CreateOptions::new()).unwrap();
    store.set_disabled(&off.info.id, true).unwrap();
    add(
        "off",
        off.key.as_str(),
        off.info.id,
        "disabled",
        "198.51.100.1",
    );
    let old = store
        .create(
            "old",
            CreateOptions::new()
                .expires_at(Timestamp::parse_rfc3339("2001-01-01T00:00:00Z").unwrap()),
        )
        .unwrap();
    add(
        "old",
        old.key.as_str(),
        old.info.id,
        "expired",
        "198.51.100.1",
    );
    // Usage and events, as a store in service has them.
    assert!(
        store
            .verify(
                plain.key.as_str(),
                common::ip("198.51.100.1"),
                Some("HubSpot")
            )
            .is_valid()
    );
    store.close().unwrap();
    std::fs::write(
        fixture_dir().join("store-v1.json"),
        serde_json::to_string_pretty(&json!({
            "written_at": Timestamp::now().to_string(),
            "keys": keys,
        }))
        .unwrap()
            + "\n",
    )
    .unwrap();
}

fn expected(v: &Verdict) -> &'static str {
    match v {
        Verdict::Valid(_) => "valid",
        Verdict::Denied(Refusal { denial: d, .. }) => d.as_str(),
    }
}

#[test]
fn a_v1_store_opens_verifies_and_is_rewritten_as_records_change() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("store");
    copy_dir(&fixture_dir().join("store-v1"), &path);
    let listed: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("store-v1.json")).unwrap(),
    )
    .unwrap();
    let cases = listed["keys"].as_array().unwrap();
    // The store clock an hour after the fixture was written: the graced
    // key's old secret is inside its 30 days whatever today's date.
    let written = Timestamp::parse_rfc3339(listed["written_at"].as_str().unwrap()).unwrap();
    let clock = std::sync::Arc::new(keyward::ManualClock::new(
        written.plus(Duration::from_secs(3600)),
    ));
    let options = common::options_with_clock(&clock);
    let store = Store::open_with(&path, &options).unwrap();
    assert_eq!(store.key_count(), 6);
    let plain: KeyId = cases[0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(store.usage(&plain).unwrap().totals.allowed, 1, "usage kept");
    for round in ["cold", "warm"] {
        for c in cases {
            let v = store.verify(
                c["key"].as_str().unwrap(),
                common::ip(c["ip"].as_str().unwrap()),
                None,
            );
            assert_eq!(expected(&v), c["expect"], "{round}: {c}");
        }
    }
    let rich: KeyId = cases[1]["id"].as_str().unwrap().parse().unwrap();
    let info = store.get(&rich).unwrap();
    assert_eq!(info.owner.as_deref(), Some("acme"));
    assert_eq!(info.metadata, Some(json!({"plan": "pro", "seats": 12})));
    assert!(info.whitelist_enabled);
    assert_eq!(store.list_owner("acme").unwrap().len(), 1);
    let kinds: Vec<&str> = store
        .events(0, 9)
        .unwrap()
        .iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "key.created",
            "key.created",
            "key.created",
            "key.regenerated",
            "key.created",
            "key.regenerated",
            "key.created",
            "key.updated",
            "key.created"
        ],
        "the outbox kept"
    );

    // A change rewrites the record; it reads back, and verifies, after reopen.
    store.rename(&rich, "rich, renamed").unwrap();
    store.close().unwrap();
    let store = Store::open_with(&path, &options).unwrap();
    assert_eq!(store.get(&rich).unwrap().name, "rich, renamed");
    for c in cases {
        let v = store.verify(
            c["key"].as_str().unwrap(),
            common::ip(c["ip"].as_str().unwrap()),
            None,
        );
        assert_eq!(expected(&v), c["expect"], "after the rewrite: {c}");
    }
}
