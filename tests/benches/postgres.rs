//! The PostgreSQL backend: warm verify (same hot path as sled), revocation
//! propagation between two engines, create and regenerate latency.
//!
//! Run: `KEYWARD_TEST_PG=postgresql:///db?host=/var/run/postgresql cargo bench -p keyward-tests --bench postgres`

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::{Argon2Params, CreateOptions, Options, Store};

const KEYS: usize = 10_000;
const WARM: usize = 1_000;

fn url() -> Option<String> {
    let base = std::env::var("KEYWARD_TEST_PG").ok()?;
    let schema = format!("bench_{}", std::process::id());
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}schema={schema}"))
}

fn cheap() -> Options {
    let mut o = Options::default();
    o.argon2 = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    o
}

fn postgres_benches(c: &mut Criterion) {
    let Some(url) = url() else {
        eprintln!("KEYWARD_TEST_PG is not set: no PostgreSQL benchmarks");
        return;
    };
    let a = Store::open_with(&url, &cheap()).unwrap();
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    let mut warm = Vec::new();
    for i in 0..KEYS {
        let k = a
            .create(&format!("bench {i}"), CreateOptions::new())
            .unwrap();
        if i < WARM {
            warm.push(k.key.as_str().to_string());
        }
    }
    for k in &warm {
        assert!(a.verify(k, ip, Some("bench")).is_valid());
    }
    let mut g = c.benchmark_group("postgres");
    let mut i = 0usize;
    g.bench_function("verify/warm", |b| {
        b.iter(|| {
            i = (i + 1) % WARM;
            black_box(a.verify(black_box(&warm[i]), ip, Some("bench")))
        });
    });

    // Revocation propagation: A regenerates, B (another engine, as another
    // process would be) refuses the old secret.
    let b_store = Store::open_with(&url, &cheap()).unwrap();
    let id = a
        .create("propagation", CreateOptions::new())
        .unwrap()
        .info
        .id;
    let mut key = a
        .regenerate(&id, Duration::ZERO)
        .unwrap()
        .key
        .as_str()
        .to_string();
    let mut samples = Vec::new();
    for _ in 0..100 {
        while !b_store.verify(&key, ip, None).is_valid() {
            std::thread::sleep(Duration::from_micros(200));
        }
        let fresh = a.regenerate(&id, Duration::ZERO).unwrap();
        let returned = Instant::now();
        while b_store.verify(&key, ip, None).is_valid() {
            std::thread::sleep(Duration::from_micros(100));
        }
        samples.push(returned.elapsed());
        key = fresh.key.as_str().to_string();
    }
    samples.sort();
    eprintln!(
        "postgres revocation propagation over 100 regenerations: p50 {:?}, p99 {:?}",
        samples[49], samples[98]
    );
    g.finish();
    drop(b_store);
    drop(a);

    // Create and regenerate with argon2's defaults, as with sled's lifecycle benches.
    let s = Store::open(&url).unwrap();
    let mut g = c.benchmark_group("postgres/lifecycle");
    g.sample_size(20);
    g.bench_function("create", |b| {
        b.iter(|| black_box(s.create("bench", CreateOptions::new()).unwrap()))
    });
    let id = s.create("rotating", CreateOptions::new()).unwrap().info.id;
    g.bench_function("regenerate", |b| {
        b.iter(|| black_box(s.regenerate(&id, Duration::ZERO).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, postgres_benches);
criterion_main!(benches);
