//! Usage between memory and storage: reading a key's usage (stored plus
//! pending) and flushing pending usage and notices in one batch (the
//! engine's side of `crate::usage`, which holds the data alone).

use serde_json::json;

use crate::backend::{Batch, CommitError, Durability, StorageError, Table};
use crate::error::KeyError;
use crate::events;
use crate::key::KeyId;
use crate::locks::lock;
use crate::usage::{Notice, RecentRequest, Usage, UsageAgg};

use super::engine::{COMMIT_RETRIES, Engine};
use super::record::KeyRecord;
use crate::time::Timestamp;

impl Engine {
    /// Stored usage plus the pending delta, under the flush lock.
    fn usage_agg(&self, id: &KeyId) -> Result<UsageAgg, KeyError> {
        let _f = lock(&self.flush_lock);
        let mut agg = match self.backend.get(Table::Usage, id.as_bytes())? {
            Some(bytes) => UsageAgg::from_bytes(&bytes)?,
            None => UsageAgg::default(),
        };
        if let Some(p) = self.usage.pending(id) {
            agg.absorb(&p);
        }
        Ok(agg)
    }

    pub(crate) fn last_used(&self, id: &KeyId) -> Result<Option<Timestamp>, KeyError> {
        Ok(self.usage_agg(id)?.last_used_at())
    }

    /// [`Engine::usage_agg`] of a key that exists (`NotFound` otherwise).
    fn key_usage_agg(&self, id: &KeyId) -> Result<UsageAgg, KeyError> {
        if !self.index.contains(id) {
            // Not in this process's index: maybe another writer's new key.
            self.record(id)?;
        }
        self.usage_agg(id)
    }

    pub(crate) fn usage(&self, id: &KeyId) -> Result<Usage, KeyError> {
        let mut agg = self.key_usage_agg(id)?;
        agg.trim(&self.limits, self.now_ms());
        Ok(agg.to_usage(*id))
    }

    /// The key's last verifications (stored, then pending), newest first.
    pub(crate) fn recent_requests(&self, id: &KeyId) -> Result<Vec<RecentRequest>, KeyError> {
        Ok(self.key_usage_agg(id)?.recent_requests())
    }

    /// Moves pending usage and notices to storage. On failure they are kept
    /// for the next attempt.
    pub(crate) fn flush_usage(&self) -> Result<(), StorageError> {
        let _f = lock(&self.flush_lock);
        let deltas = self.usage.take_all();
        let notices = self.usage.take_notices();
        if deltas.is_empty() && notices.is_empty() {
            return Ok(());
        }
        let now = self.now_ms();
        let mut failure = None;
        for _ in 0..COMMIT_RETRIES {
            match self.write_usage(&deltas, &notices, now) {
                Ok(()) => {
                    if !notices.is_empty() {
                        self.events_appended();
                    }
                    return Ok(());
                }
                // Written: putting the deltas back would count them twice.
                Err(CommitError::Unflushed(e)) => {
                    if !notices.is_empty() {
                        self.events_appended();
                    }
                    return Err(e);
                }
                Err(CommitError::Conflict) => {}
                Err(CommitError::Storage(e)) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let failure = failure.unwrap_or_else(|| {
            StorageError::new("usage flush kept conflicting with other writers")
        });
        self.usage.restore(deltas);
        self.usage.restore_notices(notices);
        Err(failure)
    }

    /// One batch: the usage deltas merged into their records, and the
    /// notices of verification as outbox events.
    fn write_usage(
        &self,
        deltas: &[(KeyId, UsageAgg)],
        notices: &[Notice],
        now: i64,
    ) -> Result<(), CommitError> {
        let mut batch = Batch::default();
        for (id, delta) in deltas {
            // Usage of a key deleted since it was recorded goes with it.
            if !self.index.contains(id) {
                continue;
            }
            let old = self.backend.get(Table::Usage, id.as_bytes())?;
            let mut agg = match &old {
                Some(bytes) => UsageAgg::from_bytes(bytes)?,
                None => UsageAgg::default(),
            };
            agg.absorb(delta);
            agg.trim(&self.limits, now);
            batch.expect(Table::Usage, id.as_bytes().to_vec(), old);
            batch.put(Table::Usage, id.as_bytes().to_vec(), agg.to_bytes());
        }
        for n in notices {
            let Some(bytes) = self.backend.get(Table::Keys, n.key_id.as_bytes())? else {
                continue;
            };
            let rec = KeyRecord::decode(&bytes)?;
            let mut data = json!({
                "ip": n.ip.to_string(),
                "integration": n.integration,
                "generation": n.generation,
                "count": n.count,
                "window": n.window.as_secs(),
                "ips": n.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "integrations": n.integrations,
            });
            if let Some(confirmed) = n.confirmed {
                data["confirmed"] = json!(confirmed);
            }
            events::append(
                &mut batch,
                n.kind,
                &rec.subject(&self.prefix),
                n.at,
                self.actor.as_deref(),
                data,
            );
        }
        if batch.ops.is_empty() {
            return Ok(());
        }
        self.backend.commit(batch, Durability::Lazy)?;
        self.backend.flush()?;
        Ok(())
    }
}
