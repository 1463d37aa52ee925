//! The plugins shipped in plugins/, built by plugins/build.sh, against a
//! real HTTP server on 127.0.0.1.

mod common;
#[path = "common/webhook.rs"]
mod webhook;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use keyward::{CreateOptions, Options, RetryPolicy, Store};
use webhook::Webhook;

fn built(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "target", "plugins", name]
        .iter()
        .collect();
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the shipped plugins first: bash plugins/build.sh",
            path.display()
        )
    })
}

/// The API version a shipped plugin is built against: the C build's
/// committed bindings are 0.1.0, the Python build reads the newest WIT.
fn api(component: &str) -> &'static str {
    if component.contains("-py") {
        "0.2.0"
    } else {
        "0.1.0"
    }
}

fn manifest(hook: &Webhook, path: &str, component: &str) -> String {
    signed_manifest(hook, path, component, None)
}

/// With `secrets`, the host signs the plugin's requests with them.
fn signed_manifest(hook: &Webhook, path: &str, component: &str, secrets: Option<&str>) -> String {
    let (signing, secret) = match secrets {
        Some(s) => (
            "signing = \"standard-webhooks\"\n".to_string(),
            format!("signing_secret = {s:?}\n"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"name = "crm-webhook"
version = "0.1.0"
api = "{api}"
events = ["key.created", "key.regenerated", "key.deleted"]
allowed_hosts = ["{origin}"]
max_attempts = 3
{signing}
[config]
url = "{url}"
auth_header = "Bearer s3cr3t-crm-token"
{secret}"#,
        api = api(component),
        origin = hook.origin(),
        url = hook.url(path)
    )
}

fn open(path: &Path) -> Store {
    let mut o: Options = common::fast_options();
    o.plugin_retry = RetryPolicy {
        base: Duration::from_millis(50),
        max: Duration::from_millis(200),
    };
    Store::open_with(path, &o).unwrap()
}

/// Polls until `done` holds; fails the test after 60 s.
fn wait(what: &str, mut done: impl FnMut() -> bool) {
    common::wait_until(what, Duration::from_secs(60), || done().then_some(()));
}

/// regenerate → the plugin POSTs the event as JSON, with the configured
/// auth header, and no secret anywhere.
fn posts_regeneration(component: &str) {
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s"));
    store
        .install_plugin_with(
            &built(component),
            &manifest(&hook, "/hooks/keyward", component),
            keyward::InstallOptions::new().allow_private_network(true),
        )
        .unwrap();
    let c = store
        .create("Acme \"CRM\" sync", CreateOptions::new())
        .unwrap();
    let fresh = store
        .regenerate(&c.info.id, Duration::from_secs(60))
        .unwrap();
    let got = hook.wait_for(2, Duration::from_secs(60));
    assert_eq!(got.len(), 2, "{got:?}");
    let r = &got[1];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/hooks/keyward")
    );
    assert_eq!(r.header("Authorization"), Some("Bearer s3cr3t-crm-token"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("the body is JSON");
    assert_eq!(body["kind"], "key.regenerated");
    assert_eq!(body["key_id"], c.info.id.as_str());
    assert_eq!(body["key_name"], "Acme \"CRM\" sync");
    assert_eq!(body["masked_key"], fresh.info.masked.as_str());
    assert_eq!(body["data"]["generation"], 2);
    assert!(body["data"]["grace_until"].is_string());
    assert!(body["seq"].as_u64().unwrap() > 0);
    assert!(body["at"].as_str().unwrap().ends_with('Z'));
    assert!(
        r.header("webhook-signature").is_none(),
        "unsigned unless configured"
    );
    for secret in [&c.key.as_str()[16..59], &fresh.key.as_str()[16..59]] {
        for req in &got {
            assert!(
                !req.body_text().contains(secret),
                "no secret in what the plugin sent"
            );
            assert!(req.headers.iter().all(|(_, v)| !v.contains(secret)));
        }
    }
    assert!(
        !serde_json::to_string(&got[0].body_text())
            .unwrap()
            .contains("argon2")
    );
    wait("two deliveries", || {
        store.plugin("crm-webhook").unwrap().status.delivered == 2
    });
    let log = store.plugin_log("crm-webhook").unwrap();
    assert!(log.iter().any(|l| l.contains("event delivered")), "{log:?}");
}

/// 4xx is permanent (dead letter, one attempt); 5xx is retried.
fn sorts_failures(component: &str) {
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s"));
    store
        .install_plugin_with(
            &built(component),
            &manifest(&hook, "/h", component),
            keyward::InstallOptions::new().allow_private_network(true),
        )
        .unwrap();
    hook.status.store(403, Ordering::Release);
    store.create("k", CreateOptions::new()).unwrap();
    wait("1 dead letters", || {
        store.plugin("crm-webhook").unwrap().status.dead_letters == 1
    });
    assert_eq!(hook.requests().len(), 1, "a 4xx is not retried");
    let letters = store.plugin_dead_letters("crm-webhook").unwrap();
    assert!(letters[0].error.contains("4xx"), "{letters:?}");

    hook.status.store(503, Ordering::Release);
    store.create("k2", CreateOptions::new()).unwrap();
    wait("2 dead letters", || {
        store.plugin("crm-webhook").unwrap().status.dead_letters == 2
    });
    assert_eq!(
        hook.requests().len(),
        1 + 3,
        "a 5xx is retried up to max_attempts"
    );
    let letters = store.plugin_dead_letters("crm-webhook").unwrap();
    assert!(letters[1].error.contains("5xx"), "{letters:?}");

    hook.status.store(200, Ordering::Release);
    assert_eq!(store.retry_plugin("crm-webhook").unwrap(), 2);
    wait("0 dead letters", || {
        store.plugin("crm-webhook").unwrap().status.dead_letters == 0
    });
    assert_eq!(store.plugin("crm-webhook").unwrap().status.delivered, 2);
}

const SECRET_OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_NEW: &str = "whsec_q0hR8zKl3vB6yT1mN4pW7sE2uX5aC9dF0gH3jK6lZ8o=";

/// HMAC-SHA256 of `id.timestamp.body` under the secret, as Standard Webhooks sign.
fn expected_signature(secret: &str, id: &str, ts: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// Signed, with two secrets during a rotation: every request carries
/// webhook-id, webhook-timestamp (now) and a signature per secret over
/// the exact body; a retry repeats the id; another event has another; the
/// plugin never reads the secret.
fn signs_requests(component: &str) {
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s"));
    let secrets = format!("{SECRET_OLD} {SECRET_NEW}");
    store
        .install_plugin_with(
            &built(component),
            &signed_manifest(&hook, "/h", component, Some(&secrets)),
            keyward::InstallOptions::new().allow_private_network(true),
        )
        .unwrap();
    hook.status.store(503, Ordering::Release);
    store.create("k", CreateOptions::new()).unwrap();
    wait("the first attempt", || !hook.requests().is_empty());
    hook.status.store(200, Ordering::Release);
    store.create("k2", CreateOptions::new()).unwrap();
    let name_of = |r: &webhook::Received| {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        body["key_name"].as_str().unwrap().to_string()
    };
    wait("the second event", || {
        hook.requests().iter().any(|r| name_of(r) == "k2")
    });
    let got = hook.requests();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for r in &got {
        let id = r.header("webhook-id").expect("webhook-id");
        let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
        let sigs: Vec<&str> = r.header("webhook-signature").unwrap().split(' ').collect();
        assert_eq!(
            sigs,
            [
                expected_signature(SECRET_OLD, id, ts, &r.body),
                expected_signature(SECRET_NEW, id, ts, &r.body)
            ]
        );
        assert!(
            now.abs_diff(ts.parse::<u64>().unwrap()) < 300,
            "{ts} vs {now}"
        );
        if api(component) != "0.1.0" {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(
                body["id"], id,
                "the guest reads the delivery id as event.id"
            );
        }
        for secret in [SECRET_OLD, SECRET_NEW] {
            assert!(
                !r.body_text().contains(&secret[6..]),
                "the plugin saw its secret"
            );
        }
    }
    let ids_of = |name: &str| {
        got.iter()
            .filter(|r| name_of(r) == name)
            .map(|r| r.header("webhook-id").unwrap())
            .collect::<Vec<_>>()
    };
    let (first, second) = (ids_of("k"), ids_of("k2"));
    assert!(first.len() >= 2, "the first event was retried: {first:?}");
    assert!(
        first.iter().all(|id| *id == first[0]),
        "a retry carries the same id: {first:?}"
    );
    assert!(!second.contains(&first[0]), "another event has another id");
    let log = store.plugin_log("crm-webhook").unwrap().join("\n");
    assert!(!log.contains(&SECRET_OLD[6..]) && !log.contains(&SECRET_NEW[6..]));
}

#[test]
fn c_plugin_signs_with_standard_webhooks() {
    signs_requests("crm-webhook-c.wasm");
}

#[test]
fn python_plugin_signs_with_standard_webhooks() {
    signs_requests("crm-webhook-py.wasm");
}

#[test]
fn c_plugin_posts_the_regeneration_to_the_crm() {
    posts_regeneration("crm-webhook-c.wasm");
}

#[test]
fn c_plugin_dead_letters_4xx_and_retries_5xx() {
    sorts_failures("crm-webhook-c.wasm");
}

#[test]
fn python_plugin_posts_the_regeneration_to_the_crm() {
    posts_regeneration("crm-webhook-py.wasm");
}

#[test]
fn python_plugin_dead_letters_4xx_and_retries_5xx() {
    sorts_failures("crm-webhook-py.wasm");
}
