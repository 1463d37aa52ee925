//! What the owner of a sled store writes for the processes attached to it.
//!
//! An attached process (the owner's user, or a member of the group the
//! owner lets attach) sends its writes as batches, built by the same
//! engine. The owner commits a batch only as the API could have made it:
//! every row decodes; a key record holds only what the API accepts; a
//! record changes as the API changes one (a new key starts at generation
//! 1 under an id never used before; a regeneration adds one generation;
//! a generation's secret never changes or comes back, and a grace period
//! only shortens); the rows derived from records (the owner index and the
//! import lookups) are the owner's to write; a key event goes with a
//! change to its key; and the actor of every event is the user the
//! kernel says is at the other end of the socket (what the process said
//! of itself is kept as `actor_claimed`). Anything else refuses
//! the whole batch, and nothing of it is written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::options::{MAX_GRACE, Options, PAST_GENERATIONS_KEPT};
use super::record::{GenRecord, KeyRecord, Lookup};
use super::settings;
use crate::backend::{Backend, Batch, Op, Table};
use crate::error::OpenError;
use crate::events::{Event, EventKind};
use crate::key::KeyId;
use crate::verifier::{self, SecretHash};
use crate::whitelist;

/// How far a time a process stamps may lie ahead of the owner's clock.
const SKEW_MS: i64 = 24 * 3600 * 1000;

/// The batch to commit for an attached process whose user is `actor`, at
/// the owner's `now`; or why it is refused. `store` is read for what
/// plugins still wait for.
pub(crate) fn vet(
    batch: Batch,
    actor: &str,
    now: i64,
    store: &dyn Backend,
) -> Result<Batch, String> {
    // What each written record is expected to replace (the compare-and-set
    // the engine puts beside every write of a record).
    let expected: HashMap<Vec<u8>, Option<Vec<u8>>> = batch
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Expect {
                table: Table::Keys,
                key,
                expected,
            } => Some((key.clone(), expected.clone())),
            _ => None,
        })
        .collect();
    let mut v = Vetting {
        expected,
        now,
        store,
        checks: Batch::default(),
        writes: Batch::default(),
        changed: HashSet::new(),
        deleted: HashSet::new(),
        events: Vec::new(),
        delivered: None,
        pruned: HashSet::new(),
    };
    for op in batch.ops {
        v.op(op)?;
    }
    for value in std::mem::take(&mut v.events) {
        let event = stamped(&value, actor, &v.changed)?;
        v.writes.append(Table::Events, event);
    }
    // Every compare-and-set is of the state before the batch.
    v.checks.ops.extend(v.writes.ops);
    Ok(v.checks)
}

/// A batch being vetted: what it checks and writes, so far.
struct Vetting<'a> {
    expected: HashMap<Vec<u8>, Option<Vec<u8>>>,
    now: i64,
    store: &'a dyn Backend,
    checks: Batch,
    writes: Batch,
    /// Keys whose record the batch writes, and those it deletes.
    changed: HashSet<KeyId>,
    deleted: HashSet<KeyId>,
    events: Vec<Vec<u8>>,
    /// The lowest enabled plugin's cursor, once read.
    delivered: Option<u64>,
    /// Events the batch prunes: their index rows may go with them.
    pruned: HashSet<u64>,
}

impl Vetting<'_> {
    fn op(&mut self, op: Op) -> Result<(), String> {
        match op {
            Op::Expect { .. } => self.checks.ops.push(op),
            Op::Put {
                table: Table::Keys,
                key,
                value,
            } => self.put_record(key, value)?,
            Op::Delete {
                table: Table::Keys,
                key,
            } => self.delete_record(key)?,
            // Derived from the records: written from them (see `derived`).
            Op::Put {
                table: Table::Owners | Table::Imports | Table::Gone,
                ..
            }
            | Op::Delete {
                table: Table::Owners | Table::Imports,
                ..
            } => {}
            Op::Append {
                table: Table::Events,
                value,
            } => self.events.push(value),
            Op::Delete {
                table: Table::Events,
                ref key,
            } => {
                self.check_prune(key)?;
                self.writes.ops.push(op);
            }
            Op::Delete {
                table: Table::EventIndex,
                ref key,
            } => {
                // The index is the owner's to write, but for the rows of
                // the events pruned before them in the batch: nobody hides
                // an event from a query by deleting its rows.
                if !crate::events::indexed_seq(key).is_some_and(|s| self.pruned.contains(&s)) {
                    return Err("an index row is deleted only with its event".into());
                }
                self.writes.ops.push(op);
            }
            Op::Put {
                table: Table::Usage,
                ref key,
                ref value,
            } => {
                key_id(key)?;
                crate::usage::UsageAgg::from_bytes(value)
                    .map_err(|e| e.to_string())?
                    .check()?;
                self.writes.ops.push(op);
            }
            Op::Delete {
                table: Table::Usage,
                ref key,
            } => {
                // Usage goes with its key.
                if !self.deleted.contains(&key_id(key)?) {
                    return Err("usage is deleted only with its key".into());
                }
                self.writes.ops.push(op);
            }
            Op::Put {
                table: Table::Budgets,
                ref key,
                ref value,
            } => {
                check_budget(key, value)?;
                self.writes.ops.push(op);
            }
            Op::Put {
                table:
                    table @ (Table::Plugins
                    | Table::PluginCode
                    | Table::PluginState
                    | Table::DeadLetters),
                ref value,
                ..
            } => {
                check_plugin_row(table, value)?;
                self.writes.ops.push(op);
            }
            Op::Delete {
                table:
                    Table::Budgets
                    | Table::Plugins
                    | Table::PluginCode
                    | Table::PluginState
                    | Table::DeadLetters,
                ..
            } => self.writes.ops.push(op),
            Op::Put { table, .. } | Op::Delete { table, .. } | Op::Append { table, .. } => {
                return Err(format!("the {table:?} table is the owner's to write"));
            }
        }
        Ok(())
    }

    fn put_record(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        let id = key_id(&key)?;
        let new = KeyRecord::decode(&value).map_err(|e| e.to_string())?;
        if new.id != id {
            return Err(format!("the record of key {} is filed under {id}", new.id));
        }
        check_record(&new, self.now)?;
        let old = self.previous(&key)?;
        if let Some(old) = &old {
            check_change(old, &new, self.now)?;
        } else {
            check_new(&new)?;
            // An id once deleted is never used again: a deleted key's
            // record cannot be put back.
            self.checks.expect(Table::Gone, key.clone(), None);
        }
        derived(&mut self.writes, old.as_ref(), Some(&new));
        self.writes.put(Table::Keys, key, value);
        self.changed.insert(id);
        Ok(())
    }

    fn delete_record(&mut self, key: Vec<u8>) -> Result<(), String> {
        let id = key_id(&key)?;
        let Some(old) = self.previous(&key)? else {
            return Err(format!("key {id} is deleted without being read"));
        };
        derived(&mut self.writes, Some(&old), None);
        self.writes.delete(Table::Keys, key.clone());
        self.writes
            .put(Table::Gone, key, self.now.to_be_bytes().to_vec());
        self.changed.insert(id);
        self.deleted.insert(id);
        Ok(())
    }

    /// The record a write of `row` replaces, as its compare-and-set says.
    fn previous(&self, row: &[u8]) -> Result<Option<KeyRecord>, String> {
        match self.expected.get(row) {
            None => Err("a key record is written without a compare-and-set on it".into()),
            Some(None) => Ok(None),
            Some(Some(bytes)) => KeyRecord::decode(bytes)
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    }

    /// Pruning the outbox: only what every enabled plugin has had.
    fn check_prune(&mut self, row: &[u8]) -> Result<(), String> {
        let seq = <[u8; 8]>::try_from(row)
            .map(u64::from_be_bytes)
            .map_err(|_| "an event row that names no event".to_string())?;
        let delivered = if let Some(d) = self.delivered {
            d
        } else {
            let d = crate::events::lowest_plugin_cursor(self.store)
                .map_err(|e| e.to_string())?
                .unwrap_or(u64::MAX);
            *self.delivered.insert(d)
        };
        if seq > delivered {
            return Err(format!("event {seq} is still to be delivered"));
        }
        self.pruned.insert(seq);
        Ok(())
    }
}

fn key_id(row: &[u8]) -> Result<KeyId, String> {
    std::str::from_utf8(row)
        .ok()
        .and_then(|s| s.get(..crate::key::ID_LEN))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "a row that names no key".to_string())
}

/// What the API accepts in a record.
fn check_record(rec: &KeyRecord, now: i64) -> Result<(), String> {
    settings::check_record(rec)?;
    check_whitelist(&rec.whitelist)?;
    let gens = &rec.generations;
    if gens.is_empty() || gens.len() > 1 + PAST_GENERATIONS_KEPT {
        return Err(format!(
            "a key holds 1 to {} generations",
            1 + PAST_GENERATIONS_KEPT
        ));
    }
    if gens.windows(2).any(|w| w[0].n <= w[1].n) || gens[0].retired_at.is_some() {
        return Err("generations are newest first, and only the newest is current".into());
    }
    for g in gens {
        check_generation(g)?;
        let latest = now
            .saturating_add(i64::try_from(MAX_GRACE.as_millis()).unwrap_or(i64::MAX))
            .saturating_add(SKEW_MS);
        if g.grace_until.is_some_and(|t| t > latest) {
            return Err("a grace period is at most a year".into());
        }
    }
    Ok(())
}

fn check_whitelist(wl: &whitelist::Whitelist) -> Result<(), String> {
    if wl.entries.len() > whitelist::MAX_ENTRIES {
        return Err(format!(
            "a whitelist holds at most {} entries",
            whitelist::MAX_ENTRIES
        ));
    }
    let mut networks = HashSet::new();
    for e in &wl.entries {
        whitelist::validate_entry_name(&e.name).map_err(|e| e.to_string())?;
        let net = whitelist::parse_network(&e.network)?;
        if whitelist::canonical(&net) != e.network || !networks.insert(&e.network) {
            return Err(format!(
                "whitelist entry {:?} is not as the API writes it",
                e.name
            ));
        }
        if e.id.len() != whitelist::ENTRY_ID_LEN || !e.id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err("a whitelist entry id is 10 base62 characters".into());
        }
    }
    Ok(())
}

/// A generation's hash is one the API makes or imports, at a cost a login
/// server would pay.
fn check_generation(g: &GenRecord) -> Result<(), String> {
    match (SecretHash::from_phc(&g.phc), &g.lookup) {
        (SecretHash::Argon2id { m, t, p, .. }, _) => {
            if m > verifier::MAX_IMPORTED_ARGON2_MEMORY_KIB
                || u32::from(t) > verifier::MAX_IMPORTED_ARGON2_TIME
                || u32::from(p) > verifier::MAX_IMPORTED_ARGON2_PARALLELISM
            {
                return Err(format!("argon2 m={m},t={t},p={p} is over the bounds"));
            }
        }
        (SecretHash::Sha256(_), Some(Lookup::Sha256(_))) => {}
        (SecretHash::Sha256(_), _) => return Err("a SHA-256 goes with its lookup".into()),
        (SecretHash::Phc(_), _) => verifier::check_imported_hash(&g.phc)?,
    }
    match &g.lookup {
        Some(Lookup::Prefix(p))
            if !super::import::IMPORT_PREFIX_LEN.contains(&p.len())
                || !p.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Err("a key prefix is 4 to 64 printable ASCII characters".into())
        }
        _ => Ok(()),
    }
}

/// A new key: one generation, the first, current.
fn check_new(rec: &KeyRecord) -> Result<(), String> {
    let g = &rec.generations[0];
    if rec.generations.len() != 1 || g.n != 1 || g.grace_until.is_some() || rec.rotated_at.is_some()
    {
        return Err(format!("new key {} is not at its first generation", rec.id));
    }
    Ok(())
}

/// A change the API makes to a key: its generations keep their secrets;
/// a regeneration adds one, retiring the current with a grace period of at
/// most a year; a grace period never grows; a generation dropped never
/// comes back.
fn check_change(old: &KeyRecord, new: &KeyRecord, now: i64) -> Result<(), String> {
    let refused = |why: &str| Err(format!("key {}: {why}", old.id));
    if new.created_at != old.created_at {
        return refused("its creation time changed");
    }
    let newest_before = old.generations[0].n;
    let added = new
        .generations
        .iter()
        .filter(|g| g.n > newest_before)
        .count();
    if added > 1 || (added == 1 && new.generations[0].n != newest_before + 1) {
        return refused("a regeneration adds exactly the next generation");
    }
    if added == 1
        && (new.generations[0].lookup.is_some() || new.generations[0].grace_until.is_some())
    {
        return refused("a new generation is of this store's own format");
    }
    for g in new.generations.iter().filter(|g| g.n <= newest_before) {
        let Some(was) = old.generations.iter().find(|o| o.n == g.n) else {
            return refused("a dropped generation came back");
        };
        if g.phc != was.phc
            || g.tag != was.tag
            || g.store_tag != was.store_tag
            || g.lookup != was.lookup
            || g.created_at != was.created_at
            || g.last4 != was.last4
        {
            return refused("a generation's secret changed");
        }
        match (was.retired_at, g.retired_at) {
            // Current before: still current, unless a generation was added.
            (None, None) if added == 0 => {}
            (None, Some(at)) if added == 1 && at <= now + SKEW_MS => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return refused("a generation was retired or restored out of turn"),
        }
        // A retired generation's grace: none stays none, and a time only
        // comes earlier (the current one's is set as it retires).
        let grace_grew = was.retired_at.is_some()
            && match (was.grace_until, g.grace_until) {
                (None, Some(_)) => true,
                (Some(a), Some(b)) => b > a,
                _ => false,
            };
        if grace_grew {
            return refused("an old secret's grace period grew");
        }
    }
    Ok(())
}

/// The owner-index and import-lookup rows of a record replacing `old`.
fn derived(batch: &mut Batch, old: Option<&KeyRecord>, new: Option<&KeyRecord>) {
    let old_owner = old.and_then(KeyRecord::owner_row);
    let new_owner = new.and_then(KeyRecord::owner_row);
    if old_owner != new_owner {
        if let Some(row) = old_owner {
            batch.delete(Table::Owners, row);
        }
        if let Some(row) = new_owner {
            batch.put(Table::Owners, row, Vec::new());
        }
    }
    let old_lookups = old.map(super::imports::of_record).unwrap_or_default();
    let new_lookups = new.map(super::imports::of_record).unwrap_or_default();
    for gone in old_lookups.iter().filter(|l| !new_lookups.contains(l)) {
        batch.delete(Table::Imports, gone.row());
    }
    if let Some(rec) = new {
        for l in new_lookups.iter().filter(|l| !old_lookups.contains(l)) {
            // One key per lookup, across every process.
            batch.expect(Table::Imports, l.row(), None);
            batch.put(Table::Imports, l.row(), rec.id.as_bytes().to_vec());
        }
    }
}

/// A budget row: a quota's (`<id>q`) or a limit's (`<id>l<name>`).
fn check_budget(row: &[u8], value: &[u8]) -> Result<(), String> {
    key_id(row)?;
    let ok = match row.get(crate::key::ID_LEN) {
        Some(b'q') => super::meter::QuotaRow::decode(value).is_some(),
        Some(b'l') => crate::policy::Window::read(value).is_some(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err("a budget row that does not decode".into())
    }
}

#[cfg(feature = "plugins")]
fn check_plugin_row(table: Table, value: &[u8]) -> Result<(), String> {
    crate::plugins::check_row(table, value)
}

#[cfg(not(feature = "plugins"))]
fn check_plugin_row(_: Table, _: &[u8]) -> Result<(), String> {
    Err("this keyward was built without plugins".into())
}

/// An event as the owner stores it: of a known kind, about a key this
/// batch changes (a notice from verification stands alone), with the
/// actor the owner knows.
fn stamped(value: &[u8], actor: &str, changed: &HashSet<KeyId>) -> Result<Vec<u8>, String> {
    let mut event: Event =
        serde_json::from_slice(value).map_err(|e| format!("an event that does not decode: {e}"))?;
    let notice = matches!(
        event.kind,
        EventKind::KeyDeniedIp | EventKind::KeyStaleSecretUsed | EventKind::KeyQuotaExhausted
    );
    if !notice && !changed.contains(&event.key_id) {
        return Err(format!(
            "a {} event about key {} without a change to it",
            event.kind.as_str(),
            event.key_id
        ));
    }
    event.seq = 0;
    let serde_json::Value::Object(map) = &mut event.data else {
        return Err("an event's data is a JSON object".into());
    };
    // What the process said of itself (`Options::actor`: "admin panel")
    // is kept as its claim, beside the actor the owner knows.
    let claimed = map.remove("actor").filter(|c| c.as_str() != Some(actor));
    map.remove("actor_claimed");
    if let Some(claim) = claimed.filter(serde_json::Value::is_string) {
        map.insert("actor_claimed".into(), claim);
    }
    map.insert("actor".into(), serde_json::Value::String(actor.to_owned()));
    serde_json::to_vec(&event).map_err(|e| e.to_string())
}

impl Options {
    /// How a sled store is opened and shared on this host.
    pub(crate) fn host_rules(&self) -> Result<crate::backend::HostRules, OpenError> {
        Ok(crate::backend::HostRules {
            require_owner: self.require_owner,
            group: self.attach_gid()?,
            takeover: self.takeover_timeout,
            reply: self.statement_timeout + Duration::from_secs(1),
            vet: {
                let clock = Arc::clone(&self.clock);
                crate::backend::Vet(Arc::new(move |batch, actor, store| {
                    vet(batch, actor, clock.now().unix_millis(), store)
                }))
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_that_do_not_decode_and_owner_tables_are_refused() {
        let store = crate::backend::MemoryBackend::new(false);
        let vet = |b: Batch, actor: &str, now: i64| vet(b, actor, now, &store);
        let mut b = Batch::default();
        b.expect(Table::Keys, b"AAAAAAAAAAAA".to_vec(), None);
        b.put(Table::Keys, b"AAAAAAAAAAAA".to_vec(), vec![0xff, 0xff]);
        assert!(vet(b, "u", 0).is_err());
        for table in [Table::Meta, Table::Feed] {
            let mut b = Batch::default();
            b.put(table, b"x".to_vec(), b"y".to_vec());
            assert!(vet(b, "u", 0).unwrap_err().contains("owner's"));
        }
        let mut b = Batch::default();
        b.delete(Table::Gone, b"AAAAAAAAAAAA".to_vec());
        assert!(vet(b, "u", 0).unwrap_err().contains("owner's"));
        let mut b = Batch::default();
        b.delete(Table::Events, vec![1, 2, 3]);
        assert!(vet(b, "u", 0).is_err());
        // The outbox's index: written by the owner; a row deleted only with
        // its event.
        let mut b = Batch::default();
        b.put(
            Table::EventIndex,
            b"~".to_vec(),
            9u64.to_be_bytes().to_vec(),
        );
        assert!(vet(b, "u", 0).unwrap_err().contains("owner's"));
        let row = |seq: u64| {
            let mut r = crate::events::index_prefix(crate::events::BY_OWNER, b"acme");
            r.extend_from_slice(&seq.to_be_bytes());
            r
        };
        let mut b = Batch::default();
        b.delete(Table::EventIndex, row(7));
        assert!(vet(b, "u", 0).unwrap_err().contains("only with its event"));
        let mut b = Batch::default();
        b.delete(Table::Events, 7u64.to_be_bytes().to_vec());
        b.delete(Table::EventIndex, row(7));
        assert!(vet(b, "u", 0).is_ok());
        let mut b = Batch::default();
        b.put(Table::Budgets, b"AAAAAAAAAAAAq".to_vec(), vec![0xff; 3]);
        assert!(vet(b, "u", 0).is_err());
        // A usage record past the recent-request bound a key keeps.
        let recent = |n: usize| {
            let rows: Vec<_> = (0..n)
                .map(|t| serde_json::json!({"t": t, "ip": "10.0.0.1"}))
                .collect();
            serde_json::to_vec(&serde_json::json!({"totals": {"allowed": 0, "denied": 0},
                "last_used": null, "ips": {}, "integrations": {}, "hourly": {}, "recent": rows}))
            .unwrap()
        };
        let mut b = Batch::default();
        b.put(Table::Usage, b"AAAAAAAAAAAA".to_vec(), recent(50));
        assert!(vet(b, "u", 0).is_ok());
        let mut b = Batch::default();
        b.put(Table::Usage, b"AAAAAAAAAAAA".to_vec(), recent(51));
        assert!(vet(b, "u", 0).unwrap_err().contains("recent requests"));
    }
}
