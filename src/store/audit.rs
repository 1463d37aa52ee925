//! The audit trail: queries over the event outbox by key, account, actor,
//! kind and time, answered through the outbox's index.
//!
//! The index (`Table::EventIndex`, rows made by `events::index_rows`) is
//! derived from the events: whoever may write it (an owner, any process
//! of a PostgreSQL store) brings it up to the outbox's end a page at a
//! time, on queries and with the background maintenance; a query reads the
//! rows of its most selective field up to where the index is complete and
//! the events after that one by one. An event pruned goes with its rows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::engine::Engine;
use crate::backend::{Batch, CommitError, Durability, StorageError, Table};
use crate::error::KeyError;
use crate::events::{self, BY_ACTOR, BY_KEY, BY_KIND, BY_OWNER, Event, EventKind};
use crate::key::KeyId;
use crate::time::Timestamp;

/// Events one query examines at most before it returns what it found with
/// [`EventPage::next`] to go on from.
pub const MAX_EXAMINED: usize = 20_000;
/// How far apart the clocks of the processes writing one store may be for
/// a time range to be exact (events are numbered in the order they are
/// written, stamped with their writer's clock).
pub const CLOCK_SKEW: Duration = Duration::from_mins(5);

/// Events the index takes in one write.
const INDEX_PAGE: usize = 512;
/// Events a query indexes at most before it answers (the maintenance
/// does the rest; a query reads what is not indexed one by one).
const INDEX_ON_QUERY: usize = 10_000;
/// Events the background maintenance indexes at most each round.
const MAINTENANCE_INDEX_STEP: usize = 100_000;
/// Rows read at once.
const READ_PAGE: usize = 256;
/// Rows one window going back holds at most.
const WINDOW_ROWS: usize = 4 * READ_PAGE;

/// Which events [`Store::events_query`](crate::Store::events_query)
/// returns: every field given must match (`kinds`: any of them).
///
/// ```
/// # use keyward::{EventKind, EventQuery, Timestamp};
/// let week_ago = Timestamp::from_unix_millis(Timestamp::now().unix_millis() - 7 * 86_400_000);
/// let q = EventQuery::new()
///     .owner("acct_acme")
///     .kind(EventKind::KeyRegenerated)
///     .since_time(week_ago)
///     .newest_first()
///     .limit(50);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct EventQuery {
    /// Events of this key.
    pub key_id: Option<KeyId>,
    /// Events of this account's keys (`data.owner`).
    pub owner: Option<String>,
    /// Changes made by this actor (`data.actor`).
    pub actor: Option<String>,
    /// Events of these kinds (none: every kind).
    pub kinds: Vec<EventKind>,
    /// At or after this time.
    pub since_time: Option<Timestamp>,
    /// Before this time.
    pub until_time: Option<Timestamp>,
    /// Events numbered above this (a cursor going forward).
    pub after: Option<u64>,
    /// Events numbered below this (a cursor going back).
    pub before: Option<u64>,
    /// Newest first (else oldest first).
    pub newest_first: bool,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

impl EventQuery {
    /// Every event, oldest first, 100 at a time.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`EventQuery::key_id`].
    #[must_use]
    pub fn key(mut self, id: KeyId) -> Self {
        self.key_id = Some(id);
        self
    }

    /// Sets [`EventQuery::owner`].
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets [`EventQuery::actor`].
    #[must_use]
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Adds a kind to [`EventQuery::kinds`].
    #[must_use]
    pub fn kind(mut self, kind: EventKind) -> Self {
        self.kinds.push(kind);
        self
    }

    /// Sets [`EventQuery::since_time`].
    #[must_use]
    pub fn since_time(mut self, at: Timestamp) -> Self {
        self.since_time = Some(at);
        self
    }

    /// Sets [`EventQuery::until_time`].
    #[must_use]
    pub fn until_time(mut self, at: Timestamp) -> Self {
        self.until_time = Some(at);
        self
    }

    /// Sets [`EventQuery::after`].
    #[must_use]
    pub fn after(mut self, seq: u64) -> Self {
        self.after = Some(seq);
        self
    }

    /// Sets [`EventQuery::before`].
    #[must_use]
    pub fn before(mut self, seq: u64) -> Self {
        self.before = Some(seq);
        self
    }

    /// Sets [`EventQuery::newest_first`].
    #[must_use]
    pub fn newest_first(mut self) -> Self {
        self.newest_first = true;
        self
    }

    /// Sets [`EventQuery::limit`].
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    fn matches(&self, e: &Event) -> bool {
        let text = |name: &str| e.data.get(name).and_then(serde_json::Value::as_str);
        self.key_id.is_none_or(|id| id == e.key_id)
            && self
                .owner
                .as_deref()
                .is_none_or(|o| text("owner") == Some(o))
            && self
                .actor
                .as_deref()
                .is_none_or(|a| text("actor") == Some(a))
            && (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && self.since_time.is_none_or(|t| e.at >= t)
            && self.until_time.is_none_or(|t| e.at < t)
    }

    /// The index rows to read: those of the most selective field given.
    fn source(&self) -> Option<Vec<u8>> {
        let (field, value): (u8, &[u8]) = if let Some(id) = &self.key_id {
            (BY_KEY, id.as_bytes())
        } else if let Some(a) = &self.actor {
            (BY_ACTOR, a.as_bytes())
        } else if let Some(o) = &self.owner {
            (BY_OWNER, o.as_bytes())
        } else if let [kind] = self.kinds[..] {
            (BY_KIND, kind.as_str().as_bytes())
        } else {
            return None;
        };
        Some(events::index_prefix(field, value))
    }
}

/// What one query found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct EventPage {
    /// The events, in the order asked for.
    pub events: Vec<Event>,
    /// Where to go on from when there may be more: the `after` (oldest
    /// first) or `before` (newest first) of the next query. None: no more.
    pub next: Option<u64>,
}

/// Where a walk over events stopped.
enum Stop {
    /// Read to the end of its range.
    Ended,
    /// Stopped after event `seq`: the page is full, or the walk examined
    /// its most.
    At(u64),
}

/// A walk's state: what it found, what it examined.
struct Walk<'a> {
    query: &'a EventQuery,
    limit: usize,
    found: Vec<Event>,
    examined: usize,
}

impl Walk<'_> {
    /// Takes event `seq` (`None`: pruned since its row was read).
    fn visit(&mut self, seq: u64, event: Option<Event>) -> Option<Stop> {
        self.examined += 1;
        if let Some(e) = event.filter(|e| self.query.matches(e)) {
            self.found.push(e);
        }
        (self.found.len() >= self.limit || self.examined >= MAX_EXAMINED).then_some(Stop::At(seq))
    }
}

impl Engine {
    /// Whether this process writes the outbox's index (an attached
    /// process reads it; its owner writes it).
    pub(crate) fn writes_index(&self) -> bool {
        self.backend
            .host()
            .is_none_or(crate::backend::HostBackend::is_owner)
    }

    /// The last event the index holds.
    pub(crate) fn indexed_through(&self) -> Result<u64, StorageError> {
        let row = self
            .backend
            .get(Table::EventIndex, events::INDEXED_THROUGH)?;
        Ok(events::indexed_through(row.as_deref()))
    }

    /// The maintenance's step: the index brought a bounded step nearer
    /// the outbox's end, by the process that writes it; how far it moved.
    pub(crate) fn keep_index_up(&self) -> Result<u64, StorageError> {
        if !self.writes_index() {
            return Ok(0);
        }
        let before = self.indexed_through()?;
        Ok(self
            .index_events(MAINTENANCE_INDEX_STEP)?
            .saturating_sub(before))
    }

    /// Brings the index up to the outbox's end, at most `budget` events
    /// (rounded up to a page); returns the last event it holds. Another
    /// process doing the same meanwhile wins and this one stops.
    pub(crate) fn index_events(&self, budget: usize) -> Result<u64, StorageError> {
        let mut indexed = 0;
        loop {
            let through_row = self
                .backend
                .get(Table::EventIndex, events::INDEXED_THROUGH)?;
            let through = events::indexed_through(through_row.as_deref());
            if indexed >= budget {
                return Ok(through);
            }
            let page = self.backend.range_from(
                Table::Events,
                &through.saturating_add(1).to_be_bytes(),
                INDEX_PAGE,
            )?;
            let Some(last) = page.last().and_then(|(k, _)| events::indexed_seq(k)) else {
                return Ok(through);
            };
            let mut batch = Batch::default();
            batch.expect(
                Table::EventIndex,
                events::INDEXED_THROUGH.to_vec(),
                through_row,
            );
            for (k, v) in &page {
                for row in events::index_rows(&Event::from_stored(k, v)?) {
                    batch.put(Table::EventIndex, row, Vec::new());
                }
            }
            batch.put(
                Table::EventIndex,
                events::INDEXED_THROUGH.to_vec(),
                last.to_be_bytes().to_vec(),
            );
            // Derived from durable events: rebuilt after a crash.
            match self.backend.commit(batch, Durability::Lazy) {
                Ok(_) => indexed += page.len(),
                Err(CommitError::Conflict) => return self.indexed_through(),
                Err(CommitError::Storage(e) | CommitError::Unflushed(e)) => return Err(e),
            }
        }
    }

    /// The events `q` asks for.
    pub(crate) fn events_query(&self, q: &EventQuery) -> Result<EventPage, KeyError> {
        let limit = q.limit.unwrap_or(100);
        if !(1..=super::MAX_PAGE).contains(&limit) {
            return Err(KeyError::InvalidInput(format!(
                "limit must be 1 to {}",
                super::MAX_PAGE
            )));
        }
        if let (Some(s), Some(u)) = (q.since_time, q.until_time)
            && s > u
        {
            return Err(KeyError::InvalidInput(
                "since_time is after until_time".into(),
            ));
        }
        let through = if self.writes_index() {
            self.index_events(INDEX_ON_QUERY)?
        } else {
            self.indexed_through()?
        };
        Ok(self.query_through(q, limit, through)?)
    }

    /// The events `q` asks for, with the index complete through event
    /// `through`.
    fn query_through(
        &self,
        q: &EventQuery,
        limit: usize,
        through: u64,
    ) -> Result<EventPage, StorageError> {
        let (lo, hi) = self.seq_bounds(q, through)?;
        let mut walk = Walk {
            query: q,
            limit,
            found: Vec::new(),
            examined: 0,
        };
        // The indexed events through their rows (or, with no field to go
        // by, themselves), then those after the index's end one by one.
        let indexed = (q.source(), lo, hi.min(through.saturating_add(1)));
        let tail = (None, lo.max(through), hi);
        let segments = if q.newest_first {
            [tail, indexed]
        } else {
            [indexed, tail]
        };
        let mut next = None;
        for (source, lo, hi) in segments {
            if hi <= lo.saturating_add(1) {
                continue;
            }
            let stop = if q.newest_first {
                self.walk_back(source.as_deref(), lo, hi, &mut walk)?
            } else {
                self.walk_on(source.as_deref(), lo, hi, &mut walk)?
            };
            if let Stop::At(seq) = stop {
                next = Some(seq);
                break;
            }
        }
        Ok(EventPage {
            events: walk.found,
            next,
        })
    }

    /// Event numbers outside which no event of the query's time range
    /// lies, found through the time rows: `(lo, hi)`, both exclusive.
    /// Exact while the writers' clocks agree within [`CLOCK_SKEW`].
    fn seq_bounds(&self, q: &EventQuery, through: u64) -> Result<(u64, u64), StorageError> {
        let skew = i64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(i64::MAX);
        let mut lo = q.after.unwrap_or(0);
        let mut hi = q.before.unwrap_or(u64::MAX);
        // The earliest-stamped indexed event stamped at or after `ms`.
        let first_at = |ms: i64| -> Result<Option<(i64, u64)>, StorageError> {
            let rows = self
                .backend
                .range_from(Table::EventIndex, &events::time_row(ms), 1)?;
            Ok(rows.first().and_then(|(row, _)| events::time_of(row)))
        };
        if let Some(until) = q.until_time {
            // Every event numbered from one stamped a skew after `until`
            // on is stamped after `until`.
            if let Some((_, seq)) = first_at(until.unix_millis().saturating_add(skew))? {
                hi = hi.min(seq);
            }
        }
        if let Some(since) = q.since_time {
            // An event stamped a skew before `since`: every event numbered
            // up to it is stamped before `since`. Looked for further back
            // each time (a few reads whatever the outbox holds).
            let cutoff = since.unix_millis().saturating_sub(skew);
            let mut back = skew.max(1000);
            loop {
                match first_at(cutoff.saturating_sub(back))? {
                    // Every indexed event is older.
                    None => lo = lo.max(through),
                    Some((t, seq)) if t < cutoff => lo = lo.max(seq),
                    // None is older than the cutoff: no bound.
                    Some(_) if back > i64::MAX / 4 => {}
                    Some(_) => {
                        back = back.saturating_mul(4);
                        continue;
                    }
                }
                break;
            }
        }
        Ok((lo, hi))
    }

    /// Up to `limit` events numbered in `(lo, hi)`, oldest first, with
    /// their numbers: through index rows starting with `source`, or the
    /// outbox itself. An index row whose event is gone gives `None`.
    fn events_in(
        &self,
        source: Option<&[u8]>,
        lo: u64,
        hi: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Option<Event>)>, StorageError> {
        let backend = self.backend.as_ref();
        let Some(prefix) = source else {
            return Ok(events::read(backend, lo, limit)?
                .into_iter()
                .take_while(|e| e.seq < hi)
                .map(|e| (e.seq, Some(e)))
                .collect());
        };
        let mut start = prefix.to_vec();
        start.extend_from_slice(&lo.saturating_add(1).to_be_bytes());
        let mut out = Vec::new();
        for (row, _) in backend.range_from(Table::EventIndex, &start, limit)? {
            if !row.starts_with(prefix) {
                break;
            }
            // A longer value that begins like this one.
            if row.len() != prefix.len() + 8 {
                continue;
            }
            let seq = events::indexed_seq(&row).expect("8 bytes");
            if seq >= hi {
                break;
            }
            out.push((seq, events::get(backend, seq)?));
        }
        Ok(out)
    }

    fn walk_on(
        &self,
        source: Option<&[u8]>,
        mut lo: u64,
        hi: u64,
        walk: &mut Walk<'_>,
    ) -> Result<Stop, StorageError> {
        loop {
            let page = self.events_in(source, lo, hi, READ_PAGE)?;
            let Some(&(last, _)) = page.last() else {
                return Ok(Stop::Ended);
            };
            for (seq, event) in page {
                if let Some(stop) = walk.visit(seq, event) {
                    return Ok(stop);
                }
            }
            lo = last;
        }
    }

    /// Newest first: windows of event numbers going back from `hi`, each
    /// read forward (storage reads forward), twice as wide after an empty
    /// one.
    fn walk_back(
        &self,
        source: Option<&[u8]>,
        lo: u64,
        hi: u64,
        walk: &mut Walk<'_>,
    ) -> Result<Stop, StorageError> {
        let mut hi = if hi == u64::MAX {
            events::newest_after(self.backend.as_ref(), lo)?.saturating_add(1)
        } else {
            hi
        };
        let mut width = READ_PAGE as u64;
        while hi > lo.saturating_add(1) {
            let start = hi.saturating_sub(width).max(lo);
            let window = self.events_in(source, start, hi, WINDOW_ROWS + 1)?;
            if window.len() > WINDOW_ROWS {
                // Too many to hold at once: a narrower window (one of
                // READ_PAGE numbers holds fewer than that).
                width = (width / 16).max(READ_PAGE as u64);
                continue;
            }
            if window.len() < READ_PAGE / 4 {
                // Sparse here: wider next time.
                width = width.saturating_mul(4);
            }
            for (seq, event) in window.into_iter().rev() {
                if let Some(stop) = walk.visit(seq, event) {
                    return Ok(stop);
                }
            }
            if start == lo {
                break;
            }
            hi = start.saturating_add(1);
        }
        Ok(Stop::Ended)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::store::{CreateOptions, KeyUpdate, Options, Store};
    use crate::verifier::Argon2Params;

    fn options(clock: &Arc<ManualClock>, actor: &str) -> Options {
        let mut o = Options {
            argon2: Argon2Params {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            ..Options::default()
        };
        o.clock = Arc::clone(clock) as Arc<dyn crate::clock::Clock>;
        o.actor = Some(actor.to_string());
        o
    }

    /// Every page of `q`, followed through `next` (with the index as it
    /// is through `through`, else caught up first).
    fn all_pages(store: &Store, q: &EventQuery, through: Option<u64>) -> Vec<u64> {
        let mut q = q.clone();
        let mut seqs = Vec::new();
        for _ in 0..10_000 {
            let page = match through {
                Some(t) => store.engine.query_through(&q, q.limit.unwrap(), t).unwrap(),
                None => store.events_query(&q).unwrap(),
            };
            seqs.extend(page.events.iter().map(|e| e.seq));
            match page.next {
                Some(n) if q.newest_first => q.before = Some(n),
                Some(n) => q.after = Some(n),
                None => return seqs,
            }
        }
        panic!("no end to the pages of {q:?}");
    }

    /// Queries through the index agree with reading every event and
    /// keeping those that match: by key, owner, actor, kinds, time range,
    /// in both orders, page by page; with the index complete, partly
    /// built (the rest read one by one), and after pruning.
    /// A store whose outbox three actors wrote over three rounds (creates,
    /// regenerations, renames, deletions across three accounts), one of
    /// them with its clock set back within CLOCK_SKEW; its keys' ids and
    /// when it started.
    fn history(path: &std::path::Path, clock: &Arc<ManualClock>) -> (Vec<KeyId>, Timestamp) {
        let start = clock.now();
        let mut ids = Vec::new();
        for (round, actor) in ["alice", "bob", "carol"].iter().enumerate() {
            let store = Store::open_with(path, &options(clock, actor)).unwrap();
            for i in 0..30 {
                let owner = ["acme", "globex", "acme-eu"][(i + round) % 3];
                let c = store
                    .create(&format!("k{round}-{i}"), CreateOptions::new().owner(owner))
                    .unwrap();
                ids.push(c.info.id);
                clock.advance(Duration::from_secs(7));
                if i % 3 == 0 {
                    store
                        .regenerate(&ids[i * 2 % ids.len()], Duration::ZERO)
                        .ok();
                }
                if i % 4 == 1 {
                    store
                        .update(&c.info.id, KeyUpdate::new().name("renamed"))
                        .unwrap();
                }
                if i % 5 == 2 {
                    store.delete(&ids[i % ids.len()]).ok();
                }
                clock.advance(Duration::from_secs(11));
                if i == 15 {
                    // A writer whose clock is behind (within CLOCK_SKEW):
                    // time ranges stay exact.
                    clock.set(Timestamp::from_unix_millis(
                        clock.now().unix_millis() - 240_000,
                    ));
                }
            }
            store.close().unwrap();
        }
        (ids, start)
    }

    #[test]
    fn queries_agree_with_reading_every_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let clock = Arc::new(ManualClock::starting_now());
        let (ids, start) = history(&path, &clock);
        let store = Store::open_with(&path, &options(&clock, "dave")).unwrap();
        let everything = store.events(0, usize::MAX).unwrap();
        assert!(everything.len() > 100, "{}", everything.len());
        let at = |secs: i64| Timestamp::from_unix_millis(start.unix_millis() + secs * 1000);
        let mut queries = vec![
            EventQuery::new(),
            EventQuery::new().key(ids[3]),
            EventQuery::new()
                .key(ids[0])
                .kind(EventKind::KeyRegenerated),
            EventQuery::new().owner("acme"),
            EventQuery::new().owner("acme-eu"),
            EventQuery::new().owner("nobody"),
            EventQuery::new().actor("bob"),
            EventQuery::new().actor("bob").owner("globex"),
            EventQuery::new().kind(EventKind::KeyDeleted),
            EventQuery::new()
                .kind(EventKind::KeyDeleted)
                .kind(EventKind::KeyUpdated),
            EventQuery::new().since_time(at(200)),
            EventQuery::new().since_time(at(400)),
            EventQuery::new().since_time(at(270)),
            EventQuery::new().until_time(at(50)),
            EventQuery::new()
                .since_time(at(800))
                .kind(EventKind::KeyCreated),
            EventQuery::new().until_time(at(300)),
            EventQuery::new().until_time(at(420)),
            EventQuery::new().until_time(at(900)).actor("bob"),
            EventQuery::new()
                .since_time(at(100))
                .until_time(at(500))
                .owner("acme"),
            EventQuery::new().since_time(at(100_000)),
            EventQuery::new().after(20).before(60).owner("globex"),
        ];
        for q in queries.clone() {
            queries.push(q.newest_first());
        }
        let check = |what: &str, through: Option<u64>| {
            for q in &queries {
                for limit in [1, 3, 100] {
                    let q = q.clone().limit(limit);
                    let mut want: Vec<u64> = everything
                        .iter()
                        .filter(|e| q.matches(e))
                        .filter(|e| q.after.is_none_or(|a| e.seq > a))
                        .filter(|e| q.before.is_none_or(|b| e.seq < b))
                        .filter(|e| store.events(e.seq - 1, 1).unwrap().first() == Some(e))
                        .map(|e| e.seq)
                        .collect();
                    if q.newest_first {
                        want.reverse();
                    }
                    assert_eq!(all_pages(&store, &q, through), want, "{what}: {q:?}");
                }
            }
        };
        check("indexed", None);
        // The index only partly built: its end moved back, the rows after
        // it gone; a query reads the rest one by one.
        let backend = store.engine.backend.as_ref();
        let mut b = Batch::default();
        for (row, _) in backend.scan(Table::EventIndex, b"").unwrap() {
            if events::indexed_seq(&row).is_some_and(|s| s > 40) {
                b.delete(Table::EventIndex, row);
            }
        }
        b.put(
            Table::EventIndex,
            events::INDEXED_THROUGH.to_vec(),
            40u64.to_be_bytes().to_vec(),
        );
        backend.commit(b, Durability::Durable).unwrap();
        assert_eq!(store.engine.indexed_through().unwrap(), 40);
        check("read one by one after the index's end", Some(40));
        let last = everything.last().unwrap().seq;
        assert_eq!(store.engine.index_events(1).unwrap(), last, "a page a step");
        check("caught up", None);
        // Pruned events go with their rows.
        let mut b = Batch::default();
        b.delete(Table::EventIndex, events::INDEXED_THROUGH.to_vec());
        backend.commit(b, Durability::Durable).unwrap();
        let pruned = events::prune(backend, at(400).unix_millis(), Duration::from_mins(1)).unwrap();
        assert!(pruned > 10);
        let left: std::collections::HashSet<u64> = store
            .events(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        for (row, _) in backend.scan(Table::EventIndex, b"").unwrap() {
            if let Some(seq) = events::indexed_seq(&row).filter(|_| row != events::INDEXED_THROUGH)
            {
                assert!(left.contains(&seq), "a row of pruned event {seq}");
            }
        }
        store.close().unwrap();
    }

    /// `check` finds an index that lost rows or runs past the outbox, and
    /// a repair has it built again; queries answer alike after.
    #[test]
    fn check_finds_a_broken_index_and_a_repair_rebuilds_it() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::starting_now());
        let store = Store::open_with(dir.path().join("s"), &options(&clock, "a")).unwrap();
        for i in 0..20 {
            let owner = if i % 2 == 0 { "acme" } else { "globex" };
            store
                .create(&format!("k{i}"), CreateOptions::new().owner(owner))
                .unwrap();
        }
        let acme = EventQuery::new().owner("acme");
        let want = store.events_query(&acme).unwrap().events;
        assert_eq!(want.len(), 10);
        assert!(store.check(false).unwrap().is_clean());
        let backend = store.engine.backend.as_ref();
        let mut lost = events::index_prefix(BY_OWNER, b"acme");
        lost.extend_from_slice(&want[3].seq.to_be_bytes());
        let mut b = Batch::default();
        b.delete(Table::EventIndex, lost);
        backend.commit(b, Durability::Durable).unwrap();
        assert_eq!(
            store.events_query(&acme).unwrap().events.len(),
            9,
            "a row lost"
        );
        let report = store.check(false).unwrap();
        assert!(!report.is_clean());
        assert_eq!(report.problems[0].table, "event_index");
        assert!(
            report.problems[0].problem.contains("1 events"),
            "{report:?}"
        );
        let report = store.check(true).unwrap();
        assert!(report.is_clean() && report.problems.iter().all(|p| p.repaired));
        assert_eq!(
            store.events_query(&acme).unwrap().events,
            want,
            "built again"
        );
        assert!(store.check(false).unwrap().is_clean());
        // An end past the last event.
        let mut b = Batch::default();
        b.put(
            Table::EventIndex,
            events::INDEXED_THROUGH.to_vec(),
            99u64.to_be_bytes().to_vec(),
        );
        backend.commit(b, Durability::Durable).unwrap();
        let report = store.check(false).unwrap();
        assert!(
            report.problems[0]
                .problem
                .contains("past the last event 20"),
            "{report:?}"
        );
        assert!(store.check(true).unwrap().is_clean());
        assert_eq!(store.events_query(&acme).unwrap().events, want);
        store.close().unwrap();
    }

    #[test]
    fn bad_queries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::starting_now());
        let store = Store::open_with(dir.path().join("s"), &options(&clock, "a")).unwrap();
        for q in [
            EventQuery::new().limit(0),
            EventQuery::new().limit(1001),
            EventQuery::new()
                .since_time(clock.now())
                .until_time(Timestamp::from_unix_millis(0)),
        ] {
            assert!(
                matches!(store.events_query(&q), Err(KeyError::InvalidInput(_))),
                "{q:?}"
            );
        }
        let json: Result<EventQuery, _> = serde_json::from_str(r#"{"owner": "a", "colour": 1}"#);
        assert!(json.unwrap_err().to_string().contains("colour"));
    }
}
