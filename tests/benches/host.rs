//! Many processes on one sled store: what attaching costs, how fast a
//! revocation reaches the other processes, how long a takeover takes.
//!
//! Run: `cargo bench -p keyward-tests --bench host`
//!
//! Other processes are this bench binary again, in a role named by
//! `KEYWARD_BENCH_ROLE`: `owner` (opens the store and holds it until stdin
//! closes) or `watch` (attached; for each key read on stdin, spins until it
//! admits the key and says `known`, then until it refuses it, and prints
//! the monotonic time it saw that).

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::Criterion;
use keyward::{Argon2Params, CreateOptions, Options, Role, Store};

const ROLE: &str = "KEYWARD_BENCH_ROLE";
const DIR: &str = "KEYWARD_BENCH_DIR";
const TAKEOVER_KEYS: usize = 100_000;

fn cheap() -> Options {
    let mut o = Options::default();
    o.argon2 = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    o
}

fn ip() -> IpAddr {
    "10.0.0.1".parse().unwrap()
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the host.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap()
}

/// This binary in another process.
struct Other {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Other {
    fn spawn(role: &str, dir: &Path) -> Other {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, role)
            .env(DIR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut other = Other {
            child,
            stdin,
            stdout,
        };
        assert_eq!(other.line(), "ready");
        other
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).unwrap();
        l.trim_end().to_string()
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Other {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The roles other processes play.
fn child(role: &str) {
    let dir = PathBuf::from(std::env::var_os(DIR).unwrap());
    let store = Store::open_with(&dir, &cheap()).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lines() {
        let key = line.unwrap();
        if role == "watch" {
            // First the key is known here, then it is refused.
            while !store.verify(&key, ip(), None).is_valid() {
                std::hint::spin_loop();
            }
            writeln!(out, "known").unwrap();
            out.flush().unwrap();
            // Yielding, not spinning: on two cores a spinning watcher
            // would keep its own worker thread off the CPU.
            while store.verify(&key, ip(), None).is_valid() {
                std::thread::yield_now();
            }
            writeln!(out, "{}", mono_ns()).unwrap();
            out.flush().unwrap();
        }
    }
    drop(store);
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, what: &str, mut samples: Vec<Duration>) {
    if samples.is_empty() {
        return; // filtered out
    }
    samples.sort();
    eprintln!(
        "{name}: p50 {:?}, p99 {:?}, max {:?} over {} {what}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().unwrap(),
        samples.len()
    );
}

/// Warm verify in the owner and in an attached process: the same path.
fn verify_warm(c: &mut Criterion) {
    let owned_dir = temp();
    let owner = Store::open_with(owned_dir.path(), &cheap()).unwrap();
    let key = owner.create("k", CreateOptions::new()).unwrap().key;
    assert!(owner.verify(key.as_str(), ip(), None).is_valid());
    c.bench_function("host/verify_warm/owner", |b| {
        b.iter(|| black_box(owner.verify(black_box(key.as_str()), ip(), None)));
    });

    let served_dir = temp();
    let _serving = Other::spawn("owner", served_dir.path());
    let attached = Store::open_with(served_dir.path(), &cheap()).unwrap();
    assert_eq!(attached.status().role, Role::Attached);
    let key = attached.create("k", CreateOptions::new()).unwrap().key;
    assert!(attached.verify(key.as_str(), ip(), None).is_valid());
    c.bench_function("host/verify_warm/attached", |b| {
        b.iter(|| black_box(attached.verify(black_box(key.as_str()), ip(), None)));
    });
}

/// Creating and regenerating with argon2's default cost, owner vs attached.
fn writes(c: &mut Criterion) {
    let owned_dir = temp();
    let owner = Store::open(owned_dir.path()).unwrap();
    let served_dir = temp();
    let _serving = Other::spawn("owner", served_dir.path());
    let attached = Store::open(served_dir.path()).unwrap();
    assert_eq!(attached.status().role, Role::Attached);
    let mut g = c.benchmark_group("host/write");
    g.sample_size(20);
    for (name, store) in [("owner", &owner), ("attached", &attached)] {
        g.bench_function(format!("create/{name}"), |b| {
            b.iter(|| store.create("bench", CreateOptions::new()).unwrap());
        });
        let id = store
            .create("rotating", CreateOptions::new())
            .unwrap()
            .info
            .id;
        g.bench_function(format!("regenerate/{name}"), |b| {
            b.iter(|| store.regenerate(&id, Duration::ZERO).unwrap());
        });
    }
    g.finish();
}

/// From the moment `regenerate` returns in one process to the moment
/// another process refuses the old key: negative when the other process
/// refused it before `regenerate` had returned (the owner tells the others
/// as soon as the change is on disk, before it answers the writer).
fn propagation(c: &mut Criterion) {
    let mut g = c.benchmark_group("host/revocation");
    g.sample_size(10);

    // Owner → attached: this process owns, the watcher is attached.
    let owned_dir = temp();
    let owner = Store::open_with(owned_dir.path(), &cheap()).unwrap();
    let mut watcher = Other::spawn("watch", owned_dir.path());
    let mut samples = Vec::new();
    g.bench_function("owner_to_attached", |b| {
        b.iter_custom(|iters| {
            measured(iters, &mut samples, || {
                revoke_and_watch(&owner, &mut watcher)
            })
        });
    });
    report_signed("revocation owner → attached", std::mem::take(&mut samples));

    // Attached → attached: another process owns; this one and the watcher attach.
    let served_dir = temp();
    let _serving = Other::spawn("owner", served_dir.path());
    let attached = Store::open_with(served_dir.path(), &cheap()).unwrap();
    assert_eq!(attached.status().role, Role::Attached);
    let mut watcher = Other::spawn("watch", served_dir.path());
    g.bench_function("attached_to_attached", |b| {
        b.iter_custom(|iters| {
            measured(iters, &mut samples, || {
                revoke_and_watch(&attached, &mut watcher)
            })
        });
    });
    report_signed("revocation attached → attached", samples);
    g.finish();
}

/// Runs `one` `iters` times, keeping each signed delay; returns the sum
/// of the positive ones (what criterion reports).
fn measured(iters: u64, samples: &mut Vec<i64>, mut one: impl FnMut() -> i64) -> Duration {
    (0..iters)
        .map(|_| {
            let d = one();
            samples.push(d);
            Duration::from_nanos(u64::try_from(d).unwrap_or(0))
        })
        .sum()
}

fn revoke_and_watch(store: &Store, watcher: &mut Other) -> i64 {
    let c = store.create("k", CreateOptions::new()).unwrap();
    watcher.send(c.key.as_str());
    assert_eq!(watcher.line(), "known");
    store.regenerate(&c.info.id, Duration::ZERO).unwrap();
    let returned = mono_ns();
    let refused: u64 = watcher.line().parse().unwrap();
    i64::try_from(refused).unwrap() - i64::try_from(returned).unwrap()
}

/// Percentiles of signed nanoseconds, in microseconds.
fn report_signed(name: &str, mut samples: Vec<i64>) {
    if samples.is_empty() {
        return; // filtered out
    }
    samples.sort_unstable();
    let at = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i] as f64 / 1000.0
    };
    let before = samples.iter().filter(|s| **s <= 0).count();
    eprintln!(
        "{name}: p50 {:+.0} µs, p99 {:+.0} µs, max {:+.0} µs after regenerate returned; \
         {before} of {} refused before it returned",
        at(0.5),
        at(0.99),
        at(1.0),
        samples.len()
    );
}

/// SIGKILL of an owner holding 100,000 keys: how long until this attached
/// process owns the store, and until it admits keys again.
fn takeover(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("keyward-bench-host-100k");
    {
        let store = Store::open_with(&dir, &cheap()).unwrap();
        if store.key_count() < TAKEOVER_KEYS {
            eprintln!(
                "building a {TAKEOVER_KEYS}-key store in {} (once)...",
                dir.display()
            );
            for i in store.key_count()..TAKEOVER_KEYS {
                store
                    .create(&format!("bench key {i}"), CreateOptions::new())
                    .unwrap();
            }
        }
        store.close().unwrap();
    }
    let mut g = c.benchmark_group("host/takeover");
    g.sample_size(10);
    // The open time of the same store, for comparison: owning it (the
    // files read, every key loaded) and attaching to an owner (every key
    // read through the socket).
    g.bench_function("open_100k/owner", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let start = Instant::now();
                    let store = Store::open_with(&dir, &cheap()).unwrap();
                    let took = start.elapsed();
                    assert_eq!(store.status().role, Role::Owner);
                    store.close().unwrap();
                    took
                })
                .sum()
        });
    });
    {
        let _owner = Other::spawn("owner", &dir);
        g.bench_function("open_100k/attached", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let start = Instant::now();
                        let store = Store::open_with(&dir, &cheap()).unwrap();
                        let took = start.elapsed();
                        assert_eq!(store.status().role, Role::Attached);
                        drop(store);
                        took
                    })
                    .sum()
            });
        });
    }
    let mut owned_at = Vec::new();
    let mut admitting_at = Vec::new();
    g.bench_function("sigkill_100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut owner = Other::spawn("owner", &dir);
                let store = Store::open_with(&dir, &cheap()).unwrap();
                assert_eq!(store.status().role, Role::Attached);
                let key = store.create("probe", CreateOptions::new()).unwrap();
                owner.child.kill().unwrap();
                let killed = Instant::now();
                owner.child.wait().unwrap();
                while store.status().role != Role::Owner {
                    std::hint::spin_loop();
                    assert!(killed.elapsed() < Duration::from_secs(30), "no takeover");
                }
                owned_at.push(killed.elapsed());
                while !store.verify(key.key.as_str(), ip(), None).is_valid() {
                    std::hint::spin_loop();
                }
                let admitting = killed.elapsed();
                admitting_at.push(admitting);
                total += admitting;
                store.delete(&key.info.id).unwrap();
                store.close().unwrap();
            }
            total
        });
    });
    g.finish();
    report("takeover (owning the store)", "takeovers", owned_at);
    report("takeover (admitting keys again)", "takeovers", admitting_at);
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    verify_warm(&mut c);
    writes(&mut c);
    propagation(&mut c);
    takeover(&mut c);
    c.final_summary();
}
