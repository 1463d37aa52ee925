//! PostgreSQL over the network: TLS with libpq's sslmode meanings against
//! the local cluster (Debian's default cluster has `ssl = on` with its
//! snakeoil certificate for `localhost`), and a server that stops answering
//! (a black hole, through a proxy on 127.0.0.1) turning into errors and
//! `Unavailable` instead of a stall. Needs `KEYWARD_TEST_PG` (a superuser's
//! URL; scripts/test-all.sh sets it up): the tests add a login role with a
//! password for TCP connections.

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/proxy.rs"]
mod proxy;
#[path = "common/tls.rs"]
mod tls;

use std::time::{Duration, Instant};

use common::{fast_options, ip, wait_until};
use keyward::{CreateOptions, Denial, OpenError, Options, Store};

use pg::{server, unique};

fn works(store: &Store) {
    let created = store.create("tls", CreateOptions::new()).unwrap();
    assert!(
        store
            .verify(created.key.as_str(), ip("10.0.0.1"), None)
            .is_valid()
    );
}

#[test]
fn sslmode_require_over_tcp_is_encrypted_and_disable_is_not() {
    let Some(s) = server() else { return };
    for (mode, want) in [("require", true), ("disable", false), ("prefer", true)] {
        let app = unique("kwssl");
        let url = s.url(
            "127.0.0.1",
            s.port,
            &format!("sslmode={mode}&application_name={app}"),
        );
        let store = Store::open_with(&url, &fast_options()).unwrap();
        works(&store);
        let sessions = s.encrypted(&app);
        assert!(!sessions.is_empty(), "{mode}: no session seen");
        assert!(
            sessions.iter().all(|&ssl| ssl == want),
            "sslmode={mode}: sessions' ssl = {sessions:?}"
        );
        store.close().unwrap();
    }
}

fn open_error(url: &str) -> String {
    match Store::open_with(url, &fast_options()) {
        Err(OpenError::Storage(e)) => e.to_string(),
        Err(e) => panic!("expected a storage error, got {e:?}"),
        Ok(_) => panic!("{url} opened"),
    }
}

#[test]
fn verify_full_checks_the_chain_and_the_name_and_verify_ca_the_chain() {
    let Some(s) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let wrong_root = dir.path().join("other-ca.pem");
    std::fs::write(&wrong_root, tls::test_ca().ca_pem).unwrap();
    let wrong = wrong_root.display().to_string();

    // A root that did not sign the server's certificate: refused, saying why.
    for mode in ["verify-full", "verify-ca"] {
        let e = open_error(&s.url(
            "localhost",
            s.port,
            &format!("sslmode={mode}&sslrootcert={wrong}"),
        ));
        assert!(
            e.contains("certificate") && e.contains("UnknownIssuer"),
            "{mode}: {e}"
        );
    }
    // A root file that does not exist: refused before connecting.
    match Store::open_with(
        s.url(
            "localhost",
            s.port,
            "sslmode=verify-full&sslrootcert=/nonexistent/root.crt",
        ),
        &fast_options(),
    ) {
        Err(OpenError::InvalidOptions(m)) => assert!(m.contains("/nonexistent/root.crt"), "{m}"),
        other => panic!("expected InvalidOptions, got {:?}", other.err()),
    }

    // The server's own certificate (issued to localhost) as the root.
    let root = &s.cert_file;
    let full = format!("sslmode=verify-full&sslrootcert={root}");
    let store = Store::open_with(s.url("localhost", s.port, &full), &fast_options()).unwrap();
    works(&store);
    store.close().unwrap();
    // By address, the name in the certificate does not match: verify-full
    // refuses, verify-ca (chain only) accepts.
    let e = open_error(&s.url("127.0.0.1", s.port, &full));
    assert!(
        e.contains("certificate") && e.contains("not valid for name"),
        "{e}"
    );
    let ca = format!("sslmode=verify-ca&sslrootcert={root}");
    let store = Store::open_with(s.url("127.0.0.1", s.port, &ca), &fast_options()).unwrap();
    works(&store);
    store.close().unwrap();
}

/// `keyward key list` on `url` with `env` set, as a separate process (the
/// platform's roots and libpq's variables are read from its environment):
/// whether it succeeded, and what it printed on stderr.
fn cli_list(url: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut command = std::process::Command::new(common::keyward_bin());
    command.args(["--db", url, "key", "list"]);
    for var in [
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
        "PGCONNECT_TIMEOUT",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sslrootcert_system_checks_the_host_name_and_libpq_variables_are_read() {
    let Some(s) = server() else { return };
    // The platform's roots, as rustls-native-certs reads them: here the
    // server's own certificate (issued to localhost), so the chain is good
    // and only the name can be wrong.
    let roots = [("SSL_CERT_FILE", s.cert_file.as_str())];
    let (ok, err) = cli_list(&s.url("127.0.0.1", s.port, "sslrootcert=system"), &roots);
    assert!(
        !ok && err.contains("not valid for name"),
        "sslrootcert=system must check the host name: {err}"
    );
    let (ok, err) = cli_list(&s.url("localhost", s.port, "sslrootcert=system"), &roots);
    assert!(ok, "sslrootcert=system to the certificate's host: {err}");
    for weak in ["require", "verify-ca", "prefer"] {
        let (ok, err) = cli_list(
            &s.url(
                "localhost",
                s.port,
                &format!("sslrootcert=system&sslmode={weak}"),
            ),
            &roots,
        );
        assert!(
            !ok && err.contains(&format!(
                "weak sslmode \"{weak}\" may not be used with sslrootcert=system"
            )),
            "{weak}: {err}"
        );
    }

    // libpq's variables when the URL is silent.
    let env = [
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", s.cert_file.as_str()),
    ];
    let (ok, err) = cli_list(&s.url("127.0.0.1", s.port, "application_name=env"), &env);
    assert!(
        !ok && err.contains("not valid for name"),
        "PGSSLMODE=verify-full must check the host name: {err}"
    );
    let (ok, err) = cli_list(&s.url("localhost", s.port, "application_name=env"), &env);
    assert!(ok, "PGSSLMODE=verify-full to the certificate's host: {err}");
    let (ok, err) = cli_list(
        &s.url("localhost", s.port, "application_name=env"),
        &[
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", "/nonexistent/env-root.crt"),
        ],
    );
    assert!(!ok && err.contains("/nonexistent/env-root.crt"), "{err}");
    // The URL's own mode wins over the variable.
    let (ok, err) = cli_list(&s.url("127.0.0.1", s.port, "sslmode=verify-ca"), &env);
    assert!(ok, "sslmode=verify-ca in the URL: {err}");
}

/// Options for the black-hole test: short bounds so the test is quick.
fn impatient() -> Options {
    let mut o = fast_options();
    o.staleness_bound = Duration::from_secs(1);
    o.statement_timeout = Duration::from_millis(500);
    o.connect_timeout = Duration::from_secs(1);
    o.sync_interval = Duration::from_millis(100);
    o
}

#[test]
fn a_black_holed_server_turns_into_unavailable_and_errors_and_close_returns() {
    let Some(s) = server() else { return };
    let proxy = proxy::Proxy::start(([127, 0, 0, 1], s.port).into());
    let url = s.url("127.0.0.1", proxy.port, "sslmode=require");
    let store = std::sync::Arc::new(Store::open_with(&url, &impatient()).unwrap());
    let key = store.create("held", CreateOptions::new()).unwrap();
    let client = ip("10.0.0.1");
    assert!(store.verify(key.key.as_str(), client, None).is_valid());

    proxy.black_hole(true);
    let cut_at = Instant::now();
    wait_until("Unavailable after the cut", Duration::from_secs(30), || {
        (store.verify(key.key.as_str(), client, None) == Denial::Unavailable).then_some(())
    });
    eprintln!("black hole -> Unavailable after {:?}", cut_at.elapsed());

    // A write fails (it does not hang): run it aside and wait for its answer.
    let writer = {
        let store = std::sync::Arc::clone(&store);
        std::thread::spawn(move || store.create("during", CreateOptions::new()).map(drop))
    };
    let started = Instant::now();
    wait_until("the write to fail", Duration::from_secs(30), || {
        writer.is_finished().then_some(())
    });
    let failed = writer.join().unwrap();
    assert!(failed.is_err(), "a write through a black hole succeeded");
    eprintln!("black hole -> write error after {:?}", started.elapsed());

    // The path comes back: the store recovers by itself.
    proxy.black_hole(false);
    wait_until("recovery", Duration::from_secs(30), || {
        store
            .verify(key.key.as_str(), client, None)
            .is_valid()
            .then_some(())
    });
    // Writes work again; a connection that waited through the cut may
    // still hold the worker up briefly, so the new key is polled for.
    let after = store.create("after", CreateOptions::new()).unwrap();
    wait_until("the new key to verify", Duration::from_secs(30), || {
        store
            .verify(after.key.as_str(), client, None)
            .is_valid()
            .then_some(())
    });

    // Cut again and close: close returns in bounded time.
    proxy.black_hole(true);
    let store = std::sync::Arc::into_inner(store).expect("the only handle");
    let started = Instant::now();
    let closing = std::thread::spawn(move || store.close());
    wait_until("close() to return", Duration::from_secs(60), || {
        closing.is_finished().then_some(())
    });
    let _ = closing.join().unwrap();
    eprintln!(
        "black hole -> close() returned after {:?}",
        started.elapsed()
    );
}
