//! Tests of the store against in-memory and failing storage.

use super::*;
use crate::clock::Clock;
use crate::verdict::{Denial, Refusal};
use crate::verifier::Argon2Params;

fn fast() -> Options {
    Options {
        argon2: Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..Options::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Two engines over one shared backend stand for two processes: the
/// change feed must carry a regeneration and a deletion to the other's index.
#[test]
fn a_shared_backend_change_feed_reaches_the_other_index() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new(true));
    let a = Store::open_backend(Arc::clone(&backend), &fast()).unwrap();
    let b = Store::open_backend(Arc::clone(&backend), &fast()).unwrap();
    let created = a.create("shared", CreateOptions::new()).unwrap();
    let key = created.key.as_str().to_string();
    b.sync().unwrap();
    assert!(
        b.verify(&key, ip("10.0.0.1"), None).is_valid(),
        "B learned of the new key"
    );

    let new = a.regenerate(&created.info.id, Duration::ZERO).unwrap();
    b.sync().unwrap();
    assert!(matches!(
        b.verify(&key, ip("10.0.0.1"), None),
        Verdict::Denied(Refusal {
            denial: Denial::Rotated { .. },
            ..
        })
    ));
    assert!(b.verify(new.key.as_str(), ip("10.0.0.1"), None).is_valid());

    a.delete(&created.info.id).unwrap();
    b.sync().unwrap();
    assert_eq!(
        b.verify(new.key.as_str(), ip("10.0.0.1"), None),
        Denial::UnknownKey
    );
}

#[test]
fn usage_flushes_from_two_engines_add_up() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new(true));
    let a = Store::open_backend(Arc::clone(&backend), &fast()).unwrap();
    let b = Store::open_backend(Arc::clone(&backend), &fast()).unwrap();
    let created = a.create("shared", CreateOptions::new()).unwrap();
    b.sync().unwrap();
    for _ in 0..3 {
        assert!(
            a.verify(created.key.as_str(), ip("10.0.0.1"), None)
                .is_valid()
        );
    }
    for _ in 0..4 {
        assert!(
            b.verify(created.key.as_str(), ip("10.0.0.2"), None)
                .is_valid()
        );
    }
    a.flush().unwrap();
    b.flush().unwrap();
    assert_eq!(a.usage(&created.info.id).unwrap().totals.allowed, 7);
}

/// The staleness bound runs on the store's clock: past it, a shared
/// store refuses every key until it has read the change feed again.
#[test]
fn a_shared_store_fails_closed_past_the_staleness_bound_and_recovers() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new(true));
    let clock = Arc::new(crate::clock::ManualClock::starting_now());
    let mut o = fast();
    o.clock = clock.clone();
    o.staleness_bound = Duration::from_secs(5);
    // The worker would sync on its own every hour only: the test does.
    o.sync_interval = Duration::from_hours(1);
    let store = Store::open_backend(backend, &o).unwrap();
    let c = store.create("k", CreateOptions::new()).unwrap();
    clock.advance(Duration::from_secs(5));
    assert!(
        store
            .verify(c.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        store.verify(c.key.as_str(), ip("10.0.0.1"), None),
        Denial::Unavailable
    );
    store.sync().unwrap();
    assert!(
        store
            .verify(c.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
}

/// Stepping the wall clock back does not turn the bound off: it runs
/// on the monotonic clock.
#[test]
fn stepping_the_wall_clock_back_does_not_disable_the_staleness_bound() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new(true));
    let clock = Arc::new(crate::clock::ManualClock::starting_now());
    let mut o = fast();
    o.clock = clock.clone();
    o.staleness_bound = Duration::from_secs(5);
    o.sync_interval = Duration::from_hours(1);
    let store = Store::open_backend(backend, &o).unwrap();
    let c = store.create("k", CreateOptions::new()).unwrap();
    store.sync().unwrap();
    let an_hour_ago = Timestamp::from_unix_millis(clock.now().unix_millis() - 3_600_000);
    clock.set(an_hour_ago);
    clock.advance(Duration::from_secs(6));
    assert_eq!(
        store.verify(c.key.as_str(), ip("10.0.0.1"), None),
        Denial::Unavailable
    );
}

/// Verifying an id the store does not know, while it is unavailable,
/// records nothing: a flood of made-up ids allocates nothing.
#[test]
fn unknown_ids_record_no_usage_while_unavailable() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new(true));
    let clock = Arc::new(crate::clock::ManualClock::starting_now());
    let mut o = fast();
    o.clock = clock.clone();
    o.sync_interval = Duration::from_hours(1);
    let store = Store::open_backend(backend, &o).unwrap();
    let known = store.create("k", CreateOptions::new()).unwrap();
    clock.advance(o.staleness_bound + Duration::from_secs(1));
    let stranger = KeyId::random();
    let forged = crate::key::generate(store.prefix(), &stranger);
    assert_eq!(
        store.verify(forged.key.as_str(), ip("10.0.0.1"), None),
        Denial::Unavailable
    );
    assert_eq!(
        store.verify(known.key.as_str(), ip("10.0.0.1"), None),
        Denial::Unavailable
    );
    assert!(store.engine.usage.pending(&stranger).is_none());
    assert!(store.engine.usage.pending(&known.info.id).is_some());
}

/// Storage whose durable commits apply but then fail to flush, when told.
struct FlushFails {
    inner: MemoryBackend,
    failing: std::sync::atomic::AtomicBool,
}

impl Backend for FlushFails {
    fn get(&self, t: backend::Table, k: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(t, k)
    }
    fn scan(&self, t: backend::Table, p: &[u8]) -> Result<backend::KvPairs, StorageError> {
        self.inner.scan(t, p)
    }
    fn visit_from(
        &self,
        rows: backend::RowsFrom<'_>,
        each: backend::Visit<'_>,
    ) -> Result<usize, StorageError> {
        self.inner.visit_from(rows, each)
    }
    fn commit(
        &self,
        batch: backend::Batch,
        d: backend::Durability,
    ) -> Result<u64, backend::CommitError> {
        let version = self.inner.commit(batch, d)?;
        if d == backend::Durability::Durable
            && self.failing.load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(backend::CommitError::Unflushed(StorageError::new(
                "flush failed: disk full",
            )));
        }
        Ok(version)
    }
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
    fn changes_since(&self, seen: u64) -> Result<backend::Changes, StorageError> {
        self.inner.changes_since(seen)
    }
    fn version(&self) -> Result<u64, StorageError> {
        self.inner.version()
    }
    fn is_shared(&self) -> bool {
        false
    }
}

/// A change that storage applied but could not flush is reported as a
/// failure, and the index shows it anyway: a deleted key stops
/// verifying now, not at the next restart.
#[test]
fn the_index_follows_a_write_that_applied_but_did_not_flush() {
    let backend = Arc::new(FlushFails {
        inner: MemoryBackend::new(false),
        failing: std::sync::atomic::AtomicBool::new(false),
    });
    let store = Store::open_backend(backend.clone(), &fast()).unwrap();
    let doomed = store.create("doomed", CreateOptions::new()).unwrap();
    let renamed = store.create("renamed", CreateOptions::new()).unwrap();
    backend
        .failing
        .store(true, std::sync::atomic::Ordering::Release);
    assert!(matches!(
        store.delete(&doomed.info.id),
        Err(KeyError::Storage(_))
    ));
    assert_eq!(
        store.verify(doomed.key.as_str(), ip("10.0.0.1"), None),
        Denial::UnknownKey
    );
    assert!(store.rename(&renamed.info.id, "after").is_err());
    assert!(store.set_disabled(&renamed.info.id, true).is_err());
    assert_eq!(
        store.verify(renamed.key.as_str(), ip("10.0.0.1"), None),
        Denial::Disabled
    );
    assert_eq!(store.get(&renamed.info.id).unwrap().name, "after");
}

/// Rewrites key `id`'s stored record with `change`, and returns a store
/// opened anew on the same storage (its index read from storage).
fn rewrite_record(
    backend: &Arc<MemoryBackend>,
    id: &KeyId,
    options: &Options,
    change: impl FnOnce(&mut record::KeyRecord),
) -> Store {
    let mut rec = record::KeyRecord::decode(
        &backend
            .get(backend::Table::Keys, id.as_bytes())
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    change(&mut rec);
    let mut batch = backend::Batch::default();
    batch.put(backend::Table::Keys, id.as_bytes().to_vec(), rec.encode());
    backend.commit(batch, backend::Durability::Durable).unwrap();
    Store::open_backend(backend.clone(), options).unwrap()
}

/// The secret part of a whole key.
fn secret_of(key: &str) -> Vec<u8> {
    key.as_bytes()[key.len() - 49..key.len() - 6].to_vec()
}

#[test]
fn each_store_has_its_own_tag_key_and_keeps_it() {
    let a = Arc::new(MemoryBackend::new(false));
    let b = Arc::new(MemoryBackend::new(false));
    let sa = Store::open_backend(a.clone(), &fast()).unwrap();
    let sb = Store::open_backend(b.clone(), &fast()).unwrap();
    let secret = b"the same secret in two stores";
    assert_ne!(
        sa.engine.tag_key.tag(secret),
        sb.engine.tag_key.tag(secret),
        "one constant key for all stores would let anyone compute tags"
    );
    let c = sa.create("k", CreateOptions::new()).unwrap();
    drop(sa);
    // Opened again (a cold index): the key still verifies, so the tag key was kept.
    let again = Store::open_backend(a, &fast()).unwrap();
    assert!(
        again
            .verify(c.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
}

/// Generations hashed before their store had a tag key keep their legacy
/// tag and verify; the next regeneration uses the store's key.
#[test]
fn generations_with_a_legacy_tag_verify_until_regenerated() {
    let backend = Arc::new(MemoryBackend::new(false));
    let store = Store::open_backend(backend.clone(), &fast()).unwrap();
    let c = store.create("old", CreateOptions::new()).unwrap();
    drop(store);
    let secret = secret_of(c.key.as_str());
    let store = rewrite_record(&backend, &c.info.id, &fast(), |rec| {
        rec.generations[0].tag = crate::verifier::legacy_tag(&secret);
        rec.generations[0].store_tag = false;
    });
    assert!(
        store
            .verify(c.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
    let fresh = store.regenerate(&c.info.id, Duration::ZERO).unwrap();
    let rec = store.engine.record(&c.info.id).unwrap();
    assert!(rec.generations[0].store_tag);
    assert!(!rec.generations[1].store_tag, "the old one keeps its tag");
    drop(store);
    let store = Store::open_backend(backend, &fast()).unwrap();
    assert!(
        store
            .verify(fresh.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
    assert_eq!(
        store.verify(c.key.as_str(), ip("10.0.0.1"), None),
        Denial::Rotated {
            at: store.get(&c.info.id).unwrap().rotated_at.unwrap()
        }
    );
}

/// A flood of secrets that pass one key's pre-check tag but not argon2
/// (what an attacker would need the store's tag key to find) takes at
/// most that key's share of the argon2 gate: other keys' first uses are
/// never refused as Busy meanwhile.
#[test]
fn a_flood_against_one_key_does_not_make_another_keys_first_use_busy() {
    let mut o = fast();
    o.argon2 = Argon2Params {
        memory_kib: 4096,
        iterations: 2,
        parallelism: 1,
    };
    o.max_concurrent_hashes = 2;
    o.max_queued_hashes = 0;
    let backend = Arc::new(MemoryBackend::new(false));
    let store = Store::open_backend(backend.clone(), &o).unwrap();
    let target = store.create("target", CreateOptions::new()).unwrap();
    drop(store);
    // A well-formed key for the target's id whose secret passes its tag.
    let forged = crate::key::generate("kw", &target.info.id);
    let tag_key_store = Store::open_backend(backend.clone(), &o).unwrap();
    let forged_tag = tag_key_store.engine.tag_key.tag(&forged.secret);
    drop(tag_key_store);
    let store = Arc::new(rewrite_record(&backend, &target.info.id, &o, |rec| {
        rec.generations[0].tag = forged_tag;
    }));
    assert_eq!(
        store.verify(forged.key.as_str(), ip("10.0.0.9"), None),
        Denial::WrongSecret,
        "the forged secret reaches argon2 and fails there"
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..6)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            let key = forged.key.as_str().to_string();
            std::thread::spawn(move || {
                let mut attempts = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let v = store.verify(&key, ip("10.0.0.9"), None);
                    assert!(matches!(
                        v,
                        Verdict::Denied(Refusal {
                            denial: Denial::WrongSecret | Denial::Busy,
                            ..
                        })
                    ));
                    attempts += 1;
                }
                attempts
            })
        })
        .collect();
    for i in 0..12 {
        let other = store
            .create(&format!("other {i}"), CreateOptions::new())
            .unwrap();
        assert!(
            store
                .verify(other.key.as_str(), ip("10.0.0.1"), None)
                .is_valid(),
            "another key's first use was refused during the flood"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let attempts: u64 = flooders.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(attempts > 0, "the flood ran meanwhile");
}

/// Bytes stored in all tables.
fn total_bytes(backend: &MemoryBackend) -> usize {
    backend.logical_size().values().map(|(_, b)| b).sum()
}

/// An attacker with only a key's public id floods it from 100,000
/// addresses of one /64 with 5 KB User-Agents: the store grows by less than
/// 1 MB, the outbox by one notice, and a deletion made meanwhile is not
/// queued behind the flood.
#[test]
fn a_flood_of_forged_keys_from_a_slash_64_costs_bounded_storage_and_outbox() {
    let backend = Arc::new(MemoryBackend::new(false));
    // Time stands still: the whole flood falls in one notice window.
    let mut o = fast();
    o.clock = Arc::new(crate::clock::ManualClock::starting_now());
    let store = Store::open_backend(backend.clone(), &o).unwrap();
    let target = store
        .create(
            "restricted",
            CreateOptions::new().restrict_to("office", "198.51.100.0/24"),
        )
        .unwrap();
    let bystander = store.create("bystander", CreateOptions::new()).unwrap();
    store.flush().unwrap();
    let before = total_bytes(&backend);
    let events_before = store.events(0, 10_000).unwrap().len();
    let agent = "A".repeat(5 * 1024);
    for i in 0u32..100_000 {
        // Right id, a made-up secret, a valid checksum.
        let forged = crate::key::generate("kw", &target.info.id);
        let from = IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, (i >> 16) as u16, i as u16]);
        let agent = format!("{i}{agent}");
        assert_eq!(
            store.verify(forged.key.as_str(), from, Some(&agent)),
            Denial::IpNotAllowed
        );
        if i == 50_000 {
            store.flush().unwrap();
            store.delete(&bystander.info.id).unwrap();
        }
    }
    store.flush().unwrap();
    let grown = total_bytes(&backend) - before;
    assert!(grown < 1024 * 1024, "the store grew by {grown} bytes");
    let events = store.events(0, 10_000).unwrap();
    let new: Vec<&str> = events[events_before..]
        .iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(new, ["key.denied_ip", "key.deleted"], "{new:?}");
    let usage = store.usage(&target.info.id).unwrap();
    assert_eq!(
        usage.totals.ip_not_allowed, 100_000,
        "every refusal counted"
    );
    assert!(
        usage
            .integrations
            .iter()
            .all(|i| i.name.len() <= crate::usage::MAX_INTEGRATION_LEN)
    );
    let notice = &events[events_before].data;
    assert_eq!(notice["count"], 1);
    assert!(notice["integration"].as_str().unwrap().len() <= crate::usage::MAX_INTEGRATION_LEN);
    eprintln!(
        "100,000 forged requests: store +{grown} bytes, {} rows in all",
        backend
            .logical_size()
            .values()
            .map(|(r, _)| r)
            .sum::<usize>()
    );
}

/// Sets its flag when dropped: stops helper threads however a test ends.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A sync that read a key record just before this process's own write must
/// not install it over the newer one: the revoked secret would work again.
#[test]
fn a_sync_racing_a_regeneration_never_brings_the_old_secret_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path().join("s"), &fast()).unwrap();
    let created = store.create("k", CreateOptions::new()).unwrap();
    let id = created.info.id;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // More busy threads than cores: a sync is often preempted between
        // reading a record and installing it.
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = store.sync();
                }
            });
        }
        // However the loop ends (a failed assertion too), the syncs stop.
        let _stop = StopOnDrop(&stop);
        let mut old = created.key;
        for round in 0..300 {
            let fresh = store.regenerate(&id, Duration::ZERO).unwrap();
            // Give a sync that read the previous record time to land.
            for _ in 0..50 {
                assert!(
                    !store.verify(old.as_str(), ip("10.0.0.1"), None).is_valid(),
                    "round {round}: the revoked secret works again"
                );
                assert!(
                    store
                        .verify(fresh.key.as_str(), ip("10.0.0.1"), None)
                        .is_valid(),
                    "round {round}: the current secret is refused"
                );
            }
            old = fresh.key;
        }
    });
}

#[test]
fn storage_holds_an_argon2id_hash_of_the_secret_never_the_secret() {
    let backend = Arc::new(MemoryBackend::new(false));
    let store = Store::open_backend(backend.clone(), &fast()).unwrap();
    let created = store.create("k", CreateOptions::new()).unwrap();
    let raw = backend
        .get(backend::Table::Keys, created.info.id.as_bytes())
        .unwrap()
        .unwrap();
    let secret = &created.key.as_str()[16..59];
    assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
    let rec = record::KeyRecord::decode(&raw).unwrap();
    assert!(
        rec.generations[0]
            .phc
            .starts_with("$argon2id$v=19$m=64,t=1,p=1$")
    );
    assert!(crate::verifier::verify_secret(
        &rec.generations[0].phc,
        secret.as_bytes()
    ));
}
