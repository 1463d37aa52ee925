//! A key's last verifications, one by one: what the Usage tab's "recent
//! requests" shows when a customer says their integration gets 401.
//!
//! The verify path keeps them in a ring per key, without allocating
//! ([`Held`]: names are copied into fixed buffers); a flush moves them
//! into the key's stored usage record ([`Stored`]), which keeps the
//! newest [`RECENT_PER_KEY`]. However many requests arrive, a key holds at most
//! [`RECENT_PER_KEY`] and the store at most [`HELD_MAX`] waiting for a flush.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Freshness, MAX_INTEGRATION_LEN, Outcome};
use crate::policy::MAX_SCOPE_LEN;
use crate::time::Timestamp;
use crate::verdict::Denial;

/// Verifications kept per key, the newest.
pub const RECENT_PER_KEY: usize = 50;
/// Verifications the whole store holds in memory waiting for a flush
/// (about 250 bytes each: some 5 MB); past it, a request's entry is not
/// kept (its counts in the usage record still are).
pub(crate) const HELD_MAX: usize = 20_000;

/// One verification of a key, newest first in
/// [`Store::recent_requests`](crate::Store::recent_requests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct RecentRequest {
    /// When it was verified.
    pub at: Timestamp,
    /// The client address (IPv4-mapped IPv6 shown as IPv4).
    pub ip: IpAddr,
    /// The integration it named, if any (cut to 128 bytes).
    pub integration: Option<String>,
    /// Admitted.
    pub allowed: bool,
    /// Why it was refused (a denial's name, e.g. `wrong_secret`), when it was.
    pub reason: Option<String>,
    /// It presented an older generation's secret (a rotated secret still in use).
    pub stale_secret: bool,
    /// The scope it asked for, if any.
    pub scope: Option<String>,
}

/// Text up to `N` bytes (under 255) held inline, or none.
#[derive(Clone, Copy)]
pub(crate) struct Text<const N: usize> {
    /// `u8::MAX`: none.
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Text<N> {
    const NONE: u8 = u8::MAX;

    /// `text` cut to `N` bytes at a character boundary.
    pub(crate) fn new(text: Option<&str>) -> Self {
        let cut = text.map(|s| {
            let mut end = s.len().min(N);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            &s[..end]
        });
        Self::fit(cut).expect("cut to fit")
    }

    /// `text` when it fits in `N` bytes.
    pub(crate) fn fit(text: Option<&str>) -> Option<Self> {
        let mut t = Text {
            len: Self::NONE,
            bytes: [0; N],
        };
        if let Some(s) = text {
            t.bytes.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
            t.len = u8::try_from(s.len()).ok().filter(|&n| n != Self::NONE)?;
        }
        Some(t)
    }

    /// Whether it holds `text`.
    pub(crate) fn is(&self, text: Option<&str>) -> bool {
        match text {
            None => self.len == Self::NONE,
            Some(s) => usize::from(self.len) == s.len() && self.bytes[..s.len()] == *s.as_bytes(),
        }
    }

    pub(crate) fn get(&self) -> Option<&str> {
        (self.len != Self::NONE).then(|| {
            std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("cut at a boundary")
        })
    }
}

/// One verification as the verify path keeps it: copied, not allocated.
#[derive(Clone, Copy)]
pub(crate) struct Held {
    at: i64,
    ip: IpAddr,
    outcome: Outcome,
    stale: bool,
    integration: Text<MAX_INTEGRATION_LEN>,
    scope: Text<MAX_SCOPE_LEN>,
}

impl Held {
    pub(crate) fn new(
        at: i64,
        ip: IpAddr,
        integration: Option<&str>,
        outcome: Outcome,
        freshness: Freshness,
        scope: Option<&str>,
    ) -> Self {
        Held {
            at,
            ip,
            outcome,
            stale: freshness == Freshness::Stale,
            integration: Text::new(integration),
            scope: Text::new(scope),
        }
    }

    pub(crate) fn stored(&self) -> Stored {
        Stored {
            t: self.at,
            ip: self.ip,
            i: self.integration.get().map(Box::from),
            d: match self.outcome {
                Outcome::Allowed => None,
                Outcome::Denied(d) => Some(d.code()),
            },
            s: self.stale,
            sc: self.scope.get().map(Box::from),
        }
    }
}

fn denial(code: u32) -> Option<Denial> {
    Denial::ALL.iter().copied().find(|d| d.code() == code)
}

/// One verification in a stored usage record (short names: a record
/// holds up to [`RECENT_PER_KEY`] of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stored {
    t: i64,
    ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<Box<str>>,
    /// The denial's number; none when admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    s: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sc: Option<Box<str>>,
}

impl Stored {
    pub(crate) fn at(&self) -> i64 {
        self.t
    }

    /// Whether a record written by another process holds what this one writes.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self
            .i
            .as_ref()
            .is_some_and(|i| i.len() > MAX_INTEGRATION_LEN)
            || self.sc.as_ref().is_some_and(|s| s.len() > MAX_SCOPE_LEN)
        {
            return Err("a recent request's names are over their lengths".into());
        }
        if let Some(code) = self.d
            && denial(code).is_none()
        {
            return Err(format!("a recent request's denial {code} is unknown"));
        }
        Ok(())
    }

    pub(crate) fn public(&self) -> RecentRequest {
        RecentRequest {
            at: Timestamp::from_unix_millis(self.t),
            ip: self.ip,
            integration: self.i.as_deref().map(str::to_string),
            allowed: self.d.is_none(),
            reason: self
                .d
                .map(|c| denial(c).map_or("unknown", |d| d.as_str()).to_string()),
            stale_secret: self.s,
            scope: self.sc.as_deref().map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the store's bound of held entries costs in memory.
    #[test]
    fn a_held_request_is_about_250_bytes() {
        let size = std::mem::size_of::<Held>();
        assert!((200..=256).contains(&size), "{size} bytes");
    }

    #[test]
    fn text_is_cut_at_a_character_boundary_and_none_is_kept_apart() {
        let t = Text::<4>::new(Some("abé€"));
        assert_eq!(t.get(), Some("abé"));
        assert_eq!(Text::<4>::new(Some("")).get(), Some(""));
        assert_eq!(Text::<4>::new(None).get(), None);
        assert!(Text::<4>::fit(Some("abcde")).is_none(), "fit does not cut");
        let held = Text::<4>::fit(Some("abcd")).unwrap();
        assert!(held.is(Some("abcd")) && !held.is(Some("abc")) && !held.is(None));
        assert!(Text::<4>::fit(None).unwrap().is(None));
        assert!(!Text::<4>::fit(Some("")).unwrap().is(None));
    }

    #[test]
    fn a_held_request_reads_back_as_it_was() {
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let held = Held::new(
            1_000,
            ip,
            Some("zapier"),
            Outcome::Denied(Denial::WrongSecret),
            Freshness::Unknown,
            Some("orders:read"),
        );
        let stored = held.stored();
        stored.check().unwrap();
        let r = stored.public();
        assert_eq!(
            (
                r.ip,
                r.integration.as_deref(),
                r.allowed,
                r.reason.as_deref(),
                r.scope.as_deref()
            ),
            (
                ip,
                Some("zapier"),
                false,
                Some("wrong_secret"),
                Some("orders:read")
            )
        );
        let ok = Held::new(2_000, ip, None, Outcome::Allowed, Freshness::Stale, None).stored();
        let json = serde_json::to_string(&ok).unwrap();
        assert_eq!(json, r#"{"t":2000,"ip":"203.0.113.9","s":true}"#);
        assert!(ok.public().allowed && ok.public().stale_secret);
    }
}
