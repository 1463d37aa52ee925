//! The usage record of one key: the stored form and the pending delta.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::recent::{RECENT_PER_KEY, Stored};
use super::{
    Freshness, HOUR_MS, HourlyUsage, IntegrationUsage, IpUsage, LastUse, MAX_INTEGRATION_LEN,
    Outcome, Usage, UsageLimits, UsageTotals,
};
use crate::backend::StorageError;
use crate::key::KeyId;
use crate::time::Timestamp;
use crate::verdict::Denial;

/// Client IPs remembered per integration.
const IPS_PER_INTEGRATION: usize = 16;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IpAgg {
    first: i64,
    last: i64,
    allowed: u64,
    denied: u64,
    integration: Option<Box<str>>,
    stale: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IntegrationAgg {
    first: i64,
    last: i64,
    count: u64,
    denied: u64,
    ips: Vec<IpAddr>,
    stale: bool,
}

/// Usage of one key: the stored record, or a pending delta not yet flushed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct UsageAgg {
    #[serde(default)]
    v: u32,
    totals: UsageTotals,
    last_used: Option<(i64, IpAddr)>,
    ips: HashMap<IpAddr, IpAgg>,
    integrations: HashMap<Box<str>, IntegrationAgg>,
    /// hour number (ms / 3 600 000) → (allowed, denied)
    hourly: BTreeMap<i64, (u64, u64)>,
    /// hour number → of its denied, those rate-limited or out of quota
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    limited: BTreeMap<i64, u64>,
    /// The key's last verifications, oldest first, at most
    /// [`RECENT_PER_KEY`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) recent: Vec<Stored>,
}

pub(crate) fn clip(name: &str) -> &str {
    if name.len() <= MAX_INTEGRATION_LEN {
        return name;
    }
    let mut end = MAX_INTEGRATION_LEN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// An integration's name as usage keeps it: clipped, none when empty.
pub(crate) fn integration_name(integration: Option<&str>) -> Option<&str> {
    integration.map(clip).filter(|s| !s.is_empty())
}

fn touch_ip(ips: &mut Vec<IpAddr>, ip: IpAddr) {
    if let Some(pos) = ips.iter().position(|x| *x == ip) {
        ips.remove(pos);
    }
    ips.insert(0, ip);
    ips.truncate(IPS_PER_INTEGRATION);
}

/// Requests of one key in one hour from one client address (and one
/// integration, kept beside it), not yet added into the rows: a client
/// calling again only counts here, and [`UsageAgg::fold`] adds the run
/// as recording each request would have.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    hour: i64,
    ip: IpAddr,
    /// When its first request came, and its latest.
    first: i64,
    last: i64,
    /// The latest allowed request.
    last_allowed: Option<i64>,
    allowed: u64,
    denied: u64,
    /// Of the denied, those rate-limited or out of quota.
    limited: u64,
    /// Whether the last request whose secret was compared had an old one.
    stale: Option<bool>,
}

impl Run {
    /// A run of one request, from `ip` at `now`.
    pub(crate) fn first(now: i64, ip: IpAddr, outcome: Outcome, freshness: Freshness) -> Self {
        let mut run = Run {
            hour: now.div_euclid(HOUR_MS),
            ip,
            first: now,
            last: now,
            last_allowed: None,
            allowed: 0,
            denied: 0,
            limited: 0,
            stale: None,
        };
        run.add(now, outcome, freshness);
        run
    }

    /// Whether a request at `now` from `ip` belongs to this run.
    pub(crate) fn holds(&self, now: i64, ip: IpAddr) -> bool {
        self.hour == now.div_euclid(HOUR_MS) && self.ip == ip
    }

    pub(crate) fn add(&mut self, now: i64, outcome: Outcome, freshness: Freshness) {
        self.last = self.last.max(now);
        match outcome {
            Outcome::Allowed => {
                self.allowed += 1;
                self.last_allowed = Some(self.last_allowed.map_or(now, |t| t.max(now)));
            }
            Outcome::Denied(d) => {
                self.denied += 1;
                if matches!(d, Denial::RateLimited { .. } | Denial::QuotaExhausted) {
                    self.limited += 1;
                }
            }
        }
        if freshness != Freshness::Unknown {
            self.stale = Some(freshness == Freshness::Stale);
        }
    }
}

impl UsageAgg {
    const VERSION: u32 = 1;

    /// One request, added into the rows at once (the log keeps runs of
    /// them where it can).
    pub(crate) fn record(
        &mut self,
        now: i64,
        ip: IpAddr,
        integration: Option<&str>,
        outcome: Outcome,
        freshness: Freshness,
    ) {
        self.count(outcome);
        let run = Run::first(now, ip, outcome, freshness);
        self.fold(&run, integration_name(integration));
    }

    /// Counts one request in the totals (the rest of it goes in a [`Run`]).
    pub(crate) fn count(&mut self, outcome: Outcome) {
        self.totals.count(outcome);
    }

    /// Adds a run of requests from `integration` (clipped, not empty)
    /// into the rows, as recording each of them would have.
    pub(crate) fn fold(&mut self, run: &Run, integration: Option<&str>) {
        if let Some(t) = run.last_allowed
            && self.last_used.is_none_or(|(u, _)| u <= t)
        {
            self.last_used = Some((t, run.ip));
        }
        let hour = self.hourly.entry(run.hour).or_default();
        hour.0 += run.allowed;
        hour.1 += run.denied;
        if run.limited > 0 {
            *self.limited.entry(run.hour).or_default() += run.limited;
        }

        let row = self.ips.entry(run.ip).or_insert_with(|| IpAgg {
            first: run.first,
            ..IpAgg::default()
        });
        row.last = row.last.max(run.last);
        row.allowed += run.allowed;
        row.denied += run.denied;
        if row.integration.as_deref() != integration {
            row.integration = integration.map(Box::from);
        }
        if let Some(stale) = run.stale {
            row.stale = stale;
        }

        if let Some(name) = integration {
            let row = match self.integrations.get_mut(name) {
                Some(row) => row,
                None => {
                    self.integrations
                        .entry(Box::from(name))
                        .or_insert_with(|| IntegrationAgg {
                            first: run.first,
                            ..IntegrationAgg::default()
                        })
                }
            };
            row.last = row.last.max(run.last);
            row.count += run.allowed + run.denied;
            row.denied += run.denied;
            if row.ips.first() != Some(&run.ip) {
                touch_ip(&mut row.ips, run.ip);
            }
            if let Some(stale) = run.stale {
                row.stale = stale;
            }
        }
    }

    /// Adds `newer` (a later delta) into `self`.
    pub(crate) fn absorb(&mut self, newer: &UsageAgg) {
        self.totals.add(&newer.totals);
        if let Some((t, ip)) = newer.last_used
            && self.last_used.is_none_or(|(mine, _)| mine <= t)
        {
            self.last_used = Some((t, ip));
        }
        for (h, (a, d)) in &newer.hourly {
            let slot = self.hourly.entry(*h).or_default();
            slot.0 += a;
            slot.1 += d;
        }
        for (h, n) in &newer.limited {
            *self.limited.entry(*h).or_default() += n;
        }
        for (ip, n) in &newer.ips {
            match self.ips.get_mut(ip) {
                None => {
                    self.ips.insert(*ip, n.clone());
                }
                Some(o) => {
                    o.first = o.first.min(n.first);
                    o.allowed += n.allowed;
                    o.denied += n.denied;
                    if n.last >= o.last {
                        o.last = n.last;
                        o.integration.clone_from(&n.integration);
                        o.stale = n.stale;
                    }
                }
            }
        }
        self.add_recent(newer.recent.iter().cloned());
        for (name, n) in &newer.integrations {
            match self.integrations.get_mut(name) {
                None => {
                    self.integrations.insert(name.clone(), n.clone());
                }
                Some(o) => {
                    o.first = o.first.min(n.first);
                    o.count += n.count;
                    o.denied += n.denied;
                    for ip in n.ips.iter().rev() {
                        touch_ip(&mut o.ips, *ip);
                    }
                    if n.last >= o.last {
                        o.last = n.last;
                        o.stale = n.stale;
                    }
                }
            }
        }
    }

    /// Adds later verifications, keeping the newest [`RECENT_PER_KEY`].
    pub(crate) fn add_recent(&mut self, newer: impl IntoIterator<Item = Stored>) {
        self.recent.extend(newer);
        let excess = self.recent.len().saturating_sub(RECENT_PER_KEY);
        self.recent.drain(..excess);
    }

    /// Whether a record another process wrote keeps the bounds this one
    /// keeps (a process attached to the store writes usage through its owner).
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.recent.len() > RECENT_PER_KEY {
            return Err(format!(
                "{} recent requests; a key keeps {RECENT_PER_KEY}",
                self.recent.len()
            ));
        }
        self.recent.iter().try_for_each(Stored::check)
    }

    /// The key's last verifications, newest first.
    pub(crate) fn recent_requests(&self) -> Vec<super::RecentRequest> {
        // Flushes from several processes interleave: newest first by time,
        // and by arrival among requests of one millisecond.
        let mut rows: Vec<&Stored> = self.recent.iter().rev().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.at()));
        rows.into_iter().map(Stored::public).collect()
    }

    /// Applies the bounds: drops hourly buckets past retention and the least
    /// recently seen IPs and integrations past their caps. Totals stay exact.
    pub(crate) fn trim(&mut self, limits: &UsageLimits, now: i64) {
        let retention_ms = i64::try_from(limits.retention.as_millis()).unwrap_or(i64::MAX);
        let oldest_hour = now.saturating_sub(retention_ms).div_euclid(HOUR_MS);
        self.hourly = self.hourly.split_off(&oldest_hour);
        self.limited = self.limited.split_off(&oldest_hour);
        if self.ips.len() > limits.max_ips {
            let mut rows: Vec<(IpAddr, i64)> =
                self.ips.iter().map(|(ip, r)| (*ip, r.last)).collect();
            rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.1));
            for (ip, _) in rows.into_iter().skip(limits.max_ips) {
                self.ips.remove(&ip);
            }
        }
        if self.integrations.len() > limits.max_integrations {
            let mut rows: Vec<(Box<str>, i64)> = self
                .integrations
                .iter()
                .map(|(k, r)| (k.clone(), r.last))
                .collect();
            rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.1));
            for (name, _) in rows.into_iter().skip(limits.max_integrations) {
                self.integrations.remove(&name);
            }
        }
    }

    /// Whether the rows kept in memory have grown to twice the limits: a
    /// pending delta is trimmed then, so a flood of new addresses or
    /// integrations (an outage keeps deltas from being flushed) costs
    /// bounded memory.
    pub(crate) fn overgrown(&self, limits: &UsageLimits) -> bool {
        self.ips.len() > 2 * limits.max_ips || self.integrations.len() > 2 * limits.max_integrations
    }

    /// The latest time this delta saw (0 when empty).
    pub(crate) fn latest(&self) -> i64 {
        let ips = self.ips.values().map(|r| r.last);
        let integrations = self.integrations.values().map(|r| r.last);
        ips.chain(integrations).max().unwrap_or(0)
    }

    /// Rows held (client IPs and integrations).
    pub(crate) fn rows(&self) -> usize {
        self.ips.len() + self.integrations.len()
    }

    pub(crate) fn last_used_at(&self) -> Option<Timestamp> {
        self.last_used.map(|(t, _)| Timestamp::from_unix_millis(t))
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.v = Self::VERSION;
        serde_json::to_vec(&copy).expect("usage serialises")
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, StorageError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StorageError::with_source("unreadable usage record", e))
    }

    pub(crate) fn to_usage(&self, key_id: KeyId) -> Usage {
        let ts = Timestamp::from_unix_millis;
        let mut ips: Vec<IpUsage> = self
            .ips
            .iter()
            .map(|(ip, r)| IpUsage {
                ip: *ip,
                first_seen: ts(r.first),
                last_seen: ts(r.last),
                allowed: r.allowed,
                denied: r.denied,
                last_integration: r.integration.as_deref().map(String::from),
                stale_secret: r.stale,
            })
            .collect();
        ips.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.ip.cmp(&b.ip)));
        let mut integrations: Vec<IntegrationUsage> = self
            .integrations
            .iter()
            .map(|(name, r)| IntegrationUsage {
                name: name.to_string(),
                first_seen: ts(r.first),
                last_seen: ts(r.last),
                count: r.count,
                denied: r.denied,
                ips: r.ips.clone(),
                stale_secret: r.stale,
            })
            .collect();
        integrations.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.name.cmp(&b.name)));
        Usage {
            key_id,
            totals: self.totals,
            last_used: self.last_used.map(|(t, ip)| LastUse { at: ts(t), ip }),
            ips,
            integrations,
            hourly: self
                .hourly
                .iter()
                .map(|(h, (a, d))| HourlyUsage {
                    hour: ts(h * HOUR_MS),
                    allowed: *a,
                    denied: *d,
                    limited: self.limited.get(h).copied().unwrap_or(0),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Denial;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn record_then_absorb_is_the_same_as_recording_everything_in_one() {
        let mut a = UsageAgg::default();
        let mut b = UsageAgg::default();
        let mut all = UsageAgg::default();
        let steps = [
            (
                1_000,
                "10.0.0.1",
                Some("crm"),
                Outcome::Allowed,
                Freshness::Current,
            ),
            (
                2_000,
                "10.0.0.2",
                None,
                Outcome::Denied(Denial::WrongSecret),
                Freshness::Unknown,
            ),
            (
                3_600_500,
                "10.0.0.1",
                Some("crm"),
                Outcome::Denied(Denial::Rotated {
                    at: Timestamp::from_unix_millis(5),
                }),
                Freshness::Stale,
            ),
            (
                3_700_000,
                "10.0.0.3",
                Some("zap"),
                Outcome::Allowed,
                Freshness::Current,
            ),
        ];
        for (i, (t, addr, integ, out, fresh)) in steps.into_iter().enumerate() {
            let target = if i < 2 { &mut a } else { &mut b };
            target.record(t, ip(addr), integ, out, fresh);
            all.record(t, ip(addr), integ, out, fresh);
        }
        a.absorb(&b);
        assert_eq!(
            a.to_usage(KeyId::random()).totals,
            all.to_usage(KeyId::random()).totals
        );
        let (ua, uall) = (a.to_usage(KeyId::random()), all.to_usage(KeyId::random()));
        assert_eq!(ua.ips, uall.ips);
        assert_eq!(ua.integrations, uall.integrations);
        assert_eq!(ua.hourly, uall.hourly);
        assert_eq!(ua.totals.allowed, 2);
        assert_eq!(ua.totals.rotated, 1);
        let crm = ua.integrations.iter().find(|i| i.name == "crm").unwrap();
        assert!(crm.stale_secret);
        assert_eq!(crm.count, 2);
        assert_eq!(ua.hourly.len(), 2);
    }

    #[test]
    fn trim_bounds_ips_and_hours_but_not_totals() {
        let mut u = UsageAgg::default();
        for i in 0..50u8 {
            u.record(
                i64::from(i) * HOUR_MS,
                IpAddr::from([10, 0, 0, i]),
                None,
                Outcome::Allowed,
                Freshness::Current,
            );
        }
        let limits = UsageLimits {
            max_ips: 10,
            max_integrations: 5,
            retention: Duration::from_hours(24),
        };
        u.trim(&limits, 49 * HOUR_MS);
        let view = u.to_usage(KeyId::random());
        assert_eq!(view.ips.len(), 10);
        assert_eq!(
            view.ips[0].ip,
            IpAddr::from([10, 0, 0, 49]),
            "most recent kept"
        );
        assert_eq!(view.hourly.len(), 25);
        assert_eq!(view.totals.allowed, 50);
    }

    #[test]
    fn stored_form_round_trips() {
        let mut u = UsageAgg::default();
        u.record(
            5,
            ip("2001:db8::1"),
            Some("n8n"),
            Outcome::Allowed,
            Freshness::Current,
        );
        let back = UsageAgg::from_bytes(&u.to_bytes()).unwrap();
        assert_eq!(
            back.to_usage(KeyId::random()).ips,
            u.to_usage(KeyId::random()).ips
        );
    }

    #[test]
    fn long_integration_names_are_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        assert!(clip(&long).len() <= MAX_INTEGRATION_LEN);
        assert!(long.starts_with(clip(&long)));
    }
}
