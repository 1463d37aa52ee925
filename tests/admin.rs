//! `keyward admin` over HTTP: what a browser, or an attacker without the
//! session, gets from the panel. (The pages themselves are driven in a
//! real browser by tests/browser/panel.test.mjs.)

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keyward::{CreateOptions, Options, Store};

/// A running `keyward admin`, stopped (SIGTERM) when dropped.
struct Panel {
    child: Child,
    /// The login URL it printed.
    url: String,
    /// Its origin: `http://k-<random>.localhost:PORT` (or the address,
    /// under TLS).
    origin: String,
    /// Where to connect: `http://127.0.0.1:PORT` (a `*.localhost` name is
    /// loopback to a browser; this client is told so by the Host header).
    base: String,
    /// The `Host` to send.
    host: String,
    agent: ureq::Agent,
}

fn agent(ca_pem: Option<&str>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .max_redirects(0)
        .max_redirects_will_error(false)
        .http_status_as_error(false);
    if let Some(pem) = ca_pem {
        let ca = ureq::tls::Certificate::from_pem(pem.as_bytes()).unwrap();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
                .build(),
        );
    }
    config.build().into()
}

fn start(store: &Path, extra: &[&str], ca_pem: Option<&str>) -> Panel {
    let mut child = Command::new(common::keyward_bin())
        .arg("--db")
        .arg(store)
        .args(["admin", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start keyward admin");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_string();
    assert!(
        url.contains("/?token="),
        "first line is the login URL: {url:?}"
    );
    let origin = url.split("/?").next().unwrap().to_string();
    let (scheme, host) = origin.split_once("://").unwrap();
    let port = host.rsplit(':').next().unwrap();
    let base = format!("{scheme}://127.0.0.1:{port}");
    Panel {
        child,
        host: host.to_string(),
        url,
        origin,
        base,
        agent: agent(ca_pem),
    }
}

impl Panel {
    /// Stops the panel with SIGTERM; its exit status and stderr.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = common::wait_until(
            "keyward admin to stop on SIGTERM",
            Duration::from_secs(30),
            || self.child.try_wait().unwrap(),
        );
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    }

    /// A GET of `path` (with its query) from the panel, under its name.
    fn at(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        self.agent
            .get(format!("{}{path}", self.base))
            .header("Host", &self.host)
    }

    /// The printed login URL, as a browser opens it.
    fn open_login(&self) -> ureq::http::Response<ureq::Body> {
        let path = &self.url[self.origin.len()..];
        self.at(path).call().unwrap()
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> (u16, ureq::http::HeaderMap, String) {
        let mut req = self.at(path);
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        let r = req.call().unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.into_body().read_to_string().unwrap())
    }

    fn post(
        &self,
        path: &str,
        cookie: &str,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> (u16, Option<String>) {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Host", &self.host)
            .header("Cookie", cookie);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send_form(form.iter().copied()).unwrap();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        (r.status().as_u16(), location)
    }

    /// Logs in with the printed URL: the session cookie and its CSRF token.
    fn login(&self) -> (String, String) {
        let r = self.open_login();
        assert_eq!(r.status().as_u16(), 303);
        let set = r.headers().get("set-cookie").unwrap().to_str().unwrap();
        let cookie = set.split(';').next().unwrap().to_string();
        let (status, _, page) = self.get("/keys", Some(&cookie));
        assert_eq!(status, 200);
        (cookie, csrf_of(&page))
    }
}

impl Drop for Panel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF field")
        + 19;
    page[at..at + 64].to_string()
}

fn store_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    (dir, path)
}

fn assert_security_headers(path: &str, h: &ureq::http::HeaderMap) {
    let csp = h
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{path}: CSP"))
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    assert_eq!(h.get("x-frame-options").unwrap(), "DENY", "{path}");
    assert_eq!(h.get("cache-control").unwrap(), "no-store", "{path}");
}

#[test]
fn a_loopback_panel_has_a_host_name_of_its_own_and_a_host_only_cookie() {
    let (_dir, store) = store_path();
    let panel = start(&store, &[], None);
    let label = panel
        .origin
        .strip_prefix("http://k-")
        .and_then(|r| r.split_once(".localhost:"))
        .map(|(label, _)| label.to_string())
        .unwrap_or_else(|| panic!("{}", panel.url));
    assert!(
        label.len() == 20
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{label}"
    );
    let r = panel.open_login();
    assert_eq!(r.status().as_u16(), 303);
    let set = r.headers().get("set-cookie").unwrap().to_str().unwrap();
    // No Domain: the browser keeps it for this host name alone.
    assert!(!set.to_ascii_lowercase().contains("domain"), "{set}");
    // Another panel: another name.
    let (_dir2, store2) = store_path();
    let other = start(&store2, &[], None);
    assert_ne!(other.host, panel.host);
}

#[test]
fn every_page_needs_a_session_and_carries_the_security_headers() {
    let (_dir, store) = store_path();
    let panel = start(&store, &[], None);
    for path in [
        "/keys",
        "/events",
        "/plugins",
        "/keys/abcdefghijkl",
        "/",
        "/nowhere",
    ] {
        let (status, headers, body) = panel.get(path, None);
        assert_eq!(status, 401, "{path}");
        assert_security_headers(path, &headers);
        assert!(!body.contains("<script>"), "no inline script");
    }
    let (status, _, _) = panel.get("/keys", Some("keyward_session=0123456789abcdef"));
    assert_eq!(status, 401, "a made-up session");
    let (cookie, _) = panel.login();
    for (path, expected) in [("/keys", 200), ("/events", 200), ("/nowhere", 404)] {
        let (status, headers, _) = panel.get(path, Some(&cookie));
        assert_eq!(status, expected, "{path}");
        assert_security_headers(path, &headers);
    }
    let (status, headers, _) = panel.get("/assets/panel.js", None);
    assert_eq!(status, 200, "the script is served to everyone");
    assert_security_headers("/assets/panel.js", &headers);
    let r = panel.open_login();
    assert_eq!(r.status().as_u16(), 401, "the login token works once");
    let (status, err) = panel.stop();
    assert!(status.success(), "{err}");
}

#[test]
fn a_post_without_the_csrf_token_or_from_another_origin_is_refused() {
    let (_dir, store) = store_path();
    let panel = start(&store, &[], None);
    let (cookie, csrf) = panel.login();
    let name = [("name", "refused")];
    assert_eq!(panel.post("/keys", &cookie, &[], &name).0, 403, "no token");
    let wrong = [("name", "refused"), ("csrf", "00")];
    assert_eq!(
        panel.post("/keys", &cookie, &[], &wrong).0,
        403,
        "a wrong token"
    );
    let form = [("name", "made"), ("csrf", csrf.as_str())];
    let evil = [("Origin", "http://evil.example")];
    assert_eq!(
        panel.post("/keys", &cookie, &evil, &form).0,
        403,
        "another origin"
    );
    let other_port = [("Origin", "http://127.0.0.1:1")];
    assert_eq!(
        panel.post("/keys", &cookie, &other_port, &form).0,
        403,
        "another port"
    );
    let cross = [("Sec-Fetch-Site", "cross-site")];
    assert_eq!(
        panel.post("/keys", &cookie, &cross, &form).0,
        403,
        "cross-site"
    );
    let (status, _, _) = {
        let r = panel
            .at("/keys")
            .header("Cookie", &cookie)
            .header("Sec-Fetch-Site", "cross-site")
            .call()
            .unwrap();
        (r.status().as_u16(), (), ())
    };
    assert_eq!(status, 403, "a cross-site GET");
    let port = panel.base.rsplit(':').next().unwrap();
    // Only the panel's own name: not a rebound DNS name, and not the
    // loopback address or `localhost` (whose cookies every other local
    // server is sent).
    for (host, why) in [
        (format!("attacker.example:{port}"), "a rebound DNS name"),
        (format!("127.0.0.1:{port}"), "the bare address"),
        (format!("localhost:{port}"), "localhost"),
    ] {
        let r = panel
            .agent
            .get(format!("{}/keys", panel.base))
            .header("Cookie", &cookie)
            .header("Host", &host)
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 421, "{why}");
    }
    let logout = [("csrf", "nope")];
    assert_eq!(panel.post("/logout", &cookie, &[], &logout).0, 403);

    let own = [("Origin", panel.origin.as_str())];
    let (status, location) = panel.post("/keys", &cookie, &own, &form);
    assert_eq!(status, 303, "same origin with the token");
    assert!(location.unwrap().starts_with("/keys/"));
    let (status, err) = panel.stop();
    assert!(status.success(), "{err}");

    let store = common::open(&store);
    let names: Vec<String> = store.list().unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(names, ["made"], "only the accepted post made a key");
}

#[test]
fn the_plaintext_key_is_in_exactly_one_response_and_events_name_the_panel() {
    let (_dir, store) = store_path();
    let panel = start(&store, &[], None);
    let (cookie, csrf) = panel.login();
    let (status, location) = panel.post(
        "/keys",
        &cookie,
        &[],
        &[("name", "CRM"), ("owner", "acme"), ("csrf", &csrf)],
    );
    assert_eq!(status, 303);
    let location = location.unwrap();
    let (status, _, shown) = panel.get(&location, Some(&cookie));
    assert_eq!(status, 200);
    let at = shown.find("id=\"new-key\">").expect("the key is shown") + 13;
    let key = shown[at..].split('<').next().unwrap().to_string();
    assert!(key.starts_with("kw_"), "{key}");
    assert!(!location.contains(&key[16..]), "not in the redirect");
    for path in [location.as_str(), "/keys", "/events"] {
        let (_, _, page) = panel.get(path, Some(&cookie));
        assert!(!page.contains(&key[16..]), "{path} shows it again");
    }

    let id = location.trim_start_matches("/keys/").to_string();
    let (status, location) = panel.post(
        &format!("/keys/{id}/regenerate"),
        &cookie,
        &[],
        &[("grace", "0"), ("csrf", &csrf)],
    );
    assert_eq!(status, 303);
    let (_, _, shown) = panel.get(&location.clone().unwrap(), Some(&cookie));
    let at = shown.find("id=\"new-key\">").unwrap() + 13;
    let second = shown[at..].split('<').next().unwrap().to_string();
    assert_ne!(second, key);
    let (_, _, again) = panel.get(&location.unwrap(), Some(&cookie));
    assert!(!again.contains(&second[16..]));

    let (status, err) = panel.stop();
    assert!(status.success());
    assert!(
        !err.contains(&key[16..]) && !err.contains(&second[16..]),
        "no key in the log"
    );

    let store = common::open(&store);
    let id: keyward::KeyId = id.parse().unwrap();
    assert!(
        store
            .verify(&second, common::ip("203.0.113.1"), None)
            .is_valid()
    );
    assert!(
        !store
            .verify(&key, common::ip("203.0.113.1"), None)
            .is_valid()
    );
    let events = store.events(0, 10).unwrap();
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e.key_id, id);
        assert_eq!(e.data["actor"], "admin panel", "{}", e.kind.as_str());
    }
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&key[16..]) && !text.contains(&second[16..]));
}

#[test]
fn the_keys_page_is_paged_and_searchable() {
    let (_dir, path) = store_path();
    {
        let store = common::open(&path);
        let mut keys: Vec<_> = (0..120)
            .map(|i| (format!("integration {i:03}"), CreateOptions::new()))
            .collect();
        // A name that has the shape of a key id.
        keys.push(("backendsync1".to_string(), CreateOptions::new()));
        store.create_many(keys).unwrap();
        store.close().unwrap();
    }
    let panel = start(&path, &[], None);
    let (cookie, _) = panel.login();
    let rows = |page: &str| page.matches("<a href=\"/keys/").count();
    let next = |page: &str| {
        page.find("href=\"/keys?").map(|at| {
            page[at + 6..]
                .split('"')
                .next()
                .unwrap()
                .replace("&amp;", "&")
        })
    };
    let (_, _, first) = panel.get("/keys", Some(&cookie));
    assert_eq!(rows(&first), 50, "one page of fifty");
    let (_, _, second) = panel.get(&next(&first).unwrap(), Some(&cookie));
    assert_eq!(rows(&second), 50);
    let (_, _, third) = panel.get(&next(&second).unwrap(), Some(&cookie));
    assert_eq!(rows(&third), 21);
    assert!(next(&third).is_none(), "the last page");

    let (_, _, found) = panel.get("/keys?q=integration+07", Some(&cookie));
    assert_eq!(rows(&found), 10, "integration 070 to 079");
    let (_, _, found) = panel.get("/keys?q=INTEGRATION+119", Some(&cookie));
    assert_eq!(rows(&found), 1, "case-insensitive");
    let (_, _, found) = panel.get("/keys?q=backendsync1", Some(&cookie));
    assert_eq!(rows(&found), 1, "a name shaped like an id is still a name");
    let (_, _, none) = panel.get("/keys?q=nothing+like+it", Some(&cookie));
    assert_eq!(rows(&none), 0);
    panel.stop();
}

#[test]
fn an_account_panel_serves_only_that_owner() {
    let (_dir, path) = store_path();
    let (mine, theirs) = {
        let store = common::open(&path);
        let mine = store
            .create("mine", CreateOptions::new().owner("acme"))
            .unwrap();
        let theirs = store
            .create("theirs", CreateOptions::new().owner("globex"))
            .unwrap();
        store.rename(&theirs.info.id, "theirs renamed").unwrap();
        store.close().unwrap();
        (mine.info.id, theirs.info.id)
    };
    let panel = start(&path, &["--owner", "acme"], None);
    let (cookie, csrf) = panel.login();
    let (_, _, list) = panel.get("/keys", Some(&cookie));
    assert!(list.contains(&mine.to_string()));
    assert!(!list.contains(&theirs.to_string()));
    let (_, _, searched) = panel.get(&format!("/keys?q={theirs}"), Some(&cookie));
    assert!(
        !searched.contains("theirs"),
        "a search by id finds nothing of another owner"
    );
    let (_, _, events) = panel.get("/events", Some(&cookie));
    assert!(events.contains("mine"));
    assert!(
        !events.contains("theirs"),
        "another owner's events are not shown"
    );
    for filter in ["owner=globex", &format!("key={theirs}"), "kind=key.updated"] {
        let (_, _, events) = panel.get(&format!("/events?{filter}"), Some(&cookie));
        assert!(!events.contains("theirs"), "nor through a filter: {filter}");
    }
    let (_, _, mine_only) = panel.get(&format!("/events?key={mine}"), Some(&cookie));
    assert!(mine_only.contains("mine") && mine_only.contains("key.created"));
    let (_, _, bad) = panel.get("/events?since=last+tuesday", Some(&cookie));
    assert!(bad.contains("id=\"filter-error\""), "{bad}");
    for tab in ["", "/usage", "/whitelist", "/regenerate", "/delete"] {
        let (status, _, _) = panel.get(&format!("/keys/{theirs}{tab}"), Some(&cookie));
        assert_eq!(status, 404, "GET {tab}");
        let (status, _, _) = panel.get(&format!("/keys/{mine}{tab}"), Some(&cookie));
        assert_eq!(status, 200, "GET {tab} of its own key");
    }
    for action in [
        "regenerate",
        "delete",
        "disable",
        "rename",
        "whitelist/toggle",
    ] {
        let (status, _) = panel.post(
            &format!("/keys/{theirs}/{action}"),
            &cookie,
            &[],
            &[
                ("csrf", &csrf),
                ("name", "x"),
                ("grace", "0"),
                ("enabled", "1"),
            ],
        );
        assert_eq!(status, 404, "POST {action}");
    }
    assert_eq!(panel.get("/plugins", Some(&cookie)).0, 404);
    let (status, location) = panel.post(
        "/keys",
        &cookie,
        &[],
        &[("name", "new"), ("owner", "globex"), ("csrf", &csrf)],
    );
    assert_eq!(status, 303);
    assert!(location.unwrap().starts_with("/keys/"));
    panel.stop();

    let store = common::open(&path);
    let info = store.get(&theirs).unwrap();
    assert_eq!(info.name, "theirs renamed");
    assert_eq!(info.generation, 1);
    assert!(!info.disabled);
    let acme: Vec<String> = store
        .list_owner("acme")
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(
        acme,
        ["mine", "new"],
        "keys made here belong to the account"
    );
    assert_eq!(store.list_owner("globex").unwrap().len(), 1);
}

#[test]
fn under_tls_the_panel_is_https_with_a_secure_host_only_cookie() {
    let ca = tls::test_ca();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &ca.server_cert_pem).unwrap();
    std::fs::write(&key, &ca.server_key_pem).unwrap();
    let store = dir.path().join("store");
    let args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let panel = start(&store, &args, Some(&ca.ca_pem));
    assert!(panel.url.starts_with("https://127.0.0.1:"), "{}", panel.url);
    let r = panel.agent.get(&panel.url).call().unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let set = r.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(set.starts_with("__Host-keyward_session="), "{set}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    let cookie = set.split(';').next().unwrap();
    assert_eq!(panel.get("/keys", Some(cookie)).0, 200);
    let plain = panel.base.replace("https://", "http://");
    assert!(
        agent(None).get(format!("{plain}/keys")).call().is_err(),
        "no plain http on the TLS port"
    );
    let (status, _) = panel.stop();
    assert!(status.success());
}

#[test]
fn a_reachable_address_needs_tls_or_insecure_remote_and_bad_arguments_are_refused() {
    let (_dir, store) = store_path();
    let run = |args: &[&str]| {
        Command::new(common::keyward_bin())
            .arg("--db")
            .arg(&store)
            .arg("admin")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
    assert!(out.stdout.is_empty(), "no URL printed");
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent.pem",
        "--tls-key",
        "/nonexistent.pem",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--listen", "not an address"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--listen", "127.0.0.1:0", "--session-idle", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--listen", "127.0.0.1:0", "--owner", ""]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn sigterm_stops_the_panel_and_releases_the_store() {
    let (_dir, path) = store_path();
    let panel = start(&path, &[], None);
    let (status, err) = panel.stop();
    assert!(status.success(), "{err}");
    assert!(err.contains("stopped"), "{err}");
    let mut options = Options::default();
    options.require_owner = true;
    let store = Store::open_with(&path, &options).expect("the panel let the store go");
    store.close().unwrap();
}

#[path = "common/webhook.rs"]
mod webhook;

#[test]
fn the_plugins_page_shows_dead_letters_and_retries_them() {
    use std::sync::atomic::Ordering;
    let hook = webhook::Webhook::start();
    hook.status.store(404, Ordering::Release);
    let (_dir, path) = store_path();
    {
        let store = common::open(&path);
        let manifest = format!(
            "name = \"crm\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\nevents = [\"*\"]\nallowed_hosts = [{:?}]\n",
            hook.origin()
        );
        store
            .install_plugin_with(
                &common::notifier_component(common::POST_KIND, &hook.url("/h")),
                &manifest,
                keyward::InstallOptions::new().allow_private_network(true),
            )
            .unwrap();
        store.create("k", CreateOptions::new()).unwrap();
        common::wait_until("a dead letter", Duration::from_secs(30), || {
            Some(()).filter(|()| store.plugin("crm").unwrap().status.dead_letters == 1)
        });
        store.close().unwrap();
    }
    let panel = start(&path, &[], None);
    let (cookie, csrf) = panel.login();
    let (status, _, page) = panel.get("/plugins", Some(&cookie));
    assert_eq!(status, 200);
    assert!(page.contains("data-plugin=\"crm\""), "{page}");
    assert!(page.contains("Dead letters (1)"));
    assert!(page.contains("key.created"));

    hook.status.store(200, Ordering::Release);
    let (status, location) = panel.post("/plugins/crm/retry", &cookie, &[], &[("csrf", &csrf)]);
    assert_eq!((status, location.as_deref()), (303, Some("/plugins")));
    let (_, _, page) = panel.get("/plugins", Some(&cookie));
    assert!(page.contains("Queued 1 dead letter(s) of crm"), "{page}");
    hook.wait_for(2, Duration::from_secs(30));
    common::wait_until(
        "the retried event delivered",
        Duration::from_secs(30),
        || {
            let (_, _, page) = panel.get("/plugins", Some(&cookie));
            Some(()).filter(|()| page.contains("Dead letters (0)"))
        },
    );
    let (status, _) = panel.post("/plugins/nope/retry", &cookie, &[], &[("csrf", &csrf)]);
    assert_eq!(status, 404, "no such plugin");
    panel.stop();
}

/// The panel beside an application that owns the sled store: the panel
/// attaches, and what it changes the application enforces.
#[test]
fn the_panel_attaches_beside_an_application_that_owns_the_store() {
    let (_dir, path) = store_path();
    let app = common::open(&path);
    let created = app.create("live", CreateOptions::new()).unwrap();
    let panel = start(&path, &[], None);
    let (cookie, csrf) = panel.login();
    let id = created.info.id;
    let (status, _) = panel.post(
        &format!("/keys/{id}/whitelist/entries"),
        &cookie,
        &[],
        &[
            ("name", "office"),
            ("network", "203.0.113.0/24"),
            ("csrf", &csrf),
        ],
    );
    assert_eq!(status, 303);
    let (status, _) = panel.post(
        &format!("/keys/{id}/whitelist/toggle"),
        &cookie,
        &[],
        &[("enabled", "1"), ("csrf", &csrf)],
    );
    assert_eq!(status, 303);
    assert!(
        app.verify(created.key.as_str(), common::ip("203.0.113.4"), None)
            .is_valid()
    );
    common::wait_until(
        "the application refuses another address",
        Duration::from_secs(30),
        || {
            let v = app.verify(created.key.as_str(), common::ip("198.51.100.4"), None);
            Some(()).filter(|()| v == keyward::Denial::IpNotAllowed)
        },
    );
    common::wait_until(
        "the refusal on the Usage tab",
        Duration::from_secs(30),
        || {
            app.flush().unwrap();
            let (_, _, page) = panel.get(&format!("/keys/{id}/usage"), Some(&cookie));
            Some(()).filter(|()| page.contains("data-reason=\"ip_not_allowed\">1<"))
        },
    );
    // And among the recent requests, one by one, newest first.
    let (_, _, page) = panel.get(&format!("/keys/{id}/usage"), Some(&cookie));
    let recent = &page[page.find("id=\"recent\"").expect("a recent-requests table")..];
    let refused = recent
        .find("data-reason=\"ip_not_allowed\">denied: ip_not_allowed<")
        .expect("the refused request");
    assert!(recent[..refused].contains("198.51.100.4"), "{recent}");
    assert!(
        recent[refused..].contains("203.0.113.4"),
        "the admitted one, older"
    );
    let (status, err) = panel.stop();
    assert!(status.success(), "{err}");
    let events = app.events(0, 10).unwrap();
    let actors: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.data.get("actor").and_then(|a| a.as_str()),
                e.data.get("actor_claimed").and_then(|a| a.as_str()),
            )
        })
        .collect();
    // The panel's changes were made by the owner for it: their actor is
    // the user the kernel names, and what the panel says of itself is its
    // claim.
    let me = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    // The application's own events name it: `<user>@<host>`.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let app_actor = format!("{}@{}", me.trim(), host.trim());
    let app_actor = Some(app_actor.as_str());
    let me = Some(me.trim());
    assert_eq!(
        actors,
        [
            ("key.created", app_actor, None),
            ("whitelist.updated", me, Some("admin panel")),
            ("whitelist.updated", me, Some("admin panel")),
            ("key.denied_ip", app_actor, None),
        ],
        "the application's create, the panel's two changes, the application's refusal"
    );
}

#[test]
fn the_overview_shows_rate_limits_quota_scopes_and_the_description() {
    let (_dir, path) = store_path();
    let app = common::open(&path);
    let created = app
        .create(
            "metered",
            CreateOptions::new()
                .limit(keyward::Limit::new("burst", 100, Duration::from_mins(1)))
                .quota(keyward::Quota::new(500).refilled(1000, keyward::RefillPeriod::Monthly))
                .scopes(["orders:read", "contacts:write"])
                .description("Zapier <orders> feed"),
        )
        .unwrap();
    let plain = app.create("plain", CreateOptions::new()).unwrap();
    let panel = start(&path, &[], None);
    let (cookie, _) = panel.login();
    let (status, _, page) = panel.get(&format!("/keys/{}", created.info.id), Some(&cookie));
    assert_eq!(status, 200);
    assert!(page.contains("burst 100 per 1m"), "{page}");
    assert!(
        page.contains("requests left, reset to 1000 monthly"),
        "{page}"
    );
    assert!(page.contains("<code>contacts:write</code>"), "{page}");
    assert!(page.contains("<code>orders:read</code>"), "{page}");
    // The description, escaped like everything the store holds.
    assert!(
        page.contains("<dt>Description</dt><dd>Zapier &lt;orders&gt; feed</dd>"),
        "{page}"
    );
    let (_, _, page) = panel.get(&format!("/keys/{}", plain.info.id), Some(&cookie));
    assert!(
        page.contains("<dt>Quota</dt><dd><span class=\"muted\">none</span>"),
        "{page}"
    );
    assert!(
        page.contains("<dt>Description</dt><dd><span class=\"muted\">none</span>"),
        "{page}"
    );
    let (status, err) = panel.stop();
    assert!(status.success(), "{err}");
}

/// The panel on a PostgreSQL store, beside another process using it.
#[test]
fn the_panel_serves_a_postgresql_store() {
    let Some(base) = common::service("KEYWARD_TEST_PG", "the panel on PostgreSQL") else {
        return;
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema=panel_{}", std::process::id());
    let app = Store::open_with(&url, &common::fast_options()).unwrap();
    let existing = app
        .create("from the application", CreateOptions::new())
        .unwrap();
    let panel = start(Path::new(&url), &[], None);
    let (cookie, csrf) = panel.login();
    let (_, _, list) = panel.get("/keys", Some(&cookie));
    assert!(list.contains("from the application"));
    let id = existing.info.id;
    let (status, _) = panel.post(
        &format!("/keys/{id}/disable"),
        &cookie,
        &[],
        &[("csrf", &csrf)],
    );
    assert_eq!(status, 303);
    common::wait_until(
        "the application sees the key disabled",
        Duration::from_secs(30),
        || {
            let v = app.verify(existing.key.as_str(), common::ip("203.0.113.1"), None);
            Some(()).filter(|()| v == keyward::Denial::Disabled)
        },
    );
    panel.stop();
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("drop schema panel_{} cascade", std::process::id()))
        .unwrap();
}
