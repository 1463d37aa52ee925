//! `Store::check`: walks every table of a store and says what does not
//! agree — a record that does not decode, an owner-index row or an import
//! lookup that its record does not have (or the other way round), a quota
//! or usage row of no key, an event that does not decode, a plugin's
//! state, cursor or dead letter that does not hold together. With repair,
//! what is derived from the records (the owner index, the import lookups)
//! is rebuilt from them and rows of no key are removed; records
//! themselves are never touched.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use super::engine::Engine;
use super::imports;
use super::record::KeyRecord;
use crate::backend::{Batch, Durability, StorageError, Table};
use crate::events::{self, Event};
use crate::key::KeyId;

/// Rows read at once.
const PAGE: usize = 1000;

/// What a check found. As JSON: `{"clean", "rows", "problems"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Rows read, by table.
    pub rows: BTreeMap<String, u64>,
    /// Each thing that does not agree.
    pub problems: Vec<Problem>,
}

impl Serialize for CheckReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("CheckReport", 3)?;
        st.serialize_field("clean", &self.is_clean())?;
        st.serialize_field("rows", &self.rows)?;
        st.serialize_field("problems", &self.problems)?;
        st.end()
    }
}

impl CheckReport {
    /// Whether nothing is wrong that was not repaired.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.problems.iter().all(|p| p.repaired)
    }
}

/// One thing that does not agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Problem {
    /// The table: `keys`, `owners`, `imports`, `budgets`, `usage`,
    /// `events`, `event_index`, `plugins`, `plugin_state`, `dead_letters`,
    /// `meta`.
    pub table: String,
    /// The row, as text (a key id, an owner row, an event number).
    pub row: String,
    /// What is wrong with it.
    pub problem: String,
    /// Whether a repair set it right.
    pub repaired: bool,
}

/// A row of table `t` as text: printable, or hex.
fn shown(row: &[u8]) -> String {
    match std::str::from_utf8(row) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_string(),
        _ => row.iter().fold(String::new(), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        }),
    }
}

struct Walk<'a> {
    engine: &'a Engine,
    repair: bool,
    report: CheckReport,
    fixes: Vec<Fix>,
}

/// A repair of one derived row: what to write (`None`: delete it), the
/// row as the walk read it, and the key whose record it derives from.
struct Fix {
    table: Table,
    row: Vec<u8>,
    write: Option<Vec<u8>>,
    seen: Option<Vec<u8>>,
    key: KeyId,
}

impl Fix {
    /// Whether this fix follows from `record`, its key's record now.
    fn still_right(&self, record: Option<&KeyRecord>) -> bool {
        match self.table {
            Table::Owners => {
                let own = record.and_then(KeyRecord::owner_row);
                (own.as_deref() == Some(&self.row[..])) == self.write.is_some()
            }
            Table::Imports => {
                let has = record
                    .is_some_and(|r| imports::of_record(r).iter().any(|l| l.row() == self.row));
                has == self.write.is_some()
            }
            Table::Budgets => record.is_none_or(|r| !budget_rows(r).contains(&self.row)),
            _ => record.is_none(),
        }
    }
}

/// The rows of a key's quota and limits.
fn budget_rows(rec: &KeyRecord) -> Vec<Vec<u8>> {
    let quota = rec
        .policy
        .quota
        .map(|_| super::meter::quota_row_key(&rec.id));
    let limits = rec
        .policy
        .limits
        .iter()
        .map(|l| super::meter::limit_row_key(&rec.id, &l.name));
    quota.into_iter().chain(limits).collect()
}

/// What the records say the derived tables hold.
#[derive(Default)]
struct Derived {
    ids: HashSet<KeyId>,
    owner_rows: BTreeSet<Vec<u8>>,
    lookups: BTreeMap<Vec<u8>, KeyId>,
    budgets: BTreeSet<Vec<u8>>,
}

/// The key a derived row belongs to: an owner row ends with it, a budget
/// or usage row starts with it.
fn key_of(table: Table, row: &[u8]) -> Option<KeyId> {
    let id = match table {
        Table::Owners => row.get(row.len().checked_sub(crate::key::ID_LEN)?..)?,
        _ => row.get(..crate::key::ID_LEN)?,
    };
    std::str::from_utf8(id).ok()?.parse().ok()
}

impl Walk<'_> {
    /// A derived row to set right (when repairing).
    fn fix(
        &mut self,
        table: Table,
        row: Vec<u8>,
        write: Option<Vec<u8>>,
        seen: Option<Vec<u8>>,
        key: KeyId,
    ) {
        self.fixes.push(Fix {
            table,
            row,
            write,
            seen,
            key,
        });
    }

    fn problem(&mut self, table: &str, row: &[u8], problem: impl Into<String>, repairable: bool) {
        self.report.problems.push(Problem {
            table: table.to_string(),
            row: shown(row),
            problem: problem.into(),
            repaired: self.repair && repairable,
        });
    }

    /// Every row of `table`, a page at a time.
    fn each(
        &mut self,
        table: Table,
        mut visit: impl FnMut(&mut Self, Vec<u8>, Vec<u8>),
    ) -> Result<(), StorageError> {
        let mut start = Vec::new();
        let mut n = 0;
        loop {
            let rows = self.engine.backend.range_from(table, &start, PAGE)?;
            let full = rows.len() == PAGE;
            if let Some((last, _)) = rows.last() {
                start.clone_from(last);
                start.push(0);
            }
            for (k, v) in rows {
                n += 1;
                visit(self, k, v);
            }
            if !full {
                break;
            }
        }
        *self
            .report
            .rows
            .entry(format!("{table:?}").to_lowercase())
            .or_default() += n;
        Ok(())
    }
}

impl Walk<'_> {
    fn meta(&mut self) -> Result<(), StorageError> {
        if let Some(meta) = self.engine.backend.get(Table::Meta, b"store")?
            && serde_json::from_slice::<super::record::MetaRecord>(&meta).is_err()
        {
            self.problem(
                "meta",
                b"store",
                "the store's record does not decode",
                false,
            );
        }
        Ok(())
    }

    /// The records, and what should be derived from them.
    fn records(&mut self) -> Result<Derived, StorageError> {
        let mut d = Derived::default();
        self.each(Table::Keys, |w, k, v| match KeyRecord::decode(&v) {
            Ok(rec) if rec.id.as_bytes()[..] == k[..] => {
                d.ids.insert(rec.id);
                if let Some(row) = rec.owner_row() {
                    d.owner_rows.insert(row);
                }
                for l in imports::of_record(&rec) {
                    d.lookups.insert(l.row(), rec.id);
                }
                d.budgets.extend(budget_rows(&rec));
            }
            Ok(rec) => w.problem(
                "keys",
                &k,
                format!("holds the record of key {}", rec.id),
                false,
            ),
            Err(e) => w.problem("keys", &k, format!("does not decode: {e}"), false),
        })?;
        Ok(d)
    }

    /// The owner index: exactly the records' owner rows.
    fn owners(&mut self, d: &Derived) -> Result<(), StorageError> {
        let mut seen = BTreeSet::new();
        self.each(Table::Owners, |w, k, v| {
            if d.owner_rows.contains(&k) {
                seen.insert(k);
            } else {
                w.problem("owners", &k, "no key has this owner", true);
                let id = key_of(Table::Owners, &k).unwrap_or_else(KeyId::random);
                w.fix(Table::Owners, k, None, Some(v), id);
            }
        })?;
        for row in d.owner_rows.difference(&seen) {
            self.problem("owners", row, "the key's owner row is missing", true);
            let id = key_of(Table::Owners, row).expect("an owner row ends with its key");
            self.fix(Table::Owners, row.clone(), Some(Vec::new()), None, id);
        }
        Ok(())
    }

    /// The import lookups: exactly the records' lookups.
    fn imports(&mut self, d: &Derived) -> Result<(), StorageError> {
        let mut seen = BTreeSet::new();
        self.each(Table::Imports, |w, k, v| match d.lookups.get(&k) {
            Some(id) if id.as_bytes()[..] == v[..] => {
                seen.insert(k);
            }
            Some(&id) => {
                w.problem(
                    "imports",
                    &k,
                    format!("names {} instead of {id}", shown(&v)),
                    true,
                );
                w.fix(
                    Table::Imports,
                    k.clone(),
                    Some(id.as_bytes().to_vec()),
                    Some(v),
                    id,
                );
                seen.insert(k);
            }
            None => {
                w.problem("imports", &k, "no key has this lookup", true);
                // Guarded by the key the row names, when it names one.
                let id = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(KeyId::random);
                w.fix(Table::Imports, k, None, Some(v), id);
            }
        })?;
        for (row, &id) in &d.lookups {
            if !seen.contains(row) {
                self.problem(
                    "imports",
                    row,
                    format!("key {id}'s lookup is missing"),
                    true,
                );
                self.fix(
                    Table::Imports,
                    row.clone(),
                    Some(id.as_bytes().to_vec()),
                    None,
                    id,
                );
            }
        }
        Ok(())
    }

    /// Rows of a key: its budgets and its usage.
    fn rows_of_keys(&mut self, d: &Derived) -> Result<(), StorageError> {
        self.each(Table::Budgets, |w, k, v| {
            if !d.budgets.contains(&k) {
                w.problem("budgets", &k, "no key has this quota or limit", true);
                let id = key_of(Table::Budgets, &k).unwrap_or_else(KeyId::random);
                w.fix(Table::Budgets, k, None, Some(v), id);
            }
        })?;
        self.each(Table::Usage, |w, k, v| {
            let key = key_of(Table::Usage, &k).filter(|id| d.ids.contains(id));
            if key.is_none() {
                w.problem("usage", &k, "the usage of no key", true);
                let id = key_of(Table::Usage, &k).unwrap_or_else(KeyId::random);
                w.fix(Table::Usage, k, None, Some(v), id);
            } else if crate::usage::UsageAgg::from_bytes(&v).is_err() {
                w.problem("usage", &k, "does not decode", false);
            }
        })
    }

    /// The outbox, its index, and what plugins have had of it.
    fn outbox(&mut self) -> Result<(), StorageError> {
        let backend = self.engine.backend.as_ref();
        let through_row = backend.get(Table::EventIndex, events::INDEXED_THROUGH)?;
        let through = events::indexed_through(through_row.as_deref());
        let mut last_event = 0;
        // Events the index should hold whose rows it does not: how many,
        // and the first.
        let mut unindexed: (u64, Option<u64>) = (0, None);
        let mut failed = None;
        self.each(Table::Events, |w, k, v| match Event::from_stored(&k, &v) {
            Ok(e) => {
                last_event = last_event.max(e.seq);
                if e.seq <= through {
                    for row in events::index_rows(&e) {
                        match w.engine.backend.get(Table::EventIndex, &row) {
                            Ok(Some(_)) => {}
                            Ok(None) => {
                                unindexed.0 += 1;
                                unindexed.1.get_or_insert(e.seq);
                                break;
                            }
                            Err(err) => failed = Some(err),
                        }
                    }
                }
            }
            Err(e) => w.problem("events", &k, format!("does not decode: {e}"), false),
        })?;
        if let Some(err) = failed {
            return Err(err);
        }
        // The index is its writer's to repair (an attached process's
        // owner's).
        let can_rebuild = self.engine.writes_index();
        let mut rebuild = false;
        if let (n, Some(first)) = unindexed {
            self.problem(
                "event_index",
                first.to_string().as_bytes(),
                format!(
                    "{n} events the index says it holds are missing from it (the first: event {first}); a repair has it built again"
                ),
                can_rebuild,
            );
            rebuild = true;
        }
        if through > last_event {
            self.problem(
                "event_index",
                events::INDEXED_THROUGH,
                format!("it ends at event {through}, past the last event {last_event}; a repair has it built again"),
                can_rebuild,
            );
            rebuild = true;
        }
        if rebuild && can_rebuild && self.repair {
            // Its end forgotten: the index is built again from the first
            // event, on queries and by the maintenance.
            let mut batch = Batch::default();
            batch.expect(
                Table::EventIndex,
                events::INDEXED_THROUGH.to_vec(),
                through_row,
            );
            batch.delete(Table::EventIndex, events::INDEXED_THROUGH.to_vec());
            self.engine
                .backend
                .commit(batch, Durability::Durable)
                .map_err(|e| match e {
                    crate::backend::CommitError::Conflict => StorageError::new(
                        "the store changed while it was checked: nothing was repaired; check again",
                    ),
                    crate::backend::CommitError::Storage(e)
                    | crate::backend::CommitError::Unflushed(e) => e,
                })?;
        }
        #[cfg(feature = "plugins")]
        crate::plugins::check(
            self.engine.backend.as_ref(),
            last_event,
            &mut |table, row, problem| {
                self.problem(table, row, problem, false);
            },
        )?;
        #[cfg(not(feature = "plugins"))]
        let _ = last_event;
        Ok(())
    }
}

impl Engine {
    pub(crate) fn check(&self, repair: bool) -> Result<CheckReport, StorageError> {
        let mut w = Walk {
            engine: self,
            repair,
            report: CheckReport::default(),
            fixes: Vec::new(),
        };
        w.meta()?;
        let derived = w.records()?;
        w.owners(&derived)?;
        w.imports(&derived)?;
        w.rows_of_keys(&derived)?;
        w.outbox()?;
        if repair && !w.fixes.is_empty() {
            self.repair(std::mem::take(&mut w.fixes))?;
        }
        Ok(w.report)
    }

    /// Writes the fixes in one batch, each only if it still follows from
    /// its key's record as that is now, and only if that record and the
    /// row are still as read when the batch commits (the walk is not one
    /// read: a change made meanwhile makes the repair fail, and a second
    /// check sees the store as it is).
    fn repair(&self, fixes: Vec<Fix>) -> Result<(), StorageError> {
        let changed = || {
            StorageError::new(
                "the store changed while it was checked: nothing was repaired; check again",
            )
        };
        let mut batch = Batch::default();
        let mut guarded = HashSet::new();
        for f in fixes {
            let bytes = self.backend.get(Table::Keys, f.key.as_bytes())?;
            let record = bytes
                .as_deref()
                .map(KeyRecord::decode)
                .transpose()
                .ok()
                .flatten();
            if !f.still_right(record.as_ref()) {
                return Err(changed());
            }
            if guarded.insert(f.key) {
                batch.expect(Table::Keys, f.key.as_bytes().to_vec(), bytes);
            }
            batch.expect(f.table, f.row.clone(), f.seen);
            match f.write {
                Some(v) => batch.put(f.table, f.row, v),
                None => batch.delete(f.table, f.row),
            }
        }
        match self.backend.commit(batch, Durability::Durable) {
            Ok(_) => Ok(()),
            Err(crate::backend::CommitError::Conflict) => Err(changed()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{CreateOptions, ImportedSecret, Options, Store};

    fn store() -> Store {
        let o = Options {
            argon2: crate::verifier::Argon2Params {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            ..Options::default()
        };
        Store::open_in_memory(&o).unwrap()
    }

    fn write(store: &Store, batch: Batch) {
        store
            .engine
            .backend
            .commit(batch, Durability::Durable)
            .unwrap();
    }

    fn tables(report: &CheckReport) -> Vec<(String, bool)> {
        let mut t: Vec<_> = report
            .problems
            .iter()
            .map(|p| (p.table.clone(), p.repaired))
            .collect();
        t.sort();
        t
    }

    #[test]
    fn derived_rows_that_disagree_with_their_records_are_reported_and_rebuilt() {
        let store = store();
        let owned = store
            .create("owned", CreateOptions::new().owner("acme"))
            .unwrap();
        let limited = store
            .create(
                "limited",
                CreateOptions::new()
                    .quota(crate::Quota::new(10))
                    .limit(crate::Limit::new("burst", 5, Duration::from_mins(1))),
            )
            .unwrap();
        let imported = store
            .import_key(
                "imported",
                ImportedSecret::Sha256("ab".repeat(32)),
                CreateOptions::new(),
            )
            .unwrap();
        assert!(
            store
                .verify(owned.key.as_str(), "10.0.0.1".parse().unwrap(), None)
                .is_valid()
        );
        store.flush().unwrap();
        let clean = store.check(false).unwrap();
        assert!(clean.is_clean() && clean.problems.is_empty(), "{clean:?}");
        assert_eq!(clean.rows["keys"], 3);

        // Every derived table wrong, one way or another.
        let lookup = crate::store::record::Lookup::Sha256([0xab; 32]).row();
        let ghost = KeyId::random();
        let mut b = Batch::default();
        b.delete(Table::Owners, owned_row(&owned.info.id));
        b.put(Table::Owners, owner_row_of("globex", &ghost), Vec::new());
        b.put(
            Table::Imports,
            lookup.clone(),
            limited.info.id.as_bytes().to_vec(),
        );
        b.put(
            Table::Imports,
            b"sforgotten".to_vec(),
            ghost.as_bytes().to_vec(),
        );
        b.put(
            Table::Budgets,
            super::super::meter::quota_row_key(&ghost),
            vec![0],
        );
        b.put(Table::Usage, ghost.as_bytes().to_vec(), vec![1, 2, 3]);
        write(&store, b);
        let found = store.check(false).unwrap();
        assert!(!found.is_clean());
        assert_eq!(
            tables(&found),
            [
                ("budgets".to_string(), false),
                ("imports".to_string(), false),
                ("imports".to_string(), false),
                ("owners".to_string(), false),
                ("owners".to_string(), false),
                ("usage".to_string(), false),
            ],
            "{found:?}"
        );
        // Reporting changed nothing.
        assert_eq!(store.check(false).unwrap(), found);

        let repaired = store.check(true).unwrap();
        assert!(repaired.is_clean(), "{repaired:?}");
        assert_eq!(repaired.problems.len(), 6);
        let after = store.check(false).unwrap();
        assert!(after.problems.is_empty(), "{after:?}");
        // The derived rows are the records' again; the records unchanged.
        assert_eq!(store.list_owner("acme").unwrap().len(), 1);
        assert_eq!(
            store.engine.backend.get(Table::Imports, &lookup).unwrap(),
            Some(imported.id.as_bytes().to_vec())
        );
        assert_eq!(store.list().unwrap().len(), 3);
    }

    fn owned_row(id: &KeyId) -> Vec<u8> {
        owner_row_of("acme", id)
    }

    fn owner_row_of(owner: &str, id: &KeyId) -> Vec<u8> {
        crate::store::record::owner_row(owner, id)
    }

    #[test]
    fn records_that_do_not_decode_are_reported_and_never_touched() {
        let store = store();
        store.create("fine", CreateOptions::new()).unwrap();
        let bad = KeyId::random();
        let mut b = Batch::default();
        b.put(Table::Keys, bad.as_bytes().to_vec(), vec![0xff, 0xfe]);
        b.append(Table::Events, b"not an event".to_vec());
        write(&store, b);
        let report = store.check(true).unwrap();
        assert_eq!(
            tables(&report),
            [("events".to_string(), false), ("keys".to_string(), false)],
            "{report:?}"
        );
        assert!(!report.is_clean());
        assert!(
            store
                .engine
                .backend
                .get(Table::Keys, bad.as_bytes())
                .unwrap()
                .is_some(),
            "a record is never touched"
        );
    }

    #[test]
    fn a_repair_is_not_made_over_a_change_made_meanwhile() {
        let store = store();
        let k = store
            .create("k", CreateOptions::new().owner("acme"))
            .unwrap();
        let mut b = Batch::default();
        b.delete(Table::Owners, owned_row(&k.info.id));
        write(&store, b);
        // Decided from the record as it was; the record changes first.
        let fix = Fix {
            table: Table::Owners,
            row: owned_row(&k.info.id),
            write: Some(Vec::new()),
            seen: None,
            key: k.info.id,
        };
        store.set_owner(&k.info.id, Some("globex")).unwrap();
        let e = store.engine.repair(vec![fix]).unwrap_err();
        assert!(e.to_string().contains("changed"), "{e}");
        assert_eq!(store.list_owner("acme").unwrap().len(), 0);
    }
}
