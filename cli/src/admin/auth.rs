//! Who may use the panel, and the checks every request passes.
//!
//! - **Login**: `keyward admin` prints a URL carrying a one-time token; the
//!   first request with it gets a session cookie (HttpOnly,
//!   SameSite=Strict, Secure and `__Host-` under TLS) and a redirect that
//!   drops the token from the address bar. The token works once.
//! - **Sessions** live in this process's memory, end after
//!   `--session-idle` without a request or on *Log out*, and are bounded
//!   in number (the oldest goes first).
//! - **Every request** ([`guard`]): the `Host` of a loopback panel is its
//!   own name (`k-<random>.localhost`: a cookie set for the bare address
//!   would go to every other server on it; a rebound DNS name is refused
//!   too), an `Origin` or
//!   `Sec-Fetch-Site` from another site is refused, pages need a session,
//!   and every POST carries the session's CSRF token. Every response gets
//!   the security headers.
//! - **Flash**: what one page tells the next after a POST's redirect (a
//!   notice, a field's error, or the plaintext of a key just created),
//!   taken by the first page that shows it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use keyward::{Clock, SystemClock};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::Shared;
use super::view::{self, Ctx, Flash};
use crate::{Failure, USAGE, failure};

/// Sessions held at once; a new login past this ends the oldest.
const MAX_SESSIONS: usize = 64;

/// Largest form body a POST may carry.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The policy of every page: the panel's own script and stylesheet, no
/// inline script or style, no frames, forms posting only to the panel.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A random token: 32 bytes from the operating system, as hex.
fn random_token() -> String {
    use rand::TryRng;
    let mut bytes = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system provides randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A DNS label nobody can guess: 20 random lowercase letters and digits
/// (over 100 bits).
pub(crate) fn random_label() -> String {
    use rand::TryRng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 20];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system provides randomness");
    // 252 is a multiple of 36: bytes at or above it are drawn again.
    bytes
        .iter()
        .map(|&b| {
            let mut b = b;
            while b >= 252 {
                let mut one = [0u8; 1];
                rand::rngs::SysRng
                    .try_fill_bytes(&mut one)
                    .expect("the operating system provides randomness");
                b = one[0];
            }
            char::from(ALPHABET[usize::from(b % 36)])
        })
        .collect()
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

struct Session {
    csrf: String,
    /// The session clock's monotonic time of the latest request.
    last_seen: Duration,
    flash: Flash,
}

/// The login token and every session of this panel.
pub(crate) struct Sessions {
    login: Mutex<Option<String>>,
    map: Mutex<HashMap<String, Session>>,
    idle: Duration,
    clock: Arc<dyn Clock>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sessions {
    pub(crate) fn new(idle: Duration) -> Self {
        Self::with_clock(idle, Arc::new(SystemClock))
    }

    pub(crate) fn with_clock(idle: Duration, clock: Arc<dyn Clock>) -> Self {
        Sessions {
            login: Mutex::new(Some(random_token())),
            map: Mutex::new(HashMap::new()),
            idle,
            clock,
        }
    }

    /// The one-time login token (until it is used).
    pub(crate) fn login_token(&self) -> String {
        locked(&self.login).clone().unwrap_or_default()
    }

    /// Exchanges the login token for a new session id; `None` when the
    /// token is wrong or was used.
    pub(crate) fn log_in(&self, token: &str) -> Option<String> {
        let mut login = locked(&self.login);
        let valid = login.as_deref().is_some_and(|t| same(t, token));
        if !valid {
            return None;
        }
        *login = None;
        drop(login);
        let now = self.clock.monotonic();
        let mut map = locked(&self.map);
        map.retain(|_, s| now.saturating_sub(s.last_seen) < self.idle);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone())
        {
            map.remove(&oldest);
        }
        let id = random_token();
        map.insert(
            id.clone(),
            Session {
                csrf: random_token(),
                last_seen: now,
                flash: Flash::default(),
            },
        );
        Some(id)
    }

    /// The CSRF token of a live session, which this request keeps alive;
    /// `None` when there is no such session or it has been idle too long.
    pub(crate) fn touch(&self, id: &str) -> Option<String> {
        let now = self.clock.monotonic();
        let mut map = locked(&self.map);
        let live = map
            .get(id)
            .is_some_and(|s| now.saturating_sub(s.last_seen) < self.idle);
        if !live {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.last_seen = now;
        Some(s.csrf.clone())
    }

    pub(crate) fn log_out(&self, id: &str) {
        locked(&self.map).remove(id);
    }

    pub(crate) fn set_flash(&self, id: &str, flash: Flash) {
        if let Some(s) = locked(&self.map).get_mut(id) {
            s.flash = flash;
        }
    }

    pub(crate) fn take_flash(&self, id: &str) -> Flash {
        locked(&self.map)
            .get_mut(id)
            .map(|s| std::mem::take(&mut s.flash))
            .unwrap_or_default()
    }
}

fn cookie_name(app: &Shared) -> &'static str {
    if app.tls {
        "__Host-keyward_session"
    } else {
        "keyward_session"
    }
}

fn session_cookie(app: &Shared, headers: &HeaderMap) -> Option<String> {
    let name = cookie_name(app);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(std::result::Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

fn set_cookie(app: &Shared, value: &str, remove: bool) -> HeaderValue {
    let mut c = Cookie::build((cookie_name(app), value.to_string()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(app.tls)
        .build();
    if remove {
        c.make_removal();
    }
    HeaderValue::from_str(&c.to_string()).expect("a cookie is a header value")
}

/// Whether `Origin` (when sent) is this panel itself: same scheme, same
/// host and port as the request's `Host`.
fn same_origin(app: &Shared, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Ok(origin) = origin.to_str().unwrap_or("").parse::<http::Uri>() else {
        return false;
    };
    let scheme = if app.tls { "https" } else { "http" };
    let (Some(s), Some(a)) = (origin.scheme_str(), origin.authority()) else {
        return false;
    };
    let Ok(host) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    s.eq_ignore_ascii_case(scheme) && *a == host
}

fn host_allowed(app: &Shared, headers: &HeaderMap) -> bool {
    let Some(hosts) = &app.hosts else { return true };
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| hosts.iter().any(|ok| ok.eq_ignore_ascii_case(h)))
}

fn add_security_headers(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: with it, browsers send `Origin: null` on form posts.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// Runs before every route: see the module docs.
pub(crate) async fn guard(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let mut response = check(&app, request, next).await;
    add_security_headers(&mut response);
    response
}

async fn check(app: &Shared, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    if !host_allowed(app, headers) {
        return view::refused(
            StatusCode::MISDIRECTED_REQUEST,
            "This panel is not served under that host name.",
        );
    }
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site" || v.as_bytes() == b"same-site");
    if cross_site || !same_origin(app, headers) {
        return view::refused(
            StatusCode::FORBIDDEN,
            "Requests from other sites are refused.",
        );
    }
    let path = request.uri().path();
    if path.starts_with("/assets/")
        || path == "/favicon.ico"
        || (path == "/" && request.method() == Method::GET)
    {
        return next.run(request).await;
    }
    let Some(session) = session_cookie(app, request.headers()) else {
        return view::refused(StatusCode::UNAUTHORIZED, view::LOGIN_NEEDED);
    };
    let Some(csrf) = app.sessions.touch(&session) else {
        return view::refused(StatusCode::UNAUTHORIZED, view::LOGIN_NEEDED);
    };
    if request.method() == Method::POST {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return view::refused(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
        };
        let sent = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        if !sent.is_some_and(|t| same(&t, &csrf)) {
            return view::refused(
                StatusCode::FORBIDDEN,
                "The form's security token is missing or stale: reload the page and try again.",
            );
        }
        request = Request::from_parts(parts, Body::from(bytes));
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        return view::refused(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.");
    }
    request.extensions_mut().insert(Ctx { session, csrf });
    next.run(request).await
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    token: Option<String>,
}

/// `GET /?token=…`: the login; `GET /` with a session: the keys page.
pub(crate) async fn login(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if let Some(token) = q.token {
        let Some(session) = app.sessions.log_in(&token) else {
            return view::refused(
                StatusCode::UNAUTHORIZED,
                "This login link was already used or is wrong. Start `keyward admin` again for a new one.",
            );
        };
        let mut response = Redirect::to("/keys").into_response();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, set_cookie(&app, &session, false));
        return response;
    }
    match session_cookie(&app, &headers) {
        Some(s) if app.sessions.touch(&s).is_some() => Redirect::to("/keys").into_response(),
        _ => view::refused(StatusCode::UNAUTHORIZED, view::LOGIN_NEEDED),
    }
}

/// `POST /logout`: ends the session.
pub(crate) async fn logout(State(app): State<Shared>, ctx: Ctx) -> Response {
    app.sessions.log_out(&ctx.session);
    let mut response = Redirect::to("/").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&app, "", true));
    response
}

/// The server side of `--tls-cert`/`--tls-key`.
pub(crate) fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, Failure> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad =
        |what: &Path, e: &dyn std::fmt::Display| failure(USAGE, format!("{}: {e}", what.display()));
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    if chain.is_empty() {
        return Err(bad(cert, &"no certificate in the file"));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(cert, &e))?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .map_err(|e| bad(key, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward::ManualClock;

    #[test]
    fn the_login_token_works_once() {
        let s = Sessions::new(Duration::from_secs(60));
        let token = s.login_token();
        assert!(s.log_in("wrong").is_none());
        let id = s.log_in(&token).expect("first use");
        assert!(s.touch(&id).is_some());
        assert!(s.log_in(&token).is_none(), "second use");
    }

    #[test]
    fn a_session_ends_after_idle_time_and_each_request_extends_it() {
        let clock = Arc::new(ManualClock::new(keyward::Timestamp::from_unix_millis(0)));
        let s = Sessions::with_clock(Duration::from_secs(60), clock.clone());
        let id = s.log_in(&s.login_token()).unwrap();
        clock.advance(Duration::from_secs(50));
        assert!(s.touch(&id).is_some(), "50 s idle");
        clock.advance(Duration::from_secs(50));
        assert!(s.touch(&id).is_some(), "50 s after the last request");
        clock.advance(Duration::from_secs(60));
        assert!(s.touch(&id).is_none(), "60 s idle: ended");
        assert!(s.touch(&id).is_none());
    }

    #[test]
    fn logging_out_ends_the_session_and_a_flash_is_shown_once() {
        let s = Sessions::new(Duration::from_secs(60));
        let id = s.log_in(&s.login_token()).unwrap();
        s.set_flash(
            &id,
            Flash {
                notice: Some("done".into()),
                ..Flash::default()
            },
        );
        assert_eq!(s.take_flash(&id).notice.as_deref(), Some("done"));
        assert!(s.take_flash(&id).notice.is_none());
        s.log_out(&id);
        assert!(s.touch(&id).is_none());
    }
}
