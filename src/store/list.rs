//! Listing keys: one account's keys through the owner index, and pages of
//! keys (all, or one account's) in id order with a cursor, so that no
//! listing has to hold a million keys at once.

use super::engine::Engine;
use super::record::{KeyInfo, KeyRecord, owner_prefix};
use super::settings::validate_owner;
use crate::backend::Table;
use crate::error::KeyError;
use crate::key::KeyId;

/// Most keys one page holds.
pub const MAX_PAGE: usize = 1000;

/// One page of a listing, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPage {
    /// The keys of this page.
    pub keys: Vec<KeyInfo>,
    /// Where the next page starts (pass it as `after`); `None` on the last page.
    pub next: Option<KeyId>,
}

impl Engine {
    /// Every key of `owner`, oldest first, found through the owner index.
    pub(crate) fn list_owner(&self, owner: &str) -> Result<Vec<KeyInfo>, KeyError> {
        let ids = self.owner_ids(owner)?;
        let mut out = self.infos(ids.iter().map(|id| id.as_bytes().as_slice()))?;
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Up to `limit` keys (of `owner`, or all) with ids after `after`, in id order.
    pub(crate) fn list_page(
        &self,
        owner: Option<&str>,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<KeyPage, KeyError> {
        if limit == 0 || limit > MAX_PAGE {
            return Err(KeyError::InvalidInput(format!(
                "a page holds 1 to {MAX_PAGE} keys (asked for {limit})"
            )));
        }
        if let Some(o) = owner {
            validate_owner(o)?;
        }
        let (table, prefix) = match owner {
            Some(o) => (Table::Owners, owner_prefix(o)),
            None => (Table::Keys, Vec::new()),
        };
        let mut start = prefix.clone();
        if let Some(id) = after {
            start.extend_from_slice(id.as_bytes());
            start.push(0); // just past it
        }
        // One more than a page: whether there is a next one.
        let rows = self.backend.range_from(table, &start, limit + 1)?;
        let ids: Vec<&[u8]> = rows
            .iter()
            .map(|(k, _)| k.as_slice())
            .take_while(|k| k.starts_with(&prefix))
            .map(|k| &k[prefix.len()..])
            .collect();
        let more = ids.len() > limit;
        let mut keys = self.infos(ids.into_iter().take(limit))?;
        keys.sort_by_key(|k| k.id);
        let next = if more {
            keys.last().map(|k| k.id)
        } else {
            None
        };
        Ok(KeyPage { keys, next })
    }

    /// The Overview of each key id (a key deleted meanwhile is skipped).
    fn infos<'a>(&self, ids: impl Iterator<Item = &'a [u8]>) -> Result<Vec<KeyInfo>, KeyError> {
        let now = self.now_ms();
        let mut out = Vec::new();
        for raw in ids {
            let Some(id) = std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.parse::<KeyId>().ok())
            else {
                continue;
            };
            let Some(bytes) = self.backend.get(Table::Keys, id.as_bytes())? else {
                continue;
            };
            let rec = KeyRecord::decode(&bytes)?;
            out.push(self.info_of(&rec, self.last_used(&id)?, now));
        }
        Ok(out)
    }
}
