//! The HTTP client behind `host.http`: ureq (HTTP/1.1, TLS through rustls),
//! performed by the host so that a plugin never holds a socket.
//!
//! What a call may reach, checked by the host:
//! - its origin must be one the manifest allows; `http` only where the
//!   manifest names an `http://` origin;
//! - only public addresses are connected to (not loopback, link-local,
//!   private, unspecified, multicast, nor a mapped form of these) unless an
//!   operator allowed private networks for the plugin at install time,
//!   whether the allowed host is a name (resolved here: the address checked
//!   is the address connected to), an IP literal (that address), or
//!   `localhost` (loopback, whatever DNS says);
//! - a URL holding a control character, a space or a non-ASCII byte is
//!   refused, as are headers that frame the request (`Host`,
//!   `Content-Length`, ...); ureq writes the request, not keyward;
//! - one deadline covers resolving, connecting, TLS, sending and the whole
//!   response; no redirect is followed; bodies are capped.
//!
//! Trust roots are the platform's, read as rustls-native-certs reads them,
//! so `SSL_CERT_FILE` / `SSL_CERT_DIR` can name a private CA. An egress proxy
//! from `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` is honoured: the allowlist
//! and the address policy of an IP literal or `localhost` apply to the
//! target origin here, but a name the proxy resolves is the proxy's to
//! check (it must refuse private addresses itself).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use ureq::http::{self, Uri};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::manifest::Origin;

/// Addresses kept per resolved name (ureq's own limit).
const MAX_ADDRS: usize = 16;

/// Size limits on one call (largest request body, largest response body,
/// most request headers).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    pub request_body: usize,
    pub response_body: usize,
    pub headers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            request_body: 1 << 20,
            response_body: 1 << 20,
            headers: 64,
        }
    }
}

/// How the plugin host resolves the host names that plugins call: the
/// system's resolver by default ([`SystemResolver`]). An application (or a
/// test) may give its own in [`Options`](crate::Options); the address
/// policy applies to whatever it returns.
pub trait HostResolver: Send + Sync + fmt::Debug {
    /// The addresses of `host` (a DNS name, never an IP literal) at `port`.
    ///
    /// # Errors
    /// When the name does not resolve.
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The operating system's resolver (`getaddrinfo`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// Everything a plugin's calls may reach and how: its allowed origins,
/// whether an operator allowed private networks, the resolver.
#[derive(Debug, Clone)]
pub(crate) struct Egress {
    pub origins: Vec<Origin>,
    pub allow_private_network: bool,
    pub resolver: Arc<dyn HostResolver>,
}

pub(crate) struct HttpRequest<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Headers that frame or route the request: ureq sets them, a plugin may not.
const FRAMING_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "expect",
];

/// The platform's trust roots, read once per process.
fn platform_roots() -> Arc<Vec<Certificate<'static>>> {
    static ROOTS: OnceLock<Arc<Vec<Certificate<'static>>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            Arc::new(
                found
                    .certs
                    .iter()
                    .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                    .collect(),
            )
        })
        .clone()
}

/// Performs `req` if egress allows it, finishing by `deadline`; every
/// refusal and failure is an `Err` with a reason the plugin (and the plugin
/// log) can read.
pub(crate) fn perform(
    req: &HttpRequest<'_>,
    egress: &Egress,
    deadline: Instant,
    limits: &HttpLimits,
) -> Result<HttpResponse, String> {
    if req.url.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(format!(
            "refused: the URL {:?} holds a control character, a space or a non-ASCII byte",
            req.url.escape_debug().to_string()
        ));
    }
    let (origin, _) = Origin::split_url(req.url)?;
    if !egress.origins.contains(&origin) {
        return Err(format!("{origin} is not in this plugin's allowed_hosts"));
    }
    // Checked here, not only when a name is resolved: an address written
    // out is connected to as it is, and through a proxy the resolver never
    // sees the target.
    if !egress.allow_private_network
        && let Some(ip) = literal_address(&origin.host).filter(|ip| !is_public(*ip))
    {
        return Err(format!(
            "refused: {} is {ip}, not a public address; an operator can allow \
             private networks with --allow-private-network",
            origin.host
        ));
    }
    let method = http::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("bad method {:?}", req.method))?;
    if req.body.len() > limits.request_body {
        return Err(format!("request body over {} bytes", limits.request_body));
    }
    if req.headers.len() > limits.headers {
        return Err(format!("more than {} request headers", limits.headers));
    }
    let mut builder = http::Request::builder().method(method).uri(req.url);
    for (name, value) in req.headers {
        if FRAMING_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!("refused: a plugin may not set the {name} header"));
        }
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("bad request header name {name:?}"))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| format!("bad value for request header {name}"))?;
        builder = builder.header(name, value);
    }
    let request = builder
        .body(req.body.to_vec())
        .map_err(|e| format!("bad request: {e}"))?;

    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err("the delivery's time limit is spent".into());
    }
    let agent = agent(egress, &origin, deadline, remaining);
    let mut response = agent
        .run(request)
        .map_err(|e| format!("{origin}: {}", describe(&e)))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(limits.response_body as u64)
        .read_to_vec()
        .map_err(|e| format!("{origin}: reading the response: {}", describe(&e)))?;
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// An agent for one call: the whole call within `remaining`, no redirects,
/// the platform's roots, the address policy in its resolver.
fn agent(egress: &Egress, origin: &Origin, deadline: Instant, remaining: Duration) -> ureq::Agent {
    let proxy = ureq::Proxy::try_from_env();
    let proxy_host = proxy
        .as_ref()
        .map(|p| (p.host().to_ascii_lowercase(), p.port()));
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(remaining))
        .max_redirects(0)
        .max_redirects_will_error(false)
        .http_status_as_error(false)
        .https_only(origin.scheme == "https")
        .save_redirect_history(false)
        .max_idle_connections(0)
        .proxy(proxy)
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(platform_roots()))
                .build(),
        )
        .build();
    let resolver = PolicyResolver {
        allow_private_network: egress.allow_private_network,
        resolver: Arc::clone(&egress.resolver),
        proxy: proxy_host,
        deadline,
    };
    ureq::Agent::with_parts(config, DefaultConnector::new(), resolver)
}

/// What went wrong, in words a plugin author can act on.
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out (the delivery's time limit)".into(),
        ureq::Error::Rustls(t) => format!("TLS failed: {t}"),
        ureq::Error::Io(io) => match io.get_ref() {
            Some(inner) => inner.to_string(),
            None => format!("connect failed: {io}"),
        },
        ureq::Error::ConnectionFailed => "connect failed".into(),
        ureq::Error::HostNotFound => "the host name does not resolve".into(),
        ureq::Error::BodyExceedsLimit(n) => format!("response body over {n} bytes"),
        other => other.to_string(),
    }
}

/// Resolves a call's host under the address policy.
#[derive(Debug)]
struct PolicyResolver {
    allow_private_network: bool,
    resolver: Arc<dyn HostResolver>,
    /// The egress proxy, if any: the operator's choice, resolved as is.
    proxy: Option<(String, u16)>,
    deadline: Instant,
}

impl Resolver for PolicyResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let authority = uri.authority().ok_or(ureq::Error::HostNotFound)?;
        let default_port = if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let mut out = self.empty();
        // An IP literal in the allowlist means that address.
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, port));
            return Ok(out);
        }
        // `localhost` means this machine's loopback, whatever DNS says.
        if host.eq_ignore_ascii_case("localhost") {
            out.push(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port));
            out.push(SocketAddr::new(
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                port,
            ));
            return Ok(out);
        }
        let found = resolve_by(&self.resolver, host, port, self.deadline)?;
        let is_proxy = self
            .proxy
            .as_ref()
            .is_some_and(|(h, p)| h.eq_ignore_ascii_case(host) && *p == port);
        let mut refused = Vec::new();
        for addr in found {
            if is_proxy || self.allow_private_network || is_public(addr.ip()) {
                if out.len() < MAX_ADDRS {
                    out.push(addr);
                }
            } else {
                refused.push(addr.ip().to_string());
            }
        }
        if out.is_empty() {
            let why = if refused.is_empty() {
                format!("{host} resolves to no address")
            } else {
                format!(
                    "refused: {host} resolves only to non-public addresses ({}); \
                     an operator can allow them with --allow-private-network",
                    refused.join(", ")
                )
            };
            return Err(ureq::Error::Io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                why,
            )));
        }
        Ok(out)
    }
}

/// The address an origin's host names without resolving: an IP literal,
/// or `localhost` (loopback).
fn literal_address(host: &str) -> Option<IpAddr> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::from([127, 0, 0, 1]));
    }
    bare.parse().ok()
}

/// Resolves on a helper thread so that a slow resolver cannot outlast the deadline.
fn resolve_by(
    resolver: &Arc<dyn HostResolver>,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, ureq::Error> {
    let (tx, rx) = mpsc::sync_channel(1);
    let (resolver, name) = (Arc::clone(resolver), host.to_string());
    std::thread::Builder::new()
        .name("keyward-resolve".into())
        .spawn(move || {
            let _ = tx.send(resolver.resolve(&name, port));
        })
        .map_err(ureq::Error::Io)?;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(ureq::Error::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot resolve {host}: {e}"),
        ))),
        Err(_) => Err(ureq::Error::Timeout(ureq::Timeout::Resolve)),
    }
}

/// Whether `ip` is an address on the public internet: not loopback,
/// link-local, private, shared, unspecified, multicast, broadcast or
/// reserved, nor any of these in an IPv4-mapped, -compatible or NAT64 form.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            if v6.is_unspecified() || v6.is_loopback() {
                return false;
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) and IPv4-compatible (::a.b.c.d) carry an IPv4 address.
            if (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4]) || s[..6] == [0; 6] {
                let o = v6.octets();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(
                    o[12], o[13], o[14], o[15],
                )));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] & 0xfe00) == 0xfc00) // unique local
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver that must not be asked.
    #[derive(Debug)]
    struct NoResolver;

    impl HostResolver for NoResolver {
        fn resolve(&self, host: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
            panic!("{host} was resolved");
        }
    }

    #[test]
    fn literal_and_localhost_hosts_need_the_operators_flag_too() {
        for origin in [
            "http://127.0.0.1:9",
            "http://localhost:9",
            "http://LocalHost:9",
            "http://169.254.169.254",
            "http://10.0.0.1:9",
            "http://[::1]:9",
            "http://[fe80::1]:9",
            "http://[::ffff:127.0.0.1]:9",
        ] {
            let egress = Egress {
                origins: vec![Origin::split_url(origin).unwrap().0],
                allow_private_network: false,
                resolver: Arc::new(NoResolver),
            };
            let req = HttpRequest {
                method: "POST",
                url: &format!("{origin}/hook"),
                headers: &[],
                body: b"{}",
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            let e = perform(&req, &egress, deadline, &HttpLimits::default()).unwrap_err();
            assert!(
                e.starts_with("refused") && e.contains("--allow-private-network"),
                "{origin}: {e}"
            );
        }
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
