//! Backups and copies between engines: `Store::backup` writes a sled store
//! that opens directly, `Store::copy_to` writes into an empty store of
//! either engine; both hold a consistent snapshot of a live store — every
//! key verifies against the copy as against the original (imported keys,
//! grace-period secrets and quotas included), event numbers continue and
//! plugins do not deliver again.

mod common;
#[path = "common/webhook.rs"]
mod webhook;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{fast_options, ip};
use keyward::{CopyError, CreateOptions, ImportedSecret, KeyId, Limit, Quota, Store, Verdict};

/// A secret a customer holds, and where it is presented from.
struct Held {
    what: &'static str,
    key: String,
    from: &'static str,
}

/// A store with one of everything: an owner and a whitelist, a secret in
/// its grace period and its successor, a disabled key, a deleted one, an
/// imported key, a quota partly spent, a rate limit, scopes, usage.
fn populate(store: &Store) -> Vec<Held> {
    let mut held = Vec::new();
    let mut hold = |what, key: &str, from| {
        held.push(Held {
            what,
            key: key.to_string(),
            from,
        });
    };
    let plain = store
        .create(
            "crm",
            CreateOptions::new()
                .owner("acct-1")
                .restrict_to("office", "10.0.0.0/8")
                .scopes(["read", "write"]),
        )
        .unwrap();
    hold("whitelisted", plain.key.as_str(), "10.1.2.3");
    hold("outside the whitelist", plain.key.as_str(), "192.0.2.1");
    let rotated = store
        .create("zapier", CreateOptions::new().owner("acct-1"))
        .unwrap();
    let successor = store
        .regenerate(&rotated.info.id, Duration::from_hours(1))
        .unwrap();
    hold("in its grace period", rotated.key.as_str(), "192.0.2.2");
    hold("its successor", successor.key.as_str(), "192.0.2.2");
    let gone = store.create("old", CreateOptions::new()).unwrap();
    let replaced = store.regenerate(&gone.info.id, Duration::ZERO).unwrap();
    hold("replaced at once", gone.key.as_str(), "192.0.2.3");
    hold("the replacement", replaced.key.as_str(), "192.0.2.3");
    let off = store.create("off", CreateOptions::new()).unwrap();
    store.set_disabled(&off.info.id, true).unwrap();
    hold("disabled", off.key.as_str(), "192.0.2.4");
    let deleted = store.create("deleted", CreateOptions::new()).unwrap();
    store.delete(&deleted.info.id).unwrap();
    hold("deleted", deleted.key.as_str(), "192.0.2.5");
    store
        .import_key(
            "legacy",
            ImportedSecret::Plaintext(zeroize::Zeroizing::new(
                "legacy-secret-0123456789".to_string(),
            )),
            CreateOptions::new().owner("acct-2"),
        )
        .unwrap();
    hold("imported", "legacy-secret-0123456789", "192.0.2.6");
    let metered = store
        .create(
            "metered",
            CreateOptions::new().quota(Quota::new(5)).limit(Limit::new(
                "burst",
                100,
                Duration::from_secs(60),
            )),
        )
        .unwrap();
    for _ in 0..2 {
        assert!(
            store
                .verify(metered.key.as_str(), ip("192.0.2.7"), Some("app"))
                .is_valid()
        );
    }
    hold("quota 5, 2 spent", metered.key.as_str(), "192.0.2.7");
    for _ in 0..3 {
        store.verify(plain.key.as_str(), ip("10.9.9.9"), Some("Zapier/1.0"));
    }
    store.flush().unwrap();
    held
}

/// What a store shows: every key, its usage, the outbox.
fn view(store: &Store) -> (String, String, Vec<String>) {
    let keys = store.list().unwrap();
    let usage: Vec<String> = keys
        .iter()
        .map(|k| format!("{:?}", store.usage(&k.id).unwrap()))
        .collect();
    let events: Vec<String> = store
        .events(0, 10_000)
        .unwrap()
        .iter()
        .map(|e| format!("{} {:?} {}", e.seq, e.kind, e.key_id))
        .collect();
    (format!("{keys:?}"), usage.join("\n"), events)
}

/// Each held secret presented three times: the verdicts in order (the
/// third use of the quota's secret finds it spent on both).
fn verdicts(store: &Store, held: &[Held]) -> Vec<(String, Vec<Verdict>)> {
    held.iter()
        .map(|h| {
            let v = (0..4)
                .map(|_| store.verify(&h.key, ip(h.from), Some("check")))
                .collect();
            (h.what.to_string(), v)
        })
        .collect()
}

/// The copy holds what the original does and verifies the same way; its
/// next event follows the original's last.
fn assert_same(original: &Store, copy: &Store, held: &[Held], last_event: u64) {
    assert_eq!(view(original), view(copy));
    let on_copy = verdicts(copy, held);
    assert_eq!(verdicts(original, held), on_copy);
    // The secrets admitted are the ones that should be.
    let admitted: Vec<&str> = on_copy
        .iter()
        .filter(|(_, v)| v[0].is_valid())
        .map(|(w, _)| w.as_str())
        .collect();
    assert_eq!(
        admitted,
        [
            "whitelisted",
            "in its grace period",
            "its successor",
            "the replacement",
            "imported",
            "quota 5, 2 spent"
        ]
    );
    let quota = &on_copy.last().unwrap().1;
    assert_eq!(
        quota.iter().map(Verdict::is_valid).collect::<Vec<_>>(),
        [true, true, true, false],
        "the quota goes on from what was spent"
    );
    assert!(copy.check(false).unwrap().is_clean());
    // The audit trail answers alike (of the events copied: verifying on
    // the copy may have told of a quota since): the copy builds its own
    // index.
    for query in [
        keyward::EventQuery::new().limit(1000),
        keyward::EventQuery::new().kind(keyward::EventKind::KeyRegenerated),
        keyward::EventQuery::new().newest_first().limit(7),
    ] {
        let query = query.before(last_event + 1);
        assert_eq!(
            original.events_query(&query).unwrap().events,
            copy.events_query(&query).unwrap().events,
            "{query:?}"
        );
    }
    let next = copy.create("after", CreateOptions::new()).unwrap();
    // Spending the quota above tells of it too (on PostgreSQL, perhaps after
    // the create); the copy's own
    // events number on from the original's last, without a gap.
    let newest = copy.events(last_event, 10).unwrap();
    let seqs: Vec<u64> = newest.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (last_event + 1..).take(newest.len()).collect();
    assert_eq!(seqs, expected, "{newest:?}");
    assert!(
        newest.iter().any(|e| e.key_id == next.info.id),
        "{newest:?}"
    );
}

#[test]
fn a_backup_holds_everything_and_opens_directly() {
    let (dir, _path, store) = common::temp_store();
    let held = populate(&store);
    let dest = dir.path().join("backup");
    let report = store.backup(&dest).unwrap();
    let last = store.events(0, 10_000).unwrap().last().unwrap().seq;
    assert_eq!(report.last_event, last);
    assert_eq!(report.keys, store.key_count() as u64);
    assert!(report.rows > report.keys && report.bytes > 0, "{report:?}");
    let copy = common::open(&dest);
    assert_eq!(copy.key_count(), store.key_count());
    assert_same(&store, &copy, &held, last);
}

#[test]
fn a_destination_that_is_not_empty_is_refused_and_left_alone() {
    let (dir, path, store) = common::temp_store();
    store.create("k", CreateOptions::new()).unwrap();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("mine"), b"precious").unwrap();
    for dest in [full.as_path(), path.as_path(), &full.join("mine")] {
        let e = store.backup(dest).unwrap_err();
        assert!(matches!(e, CopyError::NotEmpty(_)), "{e}");
        assert_eq!(e.kind(), keyward::ErrorKind::InvalidInput);
    }
    assert_eq!(std::fs::read(full.join("mine")).unwrap(), b"precious");
    // A store with rows in it (opened, so its directory is not empty).
    let other = dir.path().join("other");
    drop(common::open(&other));
    assert!(matches!(
        store.copy_to(&other).unwrap_err(),
        CopyError::NotEmpty(_)
    ));
    // A backup is a directory: a URL is for copy_to.
    assert!(matches!(
        store.backup("postgresql:///nowhere").unwrap_err(),
        CopyError::NotEmpty(_)
    ));
}

/// Keys are created one by one while the backup runs: in a consistent
/// snapshot the keys are exactly those whose `key.created` event is in
/// the outbox (each key and its event are written in one commit), and
/// the owner index agrees with the records. A copy read table by table
/// without the journal would hold events of keys it does not have.
fn backup_while_writing(store: &Store, writer: &Store, dir: &Path) {
    let stop = Arc::new(AtomicBool::new(false));
    let written = std::thread::scope(|s| {
        let w = s.spawn(|| {
            let mut n = 0u32;
            while !stop.load(Ordering::Acquire) {
                writer
                    .create(&format!("live-{n}"), CreateOptions::new().owner("live"))
                    .unwrap();
                n += 1;
            }
            n
        });
        // A backup with writes in it: tried until one saw some (each
        // takes a while; the writer never stops in between).
        let mut journaled = 0;
        let mut round = 0;
        while journaled == 0 {
            let dest = dir.join(format!("backup-{round}"));
            let report = store.backup(&dest).unwrap();
            let copy = common::open(&dest);
            let keys: BTreeSet<KeyId> = copy.list().unwrap().iter().map(|k| k.id).collect();
            let created: BTreeSet<KeyId> = copy
                .events(0, 1_000_000)
                .unwrap()
                .iter()
                .filter(|e| e.kind == keyward::EventKind::KeyCreated)
                .map(|e| e.key_id)
                .collect();
            assert_eq!(keys, created, "keys and their events differ");
            assert_eq!(report.keys, keys.len() as u64);
            let check = copy.check(false).unwrap();
            assert!(check.is_clean(), "{check:?}");
            drop(copy);
            journaled = report.journaled;
            round += 1;
            assert!(round < 50, "no backup overlapped a write in 50 rounds");
        }
        stop.store(true, Ordering::Release);
        w.join().unwrap()
    });
    assert!(written > 0);
}

#[test]
fn a_live_owner_backs_up_a_consistent_snapshot() {
    let (dir, _path, store) = common::temp_store();
    let seed: Vec<_> = (0..3000)
        .map(|i| (format!("seed-{i}"), CreateOptions::new().owner("seed")))
        .collect();
    store.create_many(seed).unwrap();
    backup_while_writing(&store, &store, dir.path());
}

#[test]
fn an_attached_process_backs_up_a_consistent_snapshot() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = common::open(&path);
        let seed: Vec<_> = (0..3000)
            .map(|i| (format!("seed-{i}"), CreateOptions::new().owner("seed")))
            .collect();
        store.create_many(seed).unwrap();
    }
    let mut owner = std::process::Command::new(common::keyward_bin())
        .arg("--db")
        .arg(&path)
        .arg("serve")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(owner.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("serving "), "{line}");
    let store = common::open(&path);
    assert_eq!(store.status().role, keyward::Role::Attached);
    backup_while_writing(&store, &store, dir.path());
    let _ = owner.kill();
    let _ = owner.wait();
}

/// A PostgreSQL schema of its own, or `None` (a failure under CI=true).
fn postgres(name: &str) -> Option<String> {
    let base = common::service("KEYWARD_TEST_PG", "the copies to and from PostgreSQL")?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{sep}schema={name}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    ))
}

#[test]
fn sled_to_postgres_and_back_keeps_every_key() {
    let Some(url) = postgres("copy") else { return };
    let (dir, _path, store) = common::temp_store();
    let held = populate(&store);
    let report = store.copy_to(&url).unwrap();
    let last = store.events(0, 10_000).unwrap().last().unwrap().seq;
    assert_eq!(report.last_event, last);
    let on_pg = Store::open_with(&url, &fast_options()).unwrap();
    assert_eq!(on_pg.key_count(), store.key_count());
    // Into a schema that holds rows now: refused.
    assert!(matches!(
        store.copy_to(&url).unwrap_err(),
        CopyError::NotEmpty(_)
    ));
    // And back to sled, from PostgreSQL.
    let back = dir.path().join("back");
    let report = on_pg.backup(&back).unwrap();
    assert_eq!(report.last_event, last);
    let back = common::open(&back);
    assert_eq!(view(&on_pg), view(&back));
    assert_same(&store, &on_pg, &held, last);
    // The sled copy continues from the same number, independently.
    let next = back.create("after", CreateOptions::new()).unwrap();
    let newest = back.events(last, 10).unwrap();
    assert_eq!((newest[0].seq, newest[0].key_id), (last + 1, next.info.id));
}

/// A plugin that had delivered everything delivers, from the copy, only
/// what happens after it.
#[test]
fn a_plugin_does_not_deliver_again_from_a_copy() {
    let hook = webhook::Webhook::start();
    let (dir, _path, store) = common::temp_store();
    let component = common::notifier_component(common::POST_KIND, &hook.url("/crm"));
    let manifest = format!(
        "name = \"crm\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\nevents = [\"*\"]\nallowed_hosts = [{:?}]\n",
        hook.origin()
    );
    store
        .install_plugin_with(
            &component,
            &manifest,
            keyward::InstallOptions::new().allow_private_network(true),
        )
        .unwrap();
    let a = store.create("a", CreateOptions::new()).unwrap();
    store.regenerate(&a.info.id, Duration::ZERO).unwrap();
    let last = store.events(0, 100).unwrap().last().unwrap().seq;
    common::wait_until("delivery", Duration::from_secs(30), || {
        (store.plugin("crm").unwrap().status.cursor == last).then_some(())
    });
    assert_eq!(hook.wait_for(2, Duration::from_secs(30)).len(), 2);
    let dest = dir.path().join("copy");
    store.backup(&dest).unwrap();
    drop(store);
    let copy = common::open(&dest);
    assert_eq!(copy.plugin("crm").unwrap().status.cursor, last);
    copy.create("b", CreateOptions::new()).unwrap();
    common::wait_until("the new event's delivery", Duration::from_secs(30), || {
        (copy.plugin("crm").unwrap().status.cursor == last + 1).then_some(())
    });
    // Delivered in order: anything sent again would have come before.
    let got = hook.requests();
    let kinds: Vec<String> = got.iter().map(webhook::Received::body_text).collect();
    assert_eq!(kinds, ["key.created", "key.regenerated", "key.created"]);
}
