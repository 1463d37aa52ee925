//! Plugin manifests: what a plugin is, what it hears, where it may call.

#![cfg_attr(not(feature = "plugins"), allow(dead_code))]

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The notifier API versions this host runs.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["0.1.0"];

/// Event kinds a plugin may subscribe to (`"*"` means all): every
/// [`EventKind`](crate::EventKind)'s name.
pub const EVENT_KINDS: &[&str] = crate::events::EventKind::NAMES;

/// A plugin's manifest, parsed from TOML:
///
/// ```toml
/// name = "crm-webhook"
/// version = "0.1.0"
/// api = "0.1.0"
/// events = ["key.regenerated", "key.deleted"]
/// allowed_hosts = ["http://127.0.0.1:8080"]
/// memory_limit_mb = 64     # optional
/// timeout_ms = 5000        # optional, per delivery, at most 10000
/// max_attempts = 8         # optional, before the dead-letter list
///
/// [config]
/// url = "http://127.0.0.1:8080/hooks/keyward"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Unique name in the store: `[a-z0-9][a-z0-9_-]{0,63}`.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The `keyward:notifier` API version it was built against.
    pub api: String,
    /// Event kinds delivered to it.
    pub events: Vec<String>,
    /// Origins (`scheme://host:port`) `host.http` may reach.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Linear memory cap, MiB (default 64).
    #[serde(default = "default_memory_mb")]
    pub memory_limit_mb: u32,
    /// Time limit per delivery, milliseconds (default 5000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Deliveries tried before an event goes to the dead-letter list (default 8).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Values the plugin reads with `host.config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

fn default_memory_mb() -> u32 {
    64
}

fn default_timeout_ms() -> u32 {
    5000
}

fn default_attempts() -> u32 {
    8
}

/// Scheme, host and port that `host.http` may reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is allowed) or, with a
    /// path, the origin of a URL (the `http` crate's URI parser). Returns
    /// the origin and the rest (path and query).
    pub(crate) fn split_url(url: &str) -> Result<(Origin, String), String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| format!("{url:?} is not an absolute http(s) URL"))?
            .to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("{url:?}: only http and https are allowed")),
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| format!("{url:?}: a host is required"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{url:?}: a host is required (no user info)"));
        }
        let origin = Origin {
            scheme,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(default_port),
        };
        let path = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let path = if path.is_empty() { "/" } else { path };
        Ok((origin, path.to_string()))
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl Manifest {
    /// Parses and checks a manifest.
    pub(crate) fn parse(text: &str) -> Result<Manifest, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| format!("manifest: {e}"))?;
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.as_bytes()[0].is_ascii_alphanumeric()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(format!(
                "manifest: name {:?} must match [a-z0-9][a-z0-9_-]{{0,63}}",
                self.name
            ));
        }
        if !SUPPORTED_API_VERSIONS.contains(&self.api.as_str()) {
            return Err(format!(
                "manifest: api version {:?} is not supported (this host runs {})",
                self.api,
                SUPPORTED_API_VERSIONS.join(", ")
            ));
        }
        if self.events.is_empty() {
            return Err("manifest: events must name at least one event kind (or \"*\")".into());
        }
        for e in &self.events {
            if e != "*" && !EVENT_KINDS.contains(&e.as_str()) {
                return Err(format!(
                    "manifest: unknown event kind {e:?} (known: {})",
                    EVENT_KINDS.join(", ")
                ));
            }
        }
        for h in &self.allowed_hosts {
            let (_, path) =
                Origin::split_url(h).map_err(|e| format!("manifest: allowed_hosts: {e}"))?;
            if path != "/" {
                return Err(format!(
                    "manifest: allowed_hosts entry {h:?} must be an origin (scheme://host:port), without a path"
                ));
            }
        }
        if !(1..=4096).contains(&self.memory_limit_mb) {
            return Err("manifest: memory_limit_mb must be 1 to 4096".into());
        }
        if !(10..=10_000).contains(&self.timeout_ms) {
            return Err("manifest: timeout_ms must be 10 to 10000".into());
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err("manifest: max_attempts must be 1 to 100".into());
        }
        Ok(())
    }

    /// Whether events of `kind` go to this plugin.
    pub(crate) fn subscribes(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == kind)
    }

    pub(crate) fn origins(&self) -> Vec<Origin> {
        self.allowed_hosts
            .iter()
            .filter_map(|h| Origin::split_url(h).ok().map(|(o, _)| o))
            .collect()
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "crm-webhook"
        version = "0.1.0"
        api = "0.1.0"
        events = ["key.regenerated", "key.deleted"]
        allowed_hosts = ["http://127.0.0.1:8080", "https://crm.example.com"]
        [config]
        url = "http://127.0.0.1:8080/hook"
    "#;

    #[test]
    fn a_good_manifest_parses_with_defaults() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(
            (m.memory_limit_mb, m.timeout_ms, m.max_attempts),
            (64, 5000, 8)
        );
        assert!(m.subscribes("key.deleted") && !m.subscribes("key.created"));
        assert_eq!(
            m.origins()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["http://127.0.0.1:8080", "https://crm.example.com:443"]
        );
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        for (bad, says) in [
            (
                GOOD.replace("0.1.0\"\n        events", "9.9.9\"\n        events"),
                "api version",
            ),
            (GOOD.replace("crm-webhook", "Bad Name"), "name"),
            (
                GOOD.replace("key.deleted", "key.exploded"),
                "unknown event kind",
            ),
            (
                GOOD.replace("http://127.0.0.1:8080\"", "ftp://x\""),
                "only http",
            ),
            (
                GOOD.replace("http://127.0.0.1:8080\"", "http://h/path\""),
                "origin",
            ),
            (format!("surprise = 1\n{GOOD}"), "unknown field"),
            ("not toml at all [".to_string(), "manifest"),
        ] {
            let e = Manifest::parse(&bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn urls_split_into_origin_and_path() {
        let (o, p) = Origin::split_url("http://LOCALHOST:8080/a/b?c=d").unwrap();
        assert_eq!(
            (o.to_string(), p.as_str()),
            ("http://localhost:8080".into(), "/a/b?c=d")
        );
        let (o, p) = Origin::split_url("http://[::1]:9000").unwrap();
        assert_eq!(
            (o.to_string(), p.as_str()),
            ("http://[::1]:9000".into(), "/")
        );
        assert!(Origin::split_url("http://user@host/").is_err());
        assert!(Origin::split_url("file:///etc/passwd").is_err());
    }
}
