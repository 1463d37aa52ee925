//! What a plugin's HTTP calls may reach and how they end, against real
//! peers on 127.0.0.1: https to a CA made in the test (trusted through
//! SSL_CERT_FILE, refused otherwise), the address policy with an injected
//! resolver, URLs with CR LF, endpoints that drip or send absurd chunk
//! sizes, the memory cap over all memories and tables, and `close()` while
//! an endpoint holds a delivery.

mod common;
#[path = "common/tls.rs"]
mod tls;
#[path = "common/webhook.rs"]
mod webhook;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{POST_KIND, fast_options, notifier_component, notifier_component_with};
use keyward::{
    CreateOptions, HostResolver, InstallOptions, Options, PluginInfo, RetryPolicy, Store,
};
use webhook::Webhook;

fn options() -> Options {
    let mut o = fast_options();
    o.plugin_retry = RetryPolicy {
        base: Duration::from_millis(20),
        max: Duration::from_millis(50),
    };
    o
}

fn manifest(name: &str, origin: &str, extra: &str) -> String {
    format!(
        "name = {name:?}\nversion = \"1.0.0\"\napi = \"0.1.0\"\nevents = [\"key.created\"]\n\
         allowed_hosts = [{origin:?}]\nmax_attempts = 1\n{extra}\n"
    )
}

fn wait_status(store: &Store, name: &str, done: impl Fn(&PluginInfo) -> bool) -> PluginInfo {
    common::wait_until(
        &format!("plugin {name}'s status"),
        Duration::from_secs(60),
        || Some(store.plugin(name).unwrap()).filter(&done),
    )
}

fn shipped_c_plugin() -> Vec<u8> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "target",
        "plugins",
        "crm-webhook-c.wasm",
    ]
    .iter()
    .collect();
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the shipped plugins first: bash plugins/build.sh",
            path.display()
        )
    })
}

fn crm_manifest(hook_origin: &str, url: &str, attempts: u32) -> String {
    format!(
        "name = \"crm-webhook\"\nversion = \"0.1.0\"\napi = \"0.1.0\"\nevents = [\"key.created\"]\n\
         allowed_hosts = [{hook_origin:?}]\nmax_attempts = {attempts}\n\n[config]\nurl = {url:?}\n\
         auth_header = \"Bearer t0ken\"\n"
    )
}

const CHILD: &str = "KEYWARD_TEST_HTTPS_CHILD";

/// Child half of the https test: runs with SSL_CERT_FILE naming the test's
/// CA, installs the shipped C plugin and makes a key; the parent checks
/// what its server received.
#[test]
#[ignore = "child process of the shipped_c_plugin_delivers_over_https_to_a_private_ca test"]
fn https_child() {
    let env = std::env::var(CHILD).expect("run by the https test");
    let (dir, origin) = env.split_once(' ').unwrap();
    let store = Store::open_with(Path::new(dir).join("s"), &options()).unwrap();
    store
        .install_plugin_with(
            &shipped_c_plugin(),
            &crm_manifest(origin, &format!("{origin}/hooks/keyward"), 3),
            keyward::InstallOptions::new().allow_private_network(true),
        )
        .unwrap();
    store.create("over https", CreateOptions::new()).unwrap();
    let info = wait_status(&store, "crm-webhook", |i| {
        i.status.delivered == 1 || i.status.dead_letters == 1
    });
    println!("\ndelivered={}", info.status.delivered);
}

#[test]
fn shipped_c_plugin_delivers_over_https_to_a_private_ca() {
    let ca = tls::test_ca();
    let hook = Webhook::start_tls(ca.server.clone());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["https_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD, format!("{} {}", dir.path().display(), hook.origin()))
        .env("SSL_CERT_FILE", &ca_file)
        .env_remove("SSL_CERT_DIR")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("delivered=1"), "{stdout}");
    let got = hook.wait_for(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("POST", "/hooks/keyward")
    );
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["kind"], "key.created");
}

#[test]
fn an_untrusted_certificate_is_refused_retried_and_dead_lettered() {
    // This process trusts the platform's roots only, not the test's CA.
    let ca = tls::test_ca();
    let hook = Webhook::start_tls(ca.server.clone());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path().join("s"), &options()).unwrap();
    store
        .install_plugin_with(
            &shipped_c_plugin(),
            &crm_manifest(&hook.origin(), &hook.url("/hooks/keyward"), 2),
            keyward::InstallOptions::new().allow_private_network(true),
        )
        .unwrap();
    store.create("k", CreateOptions::new()).unwrap();
    let info = wait_status(&store, "crm-webhook", |i| i.status.dead_letters == 1);
    assert_eq!(
        info.status.failed, 2,
        "retried, then dead-lettered: {info:?}"
    );
    let log = store.plugin_log("crm-webhook").unwrap();
    assert!(
        log.iter().any(|l| l.contains("certificate")),
        "the log says it is the certificate: {log:?}"
    );
    assert!(hook.requests().is_empty(), "nothing was sent");
}

/// Resolves one made-up name to 127.0.0.1, like a DNS record pointing
/// at an internal address would.
#[derive(Debug)]
struct PointsHome {
    name: &'static str,
}

impl HostResolver for PointsHome {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        if host == self.name {
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "unknown"))
        }
    }
}

#[test]
fn a_name_resolving_to_loopback_is_refused_unless_an_operator_allows_it() {
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options();
    o.plugin_resolver = Arc::new(PointsHome { name: "crm.test" });
    let store = Store::open_with(dir.path().join("s"), &o).unwrap();
    let origin = format!("http://crm.test:{}", hook.port);
    let component = notifier_component(POST_KIND, &format!("{origin}/h"));
    store
        .install_plugin(&component, &manifest("by-name", &origin, ""))
        .unwrap();
    store.create("k", CreateOptions::new()).unwrap();
    let info = wait_status(&store, "by-name", |i| i.status.dead_letters == 1);
    let letters = store.plugin_dead_letters("by-name").unwrap();
    assert!(
        letters[0].error.contains("non-public") && letters[0].error.contains("127.0.0.1"),
        "{letters:?}"
    );
    assert!(!info.allow_private_network);
    assert!(hook.requests().is_empty(), "the call never left the host");

    // An operator's grant at install time, for a CRM on an internal network.
    let granted = store
        .install_plugin_with(
            &component,
            &manifest("granted", &origin, ""),
            InstallOptions::new().allow_private_network(true),
        )
        .unwrap();
    assert!(granted.allow_private_network);
    store.create("k2", CreateOptions::new()).unwrap();
    wait_status(&store, "granted", |i| i.status.delivered == 1);
    assert_eq!(hook.requests().len(), 1);
}

#[test]
fn an_address_or_localhost_in_allowed_hosts_needs_the_operators_grant_too() {
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path().join("s"), &options()).unwrap();
    for (name, origin) in [
        ("literal", format!("http://127.0.0.1:{}", hook.port)),
        ("localhost", format!("http://localhost:{}", hook.port)),
    ] {
        let component = notifier_component(POST_KIND, &format!("{origin}/h"));
        store
            .install_plugin(&component, &manifest(name, &origin, ""))
            .unwrap();
    }
    store.create("k", CreateOptions::new()).unwrap();
    for name in ["literal", "localhost"] {
        wait_status(&store, name, |i| i.status.dead_letters == 1);
        let letters = store.plugin_dead_letters(name).unwrap();
        assert!(
            letters[0].error.contains("refused") && letters[0].error.contains("127.0.0.1"),
            "{name}: {letters:?}"
        );
    }
    assert!(hook.requests().is_empty(), "no call left the host");
}

#[test]
fn a_url_with_cr_lf_is_refused_and_nothing_is_sent() {
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path().join("s"), &options()).unwrap();
    let url = format!(
        "{}/h\r\nHost: internal.example\r\n\r\nGET /admin",
        hook.origin()
    );
    let component = notifier_component_with(POST_KIND, url.as_bytes(), "");
    store
        .install_plugin_with(
            &component,
            &manifest("smuggler", &hook.origin(), ""),
            keyward::InstallOptions::new().allow_private_network(true),
        )
        .unwrap();
    store.create("k", CreateOptions::new()).unwrap();
    wait_status(&store, "smuggler", |i| i.status.dead_letters == 1);
    let letters = store.plugin_dead_letters("smuggler").unwrap();
    assert!(
        letters[0].error.contains("control character"),
        "{letters:?}"
    );
    assert!(hook.requests().is_empty());
}

/// A server that answers every request with `answer` and then `then`;
/// gives its port and how many requests it has read.
fn misbehaving(answer: &'static [u8], then: fn(&mut TcpStream)) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                counter.fetch_add(1, Ordering::AcqRel);
                let _ = s.write_all(answer);
                then(&mut s);
            });
        }
    });
    (port, requests)
}

#[test]
fn a_dripping_endpoint_or_an_absurd_chunk_size_fails_that_attempt_only() {
    // One byte of the promised hundred every 200 ms: the delivery's 1 s
    // deadline ends it, not the server.
    let (drip, _d) = misbehaving(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", |s| {
        for _ in 0..100 {
            if s.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    // A chunk size that overflows after an earlier chunk.
    let (chunk, _c) = misbehaving(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nFFFFFFFFFFFFFFFF\r\nx\r\n",
        |_| {},
    );
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path().join("s"), &options()).unwrap();
    for (name, port) in [("chunk", chunk), ("drip", drip)] {
        let origin = format!("http://127.0.0.1:{port}");
        store
            .install_plugin_with(
                &notifier_component(POST_KIND, &format!("{origin}/h")),
                &manifest(name, &origin, "timeout_ms = 1000"),
                keyward::InstallOptions::new().allow_private_network(true),
            )
            .unwrap();
    }
    store
        .install_plugin_with(
            &notifier_component(POST_KIND, &hook.url("/h")),
            &manifest("good", &hook.origin(), ""),
            keyward::InstallOptions::new().allow_private_network(true),
        )
        .unwrap();
    store.create("k", CreateOptions::new()).unwrap();
    wait_status(&store, "good", |i| i.status.delivered == 1);
    for name in ["chunk", "drip"] {
        let info = wait_status(&store, name, |i| i.status.dead_letters == 1);
        assert_eq!(info.status.delivered, 0, "{name}");
    }
    let drip_letters = store.plugin_dead_letters("drip").unwrap();
    assert!(
        drip_letters[0].error.contains("timed out"),
        "{drip_letters:?}"
    );
    // The dispatcher lives on: the next event reaches every plugin again.
    store.create("k2", CreateOptions::new()).unwrap();
    wait_status(&store, "good", |i| i.status.delivered == 2);
}

#[test]
fn memories_and_tables_past_the_cap_trap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path().join("s"), &options()).unwrap();
    let limits = "memory_limit_mb = 16";
    // Four memories of 6.25 MiB each: within each one's own limit, over the
    // plugin's 16 MiB together.
    let memories = "(memory $m1 1) (memory $m2 1) (memory $m3 1) (memory $m4 1)";
    let grow_all = "(if (i32.eq (memory.grow $m1 (i32.const 100)) (i32.const -1)) (then unreachable))
                    (if (i32.eq (memory.grow $m2 (i32.const 100)) (i32.const -1)) (then unreachable))
                    (if (i32.eq (memory.grow $m3 (i32.const 100)) (i32.const -1)) (then unreachable))
                    (if (i32.eq (memory.grow $m4 (i32.const 100)) (i32.const -1)) (then unreachable))
                    (call $ok)";
    // A table of four million references: 32 MiB of pointers.
    let table = "(table $t 1 funcref)";
    let grow_table =
        "(if (i32.eq (table.grow $t (ref.null func) (i32.const 4000000)) (i32.const -1))
                        (then unreachable))
                      (call $ok)";
    for (name, extra, body) in [
        ("memories", memories, grow_all),
        ("table", table, grow_table),
    ] {
        store
            .install_plugin_with(
                &notifier_component_with(body, b"x", extra),
                &manifest(name, "http://127.0.0.1:9", limits),
                keyward::InstallOptions::new().allow_private_network(true),
            )
            .unwrap();
    }
    store.create("k", CreateOptions::new()).unwrap();
    for name in ["memories", "table"] {
        wait_status(&store, name, |i| i.status.dead_letters == 1);
        let letters = store.plugin_dead_letters(name).unwrap();
        assert!(letters[0].error.contains("trapped"), "{name}: {letters:?}");
    }
}

#[test]
fn close_returns_within_the_delivery_deadline_whatever_the_endpoint_does() {
    // Reads the request, then says nothing, for a minute.
    let (silent, silent_requests) =
        misbehaving(b"", |_| std::thread::sleep(Duration::from_secs(60)));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path().join("s"), &options()).unwrap();
    let origin = format!("http://127.0.0.1:{silent}");
    store
        .install_plugin_with(
            &notifier_component(POST_KIND, &format!("{origin}/h")),
            &manifest("silent", &origin, "timeout_ms = 1000"),
            keyward::InstallOptions::new().allow_private_network(true),
        )
        .unwrap();
    store.create("k", CreateOptions::new()).unwrap();
    // The delivery is under way: the endpoint has the request.
    common::wait_until("the request", Duration::from_secs(30), || {
        (silent_requests.load(Ordering::Acquire) > 0).then_some(())
    });
    let started = Instant::now();
    let closer = std::thread::spawn(move || store.close());
    // The bound is the delivery's 1 s plus one; the test allows far more.
    common::wait_until("close() to return", Duration::from_secs(20), || {
        closer.is_finished().then_some(())
    });
    closer.join().unwrap().unwrap();
    eprintln!(
        "close() with a silent endpoint and timeout_ms = 1000 returned after {:?}",
        started.elapsed()
    );
}
