//! What a key may do beyond being admitted: how often (rate limits), how
//! much in all (a quota of requests), and what for (scopes).
//!
//! A rate limit admits at most `limit` requests in any window of its
//! length (a sliding window, counted in parts: see [`Window`]): a burst of
//! `limit` is admitted at once, and then nothing until the burst leaves the
//! window. A refused request learns how long until one more fits
//! (`retry_after`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;

use crate::error::KeyError;

/// Most rate limits one key carries.
pub const MAX_LIMITS: usize = 8;
/// Most scopes one key carries.
pub const MAX_SCOPES: usize = 64;
/// Longest scope, and longest limit name, in bytes.
pub const MAX_SCOPE_LEN: usize = 64;
/// Longest window of a rate limit.
pub const MAX_WINDOW: Duration = Duration::from_hours(366 * 24);
/// Largest `limit` of a rate limit.
pub const MAX_LIMIT: u64 = 1_000_000_000;
/// Largest quota (remaining requests, or a refill amount).
pub const MAX_QUOTA: u64 = 1 << 53;

/// A named rate limit: at most `limit` requests in any `window`
/// (`burst`: 100 per 60 s; `daily`: 10,000 per day). See [`Window`] for
/// how they are counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Its name, unique among the key's limits: 1 to 64 of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Requests admitted in any window (1 to 10⁹).
    pub limit: u64,
    /// The window's length (1 ms to 366 days, whole milliseconds).
    #[serde(with = "window_seconds", rename = "window_seconds")]
    #[cfg_attr(feature = "schema", schemars(with = "f64"))]
    pub window: Duration,
}

impl Limit {
    /// A limit of `limit` requests per `window`.
    pub fn new(name: impl Into<String>, limit: u64, window: Duration) -> Self {
        Limit {
            name: name.into(),
            limit,
            window,
        }
    }

    /// The window in milliseconds (checked to be at least 1 and whole).
    pub(crate) fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }

    /// The most tokens one process takes from a shared budget at once:
    /// max(1, limit / 20).
    pub(crate) fn lease(&self) -> u64 {
        (self.limit / 20).max(1)
    }

    fn check(&self) -> Result<(), KeyError> {
        check_word(&self.name, "a limit's name")?;
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(KeyError::InvalidInput(format!(
                "limit {:?}: the number of requests must be 1 to {MAX_LIMIT}",
                self.name
            )));
        }
        let whole_ms = self.window.subsec_nanos().is_multiple_of(1_000_000);
        if self.window < Duration::from_millis(1) || self.window > MAX_WINDOW || !whole_ms {
            return Err(KeyError::InvalidInput(format!(
                "limit {:?}: the window must be whole milliseconds, 1 ms to 366 days",
                self.name
            )));
        }
        Ok(())
    }
}

/// The window of a limit as seconds (a float) in JSON.
mod window_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        super::seconds(secs).ok_or_else(|| serde::de::Error::custom("window_seconds out of range"))
    }
}

/// A number of seconds as a duration of whole milliseconds, when it is one
/// (finite, positive, at most [`MAX_WINDOW`]).
#[must_use]
pub fn seconds(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs <= 0.0 || secs > MAX_WINDOW.as_secs_f64() {
        return None;
    }
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    let ms = (secs * 1000.0).round() as u64;
    Some(Duration::from_millis(ms))
}

/// When a quota's `remaining` is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RefillPeriod {
    /// At 00:00 UTC every day.
    Daily,
    /// At 00:00 UTC on the 1st of every month.
    Monthly,
}

impl RefillPeriod {
    /// `daily` or `monthly`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RefillPeriod::Daily => "daily",
            RefillPeriod::Monthly => "monthly",
        }
    }

    /// `daily` or `monthly`, as [`RefillPeriod::as_str`] writes them.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "daily" => Some(RefillPeriod::Daily),
            "monthly" => Some(RefillPeriod::Monthly),
            _ => None,
        }
    }

    /// When period number `period` begins (ms since 1970).
    pub(crate) fn start_of(self, period: i64) -> i64 {
        match self {
            RefillPeriod::Daily => period.saturating_mul(86_400_000),
            RefillPeriod::Monthly => {
                let year = i32::try_from(period.div_euclid(12)).unwrap_or(9999);
                let month = time::Month::try_from(period.rem_euclid(12) as u8 + 1)
                    .unwrap_or(time::Month::January);
                time::Date::from_calendar_date(year, month, 1).map_or(i64::MAX, |d| {
                    d.midnight().assume_utc().unix_timestamp() * 1000
                })
            }
        }
    }

    /// The number of the period holding `at_ms` (days, or months, since 1970).
    pub(crate) fn period_of(self, at_ms: i64) -> i64 {
        match self {
            RefillPeriod::Daily => at_ms.div_euclid(86_400_000),
            RefillPeriod::Monthly => {
                let t = OffsetDateTime::from_unix_timestamp(at_ms.div_euclid(1000))
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                i64::from(t.year()) * 12 + i64::from(u8::from(t.month())) - 1
            }
        }
    }
}

/// A refill of a quota: `remaining` becomes `amount` at each period's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Refill {
    /// What `remaining` is reset to (1 to 2⁵³).
    pub amount: u64,
    /// When.
    pub period: RefillPeriod,
}

/// A key's quota: requests left, decremented by each admitted request,
/// refused with `QuotaExhausted` at zero, optionally reset periodically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Requests left.
    pub remaining: u64,
    /// The periodic reset, if any.
    #[serde(default)]
    pub refill: Option<Refill>,
}

impl Quota {
    /// `remaining` requests, never refilled.
    #[must_use]
    pub fn new(remaining: u64) -> Self {
        Quota {
            remaining,
            refill: None,
        }
    }

    /// `remaining` is reset to `amount` at the start of every `period`.
    #[must_use]
    pub fn refilled(mut self, amount: u64, period: RefillPeriod) -> Self {
        self.refill = Some(Refill { amount, period });
        self
    }

    pub(crate) fn check(&self) -> Result<(), KeyError> {
        if self.remaining > MAX_QUOTA
            || self
                .refill
                .is_some_and(|r| r.amount == 0 || r.amount > MAX_QUOTA)
        {
            return Err(KeyError::InvalidInput(
                "a quota's remaining must be 0 to 2^53 and its refill amount 1 to 2^53".into(),
            ));
        }
        Ok(())
    }
}

/// Checks a key's limits: each valid, names unique, at most [`MAX_LIMITS`].
pub(crate) fn check_limits(limits: &[Limit]) -> Result<(), KeyError> {
    if limits.len() > MAX_LIMITS {
        return Err(KeyError::InvalidInput(format!(
            "a key has at most {MAX_LIMITS} rate limits"
        )));
    }
    for (i, l) in limits.iter().enumerate() {
        l.check()?;
        if limits[..i].iter().any(|o| o.name == l.name) {
            return Err(KeyError::InvalidInput(format!(
                "two limits are named {:?}",
                l.name
            )));
        }
    }
    Ok(())
}

/// The scopes an admitted key carries, sorted: one shared string, so a
/// grant carries them without allocating and checking one reads one
/// contiguous run of bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Scopes(Option<Arc<str>>);

impl Scopes {
    /// No scopes.
    pub(crate) const NONE: Scopes = Scopes(None);

    /// From a key's scopes as stored (checked when they were set): sorted
    /// here, and anything that is not a scope (a space would split it) is
    /// left out, so it can grant nothing.
    pub(crate) fn new(scopes: &[String]) -> Self {
        let mut valid: Vec<&str> = scopes
            .iter()
            .map(String::as_str)
            .filter(|s| check_scope(s).is_ok())
            .collect();
        valid.sort_unstable();
        valid.dedup();
        Scopes((!valid.is_empty()).then(|| Arc::from(valid.join(" "))))
    }

    /// The scopes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.as_deref().into_iter().flat_map(|s| s.split(' '))
    }

    /// Whether `scope` is one of them.
    #[must_use]
    pub fn contains(&self, scope: &str) -> bool {
        for s in self.iter() {
            match s.cmp(scope) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Greater => return false,
            }
        }
        false
    }

    /// How many there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the key has none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Heap bytes of the shared string (counted whole by each holder).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |s| 2 * std::mem::size_of::<usize>() + s.len())
    }

    /// Where the string is (a prefetch hint).
    pub(crate) fn as_ptr(&self) -> Option<*const u8> {
        self.0.as_ref().map(|s| s.as_ptr())
    }

    /// Whether these are `sorted` (checked scopes).
    pub(crate) fn are(&self, sorted: &[String]) -> bool {
        self.iter().eq(sorted.iter().map(String::as_str))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// A key's scopes, checked, sorted and without repeats.
pub(crate) fn checked_scopes<S: AsRef<str>>(scopes: &[S]) -> Result<Vec<String>, KeyError> {
    let mut out = Vec::with_capacity(scopes.len());
    for s in scopes {
        let s = s.as_ref();
        check_scope(s)?;
        out.push(s.to_string());
    }
    out.sort();
    out.dedup();
    if out.len() > MAX_SCOPES {
        return Err(KeyError::InvalidInput(format!(
            "a key has at most {MAX_SCOPES} scopes"
        )));
    }
    Ok(out)
}

/// A scope: 1 to 64 printable ASCII characters, no spaces
/// (`orders:read`, `contacts:write`).
pub(crate) fn check_scope(s: &str) -> Result<(), KeyError> {
    if s.is_empty() || s.len() > MAX_SCOPE_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::InvalidInput(format!(
            "a scope is 1 to {MAX_SCOPE_LEN} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

fn check_word(s: &str, what: &str) -> Result<(), KeyError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SCOPE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::InvalidInput(format!(
            "{what} is 1 to {MAX_SCOPE_LEN} of A-Z a-z 0-9 _ - ."
        )))
    }
}

/// The parts a limit's window is counted in.
const PARTS: i64 = 31;

/// The parts a window's count can span: its own, and the one it starts in.
const SPAN: usize = 32;
#[allow(clippy::cast_possible_wrap)]
const SPAN_I64: i64 = SPAN as i64;

/// What a limit admitted, counted in parts of its window: a sliding
/// window. A request is admitted when the requests admitted in every part
/// that overlaps the window ending now, and in any later part (a clock
/// that stepped back), leave room for it. Those parts cover the window and
/// at most one part more, so no window of the limit's length ever holds
/// more than `limit` requests; a client sending without pause at exactly
/// the limit's rate is refused at most one request in [`PARTS`].
/// Exact integer arithmetic throughout: nothing is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Window {
    /// The newest part counted (ms since 1970 / part length), or
    /// `i64::MIN` when nothing was.
    newest: i64,
    /// Part `k`'s count at `k mod SPAN`, for parts after `newest - SPAN`.
    counts: [u32; SPAN],
}

/// A limit's window as the counting sees it, worked out once per limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// The window, ms.
    pub window: i64,
    /// One part, ms: the window in [`PARTS`] parts, rounded up.
    pub part: i64,
    /// Requests admitted in any window.
    pub limit: u64,
}

impl Span {
    pub(crate) fn of(l: &Limit) -> Span {
        let window = l.window_ms().max(1);
        Span {
            window,
            part: (window + PARTS - 1) / PARTS,
            limit: l.limit,
        }
    }

    /// The first part that overlaps the window ending at `now`.
    fn first(&self, now: i64) -> i64 {
        now.saturating_sub(self.window - 1).div_euclid(self.part)
    }
}

impl Default for Window {
    fn default() -> Self {
        Window {
            newest: i64::MIN,
            counts: [0; SPAN],
        }
    }
}

fn slot(part: i64) -> usize {
    usize::try_from(part.rem_euclid(SPAN_I64)).expect("under SPAN")
}

impl Window {
    /// The parts still held: after `newest - SPAN`, up to `newest`.
    fn held(&self) -> std::ops::Range<i64> {
        if self.newest == i64::MIN {
            return 0..0;
        }
        (self.newest - SPAN_I64 + 1)..(self.newest + 1)
    }

    /// Requests counted against the window ending at `now`.
    pub(crate) fn count(&self, now: i64, span: Span) -> u64 {
        let first = span.first(now);
        self.held()
            .filter(|&k| k >= first)
            .map(|k| u64::from(self.counts[slot(k)]))
            .sum()
    }

    /// Whether `n` more fit at `now`: `Ok(())`, or `Err(ms)` until they
    /// would (if nothing else is admitted meanwhile; `i64::MAX` for more
    /// than the limit at once).
    pub(crate) fn fits(&self, now: i64, n: u64, span: Span) -> Result<(), i64> {
        let count = self.count(now, span);
        let Some(excess) = (count + n).checked_sub(span.limit).filter(|&e| e > 0) else {
            return Ok(());
        };
        if n > span.limit {
            return Err(i64::MAX);
        }
        // Parts leave the window oldest first: part k has left it once the
        // window starts after it, at (k + 1) * part + window - 1.
        let first = span.first(now);
        let mut dropped = 0;
        for k in self.held().filter(|&k| k >= first) {
            dropped += u64::from(self.counts[slot(k)]);
            if dropped >= excess {
                let at = (k + 1)
                    .saturating_mul(span.part)
                    .saturating_add(span.window - 1);
                return Err((at - now).max(1));
            }
        }
        Err(span.window)
    }

    /// How many of up to `n` fit at `now`.
    pub(crate) fn room(&self, now: i64, n: u64, span: Span) -> u64 {
        span.limit.saturating_sub(self.count(now, span)).min(n)
    }

    /// Counts `n` admitted at `now`.
    pub(crate) fn add(&mut self, now: i64, n: u64, span: Span) {
        let part = now.div_euclid(span.part);
        if part > self.newest {
            // Parts between the newest and this one are empty; what their
            // slots held is older than anything still counted.
            let from = if self.newest == i64::MIN {
                part - SPAN_I64 + 1
            } else {
                (self.newest + 1).max(part - SPAN_I64 + 1)
            };
            for k in from..=part {
                self.counts[slot(k)] = 0;
            }
            self.newest = part;
        }
        // A clock that stepped back further than the parts held counts in
        // the oldest one held (never lost).
        let part = part.max(self.newest - SPAN_I64 + 1);
        let c = &mut self.counts[slot(part)];
        *c = c.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// This and `other`, part by part, the larger count of each: what two
    /// records of the same limit's admissions say together.
    pub(crate) fn merge(&mut self, other: &Window) {
        if other.newest == i64::MIN {
            return;
        }
        let mut merged = Window {
            newest: self.newest.max(other.newest),
            counts: [0; SPAN],
        };
        for k in merged.held() {
            let mine = if self.held().contains(&k) {
                self.counts[slot(k)]
            } else {
                0
            };
            let theirs = if other.held().contains(&k) {
                other.counts[slot(k)]
            } else {
                0
            };
            merged.counts[slot(k)] = mine.max(theirs);
        }
        *self = merged;
    }

    /// As stored in a limit's row.
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("windows serialise")
    }

    /// From a limit's row; a row of another form (an earlier release kept
    /// a single time there) counts as nothing admitted.
    pub(crate) fn decode(row: &[u8]) -> Window {
        Self::read(row).unwrap_or_default()
    }

    /// From a limit's row, when it holds one.
    pub(crate) fn read(row: &[u8]) -> Option<Window> {
        postcard::from_bytes(row).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_hold_exactly_the_checked_ones() {
        let sorted = checked_scopes(&["orders:read", "a", "contacts:write", "a"]).unwrap();
        let scopes = Scopes::new(&sorted);
        assert_eq!(
            scopes.iter().collect::<Vec<_>>(),
            ["a", "contacts:write", "orders:read"]
        );
        assert_eq!(scopes.len(), 3);
        for s in ["a", "contacts:write", "orders:read"] {
            assert!(scopes.contains(s), "{s}");
        }
        // Neither a prefix, nor a longer one, nor one past the last, nor
        // two joined, nor the empty string.
        for s in [
            "orders",
            "orders:read:x",
            "zzz",
            "",
            "a contacts:write",
            "0",
        ] {
            assert!(!scopes.contains(s), "{s:?}");
        }
        assert!(scopes.are(&sorted));
        assert!(!scopes.are(&sorted[1..]));
        assert_eq!(
            serde_json::to_string(&scopes).unwrap(),
            r#"["a","contacts:write","orders:read"]"#
        );
        // What storage holds is sorted here, and what is no scope grants
        // nothing (fail closed), whatever wrote it.
        let odd = Scopes::new(&["b".into(), "a b".into(), String::new(), "a".into()]);
        assert_eq!(odd.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(!odd.contains("a b"));
        let none = Scopes::new(&[]);
        assert!(none.is_empty() && !none.contains("a"));
        assert_eq!(none.len(), 0);
        assert_eq!(none.iter().count(), 0);
        assert_eq!(format!("{none:?}"), "[]");
    }

    fn span(limit: u64, window: Duration) -> Span {
        Span::of(&Limit::new("l", limit, window))
    }

    /// Admits at `now` when it fits; counts what it admitted.
    fn admit(w: &mut Window, now: i64, s: Span) -> bool {
        let ok = w.fits(now, 1, s).is_ok();
        if ok {
            w.add(now, 1, s);
        }
        ok
    }

    #[test]
    fn a_burst_of_the_limit_then_nothing_until_it_leaves_the_window() {
        // 5 per 10 s, from a clock at 10 s: five at once, then refused
        // until the part they are counted in leaves the window.
        let s = span(5, Duration::from_secs(10));
        let mut w = Window::default();
        for _ in 0..5 {
            assert!(admit(&mut w, 10_000, s));
        }
        let wait = w.fits(10_000, 1, s).unwrap_err();
        assert!((10_000..=10_000 + s.part).contains(&wait), "{wait}");
        assert!(w.fits(10_000 + wait - 1, 1, s).is_err());
        assert!(w.fits(10_000 + wait, 1, s).is_ok());
        assert_eq!(w.room(10_000, 5, s), 0);
        assert_eq!(w.room(10_000 + wait, 7, s), 5);
        assert_eq!(Window::default().room(10_000, 3, s), 3);
        assert_eq!(w.fits(10_000, 6, s), Err(i64::MAX));
        // Stored and read back; an earlier release's row counts as nothing.
        assert_eq!(Window::decode(&w.encode()), w);
        assert_eq!(Window::decode(&10_000i64.to_be_bytes()), Window::default());
    }

    /// A client sending as much as it is let through every `step` ms
    /// for `windows` windows: the first burst admits exactly the limit,
    /// no window of the limit's length (sliding, at every millisecond)
    /// admits more, and the client gets nearly all of the rate.
    fn hammer(limit: u64, window: Duration, step: i64, windows: i64) {
        let s = span(limit, window);
        let start = 1_764_000_000_123;
        let mut w = Window::default();
        assert!(w.fits(start, limit, s).is_ok());
        assert!(w.fits(start, limit + 1, s).is_err());
        // (time, admitted then)
        let mut admitted: Vec<(i64, u64)> = Vec::new();
        let mut now = start;
        while now < start + windows * s.window {
            let n = w.room(now, u64::MAX, s);
            if n > 0 {
                assert!(w.fits(now, n, s).is_ok());
                w.add(now, n, s);
                assert!(w.fits(now, 1, s).is_err());
                admitted.push((now, n));
            }
            now += step;
        }
        assert_eq!(admitted[0], (start, limit), "first burst");
        // The most admitted in any window (t - W, t]: two pointers.
        let (mut most, mut inside, mut lo) = (0, 0, 0);
        for hi in 0..admitted.len() {
            inside += admitted[hi].1;
            while admitted[lo].0 <= admitted[hi].0 - s.window {
                inside -= admitted[lo].1;
                lo += 1;
            }
            most = most.max(inside);
        }
        assert_eq!(
            most, limit,
            "{limit} per {window:?}: at most the limit in any window"
        );
        // After the first window, at least PARTS / (PARTS + 1) of the rate.
        let later: u64 = admitted
            .iter()
            .filter(|(t, _)| *t >= start + s.window)
            .map(|(_, n)| n)
            .sum();
        let after = u64::try_from(windows - 1).unwrap();
        let parts = u64::try_from(PARTS).unwrap();
        assert!(
            later * (parts + 1) + limit * (parts + 1) >= limit * after * parts,
            "{limit} per {window:?}: {later} admitted in {after} windows"
        );
    }

    #[test]
    fn limits_that_do_not_divide_their_window_admit_exactly_what_they_say() {
        hammer(600, Duration::from_secs(1), 1, 5);
        hammer(7, Duration::from_secs(1), 1, 5);
        hammer(3, Duration::from_secs(7), 1, 4);
        hammer(40_000, Duration::from_mins(1), 1, 3);
        hammer(1, Duration::from_hours(24), 60_000, 3);
        hammer(1_000_000_000, Duration::from_millis(1), 1, 3);
        hammer(5, Duration::from_millis(1), 1, 50);
    }

    #[test]
    fn a_clock_that_steps_back_loses_nothing_and_merges_keep_the_larger() {
        let s = span(3, Duration::from_secs(1));
        let mut w = Window::default();
        assert!(admit(&mut w, 100_000, s));
        assert!(admit(&mut w, 100_000, s));
        // Back a minute: everything held is newer than that clock's
        // window, so all of it counts, and the third fills the limit.
        assert!(admit(&mut w, 40_000, s));
        assert!(w.fits(40_000, 1, s).is_err());
        assert_eq!(w.count(40_500, s), 3);
        let mut other = Window::default();
        other.add(100_000, 3, s);
        let mut merged = Window::default();
        merged.add(100_000, 1, s);
        merged.merge(&other);
        assert_eq!(merged.count(100_000, s), 3);
        merged.merge(&Window::default());
        assert_eq!(merged.count(100_000, s), 3);
    }

    #[test]
    fn periods_start_at_midnight_utc_and_on_the_first() {
        let d = RefillPeriod::Daily;
        assert_eq!(d.period_of(86_400_000 - 1) + 1, d.period_of(86_400_000));
        let m = RefillPeriod::Monthly;
        // 2026-01-31T23:59:59.999Z and 2026-02-01T00:00:00Z.
        let feb = 1_769_904_000_000;
        assert_eq!(m.period_of(feb - 1) + 1, m.period_of(feb));
        assert_eq!(m.period_of(feb), m.period_of(feb + 27 * 86_400_000));
        assert_eq!(m.start_of(m.period_of(feb + 5)), feb);
        assert_eq!(d.start_of(d.period_of(feb + 5)), feb);
    }

    #[test]
    fn limits_and_scopes_are_checked() {
        let ok = Limit::new("burst", 100, Duration::from_mins(1));
        assert!(check_limits(std::slice::from_ref(&ok)).is_ok());
        assert!(check_limits(&[ok.clone(), ok.clone()]).is_err());
        assert!(check_limits(&[Limit::new("", 1, Duration::from_secs(1))]).is_err());
        assert!(check_limits(&[Limit::new("a b", 1, Duration::from_secs(1))]).is_err());
        assert!(check_limits(&[Limit::new("x", 0, Duration::from_secs(1))]).is_err());
        assert!(check_limits(&[Limit::new("x", 1, Duration::from_micros(1500))]).is_err());
        assert!(check_limits(&[Limit::new("x", 1, Duration::ZERO)]).is_err());
        assert_eq!(
            checked_scopes(&["b:read", "a:write", "b:read"]).unwrap(),
            ["a:write", "b:read"]
        );
        assert!(checked_scopes(&["has space"]).is_err());
        assert!(checked_scopes(&[""]).is_err());
        assert!(
            Quota::new(5)
                .refilled(0, RefillPeriod::Daily)
                .check()
                .is_err()
        );
        assert_eq!(seconds(1.5), Some(Duration::from_millis(1500)));
        assert_eq!(seconds(f64::NAN), None);
        assert_eq!(seconds(-1.0), None);
    }
}
