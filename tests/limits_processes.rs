//! Rate limits and quotas across processes: four processes verify one key
//! as fast as they can, on a sled store (attached to an owner) and on
//! PostgreSQL. The requests admitted within the window are at most
//! limit + P × lease (lease = max(1, limit / 20)); a quota is never exceeded, and what the processes
//! did not use goes back to it when they close. A process killed with
//! SIGKILL loses at most its lease, and never grants more.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyward::{CreateOptions, Limit, Quota, Store};

const CHILD_DB: &str = "KEYWARD_TEST_LIMITS_DB";
const CHILD_KEY: &str = "KEYWARD_TEST_LIMITS_KEY";
const CHILD_FOR_MS: &str = "KEYWARD_TEST_LIMITS_FOR_MS";
const PROCESSES: usize = 4;

/// Child: opens the store, says "ready", waits for "go", verifies the key
/// as fast as it can for the time given (or until its parent goes), then
/// prints how many were admitted and closes the store.
#[test]
#[ignore = "child process of the multi-process limit tests"]
fn limits_child() {
    let db = std::env::var(CHILD_DB).expect("run by a limits test");
    let key = std::env::var(CHILD_KEY).unwrap();
    let for_ms: u64 = std::env::var(CHILD_FOR_MS).unwrap().parse().unwrap();
    let store = Store::open_with(&db, &options()).unwrap();
    println!("\nready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let ip = common::ip("203.0.113.9");
    let until = Instant::now() + Duration::from_millis(for_ms);
    let mut admitted = 0u64;
    let mut refused = std::collections::BTreeMap::<String, u64>::new();
    while Instant::now() < until {
        let v = store.verify(&key, ip, Some("child"));
        if let Some(d) = v.denial() {
            *refused.entry(d.as_str().to_string()).or_default() += 1;
        }
        if v.is_valid() {
            admitted += 1;
            if for_ms == u64::MAX {
                // Killed mid-run by the parent: report each admission.
                println!("admitted 1");
            }
        }
    }
    eprintln!("child {}: refused {refused:?}", std::process::id());
    println!("admitted {admitted}");
    store.close().unwrap();
}

/// Quota tokens a process leaves unused go back after 300 ms (10 s by
/// default): the test's own process, which created the keys, holds some.
fn options() -> keyward::Options {
    let mut o = common::fast_options();
    o.lease_idle = Duration::from_millis(300);
    o
}

// The caller waits for the child it is handed.
#[allow(clippy::zombie_processes)]
fn spawn_child(db: &str, key: &str, for_ms: u64) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "limits_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, db)
        .env(CHILD_KEY, key)
        .env(CHILD_FOR_MS, for_ms.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child ended before it was ready");
        }
        if line.trim() == "ready" {
            return (child, out);
        }
    }
}

/// Runs `PROCESSES` children on `key` for `for_ms`, all starting at once:
/// what each admitted.
fn run_children(db: &str, key: &str, for_ms: u64) -> Vec<u64> {
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|_| spawn_child(db, key, for_ms))
        .collect();
    for (child, _) in &mut children {
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    children
        .into_iter()
        .map(|(mut child, mut out)| {
            let mut line = String::new();
            let mut admitted = None;
            while out.read_line(&mut line).unwrap() > 0 {
                if let Some(n) = line.trim().strip_prefix("admitted ") {
                    admitted = Some(n.parse().unwrap());
                }
                line.clear();
            }
            assert!(child.wait().unwrap().success());
            admitted.expect("the child said how many it admitted")
        })
        .collect()
}

/// The shared-budget bound, for `limit` per window, within one window.
fn bound(limit: u64) -> u64 {
    let lease = (limit / 20).max(1);
    limit + PROCESSES as u64 * lease
}

fn four_processes_hold_one_limit_and_one_quota(db: &str, store: &Store) {
    let window = Duration::from_hours(1);
    let limited = store
        .create(
            "limited",
            CreateOptions::new().limit(Limit::new("burst", 100, window)),
        )
        .unwrap();
    let started = Instant::now();
    let admitted = run_children(db, limited.key.as_str(), 1500);
    let total: u64 = admitted.iter().sum();
    assert!(started.elapsed() < window, "the run outlasted the window");
    let most = bound(100);
    eprintln!("limit 100: admitted {admitted:?} = {total} (bound {most})");
    assert!(
        total <= most,
        "{admitted:?}: {total} admitted, more than limit + P x lease = {most}"
    );
    // Tokens left in the processes' hands are at most a lease each.
    assert!(
        total >= 100 - PROCESSES as u64 * 5,
        "{admitted:?}: only {total} admitted"
    );
    assert!(
        admitted.iter().filter(|&&n| n > 0).count() >= 2,
        "{admitted:?}"
    );

    let metered = store
        .create("metered", CreateOptions::new().quota(Quota::new(150)))
        .unwrap();
    // Long enough for this process's lease to go idle and back (300 ms,
    // swept each second) and for a child that found the quota empty to
    // ask again (each second).
    let admitted = run_children(db, metered.key.as_str(), 3500);
    let total: u64 = admitted.iter().sum();
    eprintln!("quota 150: admitted {admitted:?} = {total}");
    assert!(
        total <= 150,
        "{admitted:?}: {total} admitted of a quota of 150"
    );
    // What this process took when it created the key went back, unused,
    // but for a reserve of a twentieth of its lease.
    assert!(total >= 145, "{admitted:?}");
    // Closed, every child gave back what it held (and this process's
    // reserve counts as left): nothing is lost.
    let left = store
        .get(&metered.info.id)
        .unwrap()
        .quota
        .unwrap()
        .remaining;
    assert_eq!(total + left, 150, "{admitted:?}, {left} left");
    assert!(total > 0);
}

#[test]
fn four_attached_processes_share_one_limit_and_one_quota() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store");
    // This process owns the store; the children attach to it.
    let store = Store::open_with(&db, &options()).unwrap();
    four_processes_hold_one_limit_and_one_quota(db.to_str().unwrap(), &store);
}

#[test]
fn four_postgres_processes_share_one_limit_and_one_quota() {
    let Some(base) = common::service("KEYWARD_TEST_PG", "the PostgreSQL limits test") else {
        return;
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let db = format!("{base}{sep}schema=lim_{}", std::process::id());
    let store = Store::open_with(&db, &options()).unwrap();
    four_processes_hold_one_limit_and_one_quota(&db, &store);
}

/// A process killed while it holds a lease of the quota: what it admitted
/// stays spent, what it held is lost (at most one lease), and nothing
/// more is ever granted.
#[test]
fn a_killed_process_loses_at_most_its_lease_and_never_grants_more() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store");
    let remaining = 1000;
    let (id, key) = {
        let store = Store::open_with(&db, &options()).unwrap();
        let made = store
            .create("metered", CreateOptions::new().quota(Quota::new(remaining)))
            .unwrap();
        store.close().unwrap();
        (made.info.id, made.key.as_str().to_string())
    };
    let (mut child, mut out) = spawn_child(db.to_str().unwrap(), &key, u64::MAX);
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    // Let it admit some, then SIGKILL it.
    let mut admitted = 0u64;
    let mut line = String::new();
    while admitted < 30 {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0);
        if line.trim() == "admitted 1" {
            admitted += 1;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Whatever it printed before the kill was admitted too.
    line.clear();
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        if line.trim() == "admitted 1" {
            admitted += 1;
        }
        line.clear();
    }
    let store = Store::open_with(&db, &options()).unwrap();
    let left = store.get(&id).unwrap().quota.unwrap().remaining;
    let lease = (remaining / 20).clamp(100, 1000);
    eprintln!("killed after {admitted} admitted: {left} left of {remaining}");
    assert!(
        left + admitted <= remaining,
        "{left} left after {admitted} admitted: granted more"
    );
    // (An admission the kill interrupted before it was printed: one more.)
    assert!(
        left + admitted + lease + 1 >= remaining,
        "{left} left after {admitted} admitted: lost more than a lease ({lease})"
    );
}
