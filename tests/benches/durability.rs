//! What durability costs a change: regenerations of keys of a sled store
//! (on the disk of the target directory, not a memory file system), one
//! thread at a time and eight at once, each returning only once its change
//! is on stable storage. argon2 is made cheap so that the figure is the
//! storage's, not the hash's (with argon2's defaults a regeneration costs
//! its ~20 ms of hashing on top).
//!
//! `cargo bench -p keyward-tests --bench durability` prints, besides criterion's time per
//! regeneration (1/throughput), the p50 and p99 latency of single
//! regenerations.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::{Argon2Params, CreateOptions, KeyId, Options, Store};

const THREADS: usize = 8;

fn store() -> (tempfile::TempDir, Arc<Store>, Vec<KeyId>) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut o = Options::default();
    o.argon2 = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let store = Store::open_with(dir.path().join("s"), &o).unwrap();
    let ids = (0..THREADS)
        .map(|i| {
            store
                .create(&format!("k{i}"), CreateOptions::new())
                .unwrap()
                .info
                .id
        })
        .collect();
    (dir, Arc::new(store), ids)
}

fn latencies(store: &Store, id: &KeyId) {
    let mut took: Vec<Duration> = (0..1000)
        .map(|_| {
            let started = Instant::now();
            black_box(store.regenerate(id, Duration::ZERO).unwrap());
            started.elapsed()
        })
        .collect();
    took.sort();
    eprintln!(
        "durability/regenerate latency, one thread: p50 {:?}, p99 {:?}",
        took[took.len() / 2],
        took[took.len() * 99 / 100]
    );
}

fn durability_benches(c: &mut Criterion) {
    let (_dir, store, ids) = store();
    latencies(&store, &ids[0]);
    let mut g = c.benchmark_group("durability");
    g.sample_size(20);
    g.bench_function("regenerate/1thread", |b| {
        b.iter(|| black_box(store.regenerate(&ids[0], Duration::ZERO).unwrap()));
    });
    // Time per regeneration with eight threads regenerating eight keys.
    g.bench_function("regenerate/8threads", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(THREADS as u64);
            let started = Instant::now();
            std::thread::scope(|s| {
                for id in &ids {
                    let store = &store;
                    s.spawn(move || {
                        for _ in 0..per {
                            black_box(store.regenerate(id, Duration::ZERO).unwrap());
                        }
                    });
                }
            });
            started.elapsed() * u32::try_from(iters).unwrap_or(u32::MAX)
                / u32::try_from(per * THREADS as u64).unwrap_or(u32::MAX)
        });
    });
    g.finish();
}

criterion_group!(benches, durability_benches);
criterion_main!(benches);
