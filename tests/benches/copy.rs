//! Backups and copies of a 100,000-key store (each key with an owner, its
//! `key.created` event and usage): `Store::backup` into a new sled
//! directory, and `Store::copy_to` into an empty PostgreSQL schema (when
//! `KEYWARD_TEST_PG` names a server). Each iteration writes a fresh
//! destination; the size of one is printed (the sled directory's files;
//! the schema's tables with their indexes).
//!
//! Run: `KEYWARD_TEST_PG=postgresql:///db?host=/var/run/postgresql cargo bench -p keyward-tests --bench copy`

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::{Argon2Params, CreateOptions, Options, Store};

const KEYS: usize = 100_000;

fn source(dir: &Path) -> Store {
    let mut o = Options::default();
    o.argon2 = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let store = Store::open_with(dir.join("source"), &o).unwrap();
    let mut keys = Vec::new();
    for chunk in 0..KEYS / 10_000 {
        let batch: Vec<_> = (0..10_000)
            .map(|i| {
                (
                    format!("key {chunk}-{i}"),
                    CreateOptions::new().owner(format!("acct-{}", i % 1000)),
                )
            })
            .collect();
        keys.extend(store.create_many(batch).unwrap());
    }
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    for k in keys.iter().step_by(10) {
        store.verify(k.key.as_str(), ip, Some("bench"));
    }
    store.flush().unwrap();
    store
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

fn copy_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = source(dir.path());
    let mut g = c.benchmark_group("copy");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    let mut n = 0;
    let mut sized = false;
    g.bench_function("backup/100k", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let dest = dir.path().join(format!("backup-{n}"));
                let started = Instant::now();
                let report = store.backup(&dest).unwrap();
                took += started.elapsed();
                assert_eq!(report.keys, KEYS as u64);
                if !sized {
                    sized = true;
                    eprintln!(
                        "copy/backup/100k: {} rows, {:.1} MB of rows, {:.1} MB on disk",
                        report.rows,
                        report.bytes as f64 / 1e6,
                        dir_bytes(&dest) as f64 / 1e6
                    );
                }
                std::fs::remove_dir_all(&dest).unwrap();
            }
            took
        });
    });
    if let Ok(base) = std::env::var("KEYWARD_TEST_PG") {
        let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let mut sized = false;
        g.bench_function("to_postgres/100k", |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let schema = format!("bench_copy_{}_{n}", std::process::id());
                    let url = format!("{base}{sep}schema={schema}");
                    let started = Instant::now();
                    let report = store.copy_to(&url).unwrap();
                    took += started.elapsed();
                    assert_eq!(report.keys, KEYS as u64);
                    if !sized {
                        sized = true;
                        let bytes: i64 = admin
                            .query_one(
                                "select sum(pg_total_relation_size(c.oid))::int8 from pg_class c
                                 join pg_namespace n on n.oid = c.relnamespace
                                 where n.nspname = $1 and c.relkind in ('r', 'S')",
                                &[&schema],
                            )
                            .unwrap()
                            .get(0);
                        eprintln!(
                            "copy/to_postgres/100k: {:.1} MB in the schema (tables and indexes)",
                            bytes as f64 / 1e6
                        );
                    }
                    admin
                        .batch_execute(&format!("drop schema {schema} cascade"))
                        .unwrap();
                }
                took
            });
        });
    } else {
        eprintln!("KEYWARD_TEST_PG is not set: no copy to PostgreSQL");
    }
    g.finish();
}

criterion_group!(benches, copy_benches);
criterion_main!(benches);
