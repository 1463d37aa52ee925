//! Plugin manifests: what a plugin is, what it hears, where it may call.

#![cfg_attr(not(feature = "plugins"), allow(dead_code))]

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The notifier API versions this host runs.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];

/// The signing scheme a manifest may ask for: [Standard
/// Webhooks](https://www.standardwebhooks.com/).
pub const STANDARD_WEBHOOKS: &str = "standard-webhooks";

/// The config entry holding the signing secrets: `whsec_` and base64,
/// several separated by spaces while a secret is rotated. The host keeps
/// it; the plugin's `host.config` never returns it.
pub const SIGNING_SECRET: &str = "signing_secret";

/// Event kinds a plugin may subscribe to (`"*"` means all): every
/// [`EventKind`](crate::EventKind)'s name.
pub const EVENT_KINDS: &[&str] = crate::events::EventKind::NAMES;

/// A plugin's manifest, parsed from TOML:
///
/// ```toml
/// name = "crm-webhook"
/// version = "0.1.0"
/// api = "0.2.0"
/// events = ["key.regenerated", "key.deleted"]
/// allowed_hosts = ["http://127.0.0.1:8080"]
/// memory_limit_mb = 64     # optional
/// timeout_ms = 5000        # optional, per delivery, at most 10000
/// max_attempts = 8         # optional, before the dead-letter list
/// signing = "standard-webhooks"  # optional: the host signs its requests
///
/// [config]
/// url = "http://127.0.0.1:8080/hooks/keyward"
/// signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// `"standard-webhooks"`: the host signs every request the plugin
    /// makes with the secrets of config entry `signing_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<String>,
    /// Values the plugin reads with `host.config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// Every field but the signing secrets, which show as `"…"`.
impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config: BTreeMap<&str, &str> = self
            .config
            .iter()
            .map(|(k, v)| {
                let v = if k == SIGNING_SECRET {
                    "…"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("Manifest")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("api", &self.api)
            .field("events", &self.events)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("memory_limit_mb", &self.memory_limit_mb)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_attempts", &self.max_attempts)
            .field("signing", &self.signing)
            .field("config", &config)
            .finish()
    }
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
        match (&self.signing, self.config.get(SIGNING_SECRET)) {
            (Some(scheme), _) if scheme != STANDARD_WEBHOOKS => Err(format!(
                "manifest: signing {scheme:?} is not supported (only {STANDARD_WEBHOOKS:?})"
            )),
            (Some(_), None) => Err(format!(
                "manifest: signing needs the secret in [config] {SIGNING_SECRET} = \"whsec_…\""
            )),
            (None, Some(_)) => Err(format!(
                "manifest: [config] {SIGNING_SECRET} is set but signing is not: add signing = {STANDARD_WEBHOOKS:?}"
            )),
            (Some(_), Some(_)) => self.signing_secrets().map(drop),
            (None, None) => Ok(()),
        }
    }

    /// The secrets requests are signed with (each in every signature
    /// header, so a receiver holding either verifies during a rotation),
    /// decoded; none when the manifest asks for no signing.
    pub(crate) fn signing_secrets(&self) -> Result<Vec<zeroize::Zeroizing<Vec<u8>>>, String> {
        use base64::Engine as _;
        if self.signing.is_none() {
            return Ok(Vec::new());
        }
        let text = self.config.get(SIGNING_SECRET).map_or("", String::as_str);
        let mut secrets = Vec::new();
        for (i, word) in text.split_ascii_whitespace().enumerate() {
            let n = i + 1;
            let b64 = word.strip_prefix("whsec_").ok_or_else(|| {
                format!("manifest: {SIGNING_SECRET}: secret {n} does not start with whsec_")
            })?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| {
                    format!("manifest: {SIGNING_SECRET}: secret {n} is not base64 after whsec_")
                })?;
            if !(24..=64).contains(&bytes.len()) {
                return Err(format!(
                    "manifest: {SIGNING_SECRET}: secret {n} is {} bytes; a secret is 24 to 64 random bytes",
                    bytes.len()
                ));
            }
            secrets.push(zeroize::Zeroizing::new(bytes));
        }
        match secrets.len() {
            0 => Err(format!("manifest: {SIGNING_SECRET} holds no secret")),
            1..=4 => Ok(secrets),
            n => Err(format!(
                "manifest: {SIGNING_SECRET} holds {n} secrets; at most 4 during a rotation"
            )),
        }
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
    fn signing_takes_whsec_secrets_and_hides_them_from_debug() {
        let a = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let b = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let signed = |secret: &str| {
            GOOD.replace(
                "[config]",
                &format!("signing = \"standard-webhooks\"\n[config]\nsigning_secret = {secret:?}"),
            )
        };
        let m = Manifest::parse(&signed(&format!("{a} {b}"))).unwrap();
        let secrets = m.signing_secrets().unwrap();
        assert_eq!(
            secrets.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [24, 32]
        );
        let debug = format!("{m:?}");
        assert!(
            !debug.contains("MfKQ9r8") && debug.contains("signing_secret"),
            "{debug}"
        );
        assert!(
            Manifest::parse(GOOD)
                .unwrap()
                .signing_secrets()
                .unwrap()
                .is_empty()
        );
        for (bad, says) in [
            (signed("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "whsec_"),
            (signed("whsec_!!!"), "base64"),
            (signed("whsec_AAAA"), "24 to 64"),
            (signed(""), "no secret"),
            (signed(&[a; 5].join(" ")), "at most 4"),
            (
                GOOD.replace("[config]", "signing = \"hmac\"\n[config]"),
                "not supported",
            ),
            (
                GOOD.replace("[config]", "signing = \"standard-webhooks\"\n[config]"),
                "needs the secret",
            ),
            (
                GOOD.replace("[config]", &format!("[config]\nsigning_secret = {a:?}")),
                "signing is not",
            ),
        ] {
            let e = Manifest::parse(&bad).unwrap_err();
            assert!(e.contains(says), "{e}");
            assert!(!e.contains("MfKQ9r8"), "an error quotes a secret: {e}");
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
