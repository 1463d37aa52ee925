//! Account-level operations: every owner with its key count, one
//! account's usage across its keys, and closing an account (all its keys
//! deleted in one durable transaction).

use serde::Serialize;
use serde_json::json;

use super::engine::{COMMIT_RETRIES, Engine};
use super::record::{KeyRecord, owner_prefix};
use super::settings::validate_owner;
use crate::backend::{Batch, CommitError, Durability, Table};
use crate::error::KeyError;
use crate::key::KeyId;
use crate::locks::lock;
use crate::time::Timestamp;
use crate::usage::UsageTotals;

/// An account and how many keys it holds ([`Store::owners`](crate::Store::owners)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OwnerInfo {
    /// The owner id.
    pub owner: String,
    /// Its keys.
    pub keys: usize,
}

/// One account's usage across its keys ([`Store::owner_usage`](crate::Store::owner_usage)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OwnerUsage {
    /// The owner id.
    pub owner: String,
    /// Its keys.
    pub keys: usize,
    /// Counts by outcome, summed over its keys.
    pub totals: UsageTotals,
    /// The latest admitted request with any of its keys.
    pub last_used_at: Option<Timestamp>,
}

impl Engine {
    /// The ids in `owner`'s part of the owner index.
    pub(crate) fn owner_ids(&self, owner: &str) -> Result<Vec<KeyId>, KeyError> {
        validate_owner(owner)?;
        let prefix = owner_prefix(owner);
        Ok(self
            .backend
            .scan(Table::Owners, &prefix)?
            .iter()
            .filter_map(|(row, _)| std::str::from_utf8(&row[prefix.len()..]).ok()?.parse().ok())
            .collect())
    }

    pub(crate) fn owners(&self) -> Result<Vec<OwnerInfo>, KeyError> {
        let mut out: Vec<OwnerInfo> = Vec::new();
        for (row, _) in self.backend.scan(Table::Owners, b"")? {
            let Some(nul) = row.iter().position(|b| *b == 0) else {
                continue;
            };
            let Ok(owner) = std::str::from_utf8(&row[..nul]) else {
                continue;
            };
            match out.last_mut() {
                Some(last) if last.owner == owner => last.keys += 1,
                _ => out.push(OwnerInfo {
                    owner: owner.to_string(),
                    keys: 1,
                }),
            }
        }
        Ok(out)
    }

    pub(crate) fn owner_usage(&self, owner: &str) -> Result<OwnerUsage, KeyError> {
        let ids = self.owner_ids(owner)?;
        let mut totals = UsageTotals::default();
        let mut last_used_at = None;
        for id in &ids {
            let usage = self.usage(id)?;
            totals.add(&usage.totals);
            last_used_at = last_used_at.max(usage.last_used.map(|l| l.at));
        }
        Ok(OwnerUsage {
            owner: owner.to_string(),
            keys: ids.len(),
            totals,
            last_used_at,
        })
    }

    /// Deletes every key of `owner` in one durable batch, one `key.deleted`
    /// event each; returns how many.
    pub(crate) fn delete_owner_keys(&self, owner: &str) -> Result<usize, KeyError> {
        let _w = lock(&self.write_lock);
        for _ in 0..COMMIT_RETRIES {
            let ids = self.owner_ids(owner)?;
            if ids.is_empty() {
                return Ok(0);
            }
            let now = self.now_ms();
            let mut batch = Batch::default();
            for id in &ids {
                let Some(bytes) = self.backend.get(Table::Keys, id.as_bytes())? else {
                    continue;
                };
                let rec = KeyRecord::decode(&bytes)?;
                self.delete_in(
                    &mut batch,
                    &rec,
                    bytes,
                    now,
                    json!({ "account_closed": true }),
                );
            }
            let flushed = match self.backend.commit(batch, Durability::Durable) {
                Ok(_) => Ok(()),
                Err(CommitError::Unflushed(e)) => Err(e),
                // A key of the account changed meanwhile: read it again.
                Err(CommitError::Conflict) => continue,
                Err(CommitError::Storage(e)) => return Err(e.into()),
            };
            for id in &ids {
                self.index.remove(id);
                self.usage.discard(id);
            }
            self.events_appended();
            flushed?;
            return Ok(ids.len());
        }
        Err(KeyError::Storage(crate::backend::StorageError::new(
            "the account's keys kept changing while they were deleted; try again",
        )))
    }
}
