//! Rate limits and quotas inside verify.
//!
//! Each key with limits or a quota has a [`Meter`] in its index entry: one
//! small lock around the count of each limit's window (exact within the
//! process) and the tokens this process holds. Tokens that other processes
//! must see — a quota's remaining, and with several processes (PostgreSQL,
//! attached processes) the shared budget of each limit — are taken from
//! their rows in [`Table::Budgets`] in *leases*, by the store's lease
//! thread, ahead of need: verify only ever spends what is in hand and
//! never waits on storage. A crash loses at most the unused part of a
//! lease; it never grants more than storage gave.
//!
//! A refusal happens only after everything before it passed, and nothing
//! is spent unless every limit and the quota admit the request: a
//! rate-limited request takes no quota, and a refused request spends no
//! limit.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::record::QuotaRule;
use crate::key::KeyId;
use crate::locks::lock;
use crate::policy::{Limit, Span, Window};
use crate::verdict::Denial;

/// How long a process that found a budget empty waits before asking
/// storage again, when it has no better estimate (ms).
pub(crate) const RECHECK_MS: i64 = 1000;

/// The state of one key's limits and quota in this process.
///
/// Laid out in the order a request reads it: the quota setting, the lock,
/// the state of the first limit, so that a key with one limit reads two
/// adjacent cache lines per request (see [`Meter::prefetch`]).
#[repr(C)]
pub(crate) struct Meter {
    pub quota: Option<QuotaRule>,
    state: Mutex<State>,
    pub limits: Box<[Limit]>,
}

#[repr(C)]
struct State {
    /// Each limit's state, in the order of `Meter::limits`: the first
    /// inline, beside the lock.
    slots: SmallVec<[Slot; 1]>,
    /// A lease has been asked for and not yet fetched.
    requested: bool,
    /// Alone (not shared): whether the limits' stored state (what earlier
    /// processes admitted) has been read into `tat`.
    loaded: bool,
    quota: QuotaHand,
}

/// One limit in this process.
#[derive(Clone, Copy)]
struct Slot {
    /// The limit's window and parts, worked out once.
    span: Span,
    /// Shared only: the most tokens one lease takes.
    lease: u64,
    /// What this process admitted, by part of the window.
    counted: Window,
    /// Shared only: tokens in hand, and when the shared budget has room
    /// again (`None`: no lease asked for yet).
    hand: u64,
    room_at: Option<i64>,
}

#[derive(Default)]
struct QuotaHand {
    /// Tokens in hand, for the refill period `period`.
    hand: u64,
    period: i64,
    /// The size of the last lease taken.
    lease: u64,
    /// What storage said at the last lease.
    known: Known,
    /// When storage was last asked (ms).
    asked_at: i64,
    /// A request was refused for the quota since the last lease.
    refused: bool,
    /// When a token was last spent or taken (ms).
    active_at: i64,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Nothing yet (a new process, a new period, a new setting).
    #[default]
    Pending,
    /// Storage had more than the lease.
    More,
    /// The lease took the last of it.
    Drained,
}

/// What verify learns from the meter: admitted or refused, and whether the
/// lease thread should be asked for more.
pub(crate) struct Admission {
    pub refusal: Option<Denial>,
    pub fetch: bool,
}

impl Meter {
    /// A meter for `limits` and `quota`, when the key has any.
    pub(crate) fn new(limits: &[Limit], quota: Option<QuotaRule>) -> Option<Self> {
        if limits.is_empty() && quota.is_none() {
            return None;
        }
        Some(Meter {
            limits: limits.into(),
            quota,
            state: Mutex::new(State {
                slots: limits
                    .iter()
                    .map(|l| Slot {
                        span: Span::of(l),
                        lease: l.lease(),
                        counted: Window::default(),
                        hand: 0,
                        room_at: None,
                    })
                    .collect(),
                quota: QuotaHand::default(),
                requested: false,
                loaded: false,
            }),
        })
    }

    /// Heap bytes of this meter (its `Arc` allocation and what it points to).
    pub(crate) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let s = lock(&self.state);
        let spilled = if s.slots.spilled() {
            s.slots.capacity() * size_of::<Slot>()
        } else {
            0
        };
        2 * size_of::<usize>()
            + size_of::<Meter>()
            + spilled
            + self
                .limits
                .iter()
                .map(|l| size_of::<Limit>() + l.name.len())
                .sum::<usize>()
    }

    /// A hint that this meter will be read soon.
    pub(crate) fn prefetch(&self) {
        let start = std::ptr::from_ref(self).cast::<u8>();
        prefetch(start);
        prefetch(start.wrapping_add(64));
    }

    /// Whether this meter counts for the same limits and quota setting.
    pub(crate) fn same(&self, limits: &[Limit], quota: Option<QuotaRule>) -> bool {
        *self.limits == *limits && self.quota == quota
    }

    /// Admits one request at `now` against every limit and the quota, or
    /// says which refuses it; spends only when all admit. `shared`: other
    /// processes draw on the limits' budgets too, so only leased tokens
    /// are spent.
    pub(crate) fn admit(&self, now: i64, shared: bool) -> Admission {
        let mut s = lock(&self.state);
        let mut fetch = false;
        let mut retry = 0_i64;
        let mut pending = false;
        for slot in &s.slots {
            if let Err(ms) = slot.counted.fits(now, 1, slot.span) {
                retry = retry.max(ms);
            }
            if shared {
                let low = slot.hand <= slot.lease / 2;
                match (slot.hand, slot.room_at) {
                    (0, None) => {
                        pending = true;
                        fetch = true;
                    }
                    (0, Some(at)) => {
                        retry = retry.max((at - now).max(1));
                        fetch |= now >= at;
                    }
                    _ => fetch |= low,
                }
            }
        }
        let refusal = if retry > 0 {
            Some(Denial::RateLimited {
                retry_after_ms: u64::try_from(retry).unwrap_or(0),
            })
        } else if pending {
            Some(Denial::Busy)
        } else {
            self.quota_refusal(&mut s.quota, now, &mut fetch)
        };
        if refusal.is_none() {
            for slot in &mut s.slots {
                slot.counted.add(now, 1, slot.span);
                if shared {
                    slot.hand = slot.hand.saturating_sub(1);
                }
            }
            if self.quota.is_some() {
                s.quota.hand -= 1;
                s.quota.active_at = now;
                fetch |= s.quota.hand <= s.quota.lease / 2 && s.quota.known == Known::More;
            }
        }
        let fetch = fetch && !std::mem::replace(&mut s.requested, true);
        Admission { refusal, fetch }
    }

    /// The quota's refusal of one more request, if any (spends nothing).
    fn quota_refusal(&self, q: &mut QuotaHand, now: i64, fetch: &mut bool) -> Option<Denial> {
        let rule = self.quota?;
        let period = rule.period_of(now);
        if period != q.period {
            // A new period: what was in hand belonged to the last one.
            *q = QuotaHand {
                period,
                ..QuotaHand::default()
            };
        }
        if q.hand > 0 {
            return None;
        }
        match q.known {
            // Nothing known yet, or the next lease not here yet.
            Known::Pending | Known::More => {
                *fetch = true;
                Some(Denial::Busy)
            }
            Known::Drained => {
                q.refused = true;
                *fetch |= now - q.asked_at >= RECHECK_MS;
                Some(Denial::QuotaExhausted)
            }
        }
    }

    /// Whether nothing has been fetched for this meter yet: a key's first
    /// use in this process, which fetches before it answers (it is
    /// verifying the secret with argon2 anyway).
    pub(crate) fn first_use(&self, shared: bool) -> bool {
        let s = lock(&self.state);
        let limits = if shared {
            s.slots.iter().any(|slot| slot.room_at.is_none())
        } else {
            !s.slots.is_empty() && !s.loaded
        };
        limits || (self.quota.is_some() && s.quota.known == Known::Pending)
    }

    /// Alone: what earlier processes admitted against each limit counts
    /// here too, once.
    pub(crate) fn load_windows(&self, stored: &[Window]) {
        let mut s = lock(&self.state);
        if !s.loaded {
            for (slot, stored) in s.slots.iter_mut().zip(stored) {
                slot.counted.merge(stored);
            }
            s.loaded = true;
        }
    }

    /// What the lease thread should fetch now.
    pub(crate) fn wants(&self, now: i64, shared: bool) -> Wants {
        let mut s = lock(&self.state);
        s.requested = false;
        let load = !shared && !s.loaded && !s.slots.is_empty();
        let limits = if shared {
            s.slots
                .iter()
                .enumerate()
                .filter(|(_, l)| l.hand <= l.lease / 2 && l.room_at.is_none_or(|at| now >= at))
                .map(|(i, l)| (i, l.lease - l.hand))
                .collect()
        } else {
            Vec::new()
        };
        let quota = self.quota.and_then(|rule| {
            let q = &s.quota;
            let period = rule.period_of(now);
            let stale = period != q.period;
            let low = stale || q.hand <= q.lease / 2;
            let ask = match q.known {
                Known::Drained if !stale => now - q.asked_at >= RECHECK_MS || q.refused,
                _ => low,
            };
            ask.then_some(QuotaWant {
                rule,
                period,
                hand: if stale { 0 } else { q.hand },
                told_refusal: q.refused && q.hand == 0,
            })
        });
        Wants {
            limits,
            load,
            quota,
        }
    }

    /// What this process admitted against limit `i` (alone, or before
    /// other processes shared the budget).
    pub(crate) fn local_window(&self, i: usize) -> Window {
        lock(&self.state).slots[i].counted
    }

    /// `k` tokens of limit `i` taken from the shared budget; when it had no
    /// more room, `room_at` says when it will.
    pub(crate) fn grant_limit(&self, i: usize, k: u64, room_at: i64) {
        let slot = &mut lock(&self.state).slots[i];
        slot.hand += k;
        slot.room_at = Some(room_at);
    }

    /// `k` of the quota taken for `period` of setting `serial`; `drained`
    /// when nothing is left in storage.
    pub(crate) fn grant_quota(&self, serial: u64, period: i64, k: u64, drained: bool, now: i64) {
        if self.quota.is_none_or(|q| q.serial != serial) {
            return;
        }
        let mut s = lock(&self.state);
        let q = &mut s.quota;
        if q.period != period {
            *q = QuotaHand {
                period,
                ..QuotaHand::default()
            };
        }
        q.hand += k;
        q.lease = k.max(q.lease);
        q.known = if drained { Known::Drained } else { Known::More };
        q.asked_at = now;
        if k > 0 {
            q.refused = false;
            q.active_at = now;
        }
    }

    /// The quota tokens in hand beyond a small reserve (a twentieth of
    /// the lease, at least one) when none has been spent for `idle_ms`:
    /// taken, to go back to storage for other processes, and the period
    /// they are for. The reserve answers this process's next requests
    /// without waiting while the lease thread tops it up.
    pub(crate) fn take_idle_quota(&self, now: i64, idle_ms: i64) -> Option<(u64, i64)> {
        let mut s = lock(&self.state);
        let q = &mut s.quota;
        let reserve = (q.lease / 20).max(1);
        if q.hand <= reserve || now - q.active_at < idle_ms {
            return None;
        }
        let k = q.hand - reserve;
        q.hand = reserve;
        q.lease = reserve;
        // What went back is in storage again.
        q.known = Known::More;
        Some((k, q.period))
    }

    /// The quota tokens in hand (for `KeyInfo`), and the period they are for.
    pub(crate) fn quota_in_hand(&self) -> (u64, i64) {
        let s = lock(&self.state);
        (s.quota.hand, s.quota.period)
    }

    /// Takes back the quota tokens in hand (to return them to storage).
    pub(crate) fn take_quota_hand(&self) -> (u64, i64) {
        let mut s = lock(&self.state);
        let q = &mut s.quota;
        (std::mem::take(&mut q.hand), q.period)
    }
}

/// What a meter asks the lease thread for.
pub(crate) struct Wants {
    /// Limit index, tokens wanted.
    pub limits: Vec<(usize, u64)>,
    /// Alone: read the limits' stored state.
    pub load: bool,
    pub quota: Option<QuotaWant>,
}

pub(crate) struct QuotaWant {
    pub rule: QuotaRule,
    pub period: i64,
    /// The tokens in hand: a lease tops them up to at most one lease.
    pub hand: u64,
    /// A request was refused with nothing in hand: the exhaustion may
    /// need telling (`key.quota_exhausted`, once).
    pub told_refusal: bool,
}

/// A quota's row in [`Table::Budgets`](crate::backend::Table::Budgets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QuotaRow {
    /// The setting it belongs to ([`QuotaRule::serial`]).
    pub serial: u64,
    pub remaining: u64,
    /// The refill period `remaining` is for.
    pub period: i64,
    /// Whether this exhaustion has been told (`key.quota_exhausted`).
    pub told: bool,
}

impl QuotaRow {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("budget rows serialise")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }

    /// The row as of `now`: refilled when a new period has begun.
    pub(crate) fn at(mut self, rule: &QuotaRule, now: i64) -> Self {
        if let Some(r) = rule.refill {
            let period = r.period.period_of(now);
            if period > self.period {
                self.remaining = r.amount;
                self.period = period;
                self.told = false;
            }
        }
        self
    }
}

/// How much of `remaining` one lease takes: enough that a busy key asks
/// rarely, little enough that a crash loses little — 5% of what is left,
/// at least 100 (or all of it when less), at most 1,000.
pub(crate) fn quota_lease(remaining: u64) -> u64 {
    (remaining / 20).clamp(100, 1000).min(remaining)
}

/// The row of key `id`'s quota.
pub(crate) fn quota_row_key(id: &KeyId) -> Vec<u8> {
    [&id.as_bytes()[..], b"q"].concat()
}

/// The row of key `id`'s shared budget of limit `name`.
pub(crate) fn limit_row_key(id: &KeyId, name: &str) -> Vec<u8> {
    [&id.as_bytes()[..], b"l", name.as_bytes()].concat()
}

/// A hint that `p` will be read soon (no effect on what the program does:
/// a prefetch reads nothing and cannot fault).
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is only a
    // hint: it does not access memory as the program sees it, whatever
    // the address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Refill, RefillPeriod};
    use std::time::Duration;

    fn rule() -> QuotaRule {
        QuotaRule {
            serial: 9,
            refill: None,
        }
    }

    #[test]
    fn a_local_limit_admits_its_burst_then_says_when() {
        let m = Meter::new(&[Limit::new("b", 3, Duration::from_secs(3))], None).unwrap();
        for _ in 0..3 {
            assert!(m.admit(5000, false).refusal.is_none());
        }
        // Counted in the part of 97 ms holding 5000 (4947..5044), which
        // leaves the 3 s window at 8043.
        assert_eq!(
            m.admit(5000, false).refusal,
            Some(Denial::RateLimited {
                retry_after_ms: 3043
            })
        );
        assert!(m.admit(8042, false).refusal.is_some());
        assert!(m.admit(8043, false).refusal.is_none());
    }

    #[test]
    fn a_rate_limited_request_takes_no_quota_and_an_exhausted_one_no_limit() {
        let m = Meter::new(&[Limit::new("b", 2, Duration::from_secs(10))], Some(rule())).unwrap();
        // Nothing in hand yet: retry shortly, and a lease is asked for.
        let first = m.admit(0, false);
        assert_eq!(first.refusal, Some(Denial::Busy));
        assert!(first.fetch);
        m.grant_quota(9, 0, 3, true, 0);
        assert!(m.admit(0, false).refusal.is_none());
        assert!(m.admit(0, false).refusal.is_none());
        assert!(matches!(
            m.admit(0, false).refusal,
            Some(Denial::RateLimited { .. })
        ));
        // The refusal spent no quota: one token is still in hand.
        assert_eq!(m.quota_in_hand().0, 1);
        // The burst leaves the 10 s window with its part (323 ms) at 10,322.
        assert!(m.admit(10_321, false).refusal.is_some());
        assert!(m.admit(10_322, false).refusal.is_none());
        assert_eq!(m.admit(30_000, false).refusal, Some(Denial::QuotaExhausted));
        let m2 = Meter::new(&[Limit::new("b", 1, Duration::from_secs(10))], Some(rule())).unwrap();
        m2.grant_quota(9, 0, 0, true, 0);
        assert_eq!(m2.admit(0, false).refusal, Some(Denial::QuotaExhausted));
        m2.grant_quota(9, 0, 1, true, 0);
        assert!(
            m2.admit(0, false).refusal.is_none(),
            "the limit was not spent"
        );
    }

    #[test]
    fn a_new_period_voids_the_tokens_in_hand_and_a_lease_of_another_setting_is_ignored() {
        let daily = QuotaRule {
            serial: 4,
            refill: Some(Refill {
                amount: 5,
                period: RefillPeriod::Daily,
            }),
        };
        let m = Meter::new(&[], Some(daily)).unwrap();
        m.grant_quota(4, 0, 5, true, 0);
        m.grant_quota(5, 0, 99, false, 0);
        assert!(m.admit(1, false).refusal.is_none());
        assert_eq!(m.quota_in_hand().0, 4);
        let tomorrow = 86_400_000;
        assert_eq!(m.admit(tomorrow, false).refusal, Some(Denial::Busy));
        assert!(m.wants(tomorrow, false).quota.is_some());
        m.grant_quota(4, 1, 5, true, tomorrow);
        assert!(m.admit(tomorrow, false).refusal.is_none());
    }

    #[test]
    fn idle_quota_tokens_are_taken_back_and_busy_ones_kept() {
        let m = Meter::new(&[], Some(rule())).unwrap();
        m.grant_quota(9, 0, 10, false, 1000);
        assert!(m.admit(1500, false).refusal.is_none());
        assert_eq!(m.take_idle_quota(2000, 1000), None);
        // 9 in hand, a reserve of one kept.
        assert_eq!(m.take_idle_quota(2500, 1000), Some((8, 0)));
        assert_eq!(m.quota_in_hand().0, 1);
        assert_eq!(m.take_idle_quota(9000, 1000), None);
        let next = m.admit(9000, false);
        assert!(next.refusal.is_none());
        assert!(next.fetch, "the reserve spent: a lease is asked for");
    }

    #[test]
    fn shared_limits_spend_only_leased_tokens() {
        let l = Limit::new("b", 40, Duration::from_secs(100));
        let m = Meter::new(&[l], None).unwrap();
        assert_eq!(m.admit(0, true).refusal, Some(Denial::Busy));
        let w = m.wants(0, true);
        assert_eq!(w.limits, vec![(0, 2)]);
        m.grant_limit(0, 2, 0);
        assert!(m.admit(0, true).refusal.is_none());
        assert!(m.admit(0, true).refusal.is_none());
        // Out of leased tokens, the shared budget due to have room at 0.
        assert!(matches!(
            m.admit(0, true).refusal,
            Some(Denial::RateLimited { .. })
        ));
        m.grant_limit(0, 0, 2500);
        assert_eq!(
            m.admit(1000, true).refusal,
            Some(Denial::RateLimited {
                retry_after_ms: 1500
            })
        );
    }

    #[test]
    fn rows_refill_at_a_new_period_and_leases_are_bounded() {
        let rule = QuotaRule {
            serial: 1,
            refill: Some(Refill {
                amount: 50,
                period: RefillPeriod::Daily,
            }),
        };
        let row = QuotaRow {
            serial: 1,
            remaining: 0,
            period: 0,
            told: true,
        };
        assert_eq!(row.at(&rule, 5).remaining, 0);
        let next = row.at(&rule, 86_400_000);
        assert_eq!((next.remaining, next.period, next.told), (50, 1, false));
        assert_eq!(QuotaRow::decode(&next.encode()), Some(next));
        assert_eq!(quota_lease(3), 3);
        assert_eq!(quota_lease(1000), 100);
        assert_eq!(quota_lease(10_000), 500);
        assert_eq!(quota_lease(1_000_000), 1000);
        assert_eq!(quota_lease(0), 0);
    }
}
