//! A store of many keys: how long it takes to open, how much memory and
//! disk each key costs, and how fast verification stays.
//!
//! ```text
//! cargo run --release --features postgres --example scale -- --keys 1000000 [--db PATH|postgres://…] [--sample 1000] [--rebuild]
//! ```
//!
//! Builds the store through the public API (`Store::create_many` in
//! batches of 10,000 from two threads, argon2 cost lowered through
//! `Options` so that a million keys take minutes; real record format,
//! real files), accounts of ten keys each and one key in ten restricted to
//! a whitelist of two entries; keeps a sample of the plaintext keys; closes
//! it. A store already built for N keys is reused. Then, in a fresh
//! process, opens an empty store (the baseline), opens the big one, and
//! verifies the sample cold and warm. The last line:
//!
//! `keys=N open_ms=… rss_bytes_per_key=… index_bytes_per_key=… disk_bytes_per_key=… verify_warm_ns=…`
//! (`disk_bytes_per_key=n/a` on PostgreSQL, whose files are the server's)
//!
//! `rss_bytes_per_key` is resident memory read from the OS after the open,
//! minus the baseline, divided by N; `index_bytes_per_key` is the verify
//! index counted from its structures (`Status::index_bytes`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use keyward::{Argon2Params, CreateOptions, EventQuery, Options, Store};

const BATCH: usize = 10_000;

struct Args {
    keys: usize,
    db: String,
    sample: usize,
    rebuild: bool,
    measure: bool,
}

fn args() -> Result<Args, String> {
    let mut keys = None;
    let mut db = None;
    let mut sample = 1_000;
    let mut rebuild = false;
    let mut measure = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--keys" => keys = Some(value()?.parse().map_err(|e| format!("--keys: {e}"))?),
            "--db" => db = Some(value()?),
            "--sample" => sample = value()?.parse().map_err(|e| format!("--sample: {e}"))?,
            "--rebuild" => rebuild = true,
            "--measure" => measure = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let keys: usize = keys.ok_or("--keys N is required")?;
    let db = db.unwrap_or_else(|| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/tmp/keyward-scale-{keys}")
    });
    Ok(Args {
        keys,
        db,
        sample: sample.clamp(1, keys.max(1)),
        rebuild,
        measure,
    })
}

fn options() -> Options {
    let mut o = Options::default();
    // Cheap hashes to build quickly; verification reads the cost from each hash.
    o.argon2 = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    o
}

fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// Files next to a sled store (or, for PostgreSQL, under target/tmp)
/// that say what was built.
fn side_file(a: &Args, what: &str) -> PathBuf {
    if is_postgres(&a.db) {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        let tag = blake3::hash(a.db.as_bytes()).to_hex();
        PathBuf::from(format!(
            "{target}/tmp/keyward-scale-pg-{}-{what}",
            &tag[..16]
        ))
    } else {
        PathBuf::from(format!("{}.{what}", a.db))
    }
}

fn build(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let built = side_file(a, "built");
    if !a.rebuild && std::fs::read_to_string(&built).ok().as_deref() == Some(&a.keys.to_string()) {
        eprintln!("scale: reusing the store of {} keys at {}", a.keys, a.db);
        return Ok(());
    }
    if !is_postgres(&a.db) {
        let _ = std::fs::remove_dir_all(&a.db);
    }
    if let Some(dir) = built.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let started = Instant::now();
    let store = Store::open_with(&a.db, &options())?;
    if store.key_count() != 0 {
        return Err(format!("{} already holds keys: use an empty store", a.db).into());
    }
    let every = (a.keys / a.sample).max(1);
    let batches: Vec<usize> = (0..a.keys).step_by(BATCH).collect();
    let sample = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&start) = batches.get(b) else { return };
                    let end = (start + BATCH).min(a.keys);
                    let keys = (start..end)
                        .map(|i| {
                            let mut o =
                                CreateOptions::new().owner(format!("account-{:07}", i / 10));
                            if i % 10 == 3 {
                                o = o
                                    .restrict_to("office", "203.0.113.0/24")
                                    .restrict_to("vpn", "2001:db8::/48");
                            }
                            (format!("integration {i}"), o)
                        })
                        .collect();
                    let created = store.create_many(keys).expect("create_many");
                    let mut sample = sample.lock().unwrap();
                    for (i, c) in (start..end).zip(created) {
                        if i.is_multiple_of(every) {
                            let ip = if i % 10 == 3 {
                                "203.0.113.7"
                            } else {
                                "198.51.100.7"
                            };
                            sample.push(format!("{} {ip}", c.key.as_str()));
                        }
                    }
                    if end.is_multiple_of(100_000) || end == a.keys {
                        eprintln!("scale: {end} keys in {:.0?}", started.elapsed());
                    }
                }
            });
        }
    });
    store.close()?;
    std::fs::write(side_file(a, "sample"), sample.into_inner()?.join("\n"))?;
    std::fs::write(&built, a.keys.to_string())?;
    eprintln!("scale: built {} keys in {:.1?}", a.keys, started.elapsed());
    Ok(())
}

/// Resident memory of this process, from the OS.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| disk_bytes(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.blocks() * 512
    }
}

fn measure(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let samples: Vec<(String, std::net::IpAddr)> = std::fs::read_to_string(side_file(a, "sample"))?
        .lines()
        .map(|l| {
            let (k, ip) = l.split_once(' ').expect("key ip");
            (k.to_string(), ip.parse().expect("ip"))
        })
        .collect();
    // The baseline: this process with an empty store of the same kind open.
    let empty_dir = tempfile::tempdir()?;
    let empty = if is_postgres(&a.db) {
        let sep = if a.db.contains('?') { '&' } else { '?' };
        Store::open_with(format!("{}{sep}schema=scale_baseline", a.db), &options())?
    } else {
        Store::open_with(empty_dir.path().join("empty"), &options())?
    };
    let baseline = rss_bytes();
    empty.close()?;

    let started = Instant::now();
    let store = Store::open_with(&a.db, &options())?;
    let open_ms = started.elapsed().as_millis();
    let rss = rss_bytes();
    let n = store.key_count();
    let status = store.status();
    // On PostgreSQL the server's files are not this process's to count.
    let disk = (!is_postgres(&a.db)).then(|| disk_bytes(Path::new(&a.db)));

    let started = Instant::now();
    for (key, ip) in &samples {
        assert!(
            store.verify(key, *ip, None).is_valid(),
            "a sample key verifies"
        );
    }
    let cold_ns = started.elapsed().as_nanos() / samples.len() as u128;
    let rounds = (2_000_000 / samples.len()).max(1);
    let started = Instant::now();
    for _ in 0..rounds {
        for (key, ip) in &samples {
            std::hint::black_box(store.verify(key, *ip, None));
        }
    }
    let warm_ns = started.elapsed().as_nanos() / (rounds * samples.len()) as u128;

    // The audit trail: the outbox (a key.created per key) indexed by the
    // background maintenance, then one account's events among them all.
    let started = Instant::now();
    let mut indexed = 0;
    loop {
        let step = store.maintain()?.events_indexed;
        if step == 0 {
            break;
        }
        indexed += step;
    }
    let index_time = started.elapsed();
    let accounts = (n / 10).max(1);
    let mut query_us: Vec<u128> = (0..100)
        .map(|i| {
            let owner = format!("account-{:07}", (i * 7919) % accounts);
            let started = Instant::now();
            let page = store
                .events_query(&EventQuery::new().owner(owner))
                .expect("query");
            let us = started.elapsed().as_micros();
            assert!(
                !page.events.is_empty() && page.next.is_none(),
                "an account's events"
            );
            us
        })
        .collect();
    query_us.sort_unstable();
    eprintln!(
        "scale: indexed {indexed} events in {index_time:.1?}; one account's events: p50 {} µs, max {} µs",
        query_us[query_us.len() / 2],
        query_us[query_us.len() - 1]
    );
    let per_key = |bytes: u64| bytes / (n.max(1) as u64);
    eprintln!(
        "scale: rss {} MiB (baseline {} MiB), index {} MiB, disk {} MiB, verify cold {cold_ns} ns",
        rss >> 20,
        baseline >> 20,
        status.index_bytes >> 20,
        disk.unwrap_or(0) >> 20
    );
    println!(
        "keys={n} open_ms={open_ms} rss_bytes_per_key={} index_bytes_per_key={} disk_bytes_per_key={} verify_warm_ns={warm_ns}",
        per_key(rss.saturating_sub(baseline)),
        per_key(status.index_bytes as u64),
        disk.map_or_else(|| "n/a".to_string(), |d| per_key(d).to_string()),
    );
    store.close()?;
    Ok(())
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "scale: {e}\nusage: scale --keys N [--db PATH|postgres://…] [--sample S] [--rebuild]"
            );
            return ExitCode::from(2);
        }
    };
    let result = if a.measure {
        measure(&a)
    } else {
        build(&a).and_then(|()| {
            // Measured in a fresh process: nothing of the build stays in memory.
            let status = Command::new(std::env::current_exe()?)
                .args(std::env::args().skip(1).filter(|x| x != "--rebuild"))
                .arg("--measure")
                .status()?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("the measuring process failed: {status}").into())
            }
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: {e}");
            ExitCode::FAILURE
        }
    }
}
