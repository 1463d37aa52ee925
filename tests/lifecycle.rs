//! Key lifecycle on a real sled store: create, get, list, regenerate (with
//! and without grace), delete, disable, rename, expiry, metadata, reopen.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{all_file_bytes, contains, forge, ip, open, options_with_clock, temp_store};
use keyward::{
    Clock, CreateOptions, Denial, KeyError, KeyId, KeyUpdate, ManualClock, Refusal, Store,
    Timestamp, Verdict, VerifyRequest,
};
use serde_json::json;

#[test]
fn create_returns_the_plaintext_once_and_stores_only_a_hash() {
    let (_dir, path, store) = temp_store();
    let created = store.create("CRM sync", CreateOptions::new()).unwrap();
    let key = created.key.as_str().to_string();
    assert!(key.starts_with(&format!("kw_{}_", created.info.id)));
    assert_eq!(key.len(), 2 + 1 + 12 + 1 + 43 + 6);
    assert_eq!(created.info.generation, 1);
    assert_eq!(
        created.info.masked,
        format!("kw_{}_\u{2026}{}", created.info.id, &key[key.len() - 4..])
    );
    assert!(
        !format!("{created:?}").contains(&key[16..]),
        "Debug shows no secret"
    );

    let regenerated = store.regenerate(&created.info.id, Duration::ZERO).unwrap();
    let key2 = regenerated.key.as_str().to_string();
    store.close().unwrap();

    // Neither secret (nor the full keys) may be found anywhere in the store's files.
    let files = all_file_bytes(&path);
    assert!(!files.is_empty());
    for k in [&key, &key2] {
        let secret = &k[16..16 + 43];
        for (file, bytes) in &files {
            assert!(
                !contains(bytes, secret.as_bytes()),
                "secret found in {}",
                file.display()
            );
        }
    }
    // What is there is an argon2id hash (stored as its numbers and bytes:
    // src/store/codec.rs), which the secret still verifies against.
    let store = open(&path);
    assert!(store.verify(&key2, ip("198.51.100.1"), None).is_valid());
}

#[test]
fn get_and_list_show_the_overview() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let store = Store::open_with(dir.path().join("s"), &options_with_clock(&clock)).unwrap();
    // The list is ordered by creation time (milliseconds): keep the three apart.
    let pause = || clock.advance(Duration::from_millis(3));
    let a = store.create("alpha", CreateOptions::new()).unwrap();
    pause();
    let b = store
        .create(
            "beta",
            CreateOptions::new()
                .metadata(json!({"customer": "acme", "plan": "pro"}))
                .expires_at(Timestamp::now().plus(Duration::from_secs(3600))),
        )
        .unwrap();
    pause();
    let dup = store.create("alpha", CreateOptions::new()).unwrap();
    assert_ne!(a.info.id, dup.info.id, "names need not be unique; ids are");

    let listed = store.list().unwrap();
    assert_eq!(
        listed.iter().map(|k| k.id).collect::<Vec<_>>(),
        vec![a.info.id, b.info.id, dup.info.id]
    );
    let got = store.get(&b.info.id).unwrap();
    assert_eq!(got, b.info);
    assert_eq!(
        got.metadata,
        Some(json!({"customer": "acme", "plan": "pro"}))
    );
    assert!(got.expires_at.is_some());
    assert_eq!(got.last_used_at, None);

    assert!(
        store
            .verify(a.key.as_str(), ip("203.0.113.7"), None)
            .is_valid()
    );
    let used = store.get(&a.info.id).unwrap();
    assert!(
        used.last_used_at.is_some(),
        "last used shows pending usage too"
    );
}

#[test]
fn regenerate_without_grace_kills_the_old_secret_at_once() {
    let (_dir, _path, store) = temp_store();
    let created = store.create("k", CreateOptions::new()).unwrap();
    let old = created.key.as_str().to_string();
    assert!(store.verify(&old, ip("10.0.0.1"), None).is_valid());
    let fresh = store.regenerate(&created.info.id, Duration::ZERO).unwrap();
    assert_eq!(
        fresh.info.id, created.info.id,
        "id is stable across regenerations"
    );
    assert_eq!(fresh.info.generation, 2);
    assert!(fresh.info.rotated_at.is_some());
    assert_ne!(fresh.info.masked, created.info.masked);
    match store.verify(&old, ip("10.0.0.1"), None) {
        Verdict::Denied(Refusal {
            denial: Denial::Rotated { at },
            ..
        }) => assert_eq!(Some(at), fresh.info.rotated_at),
        other => panic!("expected Rotated, got {other:?}"),
    }
    match store.verify(fresh.key.as_str(), ip("10.0.0.1"), None) {
        Verdict::Valid(g) => {
            assert_eq!(g.generation, 2);
            assert!(!g.in_grace);
        }
        other => panic!("expected Valid, got {other:?}"),
    }
}

#[test]
fn rotated_is_told_apart_from_a_wrong_secret_even_for_a_cold_old_secret() {
    let (_dir, _path, store) = temp_store();
    let created = store.create("k", CreateOptions::new()).unwrap();
    let old = created.key.as_str().to_string();
    // Never verified before the regeneration: the old generation is cold.
    store.regenerate(&created.info.id, Duration::ZERO).unwrap();
    assert!(matches!(
        store.verify(&old, ip("10.0.0.1"), None),
        Verdict::Denied(Refusal {
            denial: Denial::Rotated { .. },
            ..
        })
    ));
    // A well-formed key with this id but a secret of no generation.
    let forged = forge(&store, &created.info.id);
    assert_eq!(
        store.verify(&forged, ip("10.0.0.1"), None),
        Denial::WrongSecret
    );
}

#[test]
fn grace_keeps_the_old_secret_working_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let store = Store::open_with(dir.path().join("s"), &options_with_clock(&clock)).unwrap();
    let created = store.create("k", CreateOptions::new()).unwrap();
    let old = created.key.as_str().to_string();
    assert!(store.verify(&old, ip("10.0.0.1"), Some("crm")).is_valid());
    let fresh = store
        .regenerate(&created.info.id, Duration::from_millis(600))
        .unwrap();
    assert!(fresh.info.grace_until.is_some());
    match store.verify(&old, ip("10.0.0.1"), Some("crm")) {
        Verdict::Valid(g) => {
            assert!(g.in_grace);
            assert_eq!(g.generation, 1);
        }
        other => panic!("old secret should work during grace, got {other:?}"),
    }
    assert!(
        store
            .verify(fresh.key.as_str(), ip("10.0.0.2"), None)
            .is_valid()
    );
    let usage = store.usage(&created.info.id).unwrap();
    let crm_ip = usage.ips.iter().find(|r| r.ip == ip("10.0.0.1")).unwrap();
    assert!(crm_ip.stale_secret, "a client on the old secret is flagged");

    clock.advance(Duration::from_millis(599));
    assert!(
        store.verify(&old, ip("10.0.0.1"), None).is_valid(),
        "still inside the grace period"
    );
    clock.advance(Duration::from_millis(1));
    assert!(matches!(
        store.verify(&old, ip("10.0.0.1"), None),
        Verdict::Denied(Refusal {
            denial: Denial::Rotated { .. },
            ..
        })
    ));
    assert!(
        store
            .verify(fresh.key.as_str(), ip("10.0.0.2"), None)
            .is_valid()
    );
}

#[test]
fn an_immediate_regeneration_ends_an_earlier_grace() {
    let (_dir, _path, store) = temp_store();
    let created = store.create("k", CreateOptions::new()).unwrap();
    let first = created.key.as_str().to_string();
    store
        .regenerate(&created.info.id, Duration::from_secs(3600))
        .unwrap();
    assert!(store.verify(&first, ip("10.0.0.1"), None).is_valid());
    // Leak response: rotate again with no grace; nothing old may work.
    let third = store.regenerate(&created.info.id, Duration::ZERO).unwrap();
    assert!(!store.verify(&first, ip("10.0.0.1"), None).is_valid());
    assert_eq!(third.info.grace_until, None);
}

#[test]
fn delete_makes_the_key_unknown_and_removes_usage() {
    let (_dir, path, store) = temp_store();
    let created = store.create("k", CreateOptions::new()).unwrap();
    assert!(
        store
            .verify(created.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
    store.flush().unwrap();
    store.delete(&created.info.id).unwrap();
    assert_eq!(
        store.verify(created.key.as_str(), ip("10.0.0.1"), None),
        Denial::UnknownKey
    );
    assert!(matches!(
        store.get(&created.info.id),
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        store.usage(&created.info.id),
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        store.delete(&created.info.id),
        Err(KeyError::NotFound(_))
    ));
    drop(store);
    let store = open(&path);
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        store.verify(created.key.as_str(), ip("10.0.0.1"), None),
        Denial::UnknownKey
    );
}

#[test]
fn disable_enable_rename_expiry_and_metadata() {
    let (_dir, _path, store) = temp_store();
    let c = store.create("old name", CreateOptions::new()).unwrap();
    let (id, key) = (c.info.id, c.key.as_str().to_string());

    assert!(store.set_disabled(&id, true).unwrap().disabled);
    assert_eq!(store.verify(&key, ip("10.0.0.1"), None), Denial::Disabled);
    assert!(!store.set_disabled(&id, false).unwrap().disabled);
    assert!(store.verify(&key, ip("10.0.0.1"), None).is_valid());

    assert_eq!(store.rename(&id, "new name").unwrap().name, "new name");
    assert_eq!(store.get(&id).unwrap().name, "new name");

    let past = Timestamp::from_unix_millis(Timestamp::now().unix_millis() - 1000);
    store.set_expiry(&id, Some(past)).unwrap();
    assert_eq!(store.verify(&key, ip("10.0.0.1"), None), Denial::Expired);
    store.set_expiry(&id, None).unwrap();
    assert!(store.verify(&key, ip("10.0.0.1"), None).is_valid());

    let info = store
        .set_metadata(&id, Some(json!({"tier": "gold"})))
        .unwrap();
    assert_eq!(info.metadata, Some(json!({"tier": "gold"})));
    assert_eq!(store.set_metadata(&id, None).unwrap().metadata, None);
}

#[test]
fn bad_input_is_a_typed_error_and_changes_nothing() {
    let (_dir, _path, store) = temp_store();
    for bad in ["", "   ", "tab\there", &"x".repeat(201)] {
        assert!(
            matches!(
                store.create(bad, CreateOptions::new()),
                Err(KeyError::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        store.create("k", CreateOptions::new().metadata(json!([1, 2]))),
        Err(KeyError::InvalidInput(_))
    ));
    assert!(matches!(
        store.create(
            "k",
            CreateOptions::new().metadata(json!({"big": "x".repeat(20_000)}))
        ),
        Err(KeyError::InvalidInput(_))
    ));
    assert!(matches!(
        store.create(
            "k",
            CreateOptions::new().restrict_to("office", "10.0.0.1/8")
        ),
        Err(KeyError::InvalidInput(_))
    ));
    assert!(store.list().unwrap().is_empty(), "nothing was stored");

    let c = store.create("k", CreateOptions::new()).unwrap();
    assert!(matches!(
        store.rename(&c.info.id, ""),
        Err(KeyError::InvalidInput(_))
    ));
    assert!(matches!(
        store.regenerate(&c.info.id, Duration::from_secs(400 * 86_400)),
        Err(KeyError::InvalidInput(_))
    ));
    assert_eq!(
        store.get(&c.info.id).unwrap(),
        c.info,
        "failed calls changed nothing"
    );
    assert!("not-an-id".parse::<KeyId>().is_err());
    let unknown: KeyId = "AAAAAAAAAAAA".parse().unwrap();
    assert!(matches!(
        store.regenerate(&unknown, Duration::ZERO),
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        store.set_disabled(&unknown, true),
        Err(KeyError::NotFound(_))
    ));
}

#[test]
fn malformed_keys_are_rejected_before_lookup() {
    let (_dir, _path, store) = temp_store();
    let c = store.create("k", CreateOptions::new()).unwrap();
    let key = c.key.as_str();
    let mut typo = key.to_string().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let huge = "k".repeat(1 << 20);
    for bad in [
        String::new(),
        key[..key.len() - 1].to_string(),
        String::from_utf8(typo).unwrap(),
        key.replacen("kw_", "xx_", 1),
        huge,
    ] {
        assert_eq!(store.verify(&bad, ip("10.0.0.1"), None), Denial::Malformed);
    }
    assert_eq!(
        store.verify_request(&VerifyRequest::new(&[0xff, 0xfe, 0x00], ip("10.0.0.1"))),
        Denial::Malformed
    );
    assert_eq!(
        store.usage(&c.info.id).unwrap().totals.denied,
        0,
        "nothing recorded against the key"
    );
}

#[test]
fn a_refusal_names_the_key_and_its_owner() {
    let (_dir, _path, store) = temp_store();
    let c = store
        .create(
            "k",
            CreateOptions::new()
                .owner("acme")
                .scopes(["orders:read"])
                .restrict_to("office", "198.51.100.0/24"),
        )
        .unwrap();
    let id = c.info.id;
    let key = c.key.as_str();
    let office = ip("198.51.100.7");
    let named = |v: Verdict, denial: Denial| {
        let Verdict::Denied(r) = v else {
            panic!("admitted: {v:?}")
        };
        assert_eq!(r.denial, denial);
        assert_eq!(r.key_id, Some(id), "{denial:?}");
        assert_eq!(r.owner.as_deref(), Some("acme"), "{denial:?}");
    };
    named(
        store.verify(key, ip("10.0.0.1"), None),
        Denial::IpNotAllowed,
    );
    named(
        store.verify_request(&VerifyRequest::new(key, office).scope("orders:write")),
        Denial::ScopeMissing,
    );
    named(
        store.verify(&forge(&store, &id), office, None),
        Denial::WrongSecret,
    );
    // A secret regenerated away.
    store.regenerate(&id, Duration::ZERO).unwrap();
    named(
        store.verify(key, office, None),
        Denial::Rotated {
            at: store.get(&id).unwrap().rotated_at.unwrap(),
        },
    );
    store.update(&id, KeyUpdate::new().disabled(true)).unwrap();
    named(store.verify(key, office, None), Denial::Disabled);

    // An id no key has: named, with no owner; a malformed key names none.
    let gone = store
        .create("gone", CreateOptions::new().owner("acme"))
        .unwrap();
    store.delete(&gone.info.id).unwrap();
    let v = store.verify(gone.key.as_str(), office, None);
    assert_eq!(v, Denial::UnknownKey);
    assert_eq!((v.key_id(), v.owner()), (Some(gone.info.id), None));
    let v = store.verify("kw_nonsense", office, None);
    assert_eq!((v.key_id(), v.owner()), (None, None));
    // The request's Debug does not show the key.
    let shown = format!("{:?}", VerifyRequest::new(key, office).integration("crm"));
    assert!(!shown.contains(&key[key.len() - 20..]), "{shown}");
    assert!(shown.contains("crm"), "{shown}");
}

#[test]
fn reopen_keeps_keys_generations_whitelists_and_usage() {
    let (_dir, path, store) = temp_store();
    let a = store
        .create(
            "a",
            CreateOptions::new()
                .metadata(json!({"n": 1}))
                .restrict_to("office", "198.51.100.0/24"),
        )
        .unwrap();
    let b = store.create("b", CreateOptions::new()).unwrap();
    let b2 = store
        .regenerate(&b.info.id, Duration::from_secs(3600))
        .unwrap();
    assert!(
        store
            .verify(a.key.as_str(), ip("198.51.100.5"), Some("zapier"))
            .is_valid()
    );
    assert!(
        !store
            .verify(a.key.as_str(), ip("203.0.113.1"), None)
            .is_valid()
    );
    let before: Vec<_> = store.list().unwrap();
    let usage_before = store.usage(&a.info.id).unwrap();
    store.flush().unwrap(); // the refused IP's key.denied_ip event is written with usage
    let events_before = store.events(0, 100).unwrap();
    assert_eq!(events_before.last().unwrap().kind.as_str(), "key.denied_ip");
    store.close().unwrap();

    let store = open(&path);
    assert_eq!(store.list().unwrap(), before);
    assert_eq!(store.usage(&a.info.id).unwrap(), usage_before);
    assert_eq!(store.events(0, 100).unwrap(), events_before);
    assert!(
        store
            .verify(a.key.as_str(), ip("198.51.100.5"), None)
            .is_valid()
    );
    assert_eq!(
        store.verify(a.key.as_str(), ip("203.0.113.1"), None),
        Denial::IpNotAllowed
    );
    assert!(
        store
            .verify(b.key.as_str(), ip("10.0.0.1"), None)
            .is_valid(),
        "grace survives reopen"
    );
    assert!(
        store
            .verify(b2.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
}

#[test]
fn the_prefix_is_chosen_at_creation_and_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut o = common::fast_options();
    o.prefix = Some("acme_live".into());
    let store = Store::open_with(&path, &o).unwrap();
    let c = store.create("k", CreateOptions::new()).unwrap();
    assert!(c.key.as_str().starts_with("acme_live_"));
    assert!(
        store
            .verify(c.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
    drop(store);
    o.prefix = Some("acme_test".into());
    assert!(matches!(
        Store::open_with(&path, &o),
        Err(keyward::OpenError::InvalidOptions(_))
    ));
    let store = open(&path);
    assert_eq!(store.prefix(), "acme_live");
    o.prefix = Some("Bad-Prefix".into());
    drop(store);
    assert!(matches!(
        Store::open_with(&path, &o),
        Err(keyward::OpenError::InvalidOptions(_))
    ));
}

#[test]
fn events_record_each_mutation_without_secrets() {
    let (_dir, _path, store) = temp_store();
    let c = store.create("k", CreateOptions::new()).unwrap();
    let r = store
        .regenerate(&c.info.id, Duration::from_secs(60))
        .unwrap();
    store.set_disabled(&c.info.id, true).unwrap();
    let wl = store
        .add_whitelist_entry(&c.info.id, "office", "10.1.0.0/16")
        .unwrap();
    store.remove_whitelist_entry(&c.info.id, &wl.id).unwrap();
    store.delete(&c.info.id).unwrap();
    let events = store.events(0, 100).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "key.created",
            "key.regenerated",
            "key.updated",
            "whitelist.updated",
            "whitelist.updated",
            "key.deleted"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let text = serde_json::to_string(&events).unwrap();
    for k in [c.key.as_str(), r.key.as_str()] {
        assert!(!text.contains(&k[16..59]), "no secret in events");
    }
    assert!(!text.contains("argon2"), "no hash in events");
    assert_eq!(
        store.events(events[2].seq, 100).unwrap().len(),
        3,
        "since is exclusive"
    );
}

#[test]
fn every_event_names_its_actor_the_handles_or_the_user_and_host() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = common::fast_options();
    options.actor = Some("admin panel".into());
    let store = Store::open_with(dir.path().join("store"), &options).unwrap();
    let c = store.create("k", CreateOptions::new()).unwrap();
    store.rename(&c.info.id, "k2").unwrap();
    store.delete(&c.info.id).unwrap();
    let events = store.events(0, 100).unwrap();
    assert_eq!(events.len(), 3);
    for e in &events {
        assert_eq!(e.data["actor"], "admin panel", "{}", e.kind.as_str());
    }
    store.close().unwrap();

    // Without one: `<user>@<host name>`, on changes and on notices alike.
    let (_dir, _path, plain) = temp_store();
    let c = plain
        .create(
            "k",
            CreateOptions::new().restrict_to("office", "198.51.100.0/24"),
        )
        .unwrap();
    assert_eq!(
        plain.verify(c.key.as_str(), ip("203.0.113.1"), None),
        Denial::IpNotAllowed
    );
    plain.flush().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let local = format!("{}@{}", keyward::os_user(), host.trim());
    let events = plain.events(0, 10).unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e.data["actor"], local.as_str(), "{}", e.kind.as_str());
    }
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    assert_eq!(
        keyward::os_user(),
        String::from_utf8_lossy(&me.stdout).trim()
    );

    for bad in ["", "tab\there", &"a".repeat(129)] {
        let mut o = common::fast_options();
        o.actor = Some(bad.to_string());
        assert!(matches!(
            Store::open_in_memory(&o),
            Err(keyward::OpenError::InvalidOptions(_))
        ));
    }
}

#[test]
fn a_key_expires_at_its_expiry_by_the_store_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(
        1_800_000_000_000,
    )));
    let store = Store::open_with(dir.path().join("s"), &options_with_clock(&clock)).unwrap();
    let at = clock.now().plus(Duration::from_secs(3600));
    let c = store
        .create("k", CreateOptions::new().expires_at(at))
        .unwrap();
    clock.advance(Duration::from_millis(3_599_999));
    assert!(
        store
            .verify(c.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        store.verify(c.key.as_str(), ip("10.0.0.1"), None),
        Denial::Expired
    );
    assert_eq!(store.get(&c.info.id).unwrap().expires_at, Some(at));
}

#[test]
fn an_expiry_rfc_3339_cannot_write_is_invalid_input_not_a_panic() {
    let (_dir, _path, store) = temp_store();
    for ms in [i64::MAX, i64::MIN, Timestamp::MAX.unix_millis() + 1] {
        let at = Timestamp::from_unix_millis(ms);
        let e = store
            .create("k", CreateOptions::new().expires_at(at))
            .unwrap_err();
        assert!(matches!(e, KeyError::InvalidInput(_)), "{e:?}");
    }
    let c = store
        .create("k", CreateOptions::new().expires_at(Timestamp::MAX))
        .unwrap();
    assert_eq!(c.info.expires_at, Some(Timestamp::MAX));
    let e = store
        .set_expiry(&c.info.id, Some(Timestamp::from_unix_millis(i64::MAX)))
        .unwrap_err();
    assert!(matches!(e, KeyError::InvalidInput(_)), "{e:?}");
    assert_eq!(store.key_count(), 1);
}

#[test]
fn create_many_makes_every_key_or_none() {
    let (_dir, _path, store) = temp_store();
    let made = store
        .create_many(
            (0..50)
                .map(|i| (format!("bulk {i}"), CreateOptions::new().owner("acct_bulk")))
                .collect(),
        )
        .unwrap();
    assert_eq!(made.len(), 50);
    assert!(made.iter().all(|c| {
        store
            .verify(c.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    }));
    assert_eq!(store.list_owner("acct_bulk").unwrap().len(), 50);
    let created = store.events(0, 1000).unwrap().len();
    assert_eq!(created, 50, "one key.created each");

    // One bad entry: nothing is created.
    let bad = vec![
        ("fine".to_string(), CreateOptions::new()),
        (String::new(), CreateOptions::new()),
    ];
    assert!(matches!(
        store.create_many(bad),
        Err(KeyError::InvalidInput(_))
    ));
    assert_eq!(store.list().unwrap().len(), 50);
    let too_many = (0..10_001)
        .map(|_| ("k".to_string(), CreateOptions::new()))
        .collect();
    assert!(matches!(
        store.create_many(too_many),
        Err(KeyError::InvalidInput(_))
    ));
}

/// `Store::update` changes every field its patch names in one write, each
/// with the event its single-field call writes, and leaves the rest.
#[test]
fn update_changes_every_named_field_at_once_with_each_fields_event() {
    use keyward::{EventKind, KeyUpdate, Limit, Quota};
    let (_dir, _path, store) = temp_store();
    let made = store
        .create(
            "before",
            CreateOptions::new()
                .owner("acme")
                .metadata(json!({"plan": "free"})),
        )
        .unwrap();
    let id = made.info.id;
    let last = store.events(0, 100).unwrap().last().unwrap().seq;
    let expiry = Timestamp::from_unix_millis(4_102_444_800_000);
    let info = store
        .update(
            &id,
            KeyUpdate::new()
                .name("after")
                .disabled(true)
                .expires_at(Some(expiry))
                .metadata(None)
                .owner(Some("globex"))
                .scopes(["orders:read"])
                .limits(vec![Limit::new("burst", 5, Duration::from_secs(10))])
                .quota(Some(Quota::new(7)))
                .whitelist_enabled(true),
        )
        .unwrap();
    assert_eq!(info.name, "after");
    assert!(info.disabled && info.whitelist_enabled);
    assert_eq!(info.expires_at, Some(expiry));
    assert_eq!(info.metadata, None);
    assert_eq!(info.owner.as_deref(), Some("globex"));
    assert_eq!(info.scopes, ["orders:read"]);
    assert_eq!(info.limits.len(), 1);
    assert_eq!(info.quota.map(|q| q.remaining), Some(7));
    assert_eq!(store.get(&id).unwrap(), info);
    assert_eq!(store.list_owner("globex").unwrap().len(), 1);
    assert!(store.list_owner("acme").unwrap().is_empty());
    assert_eq!(
        store.verify(made.key.as_str(), ip("198.51.100.1"), None),
        Denial::Disabled
    );
    // One event per field, in the patch's order, all from the one write.
    let told: Vec<(EventKind, serde_json::Value)> = store
        .events(last, 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.data))
        .collect();
    let kinds: Vec<EventKind> = told.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            [EventKind::KeyUpdated; 8].as_slice(),
            &[EventKind::WhitelistUpdated]
        ]
        .concat()
    );
    assert_eq!(told[0].1["renamed_from"], "before");
    assert_eq!(told[4].1["owner_from"], "acme");
    assert_eq!(told[4].1["owner_to"], "globex");
    assert_eq!(told[8].1["enabled"], true);

    // What a patch leaves out stays; an empty patch writes nothing.
    let again = store.update(&id, KeyUpdate::new().disabled(false)).unwrap();
    assert_eq!(
        (again.name.as_str(), again.disabled, again.owner.as_deref()),
        ("after", false, Some("globex"))
    );
    let seq = store.events(0, 1000).unwrap().last().unwrap().seq;
    assert_eq!(store.update(&id, KeyUpdate::new()).unwrap().name, "after");
    assert_eq!(store.events(0, 1000).unwrap().last().unwrap().seq, seq);
}

/// A key's description: set at creation, changed and cleared by a patch
/// (with its event), kept across a reopen, bounded.
#[test]
fn a_description_is_created_updated_cleared_and_kept() {
    use keyward::KeyUpdate;
    let (_dir, path, store) = temp_store();
    let made = store
        .create(
            "crm",
            CreateOptions::new().description("HubSpot sync for the EU team"),
        )
        .unwrap();
    let id = made.info.id;
    assert_eq!(
        made.info.description.as_deref(),
        Some("HubSpot sync for the EU team")
    );
    let seq = store.events(0, 100).unwrap().last().unwrap().seq;
    let longest = "é".repeat(keyward::MAX_DESCRIPTION_LEN / 2);
    let info = store
        .update(&id, KeyUpdate::new().description(Some(longest.as_str())))
        .unwrap();
    assert_eq!(info.description.as_deref(), Some(longest.as_str()));
    let told = store.events(seq, 10).unwrap();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].data["description"], "changed");
    // Kept on disk (format 3's settings section) and read back.
    drop(store);
    let store = open(&path);
    assert_eq!(
        store.get(&id).unwrap().description.as_deref(),
        Some(longest.as_str())
    );
    let too_long = "d".repeat(keyward::MAX_DESCRIPTION_LEN + 1);
    assert!(matches!(
        store.create("x", CreateOptions::new().description(too_long)),
        Err(KeyError::InvalidInput(_))
    ));
    let cleared = store
        .update(&id, KeyUpdate::new().description(None::<String>))
        .unwrap();
    assert_eq!(cleared.description, None);
    drop(store);
    assert_eq!(open(&path).get(&id).unwrap().description, None);
}

/// A patch with one invalid field changes nothing, not even its valid
/// fields, and writes no event; a key that does not exist is NotFound.
#[test]
fn an_update_with_one_invalid_field_changes_nothing() {
    use keyward::{KeyUpdate, Limit};
    let (_dir, _path, store) = temp_store();
    let made = store.create("kept", CreateOptions::new()).unwrap();
    let id = made.info.id;
    let before = store.get(&id).unwrap();
    let seq = store.events(0, 100).unwrap().last().unwrap().seq;
    let bad_patches = [
        KeyUpdate::new().name("renamed").owner(Some("bad\nowner")),
        KeyUpdate::new().disabled(true).name(""),
        KeyUpdate::new()
            .whitelist_enabled(true)
            .scopes(["no spaces allowed"]),
        KeyUpdate::new()
            .disabled(true)
            .limits(vec![Limit::new("same", 1, Duration::from_secs(1)); 2]),
        KeyUpdate::new()
            .name("renamed")
            .metadata(Some(json!([1, 2]))),
        KeyUpdate::new()
            .disabled(true)
            .description(Some("d".repeat(keyward::MAX_DESCRIPTION_LEN + 1))),
    ];
    for patch in bad_patches {
        let e = store.update(&id, patch.clone()).unwrap_err();
        assert!(matches!(e, KeyError::InvalidInput(_)), "{patch:?}: {e}");
        assert_eq!(store.get(&id).unwrap(), before, "{patch:?}");
    }
    assert_eq!(store.events(0, 100).unwrap().last().unwrap().seq, seq);
    assert!(
        store
            .verify(made.key.as_str(), ip("198.51.100.1"), None)
            .is_valid()
    );
    let missing: KeyId = "AAAAAAAAAAAA".parse().unwrap();
    assert!(matches!(
        store.update(&missing, KeyUpdate::new().disabled(true)),
        Err(KeyError::NotFound(_))
    ));
}
