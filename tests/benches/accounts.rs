//! Listing one account's keys costs the same in a store of a million keys
//! as in one of a thousand: the owner index, not a scan.
//!
//! Run: `cargo bench -p keyward-tests --bench accounts`
//!
//! The stores are built once under `target/tmp/` (cheap argon2, 10,000 keys
//! per `create_many` batch; the million-key store takes minutes) and reused.
//! In each, the keys belong to accounts of ten keys each, `acct_bench` too.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::{Argon2Params, CreateOptions, Options, Store};

fn cheap() -> Options {
    let mut o = Options::default();
    o.argon2 = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    o
}

/// A store of `n` keys in accounts of ten, built on first use.
fn store_of(n: usize) -> Store {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("keyward-bench-accounts-{n}"));
    let store = Store::open_with(&dir, &cheap()).expect("open bench store");
    let mut have = store.key_count();
    if have < n {
        eprintln!("building a {n}-key store in {} (once)...", dir.display());
    }
    while have < n {
        let batch = (have..n.min(have + 10_000))
            .map(|i| {
                let owner = if i < 10 {
                    "acct_bench".to_string()
                } else {
                    format!("acct_{}", i / 10)
                };
                (format!("key {i}"), CreateOptions::new().owner(owner))
            })
            .collect::<Vec<_>>();
        have += batch.len();
        store.create_many(batch).expect("create");
    }
    store
}

fn list_owner(c: &mut Criterion) {
    let mut g = c.benchmark_group("list/owner");
    for n in [1_000, 1_000_000] {
        let store = store_of(n);
        assert_eq!(store.list_owner("acct_bench").unwrap().len(), 10);
        g.bench_function(format!("10_of_{n}"), |b| {
            b.iter(|| black_box(store.list_owner(black_box("acct_bench")).unwrap()));
        });
        g.bench_function(format!("page_of_{n}"), |b| {
            b.iter(|| black_box(store.list_page(Some("acct_bench"), None, 100).unwrap()));
        });
        store.close().unwrap();
    }
    g.finish();
}

criterion_group!(benches, list_owner);
criterion_main!(benches);
