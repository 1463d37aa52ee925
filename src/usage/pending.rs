//! Usage waiting for the next flush, and the notices of verification
//! (refused IPs, old secrets) waiting to become outbox events.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::aggregate::{Run, integration_name};
use super::recent::{HELD_MAX, Held, RECENT_PER_KEY, Text};
use super::{Freshness, Outcome, UsageAgg, UsageLimits};
use crate::events::EventKind;
use crate::key::{IdMap, KeyId};
use crate::locks::lock;

const SHARDS: usize = 32;

/// How often verification may tell of what it notices (refused IPs, old
/// secrets) through the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticeLimits {
    /// At most one notice per key and kind in this long (default one minute).
    pub window: Duration,
    /// At most this many notices in the whole store per minute (default 60).
    pub max_per_minute: usize,
}

impl Default for NoticeLimits {
    fn default() -> Self {
        NoticeLimits {
            window: Duration::from_mins(1),
            max_per_minute: 60,
        }
    }
}

/// Addresses and integrations a notice names, at most.
pub(crate) const NOTICE_SAMPLE: usize = 8;

/// One occurrence verification noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Occurrence<'a> {
    pub kind: EventKind,
    pub key_id: KeyId,
    pub ip: IpAddr,
    pub integration: Option<&'a str>,
    pub generation: Option<u32>,
    /// For a refused IP: the secret matched (a warm-cache match).
    pub confirmed: Option<bool>,
    pub at: i64,
}

/// A notice on its way to the outbox: the occurrence that opened a window,
/// and how many there were since the previous notice of its key and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    pub kind: EventKind,
    pub key_id: KeyId,
    pub ip: IpAddr,
    pub integration: Option<Box<str>>,
    pub generation: Option<u32>,
    pub confirmed: Option<bool>,
    pub at: i64,
    pub count: u64,
    pub ips: Vec<IpAddr>,
    pub integrations: Vec<Box<str>>,
    pub window: Duration,
}

/// What one key and kind have had since their last notice.
#[derive(Default)]
struct Tally {
    /// When the last notice was given (`None`: never).
    noticed_at: Option<i64>,
    count: u64,
    ips: Vec<IpAddr>,
    integrations: Vec<Box<str>>,
}

/// Notices waiting for the next flush, the tallies behind them, and how
/// many the store gave this minute.
#[derive(Default)]
struct Notices {
    tallies: HashMap<(KeyId, EventKind), Tally>,
    minute: i64,
    given: usize,
    pending: Vec<Notice>,
    /// Notices that could not be kept while storage was failing; their
    /// counts went back to their tallies.
    overflowed: u64,
}

/// Notices kept at most while storage is failing: past this, occurrences
/// only add to their tallies, told by a later notice.
const MAX_PENDING_NOTICES: usize = 1_000;

fn sample<T: PartialEq>(into: &mut Vec<T>, item: T) {
    if into.len() < NOTICE_SAMPLE && !into.contains(&item) {
        into.push(item);
    }
}

/// An integration's name held inline (no allocation to compare with),
/// or none; longer names are not held (their requests are added to the
/// rows one by one).
type Name = Text<NAME_INLINE>;

const NAME_INLINE: usize = 46;

/// One key's usage waiting for the next flush: the delta, and the run of
/// requests from one address and integration not yet added into it.
#[derive(Default)]
struct Pending {
    run: Option<(Run, Name)>,
    agg: UsageAgg,
    /// Its latest verifications, oldest first (at most [`RECENT_PER_KEY`]);
    /// `agg.recent` holds older ones put back after a failed flush.
    recent: VecDeque<Held>,
}

impl Pending {
    /// Adds the run into the delta.
    fn settle(&mut self) {
        if let Some((run, name)) = self.run.take() {
            self.agg.fold(&run, name.get());
        }
    }

    /// Entries held for the recent-request list, of either form.
    fn recent_held(&self) -> usize {
        self.recent.len() + self.agg.recent.len()
    }

    fn into_agg(mut self) -> UsageAgg {
        self.settle();
        self.agg.add_recent(self.recent.iter().map(Held::stored));
        self.agg
    }
}

/// Pending usage deltas of every key, sharded so threads verifying
/// different keys rarely meet on a lock.
pub(crate) struct UsageLog {
    shards: Box<[Mutex<IdMap<Pending>>]>,
    notices: Mutex<Notices>,
    notice_limits: NoticeLimits,
    limits: UsageLimits,
    /// Per-address and per-integration rows dropped from pending usage to
    /// keep it bounded (totals stay exact).
    rows_dropped: AtomicU64,
    /// Recent-request entries held by every key (at most [`HELD_MAX`]),
    /// and those not held for it.
    recent_held: AtomicUsize,
    recent_dropped: AtomicU64,
}

fn shard_of(id: &KeyId) -> usize {
    let b = id.as_bytes();
    (usize::from(b[0]) * 31 + usize::from(b[1])) % SHARDS
}

impl UsageLog {
    pub(crate) fn new(limits: UsageLimits, notice_limits: NoticeLimits) -> Self {
        UsageLog {
            shards: (0..SHARDS).map(|_| Mutex::new(IdMap::default())).collect(),
            notices: Mutex::new(Notices::default()),
            notice_limits,
            limits,
            rows_dropped: AtomicU64::new(0),
            recent_held: AtomicUsize::new(0),
            recent_dropped: AtomicU64::new(0),
        }
    }

    /// Keeps a pending delta within bounds, counting what it drops.
    fn bound(&self, agg: &mut UsageAgg, now: i64) {
        if agg.overgrown(&self.limits) {
            let before = agg.rows();
            agg.trim(&self.limits, now);
            self.rows_dropped
                .fetch_add((before - agg.rows()) as u64, Ordering::Relaxed);
        }
    }

    /// What is waiting, and what was let go of.
    pub(crate) fn backlog(&self) -> super::Backlog {
        let n = lock(&self.notices);
        super::Backlog {
            pending_usage_keys: self.shards.iter().map(|s| lock(s).len()).sum(),
            pending_notices: n.pending.len(),
            usage_rows_dropped: self.rows_dropped.load(Ordering::Relaxed),
            notices_deferred: n.overflowed,
            pending_recent_requests: self.recent_held.load(Ordering::Relaxed),
            recent_requests_dropped: self.recent_dropped.load(Ordering::Relaxed),
        }
    }

    /// Records one verification of key `id`: into its counts, and into
    /// its recent requests (`scope`: the scope it asked for).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        id: KeyId,
        now: i64,
        ip: IpAddr,
        integration: Option<&str>,
        outcome: Outcome,
        freshness: Freshness,
        scope: Option<&str>,
    ) {
        let integration = integration_name(integration);
        let mut shard = lock(&self.shards[shard_of(&id)]);
        let p = shard.entry(id).or_default();
        self.hold_recent(
            p,
            Held::new(now, ip, integration, outcome, freshness, scope),
        );
        if let Some((run, name)) = &mut p.run
            && run.holds(now, ip)
            && name.is(integration)
        {
            p.agg.count(outcome);
            run.add(now, outcome, freshness);
            return;
        }
        p.settle();
        match Name::fit(integration) {
            Some(name) => {
                p.agg.count(outcome);
                p.run = Some((Run::first(now, ip, outcome, freshness), name));
            }
            // A name too long to hold: this request goes into the rows.
            None => p.agg.record(now, ip, integration, outcome, freshness),
        }
        self.bound(&mut p.agg, now);
    }

    /// Keeps `held` as the key's latest verification: a full list lets its
    /// oldest go; a store holding its most keeps nothing new.
    fn hold_recent(&self, p: &mut Pending, held: Held) {
        if p.recent_held() >= RECENT_PER_KEY {
            if p.agg.recent.is_empty() {
                p.recent.pop_front();
            } else {
                p.agg.recent.remove(0);
            }
        } else if self
            .recent_held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < HELD_MAX).then_some(n + 1)
            })
            .is_err()
        {
            self.recent_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        p.recent.push_back(held);
    }

    /// Counts an occurrence; the first in its key and kind's window (within
    /// the store-wide budget) becomes a notice carrying the counts since the
    /// previous one.
    pub(crate) fn notice(&self, o: &Occurrence<'_>) {
        let window = i64::try_from(self.notice_limits.window.as_millis()).unwrap_or(i64::MAX);
        let mut n = lock(&self.notices);
        let minute = o.at.div_euclid(60_000);
        if n.minute != minute {
            n.minute = minute;
            n.given = 0;
            // Tallies with nothing to tell and a window long over go.
            n.tallies
                .retain(|_, t| t.count > 0 || t.noticed_at.is_some_and(|at| o.at - at < window));
        }
        let integration = integration_name(o.integration);
        let room =
            n.given < self.notice_limits.max_per_minute && n.pending.len() < MAX_PENDING_NOTICES;
        let tally = n.tallies.entry((o.key_id, o.kind)).or_default();
        tally.count += 1;
        sample(&mut tally.ips, o.ip);
        if let Some(name) = integration {
            sample(&mut tally.integrations, Box::from(name));
        }
        let opens_window = tally
            .noticed_at
            .is_none_or(|at| o.at.saturating_sub(at) >= window);
        if !(opens_window && room) {
            return;
        }
        tally.noticed_at = Some(o.at);
        let notice = Notice {
            kind: o.kind,
            key_id: o.key_id,
            ip: o.ip,
            integration: integration.map(Box::from),
            generation: o.generation,
            confirmed: o.confirmed,
            at: o.at,
            count: std::mem::take(&mut tally.count),
            ips: std::mem::take(&mut tally.ips),
            integrations: std::mem::take(&mut tally.integrations),
            window: self.notice_limits.window,
        };
        n.given += 1;
        n.pending.push(notice);
    }

    pub(crate) fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut lock(&self.notices).pending)
    }

    /// Puts notices back after a failed flush, ahead of newer ones; past
    /// the cap, the oldest go back into their tallies (counted, told later).
    pub(crate) fn restore_notices(&self, mut older: Vec<Notice>) {
        let mut n = lock(&self.notices);
        older.append(&mut n.pending);
        let excess = older.len().saturating_sub(MAX_PENDING_NOTICES);
        for dropped in older.drain(..excess) {
            n.overflowed += 1;
            let tally = n.tallies.entry((dropped.key_id, dropped.kind)).or_default();
            tally.count += dropped.count;
            tally.noticed_at = None;
        }
        n.pending = older;
    }

    /// A copy of the pending delta of one key.
    pub(crate) fn pending(&self, id: &KeyId) -> Option<UsageAgg> {
        let shard = lock(&self.shards[shard_of(id)]);
        let p = shard.get(id)?;
        let mut agg = p.agg.clone();
        if let Some((run, name)) = &p.run {
            agg.fold(run, name.get());
        }
        agg.add_recent(p.recent.iter().map(Held::stored));
        Some(agg)
    }

    pub(crate) fn discard(&self, id: &KeyId) {
        if let Some(p) = lock(&self.shards[shard_of(id)]).remove(id) {
            self.recent_held
                .fetch_sub(p.recent_held(), Ordering::Relaxed);
        }
    }

    /// Takes every pending delta, leaving the log empty.
    pub(crate) fn take_all(&self) -> Vec<(KeyId, UsageAgg)> {
        self.shards
            .iter()
            .flat_map(|s| std::mem::take(&mut *lock(s)))
            .map(|(id, p)| {
                self.recent_held
                    .fetch_sub(p.recent_held(), Ordering::Relaxed);
                (id, p.into_agg())
            })
            .collect()
    }

    /// Puts deltas back after a failed flush, ahead of anything newer.
    pub(crate) fn restore(&self, deltas: Vec<(KeyId, UsageAgg)>) {
        for (id, mut older) in deltas {
            let mut shard = lock(&self.shards[shard_of(&id)]);
            if let Some(newer) = shard.remove(&id) {
                self.recent_held
                    .fetch_sub(newer.recent_held(), Ordering::Relaxed);
                older.absorb(&newer.into_agg());
            }
            let now = older.latest();
            self.bound(&mut older, now);
            // The entries held again count against the store's bound; past
            // it, the older ones go.
            let n = older.recent.len();
            let held = self.recent_held.fetch_add(n, Ordering::Relaxed) + n;
            let over = held.saturating_sub(HELD_MAX).min(n);
            if over > 0 {
                older.recent.drain(..over);
                self.recent_held.fetch_sub(over, Ordering::Relaxed);
                self.recent_dropped
                    .fetch_add(over as u64, Ordering::Relaxed);
            }
            shard.insert(
                id,
                Pending {
                    run: None,
                    agg: older,
                    recent: VecDeque::new(),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::time::Timestamp;
    use crate::usage::Usage;
    use crate::usage::aggregate::clip;
    use crate::verdict::Denial;

    /// What the rows of one key must say, worked out independently of
    /// [`UsageAgg`]: (first, last, allowed or count, denied) per address
    /// and integration, (allowed, denied, limited) per hour, the last use.
    #[derive(Default)]
    struct Model {
        ips: HashMap<IpAddr, (i64, i64, u64, u64)>,
        integrations: HashMap<String, (i64, i64, u64, u64)>,
        hourly: BTreeMap<i64, (u64, u64, u64)>,
        last_used: Option<(i64, IpAddr)>,
    }

    impl Model {
        fn record(&mut self, now: i64, ip: IpAddr, name: Option<&str>, outcome: Outcome) {
            let (allowed, limited) = match outcome {
                Outcome::Allowed => (1, 0),
                Outcome::Denied(Denial::RateLimited { .. } | Denial::QuotaExhausted) => (0, 1),
                Outcome::Denied(_) => (0, 0),
            };
            if allowed == 1 && self.last_used.is_none_or(|(t, _)| t <= now) {
                self.last_used = Some((now, ip));
            }
            let hour = self.hourly.entry(now.div_euclid(3_600_000)).or_default();
            *hour = (hour.0 + allowed, hour.1 + 1 - allowed, hour.2 + limited);
            let row = self.ips.entry(ip).or_insert((now, now, 0, 0));
            *row = (row.0, row.1.max(now), row.2 + allowed, row.3 + 1 - allowed);
            if let Some(name) = name.map(clip).filter(|n| !n.is_empty()) {
                let row = self
                    .integrations
                    .entry(name.to_owned())
                    .or_insert((now, now, 0, 0));
                *row = (row.0, row.1.max(now), row.2 + 1, row.3 + 1 - allowed);
            }
        }

        fn check(&self, usage: &Usage) {
            let at = Timestamp::from_unix_millis;
            assert_eq!(
                usage.last_used.map(|l| (l.at, l.ip)),
                self.last_used.map(|(t, ip)| (at(t), ip))
            );
            let hourly: Vec<_> = usage
                .hourly
                .iter()
                .map(|h| (h.hour, h.allowed, h.denied, h.limited))
                .collect();
            let want: Vec<_> = self
                .hourly
                .iter()
                .map(|(h, c)| (at(h * 3_600_000), c.0, c.1, c.2))
                .collect();
            assert_eq!(hourly, want);
            assert_eq!(usage.ips.len(), self.ips.len());
            for r in &usage.ips {
                let (first, last, allowed, denied) = self.ips[&r.ip];
                assert_eq!(
                    (r.first_seen, r.last_seen, r.allowed, r.denied),
                    (at(first), at(last), allowed, denied)
                );
            }
            assert_eq!(usage.integrations.len(), self.integrations.len());
            for r in &usage.integrations {
                let (first, last, count, denied) = self.integrations[&r.name];
                assert_eq!(
                    (r.first_seen, r.last_seen, r.count, r.denied),
                    (at(first), at(last), count, denied)
                );
            }
        }
    }

    /// A small deterministic generator (xorshift).
    struct Dice(u64);

    impl Dice {
        fn pick(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            usize::try_from(self.0 % n as u64).unwrap()
        }
    }

    /// The log's runs give the same usage as recording every request
    /// into the rows, and as the model: across hours, addresses,
    /// integrations (none, empty, too long to hold inline), outcomes, old
    /// secrets, a clock that steps back a little, two keys interleaved,
    /// and flushes and reads between.
    #[test]
    fn runs_add_up_to_recording_each_request() {
        let log = UsageLog::new(UsageLimits::default(), NoticeLimits::default());
        let keys = [KeyId::random(), KeyId::random()];
        let mut each: [UsageAgg; 2] = Default::default();
        let mut flushed: [UsageAgg; 2] = Default::default();
        let mut model: [Model; 2] = Default::default();
        let long_name = "x".repeat(100);
        let names = [
            None,
            Some("crm"),
            Some("zap"),
            Some(""),
            Some(long_name.as_str()),
        ];
        let ips: [IpAddr; 3] = [
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ];
        let outcomes = [
            Outcome::Allowed,
            Outcome::Allowed,
            Outcome::Denied(Denial::WrongSecret),
            Outcome::Denied(Denial::RateLimited { retry_after_ms: 5 }),
            Outcome::Denied(Denial::QuotaExhausted),
            Outcome::Denied(Denial::IpNotAllowed),
        ];
        let freshness = [Freshness::Current, Freshness::Stale, Freshness::Unknown];
        let mut dice = Dice(0x2545_f491_4f6c_dd1d);
        let mut now = 1_700_000_000_000_i64;
        let mut in_runs = 0;
        for i in 0..5_000 {
            // Mostly the same client again; now and then another.
            now += [0, 1, 7, 1_000, 600_000, -3][dice.pick(6)];
            let key = dice.pick(2);
            let (ip, name) = if dice.pick(8) == 0 {
                (ips[dice.pick(3)], names[dice.pick(5)])
            } else {
                (ips[key], names[key + 1])
            };
            let outcome = outcomes[dice.pick(6)];
            let fresh = freshness[dice.pick(3)];
            log.record(keys[key], now, ip, name, outcome, fresh, None);
            each[key].record(now, ip, name, outcome, fresh);
            model[key].record(now, ip, name, outcome);
            let shard = lock(&log.shards[shard_of(&keys[key])]);
            let run = shard[&keys[key]].run;
            in_runs += usize::from(run.is_some_and(|(r, _)| r.holds(now, ip)));
            drop(shard);
            if i % 700 == 699 {
                for (id, delta) in log.take_all() {
                    flushed[usize::from(id == keys[1])].absorb(&delta);
                }
            }
            if i % 500 == 250 {
                let mut so_far = flushed[key].clone();
                if let Some(delta) = log.pending(&keys[key]) {
                    so_far.absorb(&delta);
                }
                assert_eq!(so_far.to_usage(keys[key]), each[key].to_usage(keys[key]));
            }
        }
        for (id, delta) in log.take_all() {
            flushed[usize::from(id == keys[1])].absorb(&delta);
        }
        for key in 0..2 {
            let usage = flushed[key].to_usage(keys[key]);
            assert_eq!(usage, each[key].to_usage(keys[key]));
            model[key].check(&usage);
        }
        assert!(in_runs > 2_000, "most requests went to a run");
    }

    fn wrong_secret(log: &UsageLog, id: KeyId, at: i64) {
        log.record(
            id,
            at,
            "203.0.113.9".parse().unwrap(),
            Some("flood"),
            Outcome::Denied(Denial::WrongSecret),
            Freshness::Unknown,
            Some("orders:read"),
        );
    }

    /// A flood on one key (its id is public) keeps 50 entries, the newest;
    /// its counts stay exact.
    #[test]
    fn a_flood_on_one_key_keeps_its_newest_fifty() {
        let log = UsageLog::new(UsageLimits::default(), NoticeLimits::default());
        let id = KeyId::random();
        for i in 0..100_000 {
            wrong_secret(&log, id, i);
        }
        assert_eq!(log.backlog().pending_recent_requests, RECENT_PER_KEY);
        let agg = log.pending(&id).unwrap();
        let recent = agg.recent_requests();
        assert_eq!(recent.len(), RECENT_PER_KEY);
        assert_eq!(recent[0].at.unix_millis(), 99_999, "newest first");
        assert_eq!(recent[49].at.unix_millis(), 99_950);
        assert_eq!(agg.to_usage(id).totals.denied, 100_000);
        let taken = log.take_all();
        assert_eq!(taken[0].1.recent.len(), RECENT_PER_KEY);
        assert_eq!(log.backlog().pending_recent_requests, 0);
    }

    /// Across keys the store holds at most HELD_MAX entries until a flush;
    /// the rest are counted as dropped, and a failed flush put back keeps
    /// within the bound too.
    #[test]
    fn every_key_together_holds_at_most_the_store_bound() {
        let log = UsageLog::new(UsageLimits::default(), NoticeLimits::default());
        let keys: Vec<KeyId> = (0..HELD_MAX / 10 + 100).map(|_| KeyId::random()).collect();
        for round in 0..20 {
            for id in &keys {
                wrong_secret(&log, *id, round);
            }
        }
        let b = log.backlog();
        assert_eq!(b.pending_recent_requests, HELD_MAX);
        assert_eq!(
            b.recent_requests_dropped,
            (keys.len() * 20 - HELD_MAX) as u64
        );
        let taken = log.take_all();
        let held: usize = taken.iter().map(|(_, a)| a.recent.len()).sum();
        assert_eq!(held, HELD_MAX);
        assert_eq!(log.backlog().pending_recent_requests, 0);
        // New requests while the flush fails, then the failed flush put back.
        for id in &keys {
            wrong_secret(&log, *id, 100);
        }
        log.restore(taken);
        let b = log.backlog();
        assert!(b.pending_recent_requests <= HELD_MAX, "{b:?}");
        let held: usize = log.take_all().iter().map(|(_, a)| a.recent.len()).sum();
        assert_eq!(held, b.pending_recent_requests);
    }
}
