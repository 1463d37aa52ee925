//! Rate limits, quotas and scopes decided inside verify, in one process,
//! on an injected clock: a burst over a limit is refused with the time
//! until one more fits and admitted after it; nothing refused before the
//! limits spends them; a quota counts down, refuses at zero, tells its
//! exhaustion once, refills at midnight UTC and survives a reopen; a
//! missing scope is refused.

mod common;

use std::sync::Arc;
use std::time::Duration;

use keyward::{
    Clock, CreateOptions, Denial, EventKind, KeyId, Limit, ManualClock, Quota, RefillPeriod,
    Refusal, Store, Timestamp, Verdict, VerifyRequest,
};

fn store_at(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Store {
    Store::open_with(dir.join("s"), &common::options_with_clock(clock)).unwrap()
}

/// Verifies until the answer is not `Busy` (a lease on its way from the
/// lease thread), failing after a deadline.
fn settled(store: &Store, key: &str, scope: Option<&str>) -> Verdict {
    let ip = common::ip("203.0.113.5");
    common::wait_until("a verdict other than busy", Duration::from_secs(10), || {
        let v = store.verify_request(&VerifyRequest::new(key, ip).scope(scope));
        (v.denial() != Some(Denial::Busy)).then_some(v)
    })
}

fn events_of(store: &Store, kind: EventKind, id: &KeyId) -> usize {
    store
        .events(0, 10_000)
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind && e.key_id == *id)
        .count()
}

#[test]
fn a_burst_over_the_limit_is_refused_with_the_time_until_one_more_fits() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let store = store_at(dir.path(), &clock);
    let ip = common::ip("203.0.113.5");
    let made = store
        .create(
            "crm",
            CreateOptions::new()
                .limit(Limit::new("burst", 5, Duration::from_secs(10)))
                .limit(Limit::new("daily", 1000, Duration::from_hours(24))),
        )
        .unwrap();
    let key = made.key.as_str();
    assert_eq!(made.info.limits.len(), 2);
    for _ in 0..5 {
        let v = store.verify(key, ip, None);
        assert!(v.is_valid(), "{v:?}");
    }
    // 5 per 10 s: no more until the burst has left the window, which is
    // counted in parts of 323 ms: 10 s after it, and at most a part more.
    let refused = store.verify(key, ip, None);
    let Verdict::Denied(Refusal {
        denial: Denial::RateLimited { retry_after_ms },
        ..
    }) = refused
    else {
        panic!("{refused:?}");
    };
    assert!(
        (10_000..10_323).contains(&retry_after_ms),
        "{retry_after_ms}"
    );
    assert_eq!(refused.retry_after(), Some(retry_after_ms as f64 / 1000.0));
    clock.advance(Duration::from_millis(retry_after_ms - 1));
    assert_eq!(store.verify(key, ip, None).retry_after(), Some(0.001));
    clock.advance(Duration::from_millis(1));
    // The whole burst left together: five again, then a refusal.
    for _ in 0..5 {
        assert!(store.verify(key, ip, None).is_valid());
    }
    assert!(!store.verify(key, ip, None).is_valid());
    // Refusals are counted apart in the usage.
    let usage = store.usage(&made.info.id).unwrap();
    assert_eq!(usage.totals.allowed, 10);
    assert_eq!(usage.totals.rate_limited, 3);

    // A limit changed later: the new one counts from a full bucket.
    let info = store
        .set_limits(
            &made.info.id,
            &[Limit::new("burst", 1, Duration::from_mins(1))],
        )
        .unwrap();
    assert_eq!(
        info.limits,
        [Limit::new("burst", 1, Duration::from_mins(1))]
    );
    assert!(store.verify(key, ip, None).is_valid());
    let wait = store.verify(key, ip, None).retry_after().unwrap();
    assert!((60.0..61.936).contains(&wait), "{wait}");
    // Removed: unlimited again.
    store.set_limits(&made.info.id, &[]).unwrap();
    for _ in 0..20 {
        assert!(store.verify(key, ip, None).is_valid());
    }
}

#[test]
fn only_a_request_that_passes_everything_before_spends_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let store = store_at(dir.path(), &clock);
    let office = common::ip("198.51.100.7");
    let made = store
        .create(
            "crm",
            CreateOptions::new()
                .limit(Limit::new("burst", 2, Duration::from_hours(1)))
                .scopes(["orders:read"])
                .restrict_to("office", "198.51.100.0/24"),
        )
        .unwrap();
    let key = made.key.as_str();
    let wrong = common::forge(&store, &made.info.id);
    for _ in 0..50 {
        assert_eq!(store.verify(&wrong, office, None), Denial::WrongSecret);
        assert_eq!(
            store.verify(key, common::ip("203.0.113.1"), None),
            Denial::IpNotAllowed
        );
        assert_eq!(
            store.verify_request(&VerifyRequest::new(key, office).scope("orders:write")),
            Denial::ScopeMissing
        );
    }
    store.set_disabled(&made.info.id, true).unwrap();
    assert_eq!(store.verify(key, office, None), Denial::Disabled);
    store.set_disabled(&made.info.id, false).unwrap();
    // The whole burst is still there.
    assert!(
        store
            .verify_request(&VerifyRequest::new(key, office).scope("orders:read"))
            .is_valid()
    );
    assert!(store.verify(key, office, None).is_valid());
    assert!(matches!(
        store.verify(key, office, None),
        Verdict::Denied(Refusal {
            denial: Denial::RateLimited { .. },
            ..
        })
    ));
    let totals = store.usage(&made.info.id).unwrap().totals;
    assert_eq!(
        (
            totals.scope_missing,
            totals.wrong_secret,
            totals.rate_limited
        ),
        (50, 50, 1)
    );
}

#[test]
fn scopes_are_required_only_when_asked_and_carried_by_the_grant() {
    let (_dir, _path, store) = common::temp_store();
    let ip = common::ip("203.0.113.5");
    let made = store
        .create(
            "crm",
            CreateOptions::new().scopes(["orders:read", "contacts:write", "orders:read"]),
        )
        .unwrap();
    assert_eq!(made.info.scopes, ["contacts:write", "orders:read"]);
    let key = made.key.as_str();
    let Verdict::Valid(grant) =
        store.verify_request(&VerifyRequest::new(key, ip).scope("orders:read"))
    else {
        panic!("the key has the scope")
    };
    let scopes: Vec<&str> = grant.scopes().iter().collect();
    assert_eq!(scopes, ["contacts:write", "orders:read"]);
    assert!(grant.scopes().contains("orders:read") && !grant.scopes().contains("orders"));
    assert_eq!(
        format!("{:?}", grant.scopes()),
        r#"["contacts:write", "orders:read"]"#
    );
    assert!(store.verify(key, ip, None).is_valid());
    assert_eq!(
        store.verify_request(&VerifyRequest::new(key, ip).scope("orders")),
        Denial::ScopeMissing
    );
    let info = store.set_scopes(&made.info.id, &["orders:write"]).unwrap();
    assert_eq!(info.scopes, ["orders:write"]);
    assert_eq!(
        store.verify_request(&VerifyRequest::new(key, ip).scope("orders:read")),
        Denial::ScopeMissing
    );
    assert!(
        store
            .verify_request(&VerifyRequest::new(key, ip).scope("orders:write"))
            .is_valid()
    );
    // A key without scopes has none to give.
    let plain = store.create("plain", CreateOptions::new()).unwrap();
    assert_eq!(
        store.verify_request(&VerifyRequest::new(plain.key.as_str(), ip).scope("orders:read")),
        Denial::ScopeMissing
    );
    assert!(store.set_scopes(&made.info.id, &["has space"]).is_err());
    assert_eq!(store.get(&made.info.id).unwrap().scopes, ["orders:write"]);
    let path = store.path().unwrap().to_path_buf();
    store.close().unwrap();
    let store = common::open(&path);
    assert_eq!(store.get(&made.info.id).unwrap().scopes, ["orders:write"]);
    assert_eq!(
        store.verify_request(&VerifyRequest::new(key, ip).scope("orders:read")),
        Denial::ScopeMissing
    );
}

#[test]
fn a_quota_counts_down_refuses_at_zero_and_tells_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let store = store_at(dir.path(), &clock);
    let ip = common::ip("203.0.113.5");
    let made = store
        .create(
            "crm",
            CreateOptions::new().quota(Quota::new(3)).limit(Limit::new(
                "burst",
                2,
                Duration::from_secs(10),
            )),
        )
        .unwrap();
    let id = made.info.id;
    let key = made.key.as_str();
    assert_eq!(made.info.quota, Some(Quota::new(3)));
    assert!(settled(&store, key, None).is_valid());
    assert!(store.verify(key, ip, None).is_valid());
    // Rate-limited: takes no quota.
    assert!(matches!(
        store.verify(key, ip, None),
        Verdict::Denied(Refusal {
            denial: Denial::RateLimited { .. },
            ..
        })
    ));
    assert_eq!(store.get(&id).unwrap().quota.unwrap().remaining, 1);
    // A window and a part (323 ms) later, the burst has left the window.
    clock.advance(Duration::from_millis(10_323));
    assert!(store.verify(key, ip, None).is_valid());
    assert_eq!(store.get(&id).unwrap().quota.unwrap().remaining, 0);
    for _ in 0..5 {
        assert_eq!(store.verify(key, ip, None), Denial::QuotaExhausted);
    }
    common::wait_until("key.quota_exhausted", Duration::from_secs(10), || {
        (events_of(&store, EventKind::KeyQuotaExhausted, &id) == 1).then_some(())
    });
    assert_eq!(store.usage(&id).unwrap().totals.quota_exhausted, 5);
    // More refusals: still told once.
    clock.advance(Duration::from_secs(5));
    for _ in 0..5 {
        assert!(!store.verify(key, ip, None).is_valid());
    }
    store.flush().unwrap();
    assert_eq!(events_of(&store, EventKind::KeyQuotaExhausted, &id), 1);

    // A new quota: usable at once, told again when it runs out.
    let info = store.set_quota(&id, Some(Quota::new(1))).unwrap();
    assert_eq!(info.quota.unwrap().remaining, 1);
    clock.advance(Duration::from_secs(10));
    assert!(store.verify(key, ip, None).is_valid());
    assert_eq!(store.verify(key, ip, None), Denial::QuotaExhausted);
    common::wait_until(
        "a second key.quota_exhausted",
        Duration::from_secs(10),
        || (events_of(&store, EventKind::KeyQuotaExhausted, &id) == 2).then_some(()),
    );
    // Cleared: no quota at all.
    let info = store.set_quota(&id, None).unwrap();
    assert_eq!(info.quota, None);
    clock.advance(Duration::from_secs(10));
    assert!(store.verify(key, ip, None).is_valid());
}

#[test]
fn a_daily_quota_refills_at_midnight_utc_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    // Start at 23:00 UTC of the current day.
    let day = 86_400_000;
    let now = clock.now().unix_millis();
    clock.set(Timestamp::from_unix_millis(
        now - now.rem_euclid(day) + 23 * 3_600_000,
    ));
    let id;
    let key;
    {
        let store = store_at(dir.path(), &clock);
        let made = store
            .create(
                "crm",
                CreateOptions::new().quota(Quota::new(2).refilled(4, RefillPeriod::Daily)),
            )
            .unwrap();
        (id, key) = (made.info.id, made.key.as_str().to_string());
        assert!(settled(&store, &key, None).is_valid());
        assert_eq!(store.get(&id).unwrap().quota.unwrap().remaining, 1);
        store.close().unwrap();
    }
    // Reopened: what was used stays used (the unused lease came back).
    let store = store_at(dir.path(), &clock);
    let got = store.get(&id).unwrap().quota.unwrap();
    assert_eq!(got.remaining, 1);
    assert_eq!(got.refill.unwrap().amount, 4);
    assert!(settled(&store, &key, None).is_valid());
    assert_eq!(settled(&store, &key, None), Denial::QuotaExhausted);
    // Past midnight: reset to the amount (not added to).
    clock.advance(Duration::from_hours(1));
    assert_eq!(store.get(&id).unwrap().quota.unwrap().remaining, 4);
    for _ in 0..4 {
        assert!(settled(&store, &key, None).is_valid());
    }
    assert_eq!(settled(&store, &key, None), Denial::QuotaExhausted);
}

#[test]
fn bad_limits_scopes_and_quotas_are_refused_and_change_nothing() {
    let (_dir, _path, store) = common::temp_store();
    for options in [
        CreateOptions::new().limit(Limit::new("", 1, Duration::from_secs(1))),
        CreateOptions::new().limit(Limit::new("x", 0, Duration::from_secs(1))),
        CreateOptions::new().limit(Limit::new("x", 1, Duration::ZERO)),
        CreateOptions::new()
            .limit(Limit::new("x", 1, Duration::from_secs(1)))
            .limit(Limit::new("x", 2, Duration::from_secs(1))),
        CreateOptions::new().scopes([""]),
        CreateOptions::new().scopes(["a b"]),
        CreateOptions::new().scopes(["x".repeat(65)]),
        CreateOptions::new().quota(Quota::new(1 << 60)),
        CreateOptions::new().quota(Quota::new(1).refilled(0, RefillPeriod::Monthly)),
    ] {
        let err = store.create("k", options).unwrap_err();
        assert!(matches!(err, keyward::KeyError::InvalidInput(_)), "{err}");
    }
    assert_eq!(store.key_count(), 0);
    let made = store.create("k", CreateOptions::new()).unwrap();
    assert!(
        store
            .set_limits(
                &made.info.id,
                &[Limit::new("a", 1, Duration::from_micros(10))]
            )
            .is_err()
    );
    assert!(
        store
            .set_quota(&made.info.id, Some(Quota::new(1 << 60)))
            .is_err()
    );
    let info = store.get(&made.info.id).unwrap();
    assert!(info.limits.is_empty() && info.quota.is_none() && info.scopes.is_empty());
}
