//! Durability and ownership of the store on disk: acknowledged revocations
//! survive SIGKILL, a store held by another process is attached to (and
//! refused with `StoreLocked` only to an open that must own it), and the
//! files are private to their owner.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ip, open, temp_store};
use keyward::{CreateOptions, Denial, KeyId, OpenError, Refusal, Store, Verdict};

const CRASH_DIR: &str = "KEYWARD_TEST_CRASH_DIR";
const CRASH_KEY: &str = "KEYWARD_TEST_CRASH_KEY";
const HOLD_DIR: &str = "KEYWARD_TEST_HOLD_DIR";

/// Child half of the crash test: regenerates forever, printing each
/// generation once `regenerate` has returned. Run only by the parent.
#[test]
#[ignore = "child process of acknowledged_revocations_survive_sigkill"]
fn crash_child() {
    let dir = std::env::var(CRASH_DIR).expect("run by acknowledged_revocations_survive_sigkill");
    let id: KeyId = std::env::var(CRASH_KEY).unwrap().parse().unwrap();
    let store = open(Path::new(&dir));
    let mut out = std::io::stdout().lock();
    loop {
        let fresh = store.regenerate(&id, Duration::ZERO).unwrap();
        writeln!(out, "ack {} {}", fresh.info.generation, fresh.key.as_str()).unwrap();
        out.flush().unwrap();
    }
}

fn child(test: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

#[test]
fn acknowledged_revocations_survive_sigkill() {
    let (_dir, path, store) = temp_store();
    let created = store.create("crashy", CreateOptions::new()).unwrap();
    let id = created.info.id;
    let mut acked: Vec<(u32, String)> = vec![(1, created.key.as_str().to_string())];
    drop(store);

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rounds_with_acks = 0;
    for round in 0..24 {
        let mut proc = child("crash_child")
            .env(CRASH_DIR, &path)
            .env(CRASH_KEY, id.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = proc.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            // libtest may print "test crash_child ... " on the same line as the first ack.
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.find("ack ").map(|at| l[at..].to_string()))
                .collect::<Vec<_>>()
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(20 + seed % 200));
        proc.kill().unwrap(); // SIGKILL: no destructor, no flush.
        proc.wait().unwrap();
        let lines = reader.join().unwrap();
        if !lines.is_empty() {
            rounds_with_acks += 1;
        }
        for line in lines {
            let mut parts = line.split(' ').skip(1);
            let generation: u32 = parts.next().unwrap().parse().unwrap();
            acked.push((generation, parts.next().unwrap().to_string()));
        }

        let store = open(&path);
        let info = store.get(&id).unwrap();
        let (last_gen, last_key) = acked.last().unwrap().clone();
        assert!(
            info.generation >= last_gen,
            "round {round}: acknowledged generation {last_gen} lost (store has {})",
            info.generation
        );
        for (generation, key) in &acked {
            let v = store.verify(key, ip("10.0.0.1"), None);
            if *generation < info.generation {
                assert!(
                    matches!(
                        v,
                        Verdict::Denied(Refusal {
                            denial: Denial::Rotated { .. },
                            ..
                        }) | Verdict::Denied(Refusal {
                            denial: Denial::WrongSecret,
                            ..
                        })
                    ),
                    "round {round}: revoked generation {generation} verified as {v:?}"
                );
            }
        }
        if info.generation == last_gen {
            assert!(store.verify(&last_key, ip("10.0.0.1"), None).is_valid());
        }
    }
    assert!(
        rounds_with_acks >= 20,
        "the child made progress in most rounds ({rounds_with_acks})"
    );
}

/// Child half of the ownership test: holds the store until stdin closes.
#[test]
#[ignore = "child process of a_store_held_by_another_process_is_attached_to"]
fn lock_holder() {
    let dir =
        std::env::var(HOLD_DIR).expect("run by a_store_held_by_another_process_is_attached_to");
    let _store = open(Path::new(&dir));
    println!("ready");
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink).unwrap() > 0 {}
}

#[test]
fn a_store_held_by_another_process_is_attached_to() {
    let (_dir, path, store) = temp_store();
    let created = store.create("k", CreateOptions::new()).unwrap();
    drop(store);
    let mut holder = child("lock_holder")
        .env(HOLD_DIR, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.ends_with("ready"))
    );

    // Only an open that must own the store is refused.
    let mut must_own = common::fast_options();
    must_own.require_owner = true;
    match Store::open_with(&path, &must_own) {
        Err(OpenError::StoreLocked { path: locked }) => assert_eq!(locked, path),
        other => panic!("expected StoreLocked, got {other:?}"),
    }
    let msg = Store::open_with(&path, &must_own).unwrap_err().to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("locked"),
        "{msg}"
    );
    let attached = open(&path);
    let status = attached.status();
    assert_eq!(status.role, keyward::Role::Attached);
    assert_eq!(status.owner_pid, Some(holder.id()));
    assert!(
        attached
            .verify(created.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );

    drop(holder.stdin.take()); // the holder exits: this process takes over
    holder.wait().unwrap();
    common::wait_until("the takeover", Duration::from_secs(10), || {
        (attached.status().role == keyward::Role::Owner).then_some(())
    });
    assert!(
        attached
            .verify(created.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
    drop(attached);
    let store = Store::open_with(&path, &must_own).expect("free once every process is gone");
    drop(store);
}

#[test]
fn a_second_open_in_the_same_process_shares_the_store() {
    let (_dir, path, store) = temp_store();
    let second = Store::open(&path).expect("shared");
    let k = second.create("k", CreateOptions::new()).unwrap();
    assert!(
        store
            .verify(k.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
    second.close().unwrap();
    assert!(
        store
            .verify(k.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
    assert_eq!(store.status().role, keyward::Role::Owner);
}

fn assert_private(dir: &Path) {
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            assert_private(&e.path());
        } else {
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", e.path().display());
        }
    }
}

#[test]
fn the_store_directory_and_files_are_private() {
    let (_dir, path, store) = temp_store();
    assert_private(&path);
    let c = store.create("k", CreateOptions::new()).unwrap();
    store.regenerate(&c.info.id, Duration::ZERO).unwrap();
    assert!(
        !store
            .verify(c.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
    store.close().unwrap();
    assert_private(&path);
}

const CHURN_DIR: &str = "KEYWARD_TEST_CHURN_DIR";
const OWNERS: [&str; 4] = ["acct_a", "acct_b", "acct_c", "acct_d"];

/// Child half of the owner-index crash test: creates, moves and deletes
/// owned keys forever. Run only by the parent.
#[test]
#[ignore = "child process of the owner index crash test"]
fn owner_churn_child() {
    let dir = std::env::var(CHURN_DIR).expect("run by the owner index crash test");
    let store = open(Path::new(&dir));
    let mut ids: Vec<KeyId> = store.list().unwrap().iter().map(|k| k.id).collect();
    let mut n = ids.len();
    println!("ready");
    loop {
        n += 1;
        let owner = OWNERS[n % OWNERS.len()];
        let c = store
            .create("churn", CreateOptions::new().owner(owner))
            .unwrap();
        ids.push(c.info.id);
        let moved = ids[(n * 7) % ids.len()];
        let to = (!n.is_multiple_of(5)).then_some(OWNERS[(n / 3) % OWNERS.len()]);
        store.set_owner(&moved, to).unwrap();
        if n.is_multiple_of(4) {
            let gone = ids.remove((n * 13) % ids.len());
            store.delete(&gone).unwrap();
        }
    }
}

#[test]
fn the_owner_index_never_disagrees_with_the_records_after_sigkill() {
    let (_dir, path, store) = temp_store();
    drop(store);
    let mut seed = std::process::id() as u64 | 1;
    for round in 0..20 {
        let mut proc = child("owner_churn_child")
            .env(CHURN_DIR, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
        assert!(
            lines
                .by_ref()
                .map_while(Result::ok)
                .any(|l| l.ends_with("ready"))
        );
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(10 + seed % 150));
        proc.kill().unwrap(); // SIGKILL, mid-write
        proc.wait().unwrap();

        let store = open(&path);
        let keys = store.list().unwrap();
        for owner in OWNERS {
            let mut by_index: Vec<KeyId> = store
                .list_owner(owner)
                .unwrap()
                .iter()
                .map(|k| k.id)
                .collect();
            let mut by_record: Vec<KeyId> = keys
                .iter()
                .filter(|k| k.owner.as_deref() == Some(owner))
                .map(|k| k.id)
                .collect();
            by_index.sort();
            by_record.sort();
            assert_eq!(
                by_index, by_record,
                "round {round}: the index of {owner} disagrees"
            );
        }
        drop(store);
    }
}
