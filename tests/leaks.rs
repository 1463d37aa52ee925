//! Finding leaked keys from Rust: `find_keys` picks this store's keys out
//! of any text, `inspect_found` says what each is (on the store's clock:
//! live inside a grace period, rotated after it) without counting a use,
//! and `report_leak` records `key.leaked`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use keyward::{Clock, CreateOptions, EventKind, LeakState, ManualClock, Store};
use serde_json::json;

#[test]
fn found_keys_are_live_in_grace_then_rotated_and_never_counted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let store =
        Store::open_with(dir.path().join("s"), &common::options_with_clock(&clock)).unwrap();
    let a = store.create("a", CreateOptions::new()).unwrap();
    let b = store
        .create(
            "b",
            CreateOptions::new().expires_at(clock.now().plus(Duration::from_secs(60))),
        )
        .unwrap();
    let (ka, kb) = (a.key.as_str().to_string(), b.key.as_str().to_string());
    let text = format!("a={ka}\nb=\"{kb}\" c=x{ka} d={}", &ka[..ka.len() - 1]);
    let found: Vec<&str> = store
        .find_keys(text.as_bytes())
        .into_iter()
        .map(|r| &text[r])
        .collect();
    assert_eq!(
        found,
        vec![ka.as_str(), kb.as_str()],
        "bounded, checksummed keys only"
    );

    assert_eq!(
        store.inspect_found(ka.as_bytes()),
        Some((a.info.id, LeakState::Live))
    );
    assert_eq!(store.inspect_found(b"not a key"), None);
    let forged = common::forge(&store, &a.info.id);
    assert_eq!(
        store.inspect_found(forged.as_bytes()),
        Some((a.info.id, LeakState::WrongSecret))
    );

    store
        .regenerate(&a.info.id, Duration::from_secs(3600))
        .unwrap();
    assert_eq!(
        store.inspect_found(ka.as_bytes()),
        Some((a.info.id, LeakState::Live)),
        "in grace"
    );
    clock.advance(Duration::from_secs(3601));
    assert_eq!(
        store.inspect_found(ka.as_bytes()),
        Some((a.info.id, LeakState::Rotated))
    );
    assert_eq!(
        store.inspect_found(kb.as_bytes()),
        Some((b.info.id, LeakState::Inactive)),
        "expired"
    );
    store.delete(&b.info.id).unwrap();
    assert_eq!(
        store.inspect_found(kb.as_bytes()),
        Some((b.info.id, LeakState::UnknownKey))
    );

    // Inspecting is not using.
    assert_eq!(store.get(&a.info.id).unwrap().last_used_at, None);
    assert_eq!(store.usage(&a.info.id).unwrap().totals.allowed, 0);

    store
        .report_leak(
            &a.info.id,
            &json!({"action": "regenerated", "found_in": ["x:1"]}),
        )
        .unwrap();
    let events = store.events(0, 100).unwrap();
    let leaked = events
        .iter()
        .find(|e| e.kind == EventKind::KeyLeaked)
        .unwrap();
    assert_eq!(leaked.key_id, a.info.id);
    assert_eq!(leaked.data["found_in"], json!(["x:1"]));
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains(&ka[ka.len() - 49..])
    );
}
