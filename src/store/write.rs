//! Every change to a key: storage first (durable, in one atomic batch with
//! its outbox event), then the index, so that once a change returns no
//! thread can see the old state.

use std::time::Duration;

use serde_json::{Value, json};

use super::engine::{COMMIT_RETRIES, Engine};
use super::meter;
use super::options::{MAX_GRACE, PAST_GENERATIONS_KEPT};
use super::record::{CreatedKey, GenRecord, KeyInfo, KeyRecord};
use super::settings::{CreateOptions, KeyUpdate};
use crate::backend::{Batch, CommitError, Durability, StorageError, Table};
use crate::error::{KeyError, WhitelistError};
use crate::events::{self, EventKind};
use crate::key::{self, KeyId};
use crate::locks::lock;
use crate::time::Timestamp;
use crate::verifier;
use crate::whitelist::{self, WhitelistEntry};

/// Most keys one [`Engine::create_many`] makes.
pub(crate) const MAX_CREATE_MANY: usize = 10_000;

fn too_many_writers() -> KeyError {
    KeyError::Storage(StorageError::new(
        "too many concurrent writers to one key; try again",
    ))
}

impl Engine {
    /// Read-modify-write of one key record with its event, atomic and durable,
    /// then the index. `change` may run more than once if another writer
    /// races (shared backends).
    pub(crate) fn update(
        &self,
        id: &KeyId,
        kind: EventKind,
        change: impl FnMut(&mut KeyRecord, i64) -> Result<Value, KeyError>,
    ) -> Result<KeyInfo, KeyError> {
        self.update_with(id, kind, change, |_, _, _| {})
    }

    /// [`Engine::update`], with `rows(old, new, batch)` adding writes of
    /// other rows to the same batch.
    pub(crate) fn update_with(
        &self,
        id: &KeyId,
        kind: EventKind,
        mut change: impl FnMut(&mut KeyRecord, i64) -> Result<Value, KeyError>,
        rows: impl Fn(&KeyRecord, &KeyRecord, &mut Batch),
    ) -> Result<KeyInfo, KeyError> {
        self.update_events(id, |rec, now| Ok(vec![(kind, change(rec, now)?)]), rows)
    }

    /// [`Engine::update_with`] where `change` tells the events (any
    /// number, in order) that the change writes with the record.
    pub(crate) fn update_events(
        &self,
        id: &KeyId,
        mut change: impl FnMut(&mut KeyRecord, i64) -> Result<Vec<(EventKind, Value)>, KeyError>,
        rows: impl Fn(&KeyRecord, &KeyRecord, &mut Batch),
    ) -> Result<KeyInfo, KeyError> {
        let _w = lock(&self.write_lock);
        for _ in 0..COMMIT_RETRIES {
            let (mut rec, old) = self.record_bytes(id)?;
            let before = rec.clone();
            let old_owner_row = rec.owner_row();
            let old_lookups = super::imports::of_record(&rec);
            let now = self.now_ms();
            let told = change(&mut rec, now)?;
            rec.updated_at = now;
            let mut batch = Batch::default();
            rows(&before, &rec, &mut batch);
            batch.expect(Table::Keys, id.as_bytes().to_vec(), Some(old));
            batch.put(Table::Keys, id.as_bytes().to_vec(), rec.encode());
            // The owner index moves with the record, in the same batch.
            let new_owner_row = rec.owner_row();
            if old_owner_row != new_owner_row {
                if let Some(row) = old_owner_row {
                    batch.delete(Table::Owners, row);
                }
                if let Some(row) = new_owner_row {
                    batch.put(Table::Owners, row, Vec::new());
                }
            }
            // An imported generation dropped (past the ones kept): its
            // lookup is free again.
            let new_lookups = super::imports::of_record(&rec);
            for gone in old_lookups.iter().filter(|l| !new_lookups.contains(l)) {
                batch.delete(Table::Imports, gone.row());
            }
            for (kind, data) in told {
                events::append(
                    &mut batch,
                    kind,
                    &rec.subject(&self.prefix),
                    now,
                    self.actor.as_deref(),
                    data,
                );
            }
            let flushed = match self.backend.commit(batch, Durability::Durable) {
                Ok(_) => Ok(()),
                // Applied: the index follows storage, and the caller hears of the failure.
                Err(CommitError::Unflushed(e)) => Err(e),
                Err(CommitError::Conflict) => continue,
                Err(CommitError::Storage(e)) => return Err(e.into()),
            };
            self.index.install(&rec);
            self.events_appended();
            flushed?;
            // The change is made: a failure to read usage must not turn it
            // into an error (a regeneration's new key would be lost).
            let last_used = self.last_used(id).ok().flatten();
            return Ok(self.info_of(&rec, last_used, now));
        }
        Err(too_many_writers())
    }

    pub(crate) fn create(
        &self,
        name: &str,
        options: CreateOptions,
    ) -> Result<CreatedKey, KeyError> {
        let mut created = self.create_many(vec![(name.to_string(), options)])?;
        Ok(created.pop().expect("one key made"))
    }

    /// Creates every key in one atomic, durable batch (provisioning many
    /// keys costs one write to disk): all are made or none.
    pub(crate) fn create_many(
        &self,
        keys: Vec<(String, CreateOptions)>,
    ) -> Result<Vec<CreatedKey>, KeyError> {
        if keys.len() > MAX_CREATE_MANY {
            return Err(KeyError::InvalidInput(format!(
                "at most {MAX_CREATE_MANY} keys at once (got {})",
                keys.len()
            )));
        }
        let now = self.now_ms();
        // Everything is checked before anything is hashed or written.
        let checked = keys
            .into_iter()
            .map(|(name, options)| {
                let (options, wl) = options.checked(&name, now)?;
                Ok((name, options, wl))
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        let mut new = NewKeys::default();
        let mut made = Vec::with_capacity(checked.len());
        for (name, options, wl) in checked {
            let id = KeyId::random();
            let generated = key::generate(&self.prefix, &id);
            let phc = verifier::hash_secret(&self.hasher, &generated.secret)
                .map_err(KeyError::Internal)?;
            let data = json!({
                "expires_at": options.expires_at,
                "whitelist_enabled": wl.enabled,
            });
            let first = GenRecord {
                n: 1,
                created_at: now,
                retired_at: None,
                grace_until: None,
                phc,
                tag: self.tag_key.tag(&generated.secret),
                store_tag: true,
                last4: generated.last4.clone(),
                lookup: None,
            };
            let remaining = options.quota.map(|q| q.remaining);
            let rec = options.into_record(id, name, wl, now, first);
            new.add(self, &rec, remaining, now, data);
            made.push((rec, generated.key));
        }
        let _w = lock(&self.write_lock);
        // Ids are random; a collision is astronomically unlikely, and refused.
        self.commit_new(new, made.iter().map(|(rec, _)| rec), || {
            KeyError::Internal("key id collision; try again".into())
        })?;
        Ok(made
            .into_iter()
            .map(|(rec, key)| CreatedKey {
                // No lease is taken here: the key's first use (argon2, in
                // whichever process) takes it.
                info: self.info_of(&rec, None, now),
                key,
            })
            .collect())
    }

    /// Commits staged new keys durably, then installs them in the index
    /// (also when the commit was applied but not flushed, which is then
    /// the error). `conflict` is the error when one of the checks failed.
    pub(super) fn commit_new<'r>(
        &self,
        new: NewKeys,
        made: impl Iterator<Item = &'r KeyRecord>,
        conflict: impl FnOnce() -> KeyError,
    ) -> Result<(), KeyError> {
        let NewKeys {
            mut checks,
            records,
            outbox,
        } = new;
        checks.ops.extend(records.ops);
        checks.ops.extend(outbox.ops);
        let flushed = match self.backend.commit(checks, Durability::Durable) {
            Ok(_) => Ok(()),
            Err(CommitError::Unflushed(e)) => Err(e),
            Err(CommitError::Conflict) => return Err(conflict()),
            Err(CommitError::Storage(e)) => return Err(e.into()),
        };
        for rec in made {
            self.index.install(rec);
        }
        self.events_appended();
        Ok(flushed?)
    }

    pub(crate) fn regenerate(&self, id: &KeyId, grace: Duration) -> Result<CreatedKey, KeyError> {
        if grace > MAX_GRACE {
            return Err(KeyError::InvalidInput(format!(
                "a grace period is at most {} days",
                MAX_GRACE.as_secs() / 86_400
            )));
        }
        // No argon2 for an id that names no key (another process's key
        // may not have reached this index yet: storage says).
        if !self.index.contains(id)
            && (!self.shared || self.backend.get(Table::Keys, id.as_bytes())?.is_none())
        {
            return Err(KeyError::NotFound(*id));
        }
        // Hash outside the write lock: argon2 takes tens of milliseconds.
        let generated = key::generate(&self.prefix, id);
        let phc =
            verifier::hash_secret(&self.hasher, &generated.secret).map_err(KeyError::Internal)?;
        let tag = self.tag_key.tag(&generated.secret);
        let info = self.update(id, EventKind::KeyRegenerated, |rec, now| {
            let grace_until = (!grace.is_zero())
                .then(|| Timestamp::from_unix_millis(now).plus(grace).unix_millis());
            for (i, g) in rec.generations.iter_mut().enumerate() {
                if i == 0 {
                    g.retired_at = Some(now);
                    g.grace_until = grace_until;
                } else {
                    // A new regeneration never extends an older grace; grace 0 ends them all.
                    g.grace_until = match (g.grace_until, grace_until) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        _ => None,
                    };
                }
            }
            let n = rec.current().n + 1;
            rec.generations.insert(
                0,
                GenRecord {
                    n,
                    created_at: now,
                    retired_at: None,
                    grace_until: None,
                    phc: phc.clone(),
                    tag,
                    store_tag: true,
                    last4: generated.last4.clone(),
                    lookup: None,
                },
            );
            rec.generations.truncate(1 + PAST_GENERATIONS_KEPT);
            rec.rotated_at = Some(now);
            Ok(json!({
                "generation": n,
                "grace_until": grace_until.map(Timestamp::from_unix_millis),
            }))
        })?;
        Ok(CreatedKey {
            info,
            key: generated.key,
        })
    }

    /// Adds to `batch` the deletion of key `rec` (stored as `old`): its
    /// record unless it changed meanwhile, its usage, its owner index row,
    /// and its `key.deleted` event carrying `data`.
    pub(crate) fn delete_in(
        &self,
        batch: &mut Batch,
        rec: &KeyRecord,
        old: Vec<u8>,
        now: i64,
        data: Value,
    ) {
        let id = rec.id.as_bytes();
        batch.expect(Table::Keys, id.to_vec(), Some(old));
        batch.delete(Table::Keys, id.to_vec());
        // The id is never used again (see `vet`).
        batch.put(Table::Gone, id.to_vec(), now.to_be_bytes().to_vec());
        batch.delete(Table::Usage, id.to_vec());
        if let Some(row) = rec.owner_row() {
            batch.delete(Table::Owners, row);
        }
        super::budgets::delete_rows(batch, rec);
        for l in super::imports::of_record(rec) {
            batch.delete(Table::Imports, l.row());
        }
        events::append(
            batch,
            EventKind::KeyDeleted,
            &rec.subject(&self.prefix),
            now,
            self.actor.as_deref(),
            data,
        );
    }

    pub(crate) fn delete(&self, id: &KeyId) -> Result<(), KeyError> {
        let _w = lock(&self.write_lock);
        for _ in 0..COMMIT_RETRIES {
            let (rec, old) = self.record_bytes(id)?;
            let mut batch = Batch::default();
            self.delete_in(&mut batch, &rec, old, self.now_ms(), json!({}));
            let flushed = match self.backend.commit(batch, Durability::Durable) {
                Ok(_) => Ok(()),
                // Applied: the key is gone from the index too.
                Err(CommitError::Unflushed(e)) => Err(e),
                Err(CommitError::Conflict) => continue,
                Err(CommitError::Storage(e)) => return Err(e.into()),
            };
            self.index.remove(id);
            self.usage.discard(id);
            self.events_appended();
            return flushed.map_err(Into::into);
        }
        Err(too_many_writers())
    }

    pub(crate) fn add_whitelist_entry(
        &self,
        id: &KeyId,
        name: &str,
        ip_or_cidr: &str,
    ) -> Result<WhitelistEntry, WhitelistError> {
        whitelist::validate_entry_name(name)?;
        whitelist::parse_network(ip_or_cidr).map_err(WhitelistError::InvalidNetwork)?;
        let mut added = None;
        let mut failure = None;
        let result = self.update(id, EventKind::WhitelistUpdated, |rec, now| {
            match whitelist::new_entry(&rec.whitelist, name, ip_or_cidr, now) {
                Ok(entry) => {
                    let data = json!({ "added": { "id": entry.id, "name": entry.name, "network": entry.network } });
                    rec.whitelist.entries.push(entry.clone());
                    added = Some(entry);
                    Ok(data)
                }
                Err(e) => {
                    let msg = e.to_string();
                    failure = Some(e);
                    Err(KeyError::InvalidInput(msg))
                }
            }
        });
        match (result, failure) {
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
            (Ok(_), None) => Ok(added.expect("set when the update succeeds")),
        }
    }

    pub(crate) fn remove_whitelist_entry(
        &self,
        id: &KeyId,
        entry_id: &str,
    ) -> Result<(), WhitelistError> {
        let mut missing = false;
        let result = self.update(id, EventKind::WhitelistUpdated, |rec, _| {
            let Some(pos) = rec.whitelist.entries.iter().position(|e| e.id == entry_id) else {
                missing = true;
                return Err(KeyError::InvalidInput(String::new()));
            };
            let gone = rec.whitelist.entries.remove(pos);
            Ok(json!({ "removed": { "id": gone.id, "name": gone.name, "network": gone.network } }))
        });
        if missing {
            return Err(WhitelistError::EntryNotFound {
                key_id: *id,
                entry_id: entry_id.to_string(),
            });
        }
        result.map(drop).map_err(Into::into)
    }
}

impl Engine {
    /// Applies `patch` to key `id` (see [`KeyUpdate`]): the record and
    /// its events in one batch, with the shared budgets the patch changes.
    pub(crate) fn update_key(&self, id: &KeyId, patch: KeyUpdate) -> Result<KeyInfo, KeyError> {
        let patch = patch.checked()?;
        if patch.is_empty() {
            return self.get(id);
        }
        let quota_rule = patch.quota_rule();
        let mut info = self.update_events(
            id,
            |rec, _| Ok(patch.apply(rec, quota_rule)),
            |old, new, batch| {
                // A limit removed takes its shared budget with it; a new
                // quota setting is what every process now draws on.
                if let Some(limits) = &patch.limits {
                    for l in &old.policy.limits {
                        if !limits.iter().any(|n| n.name == l.name) {
                            batch.delete(Table::Budgets, meter::limit_row_key(&old.id, &l.name));
                        }
                    }
                }
                if let Some(quota) = patch.quota {
                    super::budgets::quota_row(
                        batch,
                        new,
                        quota.map(|q| q.remaining),
                        self.now_ms(),
                    );
                }
            },
        )?;
        if patch.limits.is_some() && self.budgets_shared() || patch.quota.is_some() {
            // The first lease now, so the key's next use need not wait for one.
            let _ = self.fetch_leases(id);
        }
        if let Some(rule) = quota_rule {
            self.fill_quota(&mut info, rule);
        }
        Ok(info)
    }
}

/// The writes of new keys, staged as every check, then every record, then
/// every event: a backend that writes runs of one kind at once
/// (PostgreSQL) makes three statements of a batch of thousands of keys,
/// not thousands.
#[derive(Default)]
pub(super) struct NewKeys {
    pub checks: Batch,
    pub records: Batch,
    pub outbox: Batch,
}

impl NewKeys {
    /// A new key's record: its id must be free; its owner row, its
    /// quota's row (`remaining`, when it has a quota) and its
    /// `key.created` event (with `data`) go with it.
    pub(super) fn add(
        &mut self,
        engine: &Engine,
        rec: &KeyRecord,
        remaining: Option<u64>,
        now: i64,
        data: Value,
    ) {
        let id = rec.id.as_bytes().to_vec();
        self.checks.expect(Table::Keys, id.clone(), None);
        self.records.put(Table::Keys, id, rec.encode());
        if let Some(row) = rec.owner_row() {
            self.records.put(Table::Owners, row, Vec::new());
        }
        if rec.policy.quota.is_some() {
            super::budgets::quota_row(&mut self.records, rec, remaining, now);
        }
        events::append(
            &mut self.outbox,
            EventKind::KeyCreated,
            &rec.subject(&engine.prefix),
            now,
            engine.actor.as_deref(),
            data,
        );
    }
}
