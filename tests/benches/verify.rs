//! Hot-path and lifecycle benchmarks.
//!
//! Run: `cargo bench -p keyward-tests --bench verify`
//!
//! The 100k-key store is built once under `target/keyward-bench/` (cheap
//! argon2 parameters, so building takes seconds, not hours) and reused.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

use keyward::{
    Argon2Params, CreateOptions, Denial, ImportedSecret, KeyId, Limit, Options, Store,
    VerifyRequest,
};
use sha2::Digest;

const KEYS: usize = 100_000;
const WARM: usize = 1_000;

fn cheap() -> Options {
    let mut o = Options::default();
    o.argon2 = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    o
}

fn store_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("keyward-bench-100k")
}

/// The 100k-key store, built on first use.
fn big_store() -> Store {
    let dir = store_dir();
    let store = Store::open_with(&dir, &cheap()).expect("open bench store");
    let have = store.key_count();
    if have < KEYS {
        eprintln!("building a {KEYS}-key store in {} (once)...", dir.display());
        for i in have..KEYS {
            store
                .create(&format!("bench key {i}"), CreateOptions::new())
                .expect("create");
        }
    }
    store
}

const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A well-formed key for `id` with a secret that belongs to no generation.
fn forged(prefix: &str, id: &KeyId, seed: u64) -> String {
    let mut x = seed | 1;
    let secret: String = (0..43)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            B62[(x % 62) as usize] as char
        })
        .collect();
    let body = format!("{prefix}_{id}_{secret}");
    let mut crc = crc32fast::hash(body.as_bytes());
    let mut check = [b'0'; 6];
    for slot in check.iter_mut().rev() {
        *slot = B62[(crc % 62) as usize];
        crc /= 62;
    }
    format!("{body}{}", std::str::from_utf8(&check).unwrap())
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn verify_benches(c: &mut Criterion) {
    let before = rss_bytes();
    let store = big_store();
    let after = rss_bytes();
    eprintln!(
        "open/100k: resident memory grew by {} bytes per key (first thing in the process)",
        after.saturating_sub(before) / KEYS
    );
    let ids: Vec<KeyId> = store.list().unwrap().into_iter().map(|k| k.id).collect();
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    // Fresh plaintexts for WARM keys (the originals were shown once and dropped).
    let warm: Vec<String> = ids[..WARM]
        .iter()
        .map(|id| {
            store
                .regenerate(id, Duration::ZERO)
                .unwrap()
                .key
                .as_str()
                .to_string()
        })
        .collect();
    for k in &warm {
        assert!(store.verify(k, ip, Some("bench")).is_valid());
    }
    let wrong: Vec<String> = ids[..WARM]
        .iter()
        .enumerate()
        .map(|(i, id)| forged(store.prefix(), id, i as u64 + 7))
        .collect();
    let cold: Vec<String> = ids[WARM..]
        .iter()
        .enumerate()
        .map(|(i, id)| forged(store.prefix(), id, i as u64 + 99))
        .collect();

    // Keys imported from another system, as SHA-256 and as plaintext: new
    // strings each run (an import is refused twice).
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let imported = |kind: &str| -> Vec<String> {
        let keys: Vec<String> = (0..WARM)
            .map(|i| format!("sk_{kind}_{run}_{i:06}"))
            .collect();
        let batch = keys
            .iter()
            .map(|k| {
                let secret = if kind == "sha" {
                    ImportedSecret::Sha256(
                        sha2::Sha256::digest(k.as_bytes())
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect(),
                    )
                } else {
                    ImportedSecret::Plaintext(zeroize::Zeroizing::new(k.clone()))
                };
                (format!("imported {k}"), secret, CreateOptions::new())
            })
            .collect();
        store.import_many(batch).unwrap();
        for k in &keys {
            assert!(store.verify(k, ip, Some("bench")).is_valid());
        }
        keys
    };
    let imported_sha = imported("sha");
    let imported_plain = imported("plain");

    // Keys with a rate limit (high enough never to refuse here) and a
    // scope, verified with the scope required.
    let limited: Vec<String> = (0..WARM)
        .map(|i| {
            let o = CreateOptions::new()
                .limit(Limit::new("burst", 1_000_000_000, Duration::from_secs(1)))
                .scopes(["orders:read"]);
            let k = store.create(&format!("limited {i}"), o).unwrap();
            k.key.as_str().to_string()
        })
        .collect();
    for k in &limited {
        assert!(
            store
                .verify_request(
                    &VerifyRequest::new(k, ip)
                        .integration("bench")
                        .scope("orders:read")
                )
                .is_valid()
        );
    }

    let mut g = c.benchmark_group("verify");
    let mut i = 0usize;
    g.bench_function("warm_imported_sha256", |b| {
        b.iter(|| {
            i = (i + 1) % WARM;
            black_box(store.verify(black_box(&imported_sha[i]), ip, Some("bench")))
        });
    });
    g.bench_function("warm_imported_plaintext", |b| {
        b.iter(|| {
            i = (i + 1) % WARM;
            black_box(store.verify(black_box(&imported_plain[i]), ip, Some("bench")))
        });
    });
    g.bench_function("imported_unmatched", |b| {
        b.iter(|| {
            i = (i + 1) % WARM;
            let v = store.verify(black_box(&format!("sk_none_{i:06}")), ip, Some("bench"));
            debug_assert_eq!(v, Denial::Malformed);
            black_box(v)
        });
    });
    g.bench_function("warm_limited", |b| {
        b.iter(|| {
            i = (i + 1) % WARM;
            let v = store.verify_request(
                &VerifyRequest::new(black_box(&limited[i]), ip)
                    .integration("bench")
                    .scope("orders:read"),
            );
            debug_assert!(v.is_valid());
            black_box(v)
        });
    });
    g.bench_function("warm", |b| {
        b.iter(|| {
            i = (i + 1) % WARM;
            black_box(store.verify(black_box(&warm[i]), ip, Some("bench")))
        });
    });
    g.bench_function("wrong_secret_warm", |b| {
        b.iter(|| {
            i = (i + 1) % WARM;
            let v = store.verify(black_box(&wrong[i]), ip, Some("bench"));
            debug_assert_eq!(v, Denial::WrongSecret);
            black_box(v)
        });
    });
    g.bench_function("random_secret_cold", |b| {
        b.iter(|| {
            i = (i + 1) % cold.len();
            let v = store.verify(black_box(&cold[i]), ip, None);
            debug_assert_eq!(v, Denial::WrongSecret);
            black_box(v)
        });
    });
    // Time per verification with two threads sharing the work: compare with
    // `warm` for the scaling factor.
    g.bench_function("threads2", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2usize {
                    let (store, warm) = (&store, &warm);
                    s.spawn(move || {
                        let half = WARM / 2;
                        for n in 0..iters / 2 {
                            let k = &warm[t * half + (n as usize % half)];
                            black_box(store.verify(k, ip, Some("bench")));
                        }
                    });
                }
            });
            start.elapsed()
        });
    });
    g.finish();
    store.close().unwrap();

    let mut g = c.benchmark_group("open");
    g.sample_size(10);
    g.bench_function("100k", |b| {
        b.iter(|| {
            let s = Store::open_with(store_dir(), &cheap()).unwrap();
            black_box(&s);
            s.close().unwrap();
        });
    });
    g.finish();
}

fn lifecycle_benches(c: &mut Criterion) {
    // Default argon2 parameters: what an application pays per create/regenerate.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let mut g = c.benchmark_group("lifecycle");
    g.sample_size(20);
    g.bench_function("create", |b| {
        b.iter(|| black_box(store.create("bench", CreateOptions::new()).unwrap()));
    });
    let id = store
        .create("rotating", CreateOptions::new())
        .unwrap()
        .info
        .id;
    g.bench_function("regenerate", |b| {
        b.iter_batched(
            || (),
            |()| black_box(store.regenerate(&id, Duration::ZERO).unwrap()),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

/// `keyward scan`'s work on 1 MB of lines, each a key with a real id, a
/// right checksum and a made-up secret (default argon2 parameters: a
/// secret hashed without the pre-check would cost tens of ms).
fn scan_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let id = store
        .create("target", CreateOptions::new())
        .unwrap()
        .info
        .id;
    let mut text = String::new();
    let mut seed = 1;
    while text.len() < 1 << 20 {
        text.push_str(&forged(store.prefix(), &id, seed));
        text.push('\n');
        seed += 1;
    }
    let mut g = c.benchmark_group("scan");
    g.sample_size(10);
    g.bench_function("1mb_forged", |b| {
        b.iter(|| {
            let found = store.find_keys(text.as_bytes());
            for r in &found {
                black_box(store.inspect_found(&text.as_bytes()[r.clone()]));
            }
            found.len()
        });
    });
    g.finish();
}

criterion_group!(benches, verify_benches, lifecycle_benches, scan_benches);
criterion_main!(benches);
