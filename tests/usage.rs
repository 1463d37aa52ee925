//! Usage: exact counts across threads, per-IP and per-integration rows,
//! stale-secret clients, hourly buckets, bounds, and persistence.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{fast_options, ip, open, options_with_clock, temp_store};
use keyward::{CreateOptions, Denial, ManualClock, Store, Timestamp, UsageLimits};

#[test]
fn counts_are_exact_across_threads_and_after_reopen() {
    let (_dir, path, store) = temp_store();
    let a = store.create("a", CreateOptions::new()).unwrap();
    let b = store.create("b", CreateOptions::new()).unwrap();
    const THREADS: u8 = 4;
    const PER_THREAD: u64 = 5_000;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store = &store;
            let (ka, kb) = (a.key.as_str(), b.key.as_str());
            s.spawn(move || {
                let addr = IpAddr::from([10, 0, 0, t]);
                for i in 0..PER_THREAD {
                    let integration = if i % 2 == 0 {
                        Some("crm")
                    } else {
                        Some("zapier")
                    };
                    assert!(store.verify(ka, addr, integration).is_valid());
                    if i % 5 == 0 {
                        assert!(store.verify(kb, addr, None).is_valid());
                    }
                }
            });
        }
    });
    // Flushes happen on their own meanwhile (1 s interval); read mid-way too.
    let usage = store.usage(&a.info.id).unwrap();
    let total = u64::from(THREADS) * PER_THREAD;
    assert_eq!(usage.totals.allowed, total);
    assert_eq!(usage.ips.len(), usize::from(THREADS));
    assert!(
        usage
            .ips
            .iter()
            .all(|r| r.allowed == PER_THREAD && r.denied == 0)
    );
    let crm = usage.integrations.iter().find(|i| i.name == "crm").unwrap();
    let zap = usage
        .integrations
        .iter()
        .find(|i| i.name == "zapier")
        .unwrap();
    assert_eq!(crm.count + zap.count, total);
    assert_eq!(crm.ips.len(), usize::from(THREADS));
    assert_eq!(usage.hourly.iter().map(|h| h.allowed).sum::<u64>(), total);
    assert_eq!(store.usage(&b.info.id).unwrap().totals.allowed, total / 5);

    store.close().unwrap();
    let store = open(&path);
    let again = store.usage(&a.info.id).unwrap();
    assert_eq!(again, usage, "identical after close and reopen");
}

#[test]
fn the_usage_tab_shows_ips_integrations_denials_and_stale_clients() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let store = Store::open_with(dir.path().join("s"), &options_with_clock(&clock)).unwrap();
    let c = store.create("k", CreateOptions::new()).unwrap();
    let id = c.info.id;
    assert!(
        store
            .verify(c.key.as_str(), ip("203.0.113.7"), Some("HubSpot/3.1"))
            .is_valid()
    );
    assert!(
        store
            .verify(c.key.as_str(), ip("198.51.100.2"), Some("n8n"))
            .is_valid()
    );
    let fresh = store.regenerate(&id, Duration::ZERO).unwrap();
    // The CRM still presents the old secret; n8n was updated.
    assert!(
        !store
            .verify(c.key.as_str(), ip("203.0.113.7"), Some("HubSpot/3.1"))
            .is_valid()
    );
    clock.advance(Duration::from_millis(3)); // "most recent" has millisecond resolution
    assert!(
        store
            .verify(fresh.key.as_str(), ip("198.51.100.2"), Some("n8n"))
            .is_valid()
    );

    let u = store.usage(&id).unwrap();
    assert_eq!(u.key_id, id);
    assert_eq!(
        (u.totals.allowed, u.totals.denied, u.totals.rotated),
        (3, 1, 1)
    );
    let last = u.last_used.unwrap();
    assert_eq!(last.ip, ip("198.51.100.2"));
    let crm = u.ips.iter().find(|r| r.ip == ip("203.0.113.7")).unwrap();
    assert_eq!((crm.allowed, crm.denied), (1, 1));
    assert!(crm.stale_secret);
    assert_eq!(crm.last_integration.as_deref(), Some("HubSpot/3.1"));
    assert!(crm.first_seen <= crm.last_seen);
    let n8n = u.ips.iter().find(|r| r.ip == ip("198.51.100.2")).unwrap();
    assert!(!n8n.stale_secret, "updated client is not stale");
    let hub = u
        .integrations
        .iter()
        .find(|i| i.name == "HubSpot/3.1")
        .unwrap();
    assert!(hub.stale_secret);
    assert_eq!((hub.count, hub.denied), (2, 1));
    assert_eq!(hub.ips, [ip("203.0.113.7")]);
    assert_eq!(u.ips[0].ip, ip("198.51.100.2"), "most recent first");
    assert_eq!(u.hourly.len(), 1);
    assert_eq!((u.hourly[0].allowed, u.hourly[0].denied), (3, 1));
}

#[test]
fn ips_per_key_are_bounded_but_totals_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let mut o = options_with_clock(&clock);
    o.usage_limits = UsageLimits {
        max_ips: 50,
        ..UsageLimits::default()
    };
    let store = Store::open_with(dir.path().join("s"), &o).unwrap();
    let c = store.create("k", CreateOptions::new()).unwrap();
    for i in 0..200u32 {
        let addr = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
        if i == 199 {
            // Seen strictly last (times have millisecond resolution): it must be kept.
            clock.advance(Duration::from_millis(3));
        }
        assert!(store.verify(c.key.as_str(), addr, None).is_valid());
        if i % 64 == 0 {
            store.flush().unwrap();
        }
    }
    store.flush().unwrap();
    let u = store.usage(&c.info.id).unwrap();
    assert_eq!(u.ips.len(), 50);
    assert_eq!(u.totals.allowed, 200);
    assert!(
        u.ips
            .iter()
            .any(|r| r.ip == IpAddr::from((0x0a00_0000u32 + 199).to_be_bytes())),
        "newest kept"
    );
}

#[test]
fn usage_is_flushed_on_the_interval_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut o = fast_options();
    o.usage_flush_interval = Duration::from_millis(50);
    let store = Store::open_with(&path, &o).unwrap();
    let c = store.create("k", CreateOptions::new()).unwrap();
    assert!(
        store
            .verify(c.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
    // Copies of the files, taken while the store stays open (no close, no
    // drop), come to hold the use: the interval flush wrote it.
    let mut copies = 0;
    common::wait_until("the interval flush", Duration::from_secs(10), || {
        copies += 1;
        let copy = dir.path().join(format!("copy{copies}"));
        copy_dir(&path, &copy);
        // A copy taken mid-write may not open: look again.
        let reopened = Store::open_with(&copy, &fast_options()).ok()?;
        (reopened.usage(&c.info.id).ok()?.totals.allowed == 1).then_some(())
    });
    drop(store);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_dir(&e.path(), &dest);
        } else if ft.is_file() {
            // Not the owner's socket.
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn long_integration_names_are_cut_not_refused() {
    let (_dir, _path, store) = temp_store();
    let c = store.create("k", CreateOptions::new()).unwrap();
    let long = "x".repeat(10_000);
    assert!(
        store
            .verify(c.key.as_str(), ip("10.0.0.1"), Some(&long))
            .is_valid()
    );
    let u = store.usage(&c.info.id).unwrap();
    assert_eq!(u.integrations[0].name.len(), keyward::MAX_INTEGRATION_LEN);
}

#[test]
fn refused_ips_and_stale_secrets_become_one_notice_per_key_kind_and_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_millis(
        1_800_000_000_000,
    )));
    let store = Store::open_with(dir.path().join("s"), &options_with_clock(&clock)).unwrap();
    let c = store
        .create(
            "k",
            CreateOptions::new().restrict_to("office", "198.51.100.0/24"),
        )
        .unwrap();
    let refused = |key: &str, from: &str, via: Option<&str>| {
        assert_eq!(store.verify(key, ip(from), via), Denial::IpNotAllowed);
    };
    // The first refusal in a window is told at once; the rest are counted.
    for _ in 0..5 {
        refused(c.key.as_str(), "203.0.113.9", Some("curl"));
    }
    refused(c.key.as_str(), "203.0.113.10", None);
    store.flush().unwrap();
    let denied = |store: &Store| -> Vec<serde_json::Value> {
        store
            .events(0, 100)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.as_str() == "key.denied_ip")
            .map(|e| e.data)
            .collect()
    };
    let first = denied(&store);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["ip"], "203.0.113.9");
    assert_eq!(first[0]["integration"], "curl");
    assert_eq!(first[0]["count"], 1);
    assert_eq!(first[0]["window"], 60);
    assert_eq!(first[0]["confirmed"], false, "this secret never verified");
    // A window later: the next notice carries what was counted meanwhile.
    clock.advance(Duration::from_secs(61));
    refused(c.key.as_str(), "203.0.113.11", Some("wget"));
    store.flush().unwrap();
    let second = denied(&store);
    assert_eq!(second.len(), 2);
    assert_eq!(second[1]["ip"], "203.0.113.11");
    assert_eq!(second[1]["count"], 6);
    assert_eq!(
        second[1]["ips"],
        serde_json::json!(["203.0.113.9", "203.0.113.10", "203.0.113.11"])
    );
    assert_eq!(
        second[1]["integrations"],
        serde_json::json!(["curl", "wget"])
    );

    // A secret known good (warm) from a refused IP is "confirmed": a
    // stolen key in use, not a guess.
    assert!(
        store
            .verify(c.key.as_str(), ip("198.51.100.7"), None)
            .is_valid()
    );
    clock.advance(Duration::from_secs(61));
    refused(c.key.as_str(), "203.0.113.12", None);

    let fresh = store
        .regenerate(&c.info.id, Duration::from_secs(3600))
        .unwrap();
    for _ in 0..3 {
        assert!(
            store
                .verify(c.key.as_str(), ip("198.51.100.7"), Some("HubSpot"))
                .is_valid()
        );
    }
    assert!(
        store
            .verify(fresh.key.as_str(), ip("198.51.100.8"), None)
            .is_valid()
    );
    store.flush().unwrap();
    let third = denied(&store);
    assert_eq!(third.len(), 3);
    assert_eq!(third[2]["confirmed"], true);
    let events = store.events(0, 100).unwrap();
    let stale: Vec<_> = events
        .iter()
        .filter(|e| e.kind.as_str() == "key.stale_secret_used")
        .collect();
    assert_eq!(stale.len(), 1, "one stale-secret notice in the window");
    assert_eq!(stale[0].data["generation"], 1);
    assert_eq!(stale[0].data["integration"], "HubSpot");
    assert_eq!(stale[0].data["ip"], "198.51.100.7");
    assert!(stale[0].data.get("confirmed").is_none());
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains(&c.key.as_str()[16..])
    );
}

/// `Store::metrics`: verifications by outcome and every denial reason,
/// across threads (striped counters summed), cold hashes, keys, role.
#[test]
fn metrics_count_verifications_by_outcome_and_reason_across_threads() {
    let (_dir, _path, store) = temp_store();
    let store = Arc::new(store);
    let c = store
        .create(
            "k",
            CreateOptions::new().restrict_to("office", "198.51.100.0/24"),
        )
        .unwrap();
    let before = store.metrics();
    assert_eq!(before.role, "owner");
    assert_eq!(before.verifications_denied.len(), Denial::ALL.len());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            let key = c.key.as_str().to_string();
            std::thread::spawn(move || {
                for _ in 0..250 {
                    assert!(store.verify(&key, ip("198.51.100.7"), None).is_valid());
                    assert_eq!(
                        store.verify(&key, ip("203.0.113.1"), None),
                        Denial::IpNotAllowed
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        store.verify("kw_nonsense", ip("203.0.113.1"), None),
        Denial::Malformed
    );
    let m = store.metrics();
    assert_eq!(m.verifications_allowed, before.verifications_allowed + 1000);
    assert_eq!(m.verifications_denied["ip_not_allowed"], 1000);
    assert_eq!(m.verifications_denied["malformed"], 1);
    assert_eq!(m.verifications_denied["wrong_secret"], 0);
    assert_eq!(m.keys, 1);
    let events = store.events(0, 100_000).unwrap().len() as u64;
    assert!(events >= 1);
    assert_eq!(m.outbox_events, events);
    // The first admitted secret was cold: at least one hash ran.
    assert!(m.hashes >= 1, "{m:?}");
    assert_eq!((m.hash_gate_refusals, m.staleness_seconds), (0, 0.0));
}

/// The Usage tab's recent requests: each verification with its time,
/// address, integration, result and reason, old-secret flag and scope,
/// newest first; a 100,000-request flood of forged secrets on the key's
/// public id leaves 50 (the newest), also after a flush and a reopen.
#[test]
fn recent_requests_list_the_last_fifty_verifications_whatever_the_traffic() {
    use keyward::{RECENT_PER_KEY, VerifyRequest};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let options = options_with_clock(&clock);
    let store = Store::open_with(dir.path().join("s"), &options).unwrap();
    let c = store
        .create("k", CreateOptions::new().scopes(["orders:read"]))
        .unwrap();
    let id = c.info.id;
    let tick = || clock.advance(Duration::from_millis(2));
    let crm = ip("203.0.113.7");
    assert!(
        store
            .verify(c.key.as_str(), crm, Some("HubSpot/3.1"))
            .is_valid()
    );
    tick();
    let asked = VerifyRequest::new(c.key.as_str(), crm).scope("orders:write");
    assert!(!store.verify_request(&asked).is_valid());
    tick();
    let fresh = store.regenerate(&id, Duration::from_secs(60)).unwrap();
    assert!(
        store
            .verify(c.key.as_str(), crm, Some("HubSpot/3.1"))
            .is_valid()
    );
    tick();
    let forged = common::forge(&store, &id);
    assert!(
        !store
            .verify(&forged, ip("198.51.100.66"), Some("curl"))
            .is_valid()
    );

    let recent = store.recent_requests(&id).unwrap();
    let seen: Vec<_> = recent
        .iter()
        .map(|r| {
            (
                r.ip,
                r.integration.as_deref(),
                r.allowed,
                r.reason.as_deref(),
                r.stale_secret,
                r.scope.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                ip("198.51.100.66"),
                Some("curl"),
                false,
                Some("wrong_secret"),
                false,
                None
            ),
            (crm, Some("HubSpot/3.1"), true, None, true, None),
            (
                crm,
                None,
                false,
                Some("scope_missing"),
                false,
                Some("orders:write")
            ),
            (crm, Some("HubSpot/3.1"), true, None, false, None),
        ]
    );
    assert!(recent.windows(2).all(|w| w[0].at > w[1].at), "newest first");
    assert!(store.verify(fresh.key.as_str(), crm, None).is_valid());

    for _ in 0..100_000 {
        assert!(!store.verify(&forged, ip("198.51.100.66"), None).is_valid());
    }
    let recent = store.recent_requests(&id).unwrap();
    assert_eq!(recent.len(), RECENT_PER_KEY);
    assert!(
        recent
            .iter()
            .all(|r| r.reason.as_deref() == Some("wrong_secret"))
    );
    assert!(store.backlog().pending_recent_requests <= RECENT_PER_KEY);
    store.flush().unwrap();
    store.close().unwrap();
    let store = Store::open_with(dir.path().join("s"), &options).unwrap();
    assert_eq!(store.recent_requests(&id).unwrap(), recent);
    assert_eq!(store.usage(&id).unwrap().totals.wrong_secret, 100_001);
    store.delete(&id).unwrap();
    assert!(matches!(
        store.recent_requests(&id),
        Err(keyward::KeyError::NotFound(_))
    ));
}
