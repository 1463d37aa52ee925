//! Where a key's rate limits, quota and scopes are set, and where the
//! tokens its [`Meter`](super::meter::Meter) spends come from: leases taken
//! from the rows of [`Table::Budgets`] by the store's lease thread, each a
//! compare-and-set, so every process of a store draws on one budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, RwLockWriteGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use super::engine::{COMMIT_RETRIES, Engine};
use super::meter::{self, QuotaRow, QuotaWant, quota_lease, quota_row_key};
use super::record::{KeyInfo, KeyRecord, QuotaRule};
use crate::backend::{Backend, Batch, CommitError, Durability, StorageError, Table};
use crate::error::KeyError;
use crate::events::{self, EventKind};
use crate::key::KeyId;
use crate::locks::{lock, read, write};
use crate::policy::{Limit, Span, Window};

/// The lease thread of a store: fetches what meters ask for.
pub(crate) struct LeaseThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl LeaseThread {
    pub(crate) fn spawn(engine: &Arc<Engine>) -> Option<LeaseThread> {
        let rx = lock(&engine.leases.rx).take()?;
        let weak: Weak<Engine> = Arc::downgrade(engine);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("keyward-leases".into())
            .spawn(move || {
                let mut swept = Instant::now();
                while !stopping.load(Ordering::Acquire) {
                    let got = rx.recv_timeout(Duration::from_millis(100));
                    let Some(engine) = weak.upgrade() else { return };
                    match got {
                        // A failure leaves the meter asking again at its next use.
                        Ok(id) => drop(engine.fetch_leases(&id)),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    if swept.elapsed() >= Duration::from_secs(1) {
                        swept = Instant::now();
                        engine.return_idle();
                    }
                }
            })
            .expect("spawning the lease thread");
        Some(LeaseThread { stop, handle })
    }

    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.handle.join();
    }
}

impl Engine {
    /// Whether rate limits draw on budgets shared with other processes
    /// (see [`crate::backend::Backend::budgets_shared`]).
    pub(crate) fn budgets_shared(&self) -> bool {
        self.backend.budgets_shared()
    }

    /// Tops up key `id`'s meter: the shared budget of each limit running
    /// low (several processes), and its quota.
    pub(crate) fn fetch_leases(&self, id: &KeyId) -> Result<(), StorageError> {
        let _moving = read(&self.leases.gate);
        self.counters
            .lease_fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(live) = self.index.get(id) else {
            return Ok(());
        };
        let Some(meter) = live.meter().cloned() else {
            return Ok(());
        };
        let now = self.now_ms();
        let wants = meter.wants(now, self.budgets_shared());
        if wants.load {
            let mut stored = Vec::with_capacity(meter.limits.len());
            for l in &meter.limits {
                stored.push(self.stored_window(id, l)?.0);
            }
            meter.load_windows(&stored);
        }
        for (i, want) in wants.limits {
            let l = &meter.limits[i];
            let (k, room_at) = self.lease_limit(id, l, want, &meter.local_window(i), now)?;
            meter.grant_limit(i, k, room_at);
        }
        if let Some(want) = wants.quota
            && let Some((k, drained)) = self.lease_quota(id, &want, now)?
        {
            meter.grant_quota(want.rule.serial, want.period, k, drained, now);
            if k > 0 {
                lock(&self.leases.holding).insert(*id);
            }
        }
        Ok(())
    }

    /// Takes up to `want` tokens of limit `l` from its shared budget:
    /// how many, and when the budget has room for one more.
    fn lease_limit(
        &self,
        id: &KeyId,
        l: &Limit,
        want: u64,
        local: &Window,
        now: i64,
    ) -> Result<(u64, i64), StorageError> {
        let row = meter::limit_row_key(id, &l.name);
        let span = Span::of(l);
        for _ in 0..COMMIT_RETRIES {
            let (mut counted, old) = self.stored_window(id, l)?;
            // What this process admitted before it shared the budget
            // counts too (a host's owner, once another process attaches).
            counted.merge(local);
            let k = counted.room(now, want, span);
            if k > 0 {
                counted.add(now, k, span);
            }
            let room_at = now.saturating_add(counted.fits(now, 1, span).err().unwrap_or(0));
            if k == 0 {
                return Ok((0, room_at));
            }
            let mut batch = Batch::default();
            batch.expect(Table::Budgets, row.clone(), old);
            batch.put(Table::Budgets, row.clone(), counted.encode());
            match self.backend.commit(batch, Durability::Lazy) {
                Ok(_) | Err(CommitError::Unflushed(_)) => return Ok((k, room_at)),
                Err(CommitError::Conflict) => {}
                Err(CommitError::Storage(e)) => return Err(e),
            }
        }
        Ok((0, now + meter::RECHECK_MS))
    }

    /// What the processes of this store admitted against limit `l` of key
    /// `id`, as stored, and the row as read.
    fn stored_window(
        &self,
        id: &KeyId,
        l: &Limit,
    ) -> Result<(Window, Option<Vec<u8>>), StorageError> {
        let old = self
            .backend
            .get(Table::Budgets, &meter::limit_row_key(id, &l.name))?;
        let counted = old.as_deref().map_or_else(Window::default, Window::decode);
        Ok((counted, old))
    }

    /// Keeps what this process admitted against each limit (alone, its
    /// limits live in memory) for the next process: on close.
    fn store_windows(&self, id: &KeyId, meter: &super::meter::Meter) {
        for (i, l) in meter.limits.iter().enumerate() {
            let mine = meter.local_window(i);
            for _ in 0..COMMIT_RETRIES {
                let Ok((stored, old)) = self.stored_window(id, l) else {
                    break;
                };
                let mut merged = stored;
                merged.merge(&mine);
                if merged == stored {
                    break;
                }
                let mut batch = Batch::default();
                let row = meter::limit_row_key(id, &l.name);
                batch.expect(Table::Budgets, row.clone(), old);
                batch.put(Table::Budgets, row, merged.encode());
                match self.backend.commit(batch, Durability::Lazy) {
                    Err(CommitError::Conflict) => {}
                    _ => break,
                }
            }
        }
    }

    /// Takes a lease of the quota (durably: a crash loses the unused part,
    /// never grants more): `(tokens, storage now empty)`, or `None` when
    /// the row is of another setting than the index knows (it will be,
    /// once this process has seen the change). A refusal with nothing left
    /// is told once per exhaustion across processes (`key.quota_exhausted`).
    fn lease_quota(
        &self,
        id: &KeyId,
        want: &QuotaWant,
        now: i64,
    ) -> Result<Option<(u64, bool)>, StorageError> {
        let row_key = quota_row_key(id);
        for _ in 0..COMMIT_RETRIES {
            let old = self.backend.get(Table::Budgets, &row_key)?;
            let Some(row) = old.as_deref().and_then(QuotaRow::decode) else {
                return Ok(None);
            };
            if row.serial != want.rule.serial {
                return Ok(None);
            }
            let stored = row;
            let mut row = row.at(&want.rule, now);
            // Topped up to one lease at most: a crash loses no more.
            let k = quota_lease(row.remaining + want.hand)
                .saturating_sub(want.hand)
                .min(row.remaining);
            row.remaining -= k;
            let tell = k == 0 && want.told_refusal && !row.told;
            row.told |= tell;
            if row == stored {
                // Nothing to take or tell (a client hammering an exhausted
                // key): no write.
                return Ok(Some((0, row.remaining == 0)));
            }
            let mut batch = Batch::default();
            batch.expect(Table::Budgets, row_key.clone(), old);
            batch.put(Table::Budgets, row_key.clone(), row.encode());
            if tell {
                let rec = match self.record(id) {
                    Ok(rec) => rec,
                    Err(KeyError::NotFound(_)) => return Ok(None),
                    Err(e) => return Err(StorageError::new(e.to_string())),
                };
                let refill_at = want.rule.refill.map(|r| {
                    crate::time::Timestamp::from_unix_millis(r.period.start_of(row.period + 1))
                });
                events::append(
                    &mut batch,
                    EventKind::KeyQuotaExhausted,
                    &rec.subject(&self.prefix),
                    now,
                    self.actor.as_deref(),
                    json!({ "refill_at": refill_at }),
                );
            }
            match self.backend.commit(batch, Durability::Durable) {
                Ok(_) => {
                    if tell {
                        self.events_appended();
                    }
                    return Ok(Some((k, row.remaining == 0)));
                }
                Err(CommitError::Conflict) => {}
                // Applied but maybe not on disk: the tokens are not spent.
                Err(CommitError::Unflushed(e) | CommitError::Storage(e)) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Gives the quota tokens this process holds back to storage (on
    /// close), when the setting and period are still the ones they are of.
    pub(crate) fn return_leases(&self) {
        let _moving = read(&self.leases.gate);
        let now = self.now_ms();
        let shared = self.budgets_shared();
        for (id, live) in self.index.metered() {
            let Some(meter) = live.meter() else {
                continue;
            };
            if !shared {
                self.store_windows(&id, meter);
            }
            let Some(rule) = meter.quota else { continue };
            let (k, period) = meter.take_quota_hand();
            self.give_back(&id, rule, k, period, now);
        }
        lock(&self.leases.holding).clear();
    }

    /// Gives back the quota tokens held, beyond a small reserve, for keys
    /// none were spent of for the idle time (`Options::lease_idle`): they
    /// serve other processes.
    pub(crate) fn return_idle(&self) {
        let now = self.now_ms();
        let held: Vec<KeyId> = lock(&self.leases.holding).iter().copied().collect();
        let _moving = read(&self.leases.gate);
        for id in held {
            let meter = self.index.get(&id).and_then(|l| l.meter().cloned());
            let Some((meter, rule)) = meter.and_then(|m| m.quota.map(|r| (m, r))) else {
                lock(&self.leases.holding).remove(&id);
                continue;
            };
            if let Some((k, period)) = meter.take_idle_quota(now, self.leases.idle_ms) {
                self.give_back(&id, rule, k, period, now);
                // Its reserve stays; it is held again at its next lease.
                lock(&self.leases.holding).remove(&id);
            }
        }
    }

    /// Holds every movement of tokens between storage and this process's
    /// meters until dropped: what the meters hold, and what storage says,
    /// stay as they are (spending goes on).
    pub(crate) fn leases_held_still(&self) -> RwLockWriteGuard<'_, ()> {
        write(&self.leases.gate)
    }

    /// Into `dest`, a copy of this store as it stands (see
    /// [`leases_held_still`](Self::leases_held_still)): the quota tokens
    /// this process's meters took from storage and have not spent go back
    /// to the copy's rows, so its quotas are what customers have left.
    pub(crate) fn hand_over_quota(&self, dest: &dyn Backend) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        for (id, live) in self.index.metered() {
            let Some((meter, rule)) = live.meter().and_then(|m| m.quota.map(|r| (m, r))) else {
                continue;
            };
            let (k, period) = meter.quota_in_hand();
            if k == 0 {
                continue;
            }
            let row_key = quota_row_key(&id);
            let Some(mut row) = dest
                .get(Table::Budgets, &row_key)?
                .as_deref()
                .and_then(QuotaRow::decode)
            else {
                continue;
            };
            if row.serial != rule.serial || row.period != period {
                continue;
            }
            row.remaining += k;
            row.told = false;
            batch.put(Table::Budgets, row_key, row.encode());
        }
        crate::backend::copy::commit(dest, batch)
    }

    /// Adds `k` tokens of `period` back to key `id`'s quota row, when the
    /// row is still of that setting and period (else they lapse).
    fn give_back(&self, id: &KeyId, rule: QuotaRule, k: u64, period: i64, now: i64) {
        if k == 0 || rule.period_of(now) != period {
            return;
        }
        let row_key = quota_row_key(id);
        for _ in 0..COMMIT_RETRIES {
            let Ok(old) = self.backend.get(Table::Budgets, &row_key) else {
                return;
            };
            let Some(mut row) = old.as_deref().and_then(QuotaRow::decode) else {
                return;
            };
            if row.serial != rule.serial || row.period != period {
                return;
            }
            row.remaining += k;
            row.told = false;
            let mut batch = Batch::default();
            batch.expect(Table::Budgets, row_key.clone(), old);
            batch.put(Table::Budgets, row_key.clone(), row.encode());
            match self.backend.commit(batch, Durability::Durable) {
                Err(CommitError::Conflict) => {}
                _ => return,
            }
        }
    }

    /// The Overview of `rec`, with what its quota has left.
    pub(crate) fn info_of(
        &self,
        rec: &KeyRecord,
        last_used: Option<crate::time::Timestamp>,
        now: i64,
    ) -> KeyInfo {
        let mut info = rec.info(&self.prefix, last_used, now);
        self.fill_quota(&mut info, rec.policy.quota);
        info
    }

    /// `info.quota.remaining`: what storage has (refilled if a period
    /// began) and what this process holds of it.
    pub(crate) fn fill_quota(&self, info: &mut KeyInfo, rule: Option<QuotaRule>) {
        let (Some(q), Some(rule)) = (info.quota.as_mut(), rule) else {
            return;
        };
        let now = self.now_ms();
        let stored = self
            .backend
            .get(Table::Budgets, &quota_row_key(&info.id))
            .ok()
            .flatten()
            .and_then(|b| QuotaRow::decode(&b))
            .filter(|r| r.serial == rule.serial)
            .map(|r| r.at(&rule, now));
        let in_hand = self
            .index
            .get(&info.id)
            .and_then(|l| l.meter().map(|m| m.quota_in_hand()))
            .filter(|&(_, period)| period == rule.period_of(now))
            .map_or(0, |(k, _)| k);
        q.remaining = stored.map_or(0, |r| r.remaining) + in_hand;
    }
}

/// Puts (or, without a quota, deletes) the quota row of key `rec` with
/// `remaining` for the period holding `now`.
pub(super) fn quota_row(batch: &mut Batch, rec: &KeyRecord, remaining: Option<u64>, now: i64) {
    let key = quota_row_key(&rec.id);
    match (rec.policy.quota, remaining) {
        (Some(rule), Some(remaining)) => {
            let row = QuotaRow {
                serial: rule.serial,
                remaining,
                period: rule.period_of(now),
                told: false,
            };
            batch.put(Table::Budgets, key, row.encode());
        }
        _ => batch.delete(Table::Budgets, key),
    }
}

/// Deletes every budget row of key `rec`.
pub(super) fn delete_rows(batch: &mut Batch, rec: &KeyRecord) {
    batch.delete(Table::Budgets, quota_row_key(&rec.id));
    for l in &rec.policy.limits {
        batch.delete(Table::Budgets, meter::limit_row_key(&rec.id, &l.name));
    }
}
