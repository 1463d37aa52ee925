//! Threads: verification while another thread regenerates, and the bound on
//! concurrent argon2 work.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, RwLock};
use std::time::Duration;

use common::{fast_options, ip, temp_store};
use keyward::{
    Argon2Params, CreateOptions, Denial, PAST_GENERATIONS_KEPT, Refusal, Store, Verdict,
};

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

/// What a key of generation `presented` may answer when the store is at `now`:
/// `Rotated` while that generation is remembered, `WrongSecret` once it is
/// more than `PAST_GENERATIONS_KEPT` regenerations old (a verifier thread
/// descheduled for a long time can see that).
fn superseded_answer_is_right(v: &Verdict, presented: u32, now: u32) -> bool {
    match v {
        Verdict::Denied(Refusal {
            denial: Denial::Rotated { .. },
            ..
        }) => true,
        Verdict::Denied(Refusal {
            denial: Denial::WrongSecret,
            ..
        }) => now - presented > PAST_GENERATIONS_KEPT as u32,
        _ => false,
    }
}

#[test]
fn no_thread_accepts_a_secret_once_its_regeneration_returned() {
    let (_dir, _path, store) = temp_store();
    let created = store.create("hot", CreateOptions::new()).unwrap();
    let id = created.info.id;
    // (generation, key) of keys whose regeneration has returned: none may verify again.
    let revoked: RwLock<Vec<(u32, String)>> = RwLock::new(Vec::new());
    let current = RwLock::new((1u32, created.key.as_str().to_string()));
    let done = AtomicBool::new(false);
    let checked = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..2u8 {
            let (store, revoked, current, done, checked) =
                (&store, &revoked, &current, &done, &checked);
            s.spawn(move || {
                let addr = std::net::IpAddr::from([10, 0, 0, t]);
                let generation_now = || store.get(&id).unwrap().generation;
                while !done.load(Ordering::Acquire) {
                    let old = revoked.read().unwrap().last().cloned();
                    if let Some((generation, old)) = old {
                        let v = store.verify(&old, addr, Some("worker"));
                        assert!(
                            superseded_answer_is_right(&v, generation, generation_now()),
                            "revoked secret of generation {generation} got {v:?}"
                        );
                        checked.fetch_add(1, Ordering::Relaxed);
                    }
                    let (generation, cur) = current.read().unwrap().clone();
                    let v = store.verify(&cur, addr, Some("worker"));
                    // The current key may be superseded meanwhile, never anything else.
                    assert!(
                        v.is_valid()
                            || superseded_answer_is_right(&v, generation, generation_now()),
                        "current key of generation {generation} got {v:?}"
                    );
                }
            });
        }
        for _ in 0..100 {
            let fresh = store.regenerate(&id, Duration::ZERO).unwrap();
            let old = std::mem::replace(
                &mut *current.write().unwrap(),
                (fresh.info.generation, fresh.key.as_str().to_string()),
            );
            revoked.write().unwrap().push(old);
            std::thread::sleep(Duration::from_millis(2));
        }
        done.store(true, Ordering::Release);
    });
    assert!(
        checked.load(Ordering::Relaxed) > 0,
        "the verifiers did check revoked keys"
    );
    assert_eq!(store.get(&id).unwrap().generation, 101);
}

#[test]
fn argon2_work_is_bounded_and_overflow_answers_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = fast_options();
    // Expensive enough that eight cold verifications overlap.
    o.argon2 = Argon2Params {
        memory_kib: 16 * 1024,
        iterations: 2,
        parallelism: 1,
    };
    o.max_concurrent_hashes = 1;
    o.max_queued_hashes = 0;
    let store = Store::open_with(dir.path().join("s"), &o).unwrap();
    let keys: Vec<String> = (0..8)
        .map(|i| {
            store
                .create(&format!("k{i}"), CreateOptions::new())
                .unwrap()
                .key
                .as_str()
                .to_string()
        })
        .collect();
    let barrier = Barrier::new(keys.len());
    let verdicts: Vec<Verdict> = std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .iter()
            .map(|k| {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    store.verify(k, ip("10.0.0.1"), None)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(verdicts.iter().any(Verdict::is_valid), "{verdicts:?}");
    assert!(verdicts.iter().any(|v| *v == Denial::Busy), "{verdicts:?}");
    // Busy is transient: one at a time, every key verifies.
    for k in &keys {
        assert!(store.verify(k, ip("10.0.0.1"), None).is_valid());
    }
}
