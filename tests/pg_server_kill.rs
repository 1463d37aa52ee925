//! The PostgreSQL server itself goes down mid-run: verification fails
//! closed after the staleness bound, and everything recovers when the
//! server is back. It stops the whole server, so scripts/test-all.sh runs
//! it alone, after every other test, with the commands to stop and start
//! the server in KEYWARD_TEST_PG_STOP and KEYWARD_TEST_PG_START.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{fast_options, ip};
use keyward::{CreateOptions, Denial, Refusal, Store, Verdict};

fn sh(cmd: &str) {
    let ok = Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap()
        .success();
    assert!(ok, "{cmd} failed");
}

#[test]
#[ignore = "stops the PostgreSQL server: run alone by scripts/test-all.sh"]
fn server_killed_mid_run_fails_closed_and_recovers() {
    let what = "the server-kill test";
    let (Some(base), Some(stop), Some(start)) = (
        common::service("KEYWARD_TEST_PG", what),
        common::service("KEYWARD_TEST_PG_STOP", what),
        common::service("KEYWARD_TEST_PG_START", what),
    ) else {
        return;
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema=kill_{}", std::process::id());
    let mut o = fast_options();
    o.staleness_bound = Duration::from_secs(1);
    let store = Store::open_with(&url, &o).unwrap();
    let c = store.create("k", CreateOptions::new()).unwrap();
    assert!(
        store
            .verify(c.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );

    sh(&stop);
    common::wait_until("failing closed", Duration::from_secs(30), || {
        let v = store.verify(c.key.as_str(), ip("10.0.0.1"), None);
        assert!(v.is_valid() || v == Denial::Unavailable, "{v:?}");
        (v == Denial::Unavailable).then_some(())
    });
    assert!(
        store.regenerate(&c.info.id, Duration::ZERO).is_err(),
        "a change needs the server"
    );

    sh(&start);
    common::wait_until("recovery", Duration::from_secs(60), || {
        let v = store.verify(c.key.as_str(), ip("10.0.0.1"), None);
        v.is_valid().then_some(())
    });
    let fresh = store.regenerate(&c.info.id, Duration::ZERO).unwrap();
    assert!(
        store
            .verify(fresh.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
    assert!(matches!(
        store.verify(c.key.as_str(), ip("10.0.0.1"), None),
        Verdict::Denied(Refusal {
            denial: Denial::Rotated { .. },
            ..
        })
    ));
    assert_eq!(store.list().unwrap().len(), 1, "nothing lost");
}
