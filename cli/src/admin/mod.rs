//! `keyward admin`: the settings panel as a web page.
//!
//! The pages are HTML drawn on the server (maud), with one stylesheet and
//! one small script embedded in the binary; every mutation is a form POST
//! answered by a redirect. [`auth`] holds the login token, sessions, CSRF
//! tokens and the checks every request passes; [`keys`] the keys list and
//! create; [`key`] one key's Overview, Usage and Whitelist tabs and its
//! actions; [`outbox`] the Events and Plugins pages; [`view`] the layout
//! and formatting; [`chart`] the SVG usage chart.
//!
//! The store is opened with the actor `"admin panel"`, so every event of
//! a change made here says so; store calls run on tokio's blocking pool.

// A page that ends early returns its whole response (as handlers do).
#![allow(clippy::result_large_err)]

mod auth;
mod chart;
mod key;
mod keys;
mod outbox;
mod view;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use clap::Args;
use keyward::{KeyId, KeyInfo, Options, Store};

use crate::{Result, USAGE, failure};
use auth::Sessions;

/// Where the panel listens unless told otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:8700";

/// The actor recorded in the events of changes made from the panel.
pub(crate) const ACTOR: &str = "admin panel";

#[derive(Args)]
pub(crate) struct AdminArgs {
    /// Address and port to serve on (port 0 picks a free one).
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Serve over https with this certificate chain (PEM).
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// Allow plain http on an address other hosts can reach.
    #[arg(long)]
    insecure_remote: bool,
    /// Serve one account only: its keys, usage and events.
    #[arg(long, value_name = "ID")]
    owner: Option<String>,
    /// A session ends after this long without a request.
    #[arg(long, default_value = "12h", value_parser = crate::duration_arg, value_name = "DURATION")]
    session_idle: Duration,
}

/// What every handler shares.
pub(crate) struct App {
    pub store: Store,
    pub sessions: Sessions,
    /// `--owner`: the one account this panel serves.
    pub owner: Option<String>,
    pub tls: bool,
    /// The `Host` values a browser may use for this panel (loopback
    /// binds only: a rebound DNS name is refused).
    pub hosts: Option<Vec<String>>,
}

impl App {
    /// The key, if this panel may show it (an account's panel shows only
    /// that account's keys).
    pub(crate) fn visible(&self, info: &KeyInfo) -> bool {
        self.owner
            .as_deref()
            .is_none_or(|o| info.owner.as_deref() == Some(o))
    }
}

pub(crate) type Shared = Arc<App>;

/// `keyward admin`: serves the panel until SIGTERM or SIGINT.
pub(crate) fn admin_command(path: &Path, args: AdminArgs) -> Result<u8> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(auth::tls_config(cert, key)?),
        _ => None,
    };
    if !args.listen.ip().is_loopback() && tls.is_none() && !args.insecure_remote {
        return Err(failure(
            USAGE,
            format!(
                "--listen {}: other hosts can reach this address; serve it over https \
                 (--tls-cert and --tls-key) or pass --insecure-remote",
                args.listen
            ),
        ));
    }
    if let Some(owner) = &args.owner
        && (owner.is_empty() || owner.len() > keyward::MAX_OWNER_LEN)
    {
        return Err(crate::invalid(format!(
            "--owner: 1 to {} bytes",
            keyward::MAX_OWNER_LEN
        )));
    }
    let listener = std::net::TcpListener::bind(args.listen)
        .map_err(|e| failure(USAGE, format!("--listen {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| failure(USAGE, format!("--listen {}: {e}", args.listen)))?;
    let signals = crate::serve::block_stop_signals();
    let mut options = Options::default();
    options.actor = Some(ACTOR.to_string());
    let store = Store::open_with(path, &options)?;
    // Browsers do not keep cookies apart by port: a session cookie set by
    // http://127.0.0.1:8700 goes to every other server of 127.0.0.1 too,
    // whoever runs it. A plain loopback panel is served under a host name
    // of its own instead (`k-<random>.localhost`, which browsers resolve to
    // loopback), with a host-only cookie that no other server is sent.
    let authority = if addr.ip().is_loopback() && tls.is_none() {
        format!("k-{}.localhost:{}", auth::random_label(), addr.port())
    } else {
        addr.to_string()
    };
    let hosts = addr.ip().is_loopback().then(|| {
        if tls.is_none() {
            vec![authority.clone()]
        } else {
            vec![addr.to_string(), format!("localhost:{}", addr.port())]
        }
    });
    let sessions = Sessions::new(args.session_idle);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = http::Uri::builder()
        .scheme(scheme)
        .authority(authority.as_str())
        .path_and_query(format!("/?token={}", sessions.login_token()))
        .build()
        .map_err(|e| failure(9, e.to_string()))?;
    let app = Arc::new(App {
        store,
        sessions,
        owner: args.owner,
        tls: tls.is_some(),
        hosts,
    });
    // The URL is the first line on stdout; what the panel serves goes to stderr.
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{url}").and_then(|()| stdout.flush());
    }
    eprintln!(
        "keyward admin: serving {} on {scheme}://{authority}/ ({addr}){} (SIGTERM or Ctrl-C stops)",
        path.display(),
        app.owner
            .as_deref()
            .map(|o| format!(" for account {o}"))
            .unwrap_or_default(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| failure(9, e.to_string()))?;
    let served = runtime.block_on(serve(Arc::clone(&app), listener, tls, signals));
    runtime.shutdown_timeout(Duration::from_secs(5));
    served.map_err(|e| failure(9, format!("serving: {e}")))?;
    if let Some(app) = Arc::into_inner(app) {
        app.store.close()?;
    }
    eprintln!("keyward admin: stopped");
    Ok(0)
}

async fn serve(
    app: Shared,
    listener: std::net::TcpListener,
    tls: Option<rustls::ServerConfig>,
    signals: libc::sigset_t,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    // SIGTERM and SIGINT are blocked in every thread: one thread waits for them.
    std::thread::spawn(move || {
        crate::serve::wait_for_signal(&signals);
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let router = routes(app).into_make_service();
    match tls {
        Some(config) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
            let mut server = axum_server::from_tcp_rustls(listener, config)?.handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(HEADER_TIMEOUT));
            server.serve(router).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?.handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(HEADER_TIMEOUT));
            server.serve(router).await
        }
    }
}

/// A client that sends its headers slowly holds a connection at most this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Every route of the panel; [`auth::guard`] runs before each.
fn routes(app: Shared) -> Router {
    Router::new()
        .route("/", get(auth::login))
        .route("/logout", post(auth::logout))
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{id}", get(key::overview))
        .route("/keys/{id}/usage", get(key::usage))
        .route("/keys/{id}/whitelist", get(key::whitelist))
        .route(
            "/keys/{id}/regenerate",
            get(key::regenerate_confirm).post(key::regenerate),
        )
        .route(
            "/keys/{id}/delete",
            get(key::delete_confirm).post(key::delete),
        )
        .route("/keys/{id}/disable", post(key::disable))
        .route("/keys/{id}/enable", post(key::enable))
        .route("/keys/{id}/rename", post(key::rename))
        .route("/keys/{id}/expiry", post(key::expiry))
        .route("/keys/{id}/whitelist/toggle", post(key::whitelist_toggle))
        .route("/keys/{id}/whitelist/entries", post(key::whitelist_add))
        .route(
            "/keys/{id}/whitelist/entries/{entry}/delete",
            post(key::whitelist_remove),
        )
        .route("/events", get(outbox::events))
        .route("/plugins", get(outbox::plugins))
        .route("/plugins/{name}/retry", post(outbox::retry))
        .route("/assets/panel.css", get(view::stylesheet))
        .route("/assets/panel.js", get(view::script))
        .route("/favicon.ico", get(view::icon))
        .fallback(view::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            auth::guard,
        ))
        .with_state(app)
}

/// Runs a store call on the blocking pool (argon2 and storage block).
pub(crate) async fn blocking<T: Send + 'static>(
    app: &Shared,
    f: impl FnOnce(&App) -> T + Send + 'static,
) -> T {
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .expect("a store call panicked")
}

/// A key id from a path, or the page saying there is no such key.
pub(crate) fn parse_id(s: &str) -> std::result::Result<KeyId, axum::response::Response> {
    s.parse::<KeyId>().map_err(|_| view::not_found_page())
}
